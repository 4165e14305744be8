"""The status file: built from the running agent, written atomically, read and rendered by the CLI.

`agent status` reads only this file (docs/architecture.md §7: status is a file, the CLI only reads it), so this
module imports nothing heavy: no icmplib, XenAPI or transitions.
"""

import json
import os
import struct
import time

from agent.report import safefile, text

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
EXIT_STALE = 4          # the agent runs, but the file is old or unreadable: do not trust it
LOCK_NAME = "sspn-agent.lock"
HEARTBEAT = 30.0        # the agent rewrites the file at least this often (``updated``)
STALE_AFTER = 4 * HEARTBEAT
READ_LIMIT = 4 << 20    # a status file is a few KB; more is not ours
HELD = set()            # lock files this process holds (agent/service.py take_lock)
FLOCK = "hhqqi4x"       # struct flock (fcntl(2)) on 64-bit Linux, as dom0 runs


def boot_id():
    """The kernel's boot id (status of an earlier boot is not this boot's)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def write_atomic(path, data, cleaned=False):
    """Write JSON to ``path`` via a temp file in the same directory and rename().

    No fsync: rename alone is atomic against a crash or SIGKILL of the agent (the page cache
    outlives the process), the file lives in /run (tmpfs) and means nothing after a power
    loss (another boot_id). An fsync would block the decision thread for as long as the
    disk takes, between one repair and the next event."""
    directory = os.path.dirname(path) or "."
    safefile.ensure_dir(directory, 0o755)
    body = json.dumps(data if cleaned else text.clean_tree(data), indent=1, sort_keys=True) + "\n"
    safefile.write_atomic(path, body.encode("utf-8"), 0o644)


def load(path=DEFAULT_PATH):
    """(the status dict or None, why it could not be read or None when there is no file)."""
    try:
        raw, cut = safefile.read_bounded(path, READ_LIMIT)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, "cannot read %s (%s)" % (path, exc.strerror or exc)
    if cut:
        return None, "%s is larger than %d bytes: not a status file" % (path, READ_LIMIT)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None, "%s is not valid JSON (torn, or not written by the agent)" % path
    if not isinstance(data, dict):
        return None, "%s holds a JSON %s, not a status object" % (path, type(data).__name__)
    return data, None


def read(path=DEFAULT_PATH):
    """The last status written, or None when there is no readable file."""
    return load(path)[0]


def lock_path(status_path):
    """The instance lock: in the status file's directory (agent/service.py holds it)."""
    return os.path.join(os.path.dirname(status_path) or ".", LOCK_NAME)


def lock_holder(status_path):
    """The pid holding the instance lock; 0 when nobody does; None without a lock file.

    F_GETLK only asks (it never takes the lock), so `agent status` cannot make a starting
    agent fail to get it. Inside the agent that holds it, the file is not opened at all:
    closing any descriptor of it would drop a POSIX lock."""
    import fcntl
    if os.path.abspath(lock_path(status_path)) in HELD:
        return os.getpid()
    try:
        fd = os.open(lock_path(status_path), os.O_RDONLY | os.O_NONBLOCK
                     | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:  # struct flock of 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid (+ padding)
        query = struct.pack(FLOCK, fcntl.F_WRLCK, 0, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        kind, _, _, _, pid = struct.unpack(FLOCK, answer)
        return pid if kind != fcntl.F_UNLCK else 0
    except OSError:
        return None
    finally:
        os.close(fd)


def is_stale(status, now=None):
    """True when a live agent's file was not rewritten for STALE_AFTER seconds (its writes
    fail: /run full or read-only); False when the file says nothing about its age."""
    now = time.time() if now is None else now
    updated = status.get("updated") if isinstance(status, dict) else None
    if not isinstance(updated, (int, float)) or isinstance(updated, bool):
        return False
    beat = status.get("heartbeat", HEARTBEAT)
    beat = beat if isinstance(beat, (int, float)) and 0 < beat <= 3600 else HEARTBEAT
    return now - updated > max(STALE_AFTER, 4 * beat)


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
    if not isinstance(status, dict) or type(status.get("pid")) is not int:
        return False  # a pid is a number: true, "1" or 1.5 name no process
    if status.get("boot_id") and status.get("boot_id") != boot_id():
        return False
    try:
        pid = int(status["pid"])
    except (TypeError, ValueError, OverflowError):
        return False
    if not 0 < pid < 1 << 22:
        return False
    if not pid_alive(pid):
        return False
    if status.get("stopped"):
        return False
    return True


def verdict(path, now=None):
    """(status or None, running, exit code, note or None) for `agent status`: the instance
    lock says whether an agent runs (else the file's pid); a live agent's file that is old,
    unreadable or missing is reported with EXIT_STALE, never as "not running"."""
    data, problem = load(path)
    holder = lock_holder(path)
    running = bool(holder) if holder is not None else is_running(data)
    if not running:
        note = None if problem is None else "not running, and %s" % problem
        return data, False, EXIT_NOT_RUNNING, note
    who = "pid %d" % holder if holder else "the agent"
    if data is None:
        return None, True, EXIT_STALE, "running (%s), but %s" % (
            who, problem or "its status file %s is missing" % path) + \
            "; its status writes fail (see journalctl -u sspn-agent)"
    if is_stale(data, now) or (holder and data.get("stopped")):
        try:
            when = _stamp(float(data.get("updated")))
        except (TypeError, ValueError, OverflowError, OSError):
            when = "?"
        return data, True, EXIT_STALE, ("STALE: %s runs, but this file was last written %s: "
                                        "what follows may be out of date; its status writes "
                                        "fail (see journalctl -u sspn-agent)" % (who, when))
    return data, True, EXIT_RUNNING, None


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
    """Human text for `agent status`; any content gives lines, never an exception."""
    if status is None:
        return "sspn-agent: not running, and no status file was found (has it ever run?)"
    try:
        return _render(text.clean_tree(status), running, now)
    except Exception as exc:  # a status of the wrong shape: one line, no traceback
        return ("sspn-agent: the status file has an unexpected shape (%s); it is not what this "
                "agent writes" % text.clean("%s: %s" % (type(exc).__name__, exc), 120))


def _render(status, running, now=None):
    now = time.time() if now is None else now
    lines = []
    since = status.get("since", now)
    head = "sspn-agent: %s since %s (%s ago)" % (status.get("state", "?"), _stamp(since), _ago(now - since))
    if not running:
        head += "\n  NOT RUNNING: last known state, written %s" % _stamp(status.get("updated", since))
    lines.append(head)
    lines.append("  meaning: %s" % status.get("meaning", ""))
    for key, why in sorted(status.get("reasons", {}).items()):
        lines.append("  reason %s: %s" % (key, why))
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
    for item in status.get("replaced_routes", [])[-3:]:
        lines.append("  route   %s replaced %s" % (item["route"], item["replaced"]))
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
