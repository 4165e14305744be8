"""Bench: the agent's footprint -- idle in HEALTHY, and while 1,000 unrelated VMs churn.

Method. The lab's simulated host (agent.lab.harness.Host: XAPI simulator, namespaces, the
real `agent run` process in dom0, started with this interpreter, default timings: event.from
long-polls 30 s, backoff cap 60 s). Once HEALTHY:
  idle:  sample the agent process's /proc/PID/stat (utime+stime), /proc/PID/status
         (voluntary + involuntary context switches: every wake-up is one) and VmRSS at the
         start and the end of --idle seconds; report CPU seconds per hour, wake-ups per
         minute and RSS.
  churn: add 1,000 VMs to the simulator, then for --churn seconds change their power state
         and other_config as fast as the simulator allows; report the agent's CPU over that
         window, against the same window idle (the agent subscribes to its own objects only,
         so its CPU must not grow with unrelated events).
  waiting (with --waiting S): the cost of waiting for
         - a firewall that never answers: its VM runs, its end of the VIF is up, its
           addresses never come (agent/lab/netns.py fw_answer_delay);
         - storage that never answers: its link is down and its PBD detached;
         - storage whose host is up but refuses its service's ports (the NAS's nfsd never
           starts): the refused rounds of agent/decision/schedule.py, REFUSED_STEP apart for
           REFUSED_WINDOW, then probe_timeout apart; each part reported on its own;
         - XAPI away: a toolstack restart that lasts longer than the windows;
         each in two windows: the first FIRST seconds from the moment the wait begins (the
         fast phases right after a change: once per change), then S seconds of what a long
         wait costs; both reported per hour as if the wait went on at that rate.

    python bench/footprint.py [--idle 600] [--churn 60] [--waiting 0] [--json]
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent.decision.schedule import REFUSED_WINDOW  # noqa: E402

FIRST = 60.0   # seconds: the fast phases after a change (probe rounds, XAPI's fast window)
from agent.lab.harness import Host  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def sample(pid):
    """(cpu seconds, context switches, rss MiB) of a process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / float(TICKS)
    switches, rss = 0, 0.0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
            elif line.startswith("VmRSS"):
                rss = int(line.split()[1]) / 1024.0
    return cpu, switches, rss


def thread_switches(pid):
    """Context switches summed over every thread of the process (each thread wakes on its own)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def window(pid, seconds, during=None):
    """CPU seconds, wake-ups and RSS of ``pid`` over ``seconds`` (running ``during()`` meanwhile)."""
    cpu0, _, _ = sample(pid)
    sw0, t0 = thread_switches(pid), time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        if during:
            during()
        else:
            time.sleep(min(1.0, end - time.monotonic()))
    cpu1, _, rss = sample(pid)
    elapsed = time.monotonic() - t0
    return {"seconds": round(elapsed, 1), "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_s_per_hour": round((cpu1 - cpu0) * 3600.0 / elapsed, 2),
            "wakeups_per_min": round((thread_switches(pid) - sw0) * 60.0 / elapsed, 1),
            "rss_mib": round(rss, 1)}


def waiting(host, pid, seconds):
    """The agent's cost while it waits for a firewall, storage, XAPI that do not answer."""
    out = {}
    host.sim.vm_stop("pfsense")
    host.wait_state("WAITING_VM")
    host.topology.fw_answer_delay = 24 * 3600.0   # its addresses never come in this window
    host.sim.vm_start("pfsense")
    out["waiting_firewall_first"] = window(pid, FIRST)
    out["waiting_firewall"] = window(pid, seconds)
    out["waiting_firewall"]["state"] = host.status().get("state")
    host.sim.vm_stop("pfsense")
    host.wait_state("WAITING_VM")
    host.topology.fw_answer_delay = 0.0
    host.sim.vm_start("pfsense")
    host.wait_state("HEALTHY")
    host.topology.storage_away()
    host.sim.pbd_unplug("5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01")
    out["waiting_storage_first"] = window(pid, FIRST)
    out["waiting_storage"] = window(pid, seconds)
    out["waiting_storage"]["state"] = host.status().get("state")
    host.storage.stop()                         # nfsd never starts; the NAS answers ping
    host.topology.storage_back()
    out["waiting_service_window"] = window(pid, REFUSED_WINDOW)
    out["waiting_service_after"] = window(pid, seconds)
    out["waiting_service_after"]["state"] = host.status().get("state")
    host.storage.start()
    host.sim.toolstack_restart(FIRST + seconds + 30.0)
    out["waiting_xapi_first"] = window(pid, FIRST)
    out["waiting_xapi"] = window(pid, seconds)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=600.0)
    parser.add_argument("--churn", type=float, default=60.0)
    parser.add_argument("--waiting", type=float, default=0.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {"python": sys.version.split()[0]}
    with Host(fast=False) as host:  # the default timings, as on a host
        agent = host.start_agent()
        host.wait_state("WAITING_VM")
        host.sim.vm_start("pfsense")
        host.wait_state("HEALTHY")
        time.sleep(2.0)  # let the start-up's XAPI publish and status writes settle before sampling
        result["idle"] = window(agent.pid, args.idle)
        result["quiet_reference"] = window(agent.pid, args.churn)
        host.sim.add_vms(1000)
        changes = [0]

        def churn():
            host.sim.churn(200)
            changes[0] += 200
        result["churn_1000_vms"] = window(agent.pid, args.churn, churn)
        result["churn_1000_vms"]["changes"] = changes[0]
        result["state_after"] = host.status().get("state")
        if args.waiting > 0:
            result.update(waiting(host, agent.pid, args.waiting))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print("footprint of `agent run` (python %s)" % result["python"])
        for key in ("idle", "quiet_reference", "churn_1000_vms", "waiting_firewall_first",
                    "waiting_firewall", "waiting_storage_first", "waiting_storage",
                    "waiting_service_window", "waiting_service_after", "waiting_xapi_first",
                    "waiting_xapi"):
            if key in result:
                print("  %-16s %s" % (key, json.dumps(result[key], sort_keys=True)))


if __name__ == "__main__":
    main()
