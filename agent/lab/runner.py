"""`agent lab`: a rehearsal on a simulated host -- the XAPI simulator, namespaces, the real agent.

Each scenario drives the simulator and the kernel like a real host would, waits (with a
deadline) for the agent's status file to say HEALTHY, checks that a ping really crosses
dom0 -> firewall -> storage LAN, then prints the agent's own trace as a timeline and a
summary. Everything is removed afterwards, also on failure or interrupt.
"""

import argparse
import json
import os
import shutil
import sys
import time

SCENARIOS = ("cold-boot", "firewall-reboot", "toolstack-restart", "late-storage",
             "maintenance-lockout", "flush")


def _cold_boot(host):
    """The firewall VM starts late (like xapi-autostart would); everything follows from it."""
    host.start_agent()
    host.wait_state("WAITING_VM")
    host.mark("firewall VM pfsense started (VM.start)")
    host.sim.vm_start("pfsense")


def _firewall_reboot(host):
    """HEALTHY, then the firewall reboots: its bridge is destroyed and re-created."""
    _cold_boot(host)
    host.wait_state("HEALTHY")
    host.mark("firewall VM pfsense rebooted")
    host.sim.vm_reboot("pfsense")
    return time.time()


def _toolstack_restart(host):
    """HEALTHY, then xapi restarts for 2 s: sessions die, nothing must be repeated."""
    _cold_boot(host)
    host.wait_state("HEALTHY")
    host.mark("toolstack restart (xapi down 2 s)")
    host.sim.toolstack_restart(2.0)
    host.wait(lambda st: not st.get("xapi", {}).get("connected"), "the agent to notice XAPI is gone")
    host.wait(lambda st: st.get("xapi", {}).get("connected"), "the agent to reconnect to XAPI")


def _late_storage(host):
    """The NFS server answers only a few seconds after the firewall is up."""
    host.topology.ip("lan", "route", "del", "default")  # its replies cannot reach dom0
    host.mark("storage server unreachable")
    _cold_boot(host)
    host.wait_state("SR_PROBING")
    time.sleep(3.0)  # the rehearsal's story, not synchronisation: storage is late by 3 s
    host.topology.ip("lan", "route", "add", "default", "via", "198.51.100.1")
    host.mark("storage server answers")


def _maintenance_lockout(host):
    """The host came up disabled and the firewall is halted: nobody can reach dom0."""
    host.sim.host_disable()
    host.mark("host disabled (maintenance), firewall halted: locked out")
    host.start_agent()


def _flush(host):
    """HEALTHY, then a networkd-style flush of both bridges and the default routes."""
    _cold_boot(host)
    host.wait_state("HEALTHY")
    bridge = host.sim.state()["networks"]["sspn"]["bridge"]
    host.mark("flush: addresses of xenbr0 and %s, default routes" % bridge)
    ip = host.topology.ip
    ip("dom0", "addr", "flush", "dev", "xenbr0")
    ip("dom0", "addr", "flush", "dev", bridge)
    ip("dom0", "route", "flush", "default", check=False)
    ip("dom0", "-6", "route", "flush", "default", check=False)
    return time.time()


DRIVERS = {"cold-boot": _cold_boot, "firewall-reboot": _firewall_reboot,
           "toolstack-restart": _toolstack_restart, "late-storage": _late_storage,
           "maintenance-lockout": _maintenance_lockout, "flush": _flush}


def timeline(host):
    """(elapsed seconds, text) lines: the lab's actions and the agent's transitions and effects."""
    lines = [(t - host.started, "[lab] " + what) for t, what in host.marks]
    for r in host.trace():
        at = r.get("time", host.started) - host.started
        if r.get("type") == "effect":
            lines.append((at, "        %-11s %s: %s" % (r.get("state", ""), r["what"], r["result"])))
            continue
        lines.append((at, "%-11s -> %-11s on %s (cause: %s)" % (r["from"], r["to"], r["trigger"], r["cause"])))
        for e in r.get("effects", []):
            lines.append((at, "        %-11s %s: %s" % (r["to"], e["what"], e["result"])))
    return sorted(lines, key=lambda x: x[0])


def summarise(host, scenario, ok, error=""):
    """What an operator wants to know after a rehearsal."""
    records = host.trace()
    healthy = [r["time"] for r in records if r.get("to") == "HEALTHY"]
    bound = [r["time"] for r in records if r.get("from") == "BINDING" and r.get("to") == "ROUTED"]
    waiting = [r["time"] for r in records if r.get("to") == "BINDING"]
    effects = [e for r in records for e in ([r] if r.get("type") == "effect" else r.get("effects", []))]
    return {
        "scenario": scenario,
        "ok": ok,
        "error": error,
        "time_to_healthy_s": round(healthy[0] - host.started, 3) if healthy else None,
        "bind_delay_ms": round(1000 * (bound[0] - waiting[0]), 1) if bound and waiting else None,
        "srs_plugged": sum(1 for e in effects if e["what"].startswith("PBD.plug") and e["result"] == "ok"),
        "vms_started": [e["what"].split(" ", 1)[1] for e in effects
                        if e["what"].startswith("VM.start") and e["result"] == "ok"],
        "ping_through_firewall": host.ping("198.51.100.10") if host.topology else False,
        "transitions": sum(1 for r in records if r.get("type") == "transition"),
        "effects_after_last_lab_action": sum(
            1 for e in effects if e.get("time", _record_time(records, e)) > max(t for t, _ in host.marks)
            and not e["what"].startswith("probe")),
    }


def _record_time(records, effect):
    for r in records:
        if effect in r.get("effects", []):
            return r["time"]
    return 0


def rehearse(scenario, as_json=False, out=sys.stdout):
    """Run one scenario on a fresh simulated host; returns the exit status."""
    from agent.lab.harness import Host
    with Host() as host:
        ok, error = True, ""
        try:
            DRIVERS[scenario](host)
            after = None if scenario == "toolstack-restart" else max(t for t, _ in host.marks)
            host.wait_state("HEALTHY", deadline=60.0, after=after)
        except RuntimeError as e:
            ok, error = False, str(e)
        summary = summarise(host, scenario, ok and host.ping("198.51.100.10"), error)
        lines = timeline(host)
        code = host.stop_agent()
        summary["agent_exit"] = code
        if as_json:
            json.dump({"timeline": [{"t": round(t, 3), "text": x} for t, x in lines],
                       "summary": summary}, out, indent=1)
            out.write("\n")
        else:
            out.write("sspn-agent lab: %s (simulated XAPI, namespaces %s)\n\n"
                      % (scenario, ", ".join(host.topology.namespaces)))
            for t, text in lines:
                out.write("%8.3fs  %s\n" % (t, text))
            out.write("\nsummary: %s\n" % json.dumps(summary, sort_keys=True))
        return 0 if summary["ok"] else 1


def main(argv=None):
    """`agent lab [--scenario NAME] [--json]`."""
    parser = argparse.ArgumentParser(prog="agent lab", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="cold-boot")
    parser.add_argument("--json", action="store_true", help="timeline and summary as one JSON document")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("ip"):
        sys.stderr.write("agent lab needs root and iproute2 for its network namespaces "
                         "(run it as root, e.g. sudo make lab)\n")
        return 77
    return rehearse(args.scenario, args.json)
