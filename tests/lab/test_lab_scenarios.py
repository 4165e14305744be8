"""`agent lab`: every scenario ends HEALTHY on a simulated host, says what happened, leaves nothing.

Real parts: the XAPI simulator over a Unix socket with the PyPI XenAPI client in the agent's
adapter; with root, the real agent as its own process inside the dom0 namespace and real
bridges, addresses, routes and ICMP in throwaway namespaces. Without root only the in-memory
kernel model runs (forced here with SSPN_LAB_IN_MEMORY=1, as the lab's own fallback does).
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from agent.lab import envs, runner, scenarios
from tests.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
NETNS = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                           reason="needs root and iproute2 `ip` to create network namespaces")
SUMMARY_KEYS = {"scenario", "kernel", "ok", "error", "healthy_at", "time_to_healthy",
                "measured_from", "bind_delay", "bind_delays", "srs_plugged", "vms_started",
                "vms_started_by_lab", "untraced_starts", "xapi_calls", "ping", "agent_stop"}

OPERATOR_CONFIG = """
[[binding]]
network = "fw-internal"
vms = ["opnsense-a", "opnsense-b"]
addresses = ["192.0.2.130/25", "2001:db8:7::2/64"]

[route]
gateway4 = "192.0.2.129"
gateway6 = "fe80::1"

[[sr]]
uuid = "11111111-2222-4333-8444-555555555555"
probe = ["192.0.2.10", "2001:db8:9::5"]

[[sr]]
uuid = "aaaaaaaa-2222-4333-8444-555555555555"
"""


def _namespaces():
    out = subprocess.check_output(["ip", "netns", "list"]).decode()
    return set(line.split()[0] for line in out.splitlines() if line.strip())


def _lab(capsys, *argv):
    """Run `agent lab ARGV --json`; (exit status, the one run's dict)."""
    code = runner.main(list(argv) + ["--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] == (code == 0)
    assert len(doc["runs"]) == 1
    return code, doc["runs"][0]


def _lab_actions(run):
    return [e for e in run["timeline"] if e["source"] == "lab"]


def _assert_clean_finish(code, run):
    summary = run["summary"]
    assert code == 0, summary["error"]
    assert summary["ok"] and summary["ping"]["ok"], summary["ping"]
    stop = summary["agent_stop"]
    assert stop["exit"] == 0 and stop["networking_left_in_place"], stop
    assert SUMMARY_KEYS <= set(summary)
    assert summary["time_to_healthy"] is not None


@pytest.fixture
def in_memory(monkeypatch):
    """Force the lab's in-memory kernel model (what it uses without root)."""
    monkeypatch.setenv(runner.FORCE_MEMORY_ENV, "1")


def test_scenario_names_are_the_scenarios():
    """The names `agent`'s parser offers are exactly the scenarios the lab can run."""
    assert runner.SCENARIOS == tuple(scenarios.SCENARIOS)


@NETNS
@pytest.mark.parametrize("scenario", runner.SCENARIOS)
def test_scenario_ends_healthy_and_leaves_no_namespace(scenario, capsys):
    """With the real agent in dom0 the scenario ends HEALTHY, a ping crosses the firewall, SIGTERM
    leaves the agent's networking in place, and none of the lab's namespaces is left."""
    before = _namespaces()
    code, run = _lab(capsys, "--scenario", scenario)
    _assert_clean_finish(code, run)
    summary = run["summary"]
    assert run["kernel"] == envs.NAMESPACES and summary["srs_plugged"] == [SR]
    expected = {"maintenance-lockout": ["pfsense", "web", "db"],
                "enable-refused": ["pfsense", "web", "db"], "evacuated": ["web", "db", "pfsense"],
                "slow-plug": ["web", "db", "pfsense"]}.get(scenario, ["web", "db"])
    if scenario in scenarios.SEVERAL_SCENARIOS and scenario not in scenarios.applicable(
            scenarios.default_plan().config):
        expected = []  # the built-in two-network host has no auto-power-on VM but its firewalls
    started = summary["vms_started"]
    if scenario == "autostart-race":   # xapi-autostart-vms ignores order: either may win
        started, expected = sorted(started), sorted(expected)
    if scenario == "self-enable":      # the simulator's xapi-autostart-vms may start the firewall
        assert "pfsense" in started + summary["vms_started_by_lab"]   # before the lab does
        started, expected = sorted(vm for vm in started if vm != "pfsense"), sorted(expected)
    assert started == expected
    assert summary["bind_delays"] and all(d >= 0 for _b, d in summary["bind_delays"])
    left = _namespaces()
    assert not set(run["lab"]["namespaces"]) & left
    mine = "sspn-%d-" % os.getpid()
    assert not [n for n in left - before if n.startswith(mine)]
    assert not os.path.exists(run["lab"]["workdir"])


@NETNS
def test_toolstack_restart_repeats_nothing(capsys):
    """After xapi restarts the agent reconnects and makes no kernel or XAPI change again."""
    code, run = _lab(capsys, "--scenario", "toolstack-restart")
    _assert_clean_finish(code, run)
    assert run["summary"]["repeated_effects"] == []


@NETNS
def test_late_storage_is_plugged_only_after_it_answers(capsys):
    """Probes go unanswered while the storage server is away; the SR is plugged after it returns."""
    code, run = _lab(capsys, "--scenario", "late-storage")
    _assert_clean_finish(code, run)
    back = [e["time"] for e in _lab_actions(run) if "back on the network" in e["what"]][0]
    agent = [e for e in run["timeline"] if e["source"] == "agent" and e["kind"] == "effect"]
    silent = [e for e in agent if e["what"].startswith("probe sr:") and e["result"] == "no answer"]
    plugged = [e for e in agent if e["what"] == "PBD.plug sr:%s" % SR and e["result"] == "ok"]
    # A storage round waits for its answer until the next round is due (core.Agent.probe), so
    # the round under way when storage returns may still end unanswered just after; none ends
    # so after the first answer.
    answered = [e["time"] for e in agent if e["what"].startswith("probe sr:") and e["result"] == "answered"]
    assert len([e for e in silent if e["time"] < back]) >= scenarios.SILENT_PROBES
    assert answered and all(e["time"] <= answered[0] for e in silent)
    assert plugged and plugged[0]["time"] > back
    assert run["summary"]["storage_back_to_plugged"] > 0


@NETNS
def test_firewall_reboot_rebinds_on_the_new_bridge(capsys):
    """A reboot destroys and re-creates the bridge; the agent binds twice, once per bridge."""
    code, run = _lab(capsys, "--scenario", "firewall-reboot")
    _assert_clean_finish(code, run)
    assert len(run["summary"]["bind_delays"]) == 2
    # Which loss the watcher reads first depends on how far the teardown had got when it read
    # (one clean-clone run saw neither uplink_lost nor address_lost first): any drift counts.
    assert any(e.get("from") == "HEALTHY" and e.get("trigger") in ("uplink_lost", "address_lost",
                                                                    "route_lost")
               for e in run["timeline"])


@NETNS
def test_text_timeline_marks_lab_actions_and_shows_causes(capsys):
    """The human output shows elapsed seconds, the lab's own actions marked, transitions with
    their causes and effects, and a summary with the ping through the firewall."""
    assert runner.main(["--scenario", "cold-boot"]) == 0
    text = capsys.readouterr().out
    assert "[lab] start VM pfsense" in text and "[sim] VM pfsense Halted -> Running" in text
    assert "WAITING_VM -> BINDING  on bridge_appeared" in text and "cause: " in text
    assert "effect: default via 192.0.2.1 dev" in text
    assert "time to HEALTHY" in text and "ping through the fw    ok" in text


@NETNS
def test_operator_config_is_rehearsed(tmp_path, capsys):
    """An operator's agent.toml (CARP pair, link-local v6 gateway, v4 and v6 storage probes, an SR
    without probe) gets a matching simulated host and a cold boot that ends HEALTHY."""
    path = tmp_path / "agent.toml"
    path.write_text(OPERATOR_CONFIG)
    code, run = _lab(capsys, "--config", str(path), "--scenario", "cold-boot")
    _assert_clean_finish(code, run)
    summary = run["summary"]
    assert sorted(summary["srs_plugged"]) == ["11111111-2222-4333-8444-555555555555",
                                              "aaaaaaaa-2222-4333-8444-555555555555"]
    assert summary["vms_started_by_lab"] == ["opnsense-a"] and summary["vms_started"] == []
    assert summary["ping"]["target"] == "192.0.2.10"


@NETNS
def test_sigterm_removes_the_lab(tmp_path):
    """SIGTERM while a scenario runs: the lab exits 143 and its namespaces and agent are gone."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from agent.lab import runner; "
                             "sys.exit(runner.main(['--scenario', 'toolstack-restart']))"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    prefix = "sspn-%d-" % proc.pid
    try:
        agent = wait_until(lambda: _agent_child(proc.pid), timeout=20, message="the lab's agent")
        assert [n for n in _namespaces() if n.startswith(prefix)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 143, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert not [n for n in _namespaces() if n.startswith(prefix)]
    wait_until(lambda: not os.path.exists("/proc/%d" % agent), timeout=10,
               message="the agent process gone")


def _agent_child(ppid):
    """The pid of ``ppid``'s child running `-m agent run`, or None."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmdline = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == ppid and b"agent" in cmdline and b"run" in cmdline:
            return int(name)
    return None


@pytest.mark.parametrize("scenario", runner.SCENARIOS)
def test_in_memory_fallback_ends_healthy(scenario, in_memory, capsys):
    """Without namespaces the same scenario runs on the in-memory kernel model with the real
    simulator and XAPI adapter, ends HEALTHY and is marked as such."""
    code, run = _lab(capsys, "--scenario", scenario)
    _assert_clean_finish(code, run)
    assert run["kernel"] == envs.IN_MEMORY == run["summary"]["kernel"]
    assert run["summary"]["srs_plugged"] == [SR]
    assert "in-memory" in run["summary"]["ping"]["how"]
    assert not os.path.exists(run["lab"]["workdir"])


def test_in_memory_text_output_says_so(in_memory, capsys):
    """The text output of the fallback names the in-memory kernel model."""
    assert runner.main(["--scenario", "cold-boot"]) == 0
    text = capsys.readouterr().out
    assert "kernel: [in-memory kernel model]" in text and "summary (cold-boot, [in-memory" in text


def test_operator_config_in_memory(tmp_path, in_memory, capsys):
    """The operator-config rehearsal also runs on the in-memory kernel model."""
    path = tmp_path / "agent.toml"
    path.write_text(OPERATOR_CONFIG)
    code, run = _lab(capsys, "--config", str(path), "--scenario", "cold-boot")
    _assert_clean_finish(code, run)
    assert len(run["summary"]["srs_plugged"]) == 2


@pytest.mark.parametrize("text, needle", [
    ('[[binding]]\nnetwork = "n"\nvms = ["fw"]\naddresses = ["198.51.100.2/24"]\n',
     "overlaps 198.51.100.0/24"),
    ('[[binding]]\nnetwork = "n"\nvms = ["fw"]\naddresses = ["192.0.2.2/24"]\n'
     '[[sr]]\nuuid = "11111111-2222-4333-8444-555555555555"\nprobe = ["192.0.2.9"]\n',
     "sr[0].probe 192.0.2.9 lies inside binding[0]'s subnet"),
    ("x = \n", "TOML syntax"),
])
def test_config_the_lab_cannot_use_exits_78(tmp_path, capsys, text, needle):
    """A bad config, or one the lab cannot rehearse, gets one message and exit status 78."""
    path = tmp_path / "agent.toml"
    path.write_text(text)
    assert runner.main(["--config", str(path)]) == 78
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_config_with_another_scenario_is_refused(tmp_path, capsys):
    """--config rehearses cold-boot only; asking for another scenario is a usage error."""
    assert runner.main(["--config", str(tmp_path / "x.toml"), "--scenario", "flush"]) == 2
    assert "cold-boot only" in capsys.readouterr().err
