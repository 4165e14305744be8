"""The `agent` command: run, status, trace, diagram, config, lab, check.

Imports are deferred into each command so `agent status` loads only the status module and
answers in about the time the interpreter takes to start.
"""

import json
import os
import sys

from agent import __version__

DEFAULT_CONFIG = "/etc/sspn-agent/agent.toml"
EX_CONFIG = 78


def _status_paths(args):
    """(status path, trace path) from --file or the config's [files], else the defaults."""
    from agent import status, trace
    status_path, trace_path = status.DEFAULT_PATH, trace.DEFAULT_PATH
    if not getattr(args, "file", None) and getattr(args, "config", None) and \
            os.path.lexists(args.config):
        cfg = _load_config_or_exit(args.config)  # a FIFO or a huge file: one line, exit 78
        status_path, trace_path = cfg.files.status, cfg.files.trace
    return (getattr(args, "file", None) or status_path, getattr(args, "file", None) or trace_path)


def cmd_status(args):
    """Render the status file; exit 0 when the agent runs, 3 when it does not, 4 when it runs
    but its file is stale or unreadable (agent/status.py verdict)."""
    from agent import status
    path = args.file or _status_paths(args)[0]
    data, running, code, note = status.verdict(path)
    if args.json:
        from agent import text
        out = text.clean_tree(dict(data or {}))
        out["running"] = running
        out["stale"] = code == status.EXIT_STALE
        if data is None:
            out["error"] = note or ("no status file at %s: the agent is not running (or never "
                                    "ran)" % path)
        elif note:
            out["note"] = note
        print(json.dumps(out, indent=1, sort_keys=True))
    elif data is None and note:
        print("sspn-agent: %s" % note)
    else:
        print(status.render(data, running))
        if note:
            print("  %s" % note)
    return code


def cmd_trace(args):
    """Print the last N transitions and effects."""
    from agent import trace
    from agent import text
    path = args.file or _status_paths(args)[1]
    if args.n is not None and args.n < 1:
        print("agent: -n must be at least 1", file=sys.stderr)
        return 2
    records = trace.read(path, args.n)
    for record in records:
        print(json.dumps(text.clean_tree(record), sort_keys=True) if args.json
              else trace.render(record))
    if not records and not args.json:
        print("no trace at %s" % path, file=sys.stderr)
    return 0


def cmd_diagram(args):
    """Write docs/diagrams/ from the machine, or check that the committed files are current."""
    from agent import diagram
    if args.check:
        stale = diagram.stale(args.out)
        for path in stale:
            print("stale: %s (run `agent diagram` and commit the result)" % path, file=sys.stderr)
        return 1 if stale else 0
    for path in diagram.write(args.out):
        print(path)
    return 0


def _load_config_or_exit(path):
    from agent import config as cfgmod
    try:
        return cfgmod.load_config(path)
    except cfgmod.ConfigError as e:
        print("agent: %s" % e, file=sys.stderr)
        raise SystemExit(EX_CONFIG)


def cmd_config_validate(args):
    """Check a config file; exit 78 (EX_CONFIG) with one message when it is bad."""
    cfg = _load_config_or_exit(args.file)
    print("%s: valid (%d binding(s), %d SR(s), enable_host=%s)"
          % (args.file, len(cfg.bindings), len(cfg.srs), cfg.maintenance.enable_host))
    return 0


def cmd_config_import_legacy(args):
    """Print the agent.toml equivalent of a vif-ip-binder JSON file; notes go to stderr."""
    from agent import config as cfgmod
    from agent import legacy
    try:
        toml_text, notes = legacy.load_legacy(args.file)
    except cfgmod.ConfigError as e:
        print("agent: %s" % e, file=sys.stderr)
        return EX_CONFIG
    for note in notes:
        print("note: %s" % note, file=sys.stderr)
    sys.stdout.write(toml_text)
    return 0


def cmd_run(args):
    """The service."""
    from agent import logsetup
    logsetup.setup(verbose=args.verbose)
    cfg = _load_config_or_exit(args.config)
    from agent.service import Service
    return Service(cfg).run()


def cmd_lab_xapi(args):
    """Run the XAPI simulator alone, in the foreground."""
    from agent.lab.xapi import serve_forever
    return serve_forever(args.socket, port=args.port, scenario_path=args.scenario) or 0


# Commands whose modules parse their own arguments: `agent NAME ARGS...` -> module.function(ARGS)
PASSTHROUGH = {
    "check": ("agent.check", "main_check", "preflight against the live XAPI and kernel"),
    "bundle": ("agent.bundle", "main_bundle", "build the self-contained zipapp for an offline dom0"),
    "install": ("agent.install", "main_install", "lay out the program, /etc/sspn-agent and the unit"),
    "uninstall": ("agent.install", "main_uninstall", "remove the program and the unit, keep the config"),
}


def run_passthrough(name, rest):
    """Hand the rest of the command line to the command's own parser (its --help included)."""
    import importlib
    module, function, _help = PASSTHROUGH[name]
    return getattr(importlib.import_module(module), function)(rest)


def cmd_passthrough(args):
    """Reached only without extra arguments (main() dispatches these commands first)."""
    return run_passthrough(args.command, args.rest)


def build_parser():
    """The argument parser of `agent`."""
    import argparse
    p = argparse.ArgumentParser(prog="agent", description="sspn-agent: keeps a NIC-less XCP-ng dom0 "
                                "reachable through its firewall VM.")
    p.add_argument("--version", action="version", version="sspn-agent %s" % __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (the systemd service)")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="show the state (exit 0 running, 3 not running, 4 running "
                        "but the file is stale or unreadable)")
    st.add_argument("--json", action="store_true")
    st.add_argument("--file", help="status file (default: [files] status of --config)")
    st.add_argument("--config", default=DEFAULT_CONFIG)
    st.set_defaults(func=cmd_status)

    tr = sub.add_parser("trace", help="show the transition journal")
    tr.add_argument("--json", action="store_true")
    tr.add_argument("-n", type=int, default=20, help="last N records (default 20)")
    tr.add_argument("--file", help="trace file (default: [files] trace of --config)")
    tr.add_argument("--config", default=DEFAULT_CONFIG)
    tr.set_defaults(func=cmd_trace)

    dg = sub.add_parser("diagram", help="write docs/diagrams/ from the machine definition")
    dg.add_argument("--check", action="store_true", help="fail when the committed files are stale")
    dg.add_argument("--out", default="docs/diagrams")
    dg.set_defaults(func=cmd_diagram)

    cf = sub.add_parser("config", help="validate or import configuration")
    cfsub = cf.add_subparsers(dest="config_command", metavar="ACTION")
    va = cfsub.add_parser("validate", help="check a config file (exit 78 when bad)")
    va.add_argument("file")
    va.set_defaults(func=cmd_config_validate)
    il = cfsub.add_parser("import-legacy", help="print agent.toml for a vif-ip-binder JSON file")
    il.add_argument("file")
    il.set_defaults(func=cmd_config_import_legacy)

    for name, (_module, _function, text) in sorted(PASSTHROUGH.items()):
        cmd = sub.add_parser(name, help=text, add_help=False)
        cmd.add_argument("rest", nargs=argparse.REMAINDER)
        cmd.set_defaults(func=cmd_passthrough)

    lab = sub.add_parser("lab", help="rehearse on a simulated host (XAPI simulator, namespaces, the real "
                         "agent); `agent lab --help` lists the scenarios")
    labsub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    lx = labsub.add_parser("xapi", help="run the XAPI simulator alone until interrupted")
    lx.add_argument("--socket", required=True, help="Unix socket path (no '_' in it)")
    lx.add_argument("--port", type=int, help="also listen on 127.0.0.1:PORT")
    lx.add_argument("--scenario", help="scenario TOML (default: matches agent.toml.example)")
    lx.set_defaults(func=cmd_lab_xapi)
    return p


class _StatusArgs(object):
    json = False
    file = None
    config = DEFAULT_CONFIG


def _quick_status_args(argv):
    """Parse `status [--json] [--file F] [--config C]` without argparse, or return None.

    argparse (with re and enum) is most of `agent status`'s own start-up cost: measured at
    9 ms of 32 ms on Python 3.11 (bench/status_time.py). Anything unusual -- --help, a typo --
    returns None and takes the argparse path with its usual messages.
    """
    if not argv or argv[0] != "status":
        return None
    args, rest = _StatusArgs(), list(argv[1:])
    while rest:
        item = rest.pop(0)
        if item == "--json":
            args.json = True
        elif item in ("--file", "--config") and rest:
            setattr(args, item[2:], rest.pop(0))
        else:
            return None
    return args


def main(argv=None):
    """Entry point of the `agent` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    quick = _quick_status_args(argv)
    if quick is not None:
        return cmd_status(quick)
    if argv and argv[0] in PASSTHROUGH:
        return run_passthrough(argv[0], argv[1:])
    if argv[:1] == ["lab"] and argv[1:2] != ["xapi"]:
        from agent.lab import runner  # the rehearsal parses its own options (--config, --in-memory, ...)
        return runner.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
