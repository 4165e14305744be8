"""Bench: journal and trace volume per day while storage is down for a week (simulated).

Method: the real Agent on the in-memory world (tests/memworld.py) with a manual clock and the
timing of agent.toml.example (probe_interval 5 s, retry_budget 5, backoff_cap 60 s); the SR's
server never answers. The clock jumps from deadline to deadline, so a simulated week takes
seconds. Counted per simulated day: journal lines (records of the agent's logger at INFO and
above: what journald gets), and trace records and bytes (each record as FileReport writes it:
one JSON line). ``--unsummarised`` replays the same week with every repeat logged and traced,
as before agent/report/repeats.py, for comparison.

    python bench/outage_volume.py [--days 7] [--unsummarised]
"""

import argparse
import json
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from agent import config as cfgmod  # noqa: E402
from memworld import MemWorld  # noqa: E402

DAY = 86400.0


class Counter(logging.Handler):
    """Counts log records per simulated day."""

    def __init__(self, clock):
        logging.Handler.__init__(self, logging.INFO)
        self.clock, self.days = clock, {}

    def emit(self, record):
        day = int(self.clock.now // DAY)
        self.days[day] = self.days.get(day, 0) + 1


def example_config():
    """agent.toml.example with the in-memory world's management bridge."""
    with open(os.path.join(ROOT, "agent.toml.example")) as handle:
        text = handle.read().replace('bridge = ""', 'bridge = "xenbr0"')
    return cfgmod.parse_config(text)


def simulate(days, summarised=True):
    """{"journal": [lines per day], "trace_records": [...], "trace_bytes": [...], "state": ...}."""
    world = MemWorld(config=example_config(), storage_up=False, start=False)
    if not summarised:
        world.agent.repeats.note = lambda entry, now: (entry, None if entry.get("ok", True) else (
            logging.WARNING, "%s: %s" % (entry["what"], entry["result"])))
    counter = Counter(world.clock)
    logger = logging.getLogger("sspn-agent")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        world.boot()
        start = world.clock.now
        world.settle(max_time=days * DAY, max_rounds=10 ** 7)
    finally:
        logger.removeHandler(counter)
        logger.propagate = True
    records, size = [0] * days, [0] * days
    for kind, items in (("transition", world.report.transitions), ("effect", world.report.effects)):
        for record in items:
            day = min(days - 1, int((record.get("time", start) - world.clock.wall() + world.clock.now
                                     - start) // DAY))
            records[day] += 1
            size[day] += len(json.dumps(dict(record, type=kind), sort_keys=True)) + 1
    journal = [counter.days.get(d, 0) for d in range(days)]
    return {"journal": journal, "trace_records": records, "trace_bytes": size,
            "state": world.agent.state, "transitions": len(world.report.transitions)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7, help="simulated days (default 7)")
    parser.add_argument("--unsummarised", action="store_true",
                        help="log and trace every repeat (the behaviour before agent/report/repeats.py)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = simulate(args.days, summarised=not args.unsummarised)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print("storage down for %d simulated days (%s): final state %s, %d transitions"
          % (args.days, "every repeat" if args.unsummarised else "repeats summarised",
             result["state"], result["transitions"]))
    for day in range(args.days):
        print("  day %d: journal %6d lines   trace %6d records %9d bytes"
              % (day + 1, result["journal"][day], result["trace_records"][day],
                 result["trace_bytes"][day]))


if __name__ == "__main__":
    main()
