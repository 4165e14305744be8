"""The status file: built from the running agent, written atomically, read and rendered by the CLI.

`agent status` reads only this file (docs/architecture.md §7: status is a file, the CLI only reads it), so this
module imports nothing heavy: no icmplib, XenAPI or transitions.
"""

import json
import os
import time

DEFAULT_PATH = "/run/sspn-agent/status.json"
EXIT_RUNNING = 0
EXIT_NOT_RUNNING = 3
# `agent status` exit codes, Nagios plugin style (OK, WARNING, CRITICAL, UNKNOWN): README.md.
EXIT_HEALTHY, EXIT_WORKING, EXIT_DEGRADED = 0, 1, 2


def exit_code(status, running):
    """0 HEALTHY, 1 a working state, 2 DEGRADED, 3 not running (or no status file)."""
    if not running or not status:
        return EXIT_NOT_RUNNING
    state = status.get("state")
    return EXIT_HEALTHY if state == "HEALTHY" else EXIT_DEGRADED if state == "DEGRADED" else EXIT_WORKING


def boot_id():
    """The kernel's boot id (status of an earlier boot is not this boot's)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def write_atomic(path, data):
    """Write JSON to ``path`` via a temp file in the same directory and rename().

    No fsync: rename alone is atomic against a crash or SIGKILL of the agent (the page cache
    outlives the process), the file lives in /run (tmpfs) and means nothing after a power
    loss (another boot_id). An fsync would block the decision thread for as long as the
    disk takes, between one repair and the next event."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.rename(tmp, path)


def read(path=DEFAULT_PATH):
    """The last status written, or None when there is no readable file."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def carried_over(path):
    """What a restarted agent (crash, SIGKILL, upgrade) takes over from the status file its
    predecessor wrote in this boot: {"autostart_done": bool, "host_fixed": bool,
    "uplinks_seen": bool}.

    autostart_done: the once-per-boot autostart must not start again the VMs an operator has
    stopped since. host_fixed: the agent re-enabled a locked-out host (or had sent host.enable:
    that is written before the call), so it still owes the host its uplink VMs (killed between
    host.enable and VM.start, the successor would otherwise wait for a firewall nobody
    starts). uplinks_seen: the uplink VMs have run in this boot, so that debt is paid; one
    halted since was stopped on purpose. Another boot's file carries nothing.
    """
    status = read(path)
    if not status or not status.get("boot_id") or status.get("boot_id") != boot_id():
        return {"autostart_done": False, "host_fixed": False, "uplinks_seen": False}
    host = status.get("host") or {}
    return {"autostart_done": bool(status.get("autostart_done")),
            "host_fixed": bool(host.get("fixed_by_agent") or host.get("enable_sent")),
            "uplinks_seen": bool(status.get("uplinks_seen"))}


def pid_alive(pid):
    """True when process ``pid`` exists (also another user's: EPERM)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def is_running(status):
    """True when the process that wrote ``status`` still runs (same boot, live pid)."""
    if not status or not status.get("pid"):
        return False
    if status.get("boot_id") and status.get("boot_id") != boot_id():
        return False
    try:
        pid = int(status["pid"])
    except ValueError:
        return False
    if not pid_alive(pid):
        return False
    if status.get("stopped"):
        return False
    return True


def _ago(seconds):
    seconds = max(0, int(seconds))
    if seconds < 120:
        return "%ds" % seconds
    if seconds < 7200:
        return "%dmin" % (seconds // 60)
    return "%dh%02dmin" % (seconds // 3600, (seconds % 3600) // 60)


def _stamp(wall):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


def render(status, running, now=None):
    """Human text for `agent status`."""
    now = time.time() if now is None else now
    if status is None:
        return "sspn-agent: not running, and no status file was found (has it ever run?)"
    lines = []
    since = status.get("since", now)
    head = "sspn-agent: %s since %s (%s ago)" % (status.get("state", "?"), _stamp(since), _ago(now - since))
    if not running:
        head += "\n  NOT RUNNING: last known state, written %s" % _stamp(status.get("updated", since))
    lines.append(head)
    lines.append("  meaning: %s" % status.get("meaning", ""))
    for key, text in sorted(status.get("reasons", {}).items()):
        lines.append("  reason %s: %s" % (key, text))
    for b in status.get("blockers", []):
        lines.append("  waiting: %s" % b)
    xapi = status.get("xapi", {})
    lines.append("  xapi: %s" % ("connected" if xapi.get("connected") else
                                 "not connected" + (" (%s)" % xapi["error"] if xapi.get("error") else "")))
    for item in status.get("addresses", []):
        lines.append("  address %-24s on %-8s %s" % (item["address"], item["ifname"],
                                                    "present" if item["present"] else "MISSING"))
    for item in status.get("routes", []):
        lines.append("  route   default via %-14s dev %-8s %s" % (item["gateway"], item["ifname"],
                                                               "present" if item["present"] else "MISSING"))
    lines.extend(_render_bindings(status.get("bindings", []), status.get("problems", {})))
    for sr in status.get("srs", []):
        lines.append("  sr      %s %s%s" % (sr["uuid"], sr["state"],
                                            " (%s)" % sr["note"] if sr.get("note") else ""))
    for name, left in sorted(status.get("next_retry", {}).items()):
        lines.append("  next    %s in %.1fs" % (name, left))
    recent = status.get("transitions", [])[-5:]
    if recent:
        lines.append("  last transitions:")
        for t in recent:
            lines.append("    %s %s -> %s on %s (%s)" % (_stamp(t["time"]), t["from"], t["to"],
                                                         t["trigger"], t["cause"]))
    return "\n".join(lines)


# --- per binding (each binding is served on its own) --------------------------------------------

def _render_bindings(bindings, problems):
    """Lines for each binding: its bridge, what it waits for, holds and misses, its gateways;
    then the bindings' problems (a silent gateway: in every state, not only DEGRADED)."""
    lines = ["  problem %s: %s" % kv for kv in sorted(problems.items())]
    for b in bindings:
        bridge = b.get("bridge") or "?"
        state = "bridge %s %s" % (bridge, "up" if b.get("bridge_exists") else "absent")
        lines.append("  binding %s: %s%s" % (b.get("network", "?"), state,
                                            "; waits for %s" % b["waits_for"] if b.get("waits_for") else ""))
        for item in b.get("holds", []):
            lines.append("    holds   %s" % item)
        for item in b.get("missing", []):
            lines.append("    MISSING %s" % item)
        for r in b.get("routes", []):
            if r.get("state") in ("standby", "no bridge"):
                lines.append("    route   default via %s (IPv%s): %s" % (r.get("gateway"), r.get("family"),
                                                                       r.get("state")))
        for g in b.get("gateways", []):
            lines.append("    gateway%s %s: %s" % (g.get("family"), g.get("gateway"), g.get("verdict")))
    return lines
