"""The `agent` command: run, status, trace, config, check, install, lab (+ diagram, bundle in a checkout).

Imports are deferred into each command so `agent status` loads only the status module and
answers in about the time the interpreter takes to start.
"""

import json
import os
import stat
import sys

from agent import __version__

DEFAULT_CONFIG = "/etc/sspn-agent/agent.toml"
EX_CONFIG = 78


SCAN_LIMIT = 65536  # bytes of the config the quick [files] scan reads; a longer file is loaded


def _plain_value(text):
    """The value of ``key = "plain"`` or ``key = 'literal'`` (optional comment), else None."""
    text = text.strip()
    quote = text[:1]
    if quote not in ('"', "'"):
        return None
    end = text.find(quote, 1)
    if end < 0:
        return None
    value, rest = text[1:end], text[end + 1:].strip()
    if (quote == '"' and "\\" in value) or (rest and not rest.startswith("#")):
        return None
    return value


def scan_files_table(path, limit=SCAN_LIMIT):
    """{key: value} of the plain string keys of a config's [files] table, or None when unsure.

    `agent status` needs one path from the config; loading it (tomli, attrs, every check) costs
    more than the interpreter's start on dom0. This reads at most ``limit`` bytes and answers only
    for the plain forms agent.toml.example uses (``[files]`` then ``status = "/abs/path"``);
    anything else -- escapes, dotted or quoted keys, an inline ``files = {...}``, a longer file
    -- returns None and the caller loads the config properly.
    """
    try:  # never blocking (a FIFO, a device): anything but a regular file is the loader's to refuse
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > limit:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if '"""' in text or "'''" in text:
        return None  # a multi-line string could hide lines that look like keys
    found, table = {}, None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            header = stripped.split("#", 1)[0].strip()
            table = header.strip("[]").strip() if header.endswith("]") else "?"
            continue
        key = stripped.split("=", 1)[0].strip()
        if table is None and key.split(".", 1)[0].strip().strip("\"'") == "files":
            return None  # files = {...} or files.status = ...: not the plain form
        if table != "files":
            continue
        if "=" not in stripped or not key.replace("_", "").isalnum():
            return None
        raw = stripped.split("=", 1)[1].split("#", 1)[0].strip()
        value = _plain_value(stripped.split("=", 1)[1])
        if value is None and not raw.isdigit():
            return None
        if key in ("status", "trace"):
            if value is None or not value.startswith("/"):
                return None
            found[key] = value
    return found


def _status_paths(args):
    """(status path, trace path) from --file or the config's [files], else the defaults."""
    from agent.report import status, trace
    status_path, trace_path = status.DEFAULT_PATH, trace.DEFAULT_PATH
    config = getattr(args, "config", None)
    if not getattr(args, "file", None) and config and os.path.lexists(config):
        quick = scan_files_table(config)
        if quick is not None:
            status_path, trace_path = quick.get("status", status_path), quick.get("trace", trace_path)
        else:
            cfg = _load_config_or_exit(config)  # a FIFO or a huge file: one line, exit 78
            status_path, trace_path = cfg.files.status, cfg.files.trace
    return (getattr(args, "file", None) or status_path, getattr(args, "file", None) or trace_path)


def cmd_status(args):
    """Render the status file; the exit status says the state: 0 HEALTHY, 1 working, 2 DEGRADED,
    3 not running, 4 running but its file is stale or unreadable (agent/report/status.py)."""
    from agent.report import status
    path = args.file or _status_paths(args)[0]
    data, running, code, note = status.verdict(path)
    if args.json:
        from agent.report import text
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
    return code if code != status.EXIT_RUNNING else status.exit_code(data, running)


def parse_since(text, now=None):
    """Epoch seconds from `--since`: "2h", "30min", "90s", "1d", "HH:MM" (today) or an ISO date/time."""
    import time
    now = time.time() if now is None else now
    text = text.strip()
    units = (("min", 60), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for suffix, seconds in units:
        number = text[:-len(suffix)]
        if text.endswith(suffix) and number.replace(".", "", 1).isdigit():
            return now - float(number) * seconds
    formats = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
               "%Y-%m-%d")
    for fmt in formats:
        try:
            return time.mktime(time.strptime(text, fmt))
        except ValueError:
            pass
    for fmt in ("%H:%M:%S", "%H:%M"):
        try:
            clock = time.strptime(text, fmt)
        except ValueError:
            continue
        today = time.localtime(now)
        return time.mktime((today.tm_year, today.tm_mon, today.tm_mday, clock.tm_hour,
                            clock.tm_min, clock.tm_sec, 0, 0, -1))
    raise ValueError("--since %r: use 2h, 30min, 1d, HH:MM or YYYY-MM-DD[ HH:MM]" % text)


def cmd_trace(args):
    """Print the last N records (transitions, effects, summaries); exit 1 when there is no trace."""
    from agent.report import trace
    from agent.report import text
    path = args.file or _status_paths(args)[1]
    if args.n < 0:
        print("agent trace: -n must be 0 (all) or more", file=sys.stderr)
        return 2
    filtered = args.transitions or args.since
    records = trace.read(path, None if filtered or not args.n else args.n)  # -n alone reads from the end
    if not records and not os.path.exists(path):
        print("agent trace: no trace at %s (the agent has not run with this config, or --file "
              "names another file)" % path, file=sys.stderr)
        return 1
    if args.transitions:
        records = [r for r in records if r.get("type", "transition") == "transition"]
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError as e:
            print("agent trace: %s" % e, file=sys.stderr)
            return 2
        records = [r for r in records if isinstance(r.get("time"), (int, float)) and r["time"] >= since]
    if args.n:
        records = records[-args.n:]
    for record in records:
        print(json.dumps(text.clean_tree(record), sort_keys=True) if args.json
              else trace.render(record))
    return 0


def cmd_diagram(args):
    """Write docs/diagrams/ from the machine, or check that the committed files are current."""
    from agent.tools import diagram
    if args.check:
        if not os.path.isfile(os.path.join(args.out, diagram.MERMAID)):
            print("agent diagram --check: %s holds no diagrams to compare; run it in the source "
                  "checkout (or pass --out DIR)" % os.path.abspath(args.out), file=sys.stderr)
            return 2
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
    from agent.tools import legacy
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
    from agent.report import logsetup
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
    "check": ("agent.tools.check", "main_check", "preflight against the live XAPI and kernel"),
    "bundle": ("agent.tools.bundle", "main_bundle", "build the self-contained zipapp for an offline dom0"),
    "install": ("agent.tools.install", "main_install", "lay out the program, the agent command, "
                "/etc/sspn-agent and the unit"),
    "uninstall": ("agent.tools.install", "main_uninstall", "remove the program, the command and the "
                  "unit, keep the config"),
}
# What needs a source checkout: hidden (and refused) when running from the bundle on dom0.
CHECKOUT_ONLY = ("bundle", "diagram")

RUN_EPILOG = """signals:
  SIGTERM, SIGINT  stop deciding and exit 0; addresses, routes and plugged SRs stay as they are
  SIGHUP           re-read --config; a bad file is logged and the running config kept

exit status:
  0   stopped by a signal
  78  the config is invalid or unreadable (EX_CONFIG; systemd does not restart on it)
  1   anything else went wrong (systemd restarts the agent after 2 s)
"""

STATUS_EPILOG = """exit status (Nagios plugin conventions, usable by a monitoring check as is):
  0   HEALTHY: the desired state holds
  1   working: BOOTING, MAINTENANCE, WAITING_VM, BINDING, ROUTED or SR_PROBING
  2   DEGRADED: a step spent its retry budget or the config cannot be met (reasons shown)
  3   not running: no status file, or the process that wrote it is gone (last state shown)
  4   running, but its status file is stale or unreadable (its writes fail: see the journal)
"""


def bundled():
    """True when this `agent` runs from the zipapp (dom0), not from a source checkout."""
    import agent
    return bool(getattr(getattr(agent, "__loader__", None), "archive", None))


def run_passthrough(name, rest):
    """Hand the rest of the command line to the command's own parser (its --help included)."""
    import importlib
    module, function, _help = PASSTHROUGH[name]
    return getattr(importlib.import_module(module), function)(rest)


def cmd_passthrough(args):
    """Reached only without extra arguments (main() dispatches these commands first)."""
    return run_passthrough(args.command, args.rest)


def _config_option(parser, what):
    parser.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE",
                        help="the agent's config, read for its %s (default: %s)"
                        % (what, DEFAULT_CONFIG))


def build_parser(on_dom0=None):
    """The argument parser of `agent`; ``on_dom0`` (default: running from the bundle) leaves
    out the commands that need a source checkout."""
    import argparse
    on_dom0 = bundled() if on_dom0 is None else on_dom0
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="agent", description="sspn-agent: keeps a NIC-less XCP-ng dom0 "
                                "reachable through its firewall VM.", epilog="`agent COMMAND "
                                "--help` describes each command; `man agent` all of them.")
    p.add_argument("--version", action="version", version="sspn-agent %s" % __version__,
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (what the systemd unit starts)",
                         description="Run the agent in the foreground until SIGTERM; systemd "
                         "starts it as `agent run`.", epilog=RUN_EPILOG, formatter_class=raw)
    run.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE",
                     help="the config to run with (default: %s)" % DEFAULT_CONFIG)
    run.add_argument("-v", "--verbose", action="store_true",
                     help="log debug lines too (every event and probe round)")
    run.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="show the state; the exit status says it (0 HEALTHY, "
                        "1 working, 2 DEGRADED, 3 not running, 4 stale)",
                        description="Show the state, why, what it waits for, addresses, routes, "
                        "SRs and the last transitions, from the status file only (it answers "
                        "even when XAPI hangs).", epilog=STATUS_EPILOG, formatter_class=raw)
    st.add_argument("--json", action="store_true", help="print the status file as JSON, plus "
                    "\"running\" (and \"error\" when there is no file)")
    st.add_argument("--file", metavar="FILE", help="read this status file instead "
                    "(default: [files] status of --config)")
    _config_option(st, "[files] status path")
    st.set_defaults(func=cmd_status)

    tr = sub.add_parser("trace", help="show the transition journal",
                        description="Show the trace: transitions with trigger, cause and effects, "
                        "effects between transitions, and summaries of repeating failures.")
    tr.add_argument("--json", action="store_true", help="one JSON object per record")
    tr.add_argument("-n", type=int, default=20, metavar="N",
                    help="the last N records (default 20; 0 for all)")
    tr.add_argument("--transitions", action="store_true",
                    help="transitions only (no effects or summaries between them)")
    tr.add_argument("--since", metavar="WHEN",
                    help="records from WHEN on: 2h, 30min, 1d, HH:MM (today) or YYYY-MM-DD[ HH:MM]")
    tr.add_argument("--file", metavar="FILE", help="read this trace file instead "
                    "(default: [files] trace of --config)")
    _config_option(tr, "[files] trace path")
    tr.set_defaults(func=cmd_trace)

    if not on_dom0:
        dg = sub.add_parser("diagram", help="write docs/diagrams/ from the machine definition "
                            "(source checkout only)")
        dg.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the committed files are stale")
        dg.add_argument("--out", default="docs/diagrams", metavar="DIR",
                        help="the diagrams directory (default: docs/diagrams)")
        dg.set_defaults(func=cmd_diagram)

    cf = sub.add_parser("config", help="validate or import configuration",
                        description="Validate a config file or convert a vif-ip-binder one.")
    cf.set_defaults(func=lambda args: _usage(cf))
    cfsub = cf.add_subparsers(dest="config_command", metavar="ACTION")
    va = cfsub.add_parser("validate", help="check a config file (exit 78 when bad)")
    va.add_argument("file", help="the config file, e.g. %s" % DEFAULT_CONFIG)
    va.set_defaults(func=cmd_config_validate)
    il = cfsub.add_parser("import-legacy", help="print agent.toml for a vif-ip-binder JSON file")
    il.add_argument("file", help="the vif-ip-binder JSON file (its password is dropped)")
    il.set_defaults(func=cmd_config_import_legacy)

    for name, (_module, _function, text) in sorted(PASSTHROUGH.items()):
        if on_dom0 and name in CHECKOUT_ONLY:
            continue
        cmd = sub.add_parser(name, help=text, add_help=False)
        cmd.add_argument("rest", nargs=argparse.REMAINDER,
                         help="the command's own options (`agent %s --help`)" % name)
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


def _usage(parser):
    """A command group given without its action: its usage and actions on stderr, exit 2."""
    parser.print_help(sys.stderr)
    return 2


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
    if argv and argv[0] in PASSTHROUGH and not (argv[0] in CHECKOUT_ONLY and bundled()):
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
