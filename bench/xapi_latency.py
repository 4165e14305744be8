"""Bench: a VM power change in XAPI -> the agent's machine sees it (VmChanged on its queue).

Method. The XAPI simulator on a Unix socket (default scenario) and the real XapiAdapter on the
PyPI XenAPI client, in this process, posting into a queue.Queue like the agent's. For N runs,
alternately stop and start the uplink VM "pfsense" through the simulator's control API and
take time.monotonic() right before the call and when the matching VmChanged arrives on the
queue. The simulator batches event.from replies by 5 ms (xapi: 50 ms, docs/xapi-behaviour.md §3).
Then the same with 1,000 unrelated VMs churning in a background thread.

    python bench/xapi_latency.py [--runs 200] [--json]
"""

import argparse
import json
import os
import queue
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agent import config as cfgmod  # noqa: E402
from agent.decision import events as ev  # noqa: E402
from agent.adapters.xapi import XapiAdapter  # noqa: E402
from stats import summary  # noqa: E402
from agent.lab.simhost import private_dir  # noqa: E402
from agent.lab.xapi import Simulator  # noqa: E402

CONFIG = """
[xapi]
socket = "%s"
[[binding]]
network = "sspn"
vms = ["pfsense"]
addresses = ["192.0.2.2/24"]
[timing]
event_timeout = 5.0
"""




def measure(sim, events, runs):
    delays = []
    for i in range(runs):
        want = "Running" if i % 2 == 0 else "Halted"  # pfsense starts Halted
        start = time.monotonic()
        (sim.vm_stop if want == "Halted" else sim.vm_start)("pfsense")
        while True:
            event = events.get(timeout=10)
            if isinstance(event, ev.VmChanged) and event.vm.power_state == want:
                delays.append(time.monotonic() - start)
                break
    return summary(delays)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    directory = private_dir("sspnxapi")
    sim = Simulator(os.path.join(directory, "xapi"), event_from_delay=0.005).start()
    events = queue.Queue()
    adapter = XapiAdapter(cfgmod.parse_config(CONFIG % sim.socket_path), local_db_path=sim.local_db_path)
    adapter.start(events.put)
    while not isinstance(events.get(timeout=10), ev.XapiConnected):
        pass
    result = {"python": sys.version.split()[0], "quiet": measure(sim, events, args.runs)}
    sim.add_vms(1000)
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            sim.churn(100)
    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    result["with_1000_vms_churning"] = measure(sim, events, args.runs)
    stop.set()
    thread.join(5)
    adapter.stop()
    sim.stop()
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print("VM power change -> VmChanged on the agent's queue (python %s)" % result["python"])
        for key in ("quiet", "with_1000_vms_churning"):
            print("  %-24s %s" % (key, json.dumps(result[key], sort_keys=True)))


if __name__ == "__main__":
    main()
