"""Bench: storage starts answering -> its PBD plugged, the agent against a serial 5 s prober.

Method. The lab's simulated host (agent.lab.harness.Host: XAPI simulator whose PBD.plug
succeeds only while a real ping from dom0 reaches the NFS server, namespaces, the real
`agent run`, probe_interval 0.5 s). For each run: the storage server loses its way back
(its default route is deleted), the PBD is unplugged, and after a random 1-3 s the route
returns at time T. Measured from T:
  agent:  until the agent's PBD.plug reaches the simulator ("plug requested": the agent's
          part), and until the simulator's PBD is attached (polled every 5 ms from
          sim.state(); includes the simulator's own check that storage answers, one ICMP echo
          from dom0 by a child interpreter, as PBD.plug's mount would be on a host);
  serial: a thread doing what vif-ip-binder did (one ICMP echo with a 5 s timeout, again
          and again, from dom0) until its first answer after T -- when it would plug.
Both run in the same window on the same target.

    python bench/storage_latency.py [--runs 20] [--json]
"""

import argparse
import json
import os
import random
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stats import summary  # noqa: E402
from agent.lab.harness import NFS_SERVER, Host  # noqa: E402

SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"






def serial_prober(host, restored, answered, stop):
    """vif-ip-binder's loop: ping with a 5 s timeout until a reply; note the first after T."""
    while not stop.is_set():
        ok = host.topology.ping("dom0", NFS_SERVER, timeout=5.0)
        if ok and restored[0] is not None and answered[0] is None:
            answered[0] = time.monotonic()


def attached(host):
    return host.sim.state()["srs"][SR]["attached"]


def note_plug_calls(host):
    """Record when each PBD.plug call reaches the simulator (monotonic times)."""
    calls, dispatch = [], host.sim.dispatch

    def noting(method, params, ctx=None):
        if method == "PBD.plug":
            calls.append(time.monotonic())
        return dispatch(method, params, ctx)
    host.sim.dispatch = noting  # looked up per request by Simulator._handle
    return calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(1)
    agent_delays, requested_delays, serial_delays = [], [], []
    with Host() as host:
        plug_calls = note_plug_calls(host)
        host.start_agent()
        host.wait_state("WAITING_VM")
        host.sim.vm_start("pfsense")
        host.wait_state("HEALTHY")
        for _ in range(args.runs):
            host.topology.ip("lan", "route", "del", "default")
            host.sim.pbd_unplug(SR)
            restored, answered, stop = [None], [None], threading.Event()
            prober = threading.Thread(target=serial_prober, args=(host, restored, answered, stop))
            prober.start()
            time.sleep(rng.uniform(1.0, 3.0))  # storage is down for a random while (the bench's story)
            host.topology.ip("lan", "route", "add", "default", "via", "198.51.100.1")
            restored[0] = start = time.monotonic()
            while not attached(host):
                time.sleep(0.005)
            agent_delays.append(time.monotonic() - start)
            requested_delays.append(min(t for t in plug_calls if t >= start) - start)
            while answered[0] is None and time.monotonic() - start < 12:
                time.sleep(0.01)
            stop.set()
            prober.join(10)
            if answered[0] is not None:
                serial_delays.append(answered[0] - start)
    result = {"agent": summary(agent_delays, 1), "agent_plug_requested": summary(requested_delays, 1),
              "serial_5s_prober": summary(serial_delays, 1),
              "probe_interval_s": 0.5}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print("storage answers -> PBD plugged (agent) / first answer (serial 5 s prober)")
        for key in ("agent", "agent_plug_requested", "serial_5s_prober"):
            print("  %-18s %s" % (key, json.dumps(result[key], sort_keys=True)))


if __name__ == "__main__":
    main()
