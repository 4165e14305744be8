"""`agent lab --config` with several bindings and a CARP pair rehearses their scenarios too."""

import json

import pytest

from agent import config as cfgmod
from agent.lab import runner, scenarios

SEVERAL_OPERATOR = """
[[binding]]
network = "lan-a"
vms = ["opn-a1", "opn-a2"]
addresses = ["192.0.2.130/25", "2001:db8:7::2/64"]
gateway4 = "192.0.2.129"
gateway6 = "2001:db8:7::1"

[[binding]]
network = "lan-b"
vms = ["opn-b"]
addresses = ["100.64.5.2/24"]
gateway4 = "100.64.5.1"

[route]
prefer = ["lan-b"]
"""


@pytest.fixture
def in_memory(monkeypatch):
    """The in-memory kernel model (fast, no root needed)."""
    monkeypatch.setenv(runner.FORCE_MEMORY_ENV, "1")


def test_applicable_scenarios_follow_the_config():
    """CARP pair: carp-failover; two bindings: the scenarios of several networks; route-failover
    only when every family with a gateway has two candidates."""
    config = cfgmod.parse_config(SEVERAL_OPERATOR)
    assert scenarios.applicable(config) == ["carp-failover", "one-firewall-down",
                                            "firewall-stops-later", "silent-gateway6"]
    one = cfgmod.parse_config('[[binding]]\nnetwork = "n"\nvms = ["a"]\naddresses = ["192.0.2.2/24"]\n')
    assert scenarios.applicable(one) == []


def test_config_with_several_bindings_rehearses_their_scenarios(tmp_path, in_memory, capsys):
    """`agent lab --config` runs cold-boot, then every scenario the config can run, on the
    operator's own labels (not the built-in host); all end HEALTHY."""
    path = tmp_path / "agent.toml"
    path.write_text(SEVERAL_OPERATOR)
    code = runner.main(["--config", str(path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    names = [run["scenario"] for run in doc["runs"]]
    assert names == ["cold-boot"] + scenarios.applicable(cfgmod.parse_config(SEVERAL_OPERATOR))
    assert code == 0, [(r["scenario"], r["error"]) for r in doc["runs"] if not r["ok"]]


def test_config_with_a_scenario_it_cannot_run_is_refused(tmp_path, capsys):
    """One binding, one VM: carp-failover is refused with a usage error naming why."""
    path = tmp_path / "agent.toml"
    path.write_text('[[binding]]\nnetwork = "n"\nvms = ["a"]\naddresses = ["192.0.2.2/24"]\n')
    assert runner.main(["--config", str(path), "--scenario", "carp-failover"]) == 2
    assert "several" in capsys.readouterr().err
