"""Bench: `agent status` wall time as a ratio to a bare interpreter start, in the same run.

Method: for each interpreter given (default: this one), alternate N runs of
`PY -c pass` and N runs of `PY -m agent status --file F` (F: a status file written by a live
process, so the full render path runs), interleaved to share machine noise; report the
median and p90 of each and the ratio of medians. Target (docs/performance.md, issue 7): <= 2.5x.

    python bench/status_time.py [--runs 40] [PYTHON ...]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(argv, env):
    start = time.perf_counter()
    subprocess.call(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def p90(values):
    ordered = sorted(values)
    return ordered[int(0.9 * (len(ordered) - 1))]


def bench(python, runs, status_file):
    """``python`` is an interpreter; its venv's installed `agent` script is used when present
    (that is what operators run), else `python -m agent`."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    script = os.path.join(os.path.dirname(python), "agent")
    command = [script] if os.path.exists(script) else [python, "-m", "agent"]
    bare, status = [], []
    for _ in range(runs):
        bare.append(timed([python, "-c", "pass"], env))
        status.append(timed(command + ["status", "--file", status_file], env))
    version = subprocess.check_output([python, "-c", "import sys; print(sys.version.split()[0])"]).decode().strip()
    return {"python": version, "runs": runs, "command": os.path.basename(command[0]),
            "bare_ms": {"median": 1000 * statistics.median(bare), "p90": 1000 * p90(bare)},
            "status_ms": {"median": 1000 * statistics.median(status), "p90": 1000 * p90(status)},
            "ratio": statistics.median(status) / statistics.median(bare)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("pythons", nargs="*", default=[sys.executable])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "status.json")
        transitions = [{"time": time.time(), "from": "ROUTED", "to": "HEALTHY", "trigger": "gateway_answered",
                        "cause": "probe_done", "effects": []}] * 50
        with open(path, "w") as f:
            json.dump({"state": "HEALTHY", "since": time.time(), "pid": os.getpid(), "meaning": "x",
                       "addresses": [], "routes": [], "srs": [], "transitions": transitions}, f)
        results = [bench(py, args.runs, path) for py in args.pythons]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print("agent status vs bare interpreter start; %d interleaved runs each; medians (p90)" % args.runs)
    for r in results:
        print("  python %-7s (%s) bare %6.1f ms (%6.1f)   agent status %6.1f ms (%6.1f)   ratio %.2fx"
              % (r["python"], r["command"], r["bare_ms"]["median"], r["bare_ms"]["p90"], r["status_ms"]["median"],
                 r["status_ms"]["p90"], r["ratio"]))


if __name__ == "__main__":
    main()
