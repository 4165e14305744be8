"""Scenarios: the default one matches agent.toml.example; bad files are refused clearly."""

import os

import pytest

from agent.lab.xapi import load_scenario
from agent.lab.xapi.scenario import ScenarioError, parse_scenario

try:
    import tomllib
except ImportError:
    import tomli as tomllib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _example():
    with open(os.path.join(REPO, "agent.toml.example"), "rb") as handle:
        return tomllib.loads(handle.read().decode("utf-8"))


def test_default_scenario_matches_agent_toml_example():
    """Every label and SR the example config names exists in the default scenario, as expected."""
    example = _example()
    scenario = load_scenario()
    networks = dict((n.name_label, n) for n in scenario.networks)
    vms = dict((v.name_label, v) for v in scenario.vms)
    for binding in example["binding"]:
        assert networks[binding["network"]].pif is None          # internal network -> xapiN
        for name in binding["vms"]:
            assert vms[name].networks == (binding["network"],)
            assert vms[name].power_state == "Halted"
    for sr in example["sr"]:
        spec = scenario.sr_by_ref(sr["uuid"])
        assert spec.type == "nfs" and spec.attached is False
        assert dict(spec.device_config) == {"server": "198.51.100.10", "serverpath": "/export/vms"}
    assert scenario.host.name_label == "xcp-lab" and scenario.host.enabled
    assert scenario.pool.auto_poweron is True
    assert [(v.name_label, v.auto_poweron, v.order) for v in scenario.vms
            if not v.is_a_template and not v.snapshot_of] == [
        ("pfsense", True, 0), ("web", True, 2), ("db", True, 10), ("scratch", False, 0)]
    assert vms["web"].srs == vms["db"].srs == ("5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01",)
    management = [n for n in scenario.networks if n.pif is not None]
    assert [(n.name_label, n.bridge, n.pif.management) for n in management] == [
        ("Pool-wide network associated with eth0", "xenbr0", True)]
    assert example["xapi"]["username"] == scenario.username


def test_default_scenario_in_xapi(xenapi_session):
    """Served, the default scenario has the management PIF, the internal bridge and a dom0."""
    x = xenapi_session.xenapi
    mgmt = x.network.get_by_name_label("Pool-wide network associated with eth0")[0]
    pif = x.PIF.get_record(x.network.get_PIFs(mgmt)[0])
    assert pif["device"] == "eth0" and pif["management"] is True and pif["IP"] == "203.0.113.5"
    assert x.network.get_bridge(mgmt) == "xenbr0"
    assert x.network.get_bridge(x.network.get_by_name_label("sspn")[0]) == "xapi0"
    host = x.host.get_record(x.host.get_all()[0])
    assert host["name_label"] == "xcp-lab" and host["enabled"] is True
    assert x.VM.get_is_control_domain(host["control_domain"]) is True


def test_snapshot_and_template_are_not_startable(xenapi_session):
    """The default snapshot of db keeps auto_poweron=true but is a template: VM_IS_TEMPLATE."""
    import XenAPI
    x = xenapi_session.xenapi
    snap = x.VM.get_by_name_label("db before upgrade")[0]
    record = x.VM.get_record(snap)
    assert record["is_a_snapshot"] and record["is_a_template"]
    assert record["other_config"]["auto_poweron"] == "true"
    assert record["snapshot_of"] == x.VM.get_by_name_label("db")[0]
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.start(snap, False, False)
    assert failure.value.details == ["VM_IS_TEMPLATE", snap, "start"]


def test_unknown_key_is_named():
    """An unknown key is refused with its path and the known keys."""
    with pytest.raises(ScenarioError) as error:
        parse_scenario({"vm": [{"name_label": "a", "colour": "red"}]})
    assert "unknown key vm[0].colour" in str(error.value)


def test_dangling_reference_is_named():
    """A VM naming a network that does not exist is refused, naming both."""
    with pytest.raises(ScenarioError) as error:
        parse_scenario({"vm": [{"name_label": "a", "networks": ["nope"]}]})
    assert "'a'" in str(error.value) and "'nope'" in str(error.value)


def test_wrong_type_is_named():
    """A boolean key given a string is refused naming the key."""
    with pytest.raises(ScenarioError) as error:
        parse_scenario({"host": {"enabled": "yes"}})
    assert "host.enabled must be true or false" in str(error.value)


def test_latency_and_add_vms(sim, xenapi_session):
    """sim.set_latency keeps calls working; sim.add_vms adds halted unrelated VMs."""
    sim.set_latency(0.01)
    names = sim.add_vms(3)
    assert names == ["filler-1", "filler-2", "filler-3"]
    x = xenapi_session.xenapi
    assert len(x.VM.get_all()) == 10
    assert sim.state()["latency"] == 0.01 and sim.state()["extra_vms"] == 3
