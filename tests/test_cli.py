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


def test_status_of_a_live_agent_exits_0(tmp_path):
    """A status file whose pid is alive: exit 0 and the JSON says running."""
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"state": "ROUTED", "since": 1.7e9, "pid": os.getpid()}))
    code, out, _ = agent("status", "--json", "--file", str(path))
    assert code == 0 and json.loads(out)["running"] is True


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
    from agent.legacy import strip_json_comments
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
