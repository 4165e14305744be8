"""``agent lab xapi``: run the simulator in the foreground until SIGINT or SIGTERM."""

import argparse
import signal
import sys
import threading

from .scenario import ScenarioError
from .simulator import XAPI_TIMINGS, Simulator


def serve_forever(socket_path, port=None, scenario_path=None, out=None, settings=None):
    """Serve until SIGINT/SIGTERM; prints one line naming the socket and the port.

    Returns the exit status: 0 after a signal, 78 (EX_CONFIG) for a bad socket path or
    scenario, 71 (EX_OSERR) when it cannot listen; the reason goes to stderr.
    """
    out = out or sys.stdout
    try:
        sim = Simulator(socket_path, port=port, scenario=scenario_path,
                        settings=settings).start()
    except (ScenarioError, ValueError) as exc:
        sys.stderr.write("agent lab xapi: %s\n" % exc)
        return 78
    except OSError as exc:
        sys.stderr.write("agent lab xapi: cannot listen on %s: %s\n" % (socket_path, exc))
        return 71
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
    previous = dict((sig, signal.signal(sig, on_signal)) for sig in (signal.SIGINT, signal.SIGTERM))
    try:
        # One parseable line: the lab and tests read socket= and port= from it.
        out.write("xapi simulator listening socket=%s port=%s scenario=%s\n" % (
            sim.socket_path, "none" if sim.port is None else sim.port, sim.scenario.source))
        out.flush()
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv=None):
    """Parse ``--socket PATH [--port N] [--scenario FILE] [--xapi-timings]`` and serve;
    returns an exit status."""
    parser = argparse.ArgumentParser(
        prog="agent lab xapi",
        description="Run the XAPI simulator (XML-RPC on a Unix socket, optionally TCP).")
    parser.add_argument("--socket", required=True,
                        help="Unix socket path; must not contain '_' (XenAPI maps '_' to '/')")
    parser.add_argument("--port", type=int, default=None,
                        help="also listen on 127.0.0.1:PORT (0 picks a free port)")
    parser.add_argument("--scenario", default=None,
                        help="scenario TOML file (default: agent/lab/hosts/default.toml)")
    parser.add_argument("--xapi-timings", action="store_true",
                        help="a real host's durations (5 s connect timeout, 90 s mount stall, "
                             "300 s init wait, SR.stat every 120 s) instead of instant ones")
    args = parser.parse_args(argv)
    return serve_forever(args.socket, port=args.port, scenario_path=args.scenario,
                         settings=XAPI_TIMINGS if args.xapi_timings else None)


if __name__ == "__main__":
    sys.exit(main())
