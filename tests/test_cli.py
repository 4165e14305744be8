"""The `agent` command as operators run it: exit codes, messages, no tracebacks."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def agent(*args):
    """Run `python -m agent ARGS` from the repository; return (status, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "agent"] + list(args), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def test_version():
    """`agent --version` prints the version and exits 0."""
    code, out, _ = agent("--version")
    assert code == 0 and out.startswith("sspn-agent ")


def test_example_config_validates():
    """agent.toml.example is a valid config."""
    code, out, err = agent("config", "validate", "agent.toml.example")
    assert code == 0, err
    assert "valid" in out


def test_bad_key_exits_78_naming_the_key_without_traceback(tmp_path):
    """A typo in a key: exit 78 (EX_CONFIG), one message naming it, no traceback."""
    bad = tmp_path / "agent.toml"
    text = open(os.path.join(ROOT, "agent.toml.example")).read().replace('gateway4 = "192', 'gatway4 = "192')
    bad.write_text(text)
    code, out, err = agent("config", "validate", str(bad))
    assert code == 78
    assert "route.gatway4" in err and "gateway4" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_value_exits_78_naming_the_key(tmp_path):
    """A gateway outside every binding's subnet: exit 78 naming route.gateway4."""
    bad = tmp_path / "agent.toml"
    text = open(os.path.join(ROOT, "agent.toml.example")).read().replace(
        'gateway4 = "192.0.2.1"', 'gateway4 = "198.51.100.1"')
    bad.write_text(text)
    code, _, err = agent("config", "validate", str(bad))
    assert code == 78 and "route.gateway4" in err and "Traceback" not in err


def test_missing_config_file_exits_78(tmp_path):
    """A config path that does not exist: exit 78 with the path in the message."""
    code, _, err = agent("config", "validate", str(tmp_path / "nope.toml"))
    assert code == 78 and "nope.toml" in err and "Traceback" not in err


def test_status_without_agent_exits_3_with_json_saying_so(tmp_path):
    """`agent status --json` with no agent running: exit 3, JSON with running=false."""
    code, out, _ = agent("status", "--json", "--file", str(tmp_path / "status.json"))
    assert code == 3
    data = json.loads(out)
    assert data["running"] is False and "not running" in data["error"]


def test_status_shows_last_known_state_of_a_dead_agent(tmp_path):
    """A status file written by a process that is gone: exit 3, the last state shown."""
    path = tmp_path / "status.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"state": "HEALTHY", "since": 1.7e9, "pid": dead.pid,
                                "meaning": "desired state holds", "updated": 1.7e9}))
    code, out, _ = agent("status", "--file", str(path))
    assert code == 3
    assert "HEALTHY" in out and "NOT RUNNING" in out


@pytest.mark.parametrize("state,expected", [("HEALTHY", 0), ("ROUTED", 1), ("WAITING_VM", 1),
                                            ("BOOTING", 1), ("DEGRADED", 2)])
def test_status_exit_code_says_the_state_of_a_live_agent(tmp_path, state, expected):
    """A live agent's state as a Nagios-style exit code: 0 HEALTHY, 1 working, 2 DEGRADED."""
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"state": state, "since": 1.7e9, "pid": os.getpid()}))
    code, out, _ = agent("status", "--json", "--file", str(path))
    assert code == expected and json.loads(out)["running"] is True


def test_status_of_a_dead_degraded_agent_exits_3(tmp_path):
    """Not running wins over the last state: a stale DEGRADED file exits 3, not 2."""
    path = tmp_path / "status.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"state": "DEGRADED", "since": 1.7e9, "pid": dead.pid}))
    assert agent("status", "--file", str(path))[0] == 3


def test_status_reads_the_status_path_from_the_config(tmp_path):
    """With --config, `agent status` reads the file its [files] status names (quick scan)."""
    status_path = tmp_path / "st.json"
    status_path.write_text(json.dumps({"state": "HEALTHY", "since": 1.7e9, "pid": os.getpid()}))
    config = tmp_path / "agent.toml"
    config.write_text(open(os.path.join(ROOT, "agent.toml.example")).read().replace(
        'status = "/run/sspn-agent/status.json"', 'status = "%s"  # moved' % status_path))
    code, out, _ = agent("status", "--json", "--config", str(config))
    assert code == 0 and json.loads(out)["state"] == "HEALTHY"


EXAMPLE_TEXT = open(os.path.join(ROOT, "agent.toml.example")).read()


@pytest.mark.parametrize("text,expected", [
    (EXAMPLE_TEXT, {"status": "/run/sspn-agent/status.json",
                    "trace": "/var/log/sspn-agent/trace.jsonl"}),
    ("[files]\nstatus = '/a/b.json' # c\n[other]\nstatus = \"/x\"\n", {"status": "/a/b.json"}),
    ("[xapi]\nurl = \"\"\n", {}),
    ("[files]\nstatus = \"/a\\\\b\"\n", None),        # an escape: load the config
    ("files.status = \"/a\"\n", None),                   # a dotted key
    ("files = { status = \"/a\" }\n", None),             # an inline table
    ("[files]\n\"status\" = \"/a\"\n", None),           # a quoted key
    ("[files]\nstatus = \"\"\"/a\"\"\"\n", None),           # a multi-line string
    ("[files]\nstatus = \"relative\"\n", None),          # invalid: the loader says why
])
def test_quick_files_scan_answers_only_for_plain_forms(tmp_path, text, expected):
    """The bounded [files] scan agrees with TOML on the plain forms and gives up on the rest."""
    from agent.tools import cli
    path = tmp_path / "agent.toml"
    path.write_text(text)
    assert cli.scan_files_table(str(path)) == expected
    assert cli.scan_files_table(str(path), limit=4) is None  # longer than the limit: load it


def test_quick_scan_agrees_with_the_config_loader():
    """On agent.toml.example the scan and the real loader name the same status and trace."""
    from agent.tools import cli
    from agent import config
    from agent.report import trace
    cfg = config.load_config(os.path.join(ROOT, "agent.toml.example"))
    found = cli.scan_files_table(os.path.join(ROOT, "agent.toml.example"))
    assert (found["status"], found["trace"]) == (cfg.files.status, cfg.files.trace)
    assert cfg.files.trace == trace.DEFAULT_PATH


def test_trace_renders_records(tmp_path):
    """`agent trace -n 1` prints the last record, human or JSON."""
    path = tmp_path / "trace.jsonl"
    records = [{"type": "transition", "time": 1.7e9, "from": "BOOTING", "to": "BINDING",
                "trigger": "xapi_answered", "cause": "xapi_connected", "effects": []},
               {"type": "effect", "time": 1.7e9 + 1, "state": "BINDING", "what": "add x", "result": "added"}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    code, out, _ = agent("trace", "-n", "1", "--file", str(path))
    assert code == 0 and "add x: added" in out and "BOOTING" not in out
    code, out, _ = agent("trace", "--json", "--file", str(path))
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["transition", "effect"]


def test_trace_filters_transitions_and_since(tmp_path):
    """--transitions drops effects; --since drops older records; a missing trace exits 1."""
    import time
    path = tmp_path / "trace.jsonl"
    now = time.time()
    records = [{"type": "transition", "time": now - 7200, "from": "BOOTING", "to": "BINDING",
                "trigger": "xapi_answered", "cause": "old", "effects": []},
               {"type": "effect", "time": now - 60, "state": "BINDING", "what": "add x", "result": "added"},
               {"type": "transition", "time": now - 30, "from": "BINDING", "to": "ROUTED",
                "trigger": "addresses_bound", "cause": "recent", "effects": []}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    code, out, _ = agent("trace", "--transitions", "--file", str(path))
    assert code == 0 and "add x" not in out and "old" in out and "recent" in out
    code, out, _ = agent("trace", "--since", "1h", "--file", str(path))
    assert code == 0 and "old" not in out and "add x" in out and "recent" in out
    code, _, err = agent("trace", "--since", "yesterday-ish", "--file", str(path))
    assert code == 2 and "--since" in err
    code, _, err = agent("trace", "--file", str(tmp_path / "none.jsonl"))
    assert code == 1 and "no trace" in err


def test_parse_since_forms():
    """Relative spans, a clock time today and ISO dates."""
    from agent.tools.cli import parse_since
    now = 1.7e9
    assert parse_since("2h", now) == now - 7200
    assert parse_since("30min", now) == now - 1800
    assert parse_since("1d", now) == now - 86400
    assert parse_since("2026-12-04", now) < parse_since("2026-12-04 14:02", now)
    with pytest.raises(ValueError):
        parse_since("soon", now)


def test_every_option_has_help():
    """Every option and argument of every subcommand carries a help text."""
    import argparse
    from agent.tools import cli
    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, path + [name])
            elif not isinstance(action, argparse._HelpAction):
                yield path, action
    missing = ["%s %s" % (" ".join(p), a.dest) for p, a in walk(cli.build_parser(False), ["agent"])
               if not a.help]
    assert missing == []


def test_dom0_parser_leaves_out_checkout_commands():
    """From the bundle, --help lists neither `bundle` nor `diagram`."""
    from agent.tools import cli
    text = cli.build_parser(on_dom0=True).format_help()
    assert " bundle " not in text and " diagram " not in text and " status " in text
    assert " diagram " in cli.build_parser(on_dom0=False).format_help()


def test_run_help_lists_signals_and_exit_codes():
    """`agent run --help` names SIGTERM, SIGHUP and the exit statuses 0, 78 and 1."""
    code, out, _ = agent("run", "--help")
    assert code == 0
    for text in ("SIGTERM", "SIGHUP", "78", "exit status"):
        assert text in out, text


def test_config_without_action_prints_its_own_usage():
    """`agent config` alone shows the config actions (not the top-level help), exit 2."""
    code, _, err = agent("config")
    assert code == 2 and "validate" in err and "import-legacy" in err


def test_diagram_check_outside_a_checkout_says_so(tmp_path):
    """`agent diagram --check` where there are no diagrams: not "stale", but where to run it."""
    code, _, err = agent("diagram", "--check", "--out", str(tmp_path / "nothing"))
    assert code == 2 and "stale" not in err and "checkout" in err


def test_committed_diagrams_are_current():
    """docs/diagrams/ matches what the machine definition generates (run `agent diagram`)."""
    code, _, err = agent("diagram", "--check")
    assert code == 0, err


def test_diagram_check_fails_when_stale(tmp_path):
    """A diagram that differs from the table is reported stale."""
    out = tmp_path / "d"
    assert agent("diagram", "--out", str(out))[0] == 0
    (out / "machine.mmd").write_text("stateDiagram-v2\n")
    code, _, err = agent("diagram", "--check", "--out", str(out))
    assert code == 1 and "machine.mmd" in err


def test_import_legacy_prints_valid_toml_and_drops_the_password(tmp_path):
    """import-legacy output validates, and the password appears nowhere in it."""
    sample = os.path.join(ROOT, "tests", "data", "vif-ip-binder.json.sample")
    code, out, err = agent("config", "import-legacy", sample)
    assert code == 0, err
    secret = json.loads(_strip_comments(open(sample).read())).get("password", "")
    assert secret and secret not in out and secret not in err
    converted = tmp_path / "agent.toml"
    converted.write_text(out)
    assert agent("config", "validate", str(converted))[0] == 0


def _strip_comments(text):
    from agent.tools.legacy import strip_json_comments
    return strip_json_comments(text)


INSTALLED = os.path.join(os.path.dirname(sys.executable), "agent")


@pytest.mark.skipif(not os.path.exists(INSTALLED),
                    reason="the `agent` console script is not installed next to this interpreter "
                           "(`make test` installs it with `pip install .`)")
def test_installed_console_script_outside_the_repository(tmp_path):
    """After `pip install .`, the installed `agent` works from any directory: --version,
    diagram --check against the committed diagrams, config validate of the example."""
    def installed(*args):
        proc = subprocess.Popen([INSTALLED] + list(args), cwd=str(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate()
        return proc.returncode, out.decode(), err.decode()

    code, out, err = installed("--version")
    assert code == 0 and out.strip(), err
    code, _, err = installed("diagram", "--check", "--out", os.path.join(ROOT, "docs", "diagrams"))
    assert code == 0, err
    code, out, err = installed("config", "validate", os.path.join(ROOT, "agent.toml.example"))
    assert code == 0 and "valid" in out, err
