"""What the hostile-input sinks cost: text.clean_tree of a full status snapshot, a trace
record append, and one log line through the journal formatter (docs/hostile.md).

Usage: python bench/hostile_sinks.py [--rounds N]. Prints the median and p95 per operation
in microseconds; record `uptime` next to the numbers (the machine may be shared).
"""

import argparse
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.report import logsetup, status, text, trace  # noqa: E402
from agent.adapters.files import FileReport  # noqa: E402


def _snapshot():
    effect = {"what": "add 192.0.2.2/24 on xapi0", "result": "added", "ok": True}
    record = {"time": 1.7e9, "from": "BINDING", "to": "ROUTED", "trigger": "addresses_bound",
              "cause": "kernel_changed: link_appeared ifname=xapi0", "effects": [effect] * 3,
              "reasons": []}
    return {"version": "1", "pid": 1, "boot_id": "b" * 36, "state": "HEALTHY",
            "meaning": "desired state holds", "since": 1.7e9, "reasons": {}, "blockers": [],
            "xapi": {"connected": True, "error": ""}, "bridges": ["xapi0"],
            "addresses": [{"ifname": "xapi0", "address": "192.0.2.2/24", "present": True}] * 4,
            "routes": [{"family": 4, "gateway": "192.0.2.1", "ifname": "xapi0",
                        "present": True}] * 2,
            "srs": [{"uuid": "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01", "state": "plugged",
                     "attempts": 0, "note": ""}], "counts": {"HEALTHY": 1},
            "transitions": [record] * 50}


def _time(fn, rounds):
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1e6)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.95)]


def main(argv=None):
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args(argv)
    snapshot = _snapshot()
    work = tempfile.mkdtemp()
    try:
        writer = trace.TraceFile(os.path.join(work, "trace.jsonl"), 1 << 30)
        record = snapshot["transitions"][0]
        snapshot["transitions"] = [dict(record) for _ in range(50)]  # 50 distinct records
        report = FileReport(os.path.join(work, "status2.json"), os.path.join(work, "t2.jsonl"),
                            1 << 30, logging.getLogger("bench-hostile-report"))
        handler = logging.StreamHandler(io.StringIO())
        handler.setFormatter(logsetup.JournalFormatter("%(message)s"))
        logger = logging.getLogger("bench-hostile")
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
        rows = [
            ("clean_tree(status, 50 transitions)", lambda: text.clean_tree(snapshot)),
            ("json.dumps(status) alone", lambda: json.dumps(snapshot, indent=1, sort_keys=True)),
            ("status.write_atomic (cleaned)", lambda: status.write_atomic(
                os.path.join(work, "status.json"), snapshot)),
            ("FileReport.status (memo of transitions)", lambda: report.status(
                dict(snapshot, counts={"n": time.perf_counter()}))),
            ("trace append (cleaned)", lambda: writer.append(record)),
            ("journal line (cleaned)", lambda: logger.info("%s -> %s on %s (cause: %s)", "A", "B",
                                                           "t", record["cause"])),
        ]
        print("python %s, %d rounds, load %s" % (sys.version.split()[0], args.rounds,
                                                 " ".join(open("/proc/loadavg").read().split()[:3])))
        for name, fn in rows:
            median, p95 = _time(fn, args.rounds)
            print("%-40s median %8.1f us   p95 %8.1f us" % (name, median, p95))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
