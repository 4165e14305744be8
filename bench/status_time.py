"""Bench: `agent status` wall time as a ratio to a bare interpreter start, in the same run.

Method: for each interpreter given (default: this one), alternate N runs of `PY -c pass` and
N runs of `agent status`, interleaved to share machine noise; report the minimum, median and
p90 of each and the ratios of minimums and of medians. Target (docs/performance.md): <= 2.5x.

`agent status` runs as on dom0 with ``--pyz`` (``PY sspn-agent.pyz status``, the bundle) and
``--config`` (a copy of agent.toml.example whose [files] status names the status file, passed
as --config: the path dom0 takes when /etc/sspn-agent/agent.toml exists); else from the venv
with --file. The status file is written by a live process, so the full render path runs.

    python bench/status_time.py [--runs 40] [--pyz dist/sspn-agent.pyz] [--config] [PYTHON ...]
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


def bench(python, runs, status_file, pyz=None, config=None):
    """``python`` is an interpreter; with ``pyz`` it runs the bundle, else its venv's installed
    `agent` script when present (that is what operators run), else `python -m agent`."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    if pyz:
        env.pop("PYTHONPATH")
        command = [python, pyz]
    else:
        script = os.path.join(os.path.dirname(python), "agent")
        command = [script] if os.path.exists(script) else [python, "-m", "agent"]
    where = ["--config", config] if config else ["--file", status_file]
    bare, status = [], []
    for _ in range(runs):
        bare.append(timed([python, "-c", "pass"], env))
        status.append(timed(command + ["status"] + where, env))
    version = subprocess.check_output([python, "-c", "import sys; print(sys.version.split()[0])"]).decode().strip()
    return {"python": version, "runs": runs, "command": os.path.basename(command[-1]),
            "args": " ".join(["status"] + where[:1]),
            "bare_ms": {"min": 1000 * min(bare), "median": 1000 * statistics.median(bare), "p90": 1000 * p90(bare)},
            "status_ms": {"min": 1000 * min(status), "median": 1000 * statistics.median(status),
                          "p90": 1000 * p90(status)},
            "ratio_min": min(status) / min(bare),
            "ratio": statistics.median(status) / statistics.median(bare)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--pyz", help="run this bundle (as on dom0) instead of the venv's agent")
    parser.add_argument("--config", action="store_true",
                        help="pass a config naming the status file (as with /etc/sspn-agent/agent.toml)")
    parser.add_argument("pythons", nargs="*", default=[sys.executable])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "status.json")
        transitions = [{"time": time.time(), "from": "ROUTED", "to": "HEALTHY", "trigger": "gateway_answered",
                        "cause": "probe_done", "effects": []}] * 50
        with open(path, "w") as f:
            json.dump({"state": "HEALTHY", "since": time.time(), "pid": os.getpid(), "meaning": "x",
                       "addresses": [], "routes": [], "srs": [], "transitions": transitions}, f)
        config = None
        if args.config:
            config = os.path.join(tmp, "agent.toml")
            with open(os.path.join(ROOT, "agent.toml.example")) as f:
                text = f.read().replace('status = "/run/sspn-agent/status.json"', 'status = "%s"' % path)
            with open(config, "w") as f:
                f.write(text)
        results = [bench(py, args.runs, path, args.pyz, config) for py in args.pythons]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print("agent status vs bare interpreter start; %d interleaved runs each; min / median (p90) ms; load %s"
          % (args.runs, " ".join("%.2f" % x for x in os.getloadavg())))
    for r in results:
        print("  python %-7s %s %s: bare %5.1f / %5.1f (%5.1f)   agent %5.1f / %5.1f (%5.1f)   "
              "ratio %.2fx min, %.2fx median"
              % (r["python"], r["command"], r["args"], r["bare_ms"]["min"], r["bare_ms"]["median"],
                 r["bare_ms"]["p90"], r["status_ms"]["min"], r["status_ms"]["median"], r["status_ms"]["p90"],
                 r["ratio_min"], r["ratio"]))


if __name__ == "__main__":
    main()
