"""Bench: what xapi's periodic SR mods cost the agent (CPU of `agent run` in HEALTHY).

Method. The lab's simulated host (agent.lab.harness.Host), the real `agent run`, HEALTHY with
its SR plugged. Window 1: the simulator's periodic SR.stat off. Then the simulator restarts
its toolstack with ``sr_stat_interval`` = INTERVAL (xapi: 120 s; here 1 s, 120x as often), the
agent reconnects, and after it is HEALTHY again window 2 runs as long as window 1. CPU is
utime+stime of the agent process from /proc/PID/stat (clock ticks), as CPU-s per hour.

    python bench/sr_stat_cost.py [--window 60] [--interval 1.0] [--json]
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent.lab.harness import Host  # noqa: E402

TICK = float(os.sysconf("SC_CLK_TCK"))


def cpu_seconds(pid):
    """utime + stime of ``pid`` in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def window(host, seconds):
    """CPU-s per hour of the agent over ``seconds`` of wall time."""
    pid = host.agent.pid
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)  # the measurement window itself, not a synchronisation
    used, took = cpu_seconds(pid) - before, time.monotonic() - start
    return round(used * 3600.0 / took, 3), round(used, 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {"window_s": args.window, "interval_s": args.interval,
              "load": open("/proc/loadavg").read().split()[:3]}
    with Host() as host:
        host.start_agent()
        host.wait_state("WAITING_VM")
        host.sim.vm_start("pfsense")
        host.wait_state("HEALTHY")
        time.sleep(2.0)  # let the start-up's autostart and publishing finish before measuring
        result["quiet_cpu_s_per_h"], result["quiet_cpu_s"] = window(host, args.window)
        host.sim.set_setting("sr_stat_interval", args.interval)
        host.sim.toolstack_restart(0.2)
        time.sleep(3.0)  # the restart and the agent's reconnect, before the next check
        host.wait(lambda st: st.get("xapi", {}).get("connected") and st.get("state") == "HEALTHY",
                  "reconnected and HEALTHY", 60.0)
        result["sr_mods_cpu_s_per_h"], result["sr_mods_cpu_s"] = window(host, args.window)
    result["load_after"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(result, indent=1) if args.json else
          "agent CPU-s/h quiet %(quiet_cpu_s_per_h)s, with an SR mod every %(interval_s)s s "
          "%(sr_mods_cpu_s_per_h)s (load %(load)s -> %(load_after)s)" % result)


if __name__ == "__main__":
    main()
