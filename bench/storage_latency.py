"""Bench: the NAS's NFS service comes up -> its PBD plugged, the agent's TCP probe beside ICMP.

Method. The lab's simulated host (agent.lab.harness.Host): namespaces, the XAPI simulator
whose PBD.plug asks what SM asks (a TCP connect from dom0 to 2049 and 111,
agent/lab/xapi/sm.py), real TCP listeners for those ports in the storage namespace
(agent/lab/storage.py), the real `agent run` with probe_interval 0.5 s and probe_timeout 0.3 s.
For each run the NAS's service stops (its network keeps answering ping), the PBD is unplugged,
and after a random 1-3 s the listeners start again; T is when they listen. Measured from T:
  requested: until the agent's PBD.plug (or Async.PBD.plug) reaches the simulator;
  attached:  until the simulator's PBD is attached (polled every 5 ms from sim.state()).
Twice, each with its own host and agent: ``[[sr]] probe_mode = "tcp"`` (the default) and
``"icmp"`` (ping answers all along, so the agent plugs while the service is down, SM refuses
with SR_BACKEND_FAILURE_108, and the agent backs off). Also counted: plugs sent before T.

    python bench/storage_latency.py [--runs 20] [--json]
"""

import argparse
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stats import summary  # noqa: E402
from agent.lab.harness import Host  # noqa: E402

SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
PLUGS = ("PBD.plug", "Async.PBD.plug")


def attached(host):
    return host.sim.state()["srs"][SR]["attached"]


def note_plug_calls(host):
    """Record when each PBD.plug call reaches the simulator (monotonic times)."""
    calls, dispatch = [], host.sim.dispatch

    def noting(method, params, ctx=None):
        if method in PLUGS:
            calls.append(time.monotonic())
        return dispatch(method, params, ctx)
    host.sim.dispatch = noting  # looked up per request by Simulator._handle
    return calls


def with_probe_mode(host, mode):
    """Make the run's agent.toml carry ``[[sr]] probe_mode = mode``."""
    write = host.write_config

    def write_config():
        path = write()
        with open(path) as f:
            text = f.read()
        needle = 'probe_mode = "tcp"\n'  # the [[sr]]'s, as the lab writes it
        if text.count(needle) != 1:
            raise SystemExit("storage_latency: no single %r in %s" % (needle.strip(), path))
        with open(path, "w") as f:
            f.write(text.replace(needle, 'probe_mode = "%s"\n' % mode))
        return path
    host.write_config = write_config


def run_mode(mode, runs, rng):
    """One host and agent with ``mode``: (requested delays, attached delays, plugs before T)."""
    requested, done, early = [], [], 0
    with Host() as host:
        with_probe_mode(host, mode)
        plug_calls = note_plug_calls(host)
        host.start_agent()
        host.wait_state("WAITING_VM")
        host.sim.vm_start("pfsense")
        host.wait_state("HEALTHY")
        for index in range(runs):
            host.storage.stop()
            host.sim.pbd_unplug(SR)
            down_at = time.monotonic()
            time.sleep(rng.uniform(1.0, 3.0))  # the service is down a random while (the story)
            host.storage.start()
            start = time.monotonic()
            early += len([t for t in plug_calls if down_at <= t < start])
            deadline = start + 30.0
            while not attached(host) and time.monotonic() < deadline:
                time.sleep(0.005)
            if not attached(host):
                status = host.status()
                raise SystemExit("%s, run %d: the PBD was not plugged within 30 s; agent %s, %s; "
                                 "log %s" % (mode, index, status.get("state"),
                                             status.get("blockers"), host.dir))
            done.append(time.monotonic() - start)
            requested.append(min(t for t in plug_calls if t >= start) - start)
    return requested, done, early


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {"probe_interval_s": 0.5, "probe_timeout_s": 0.3,
              "load": open("/proc/loadavg").read().split()[:3]}
    for mode in ("tcp", "icmp"):
        requested, done, early = run_mode(mode, args.runs, random.Random(1))
        result[mode] = {"plug_requested": summary(requested, 1), "attached": summary(done, 1),
                        "plugs_while_service_down": early}
    result["load_after"] = open("/proc/loadavg").read().split()[:3]
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print("NFS service up -> PBD plug requested / attached (ms); load %s -> %s"
              % (" ".join(result["load"]), " ".join(result["load_after"])))
        for mode in ("tcp", "icmp"):
            print("  %-5s %s" % (mode, json.dumps(result[mode], sort_keys=True)))


if __name__ == "__main__":
    main()
