"""Uplink VMs are pinned by uuid (docs/hostile.md, identity): the real XenAPI client against
the XAPI simulator, through agent/adapters/xapi_world.py.

A VM that takes the firewall's label later (even one with a VIF on the SSPN network) does
not replace the pinned firewall; a `vms` entry may be the VM's uuid, which a rename does
not disturb (no resync loop).
"""

import pytest

from agent.adapters import xapi_world
from agent.adapters.xapi import resolve_once
from agent.lab.xapi import build
from tests.sim.conftest import default_host_text, make_socket_dir, sim, sim_factory, xenapi_session  # noqa: F401
from tests.xapi.conftest import make_config


@pytest.fixture(autouse=True)
def fresh_pins():
    """Each test is a new agent process."""
    xapi_world._PINS.clear()
    yield
    xapi_world._PINS.clear()


def _impostor(sim, label="pfsense"):
    """A real VM named ``label`` with a VIF on network "sspn", like the firewall."""
    sspn = sim.index.networks["sspn"]
    return build.create_vm(sim.db, sim.index, label, sim.rng, networks=[sspn])


def test_the_pinned_vm_stays_the_uplink_when_another_takes_its_label(sim):
    firewall = sim.state()["vms"]["pfsense"]["uuid"]
    world = resolve_once(make_config(sim), local_db_path=sim.local_db_path)
    assert [vm.uuid for vm in world.vms] == [firewall]
    _impostor(sim)
    world = resolve_once(make_config(sim), local_db_path=sim.local_db_path)
    assert world.missing == () and [vm.uuid for vm in world.vms] == [firewall]


def test_without_a_pin_two_vms_on_the_network_are_reported_not_guessed(sim):
    _impostor(sim)
    world = resolve_once(make_config(sim), local_db_path=sim.local_db_path)
    assert world.vms == () and len(world.missing) == 1
    assert "2 VMs carry this label" in world.missing[0] and "uuid" in world.missing[0]


def test_a_vm_named_by_uuid_resolves_and_a_rename_is_no_change(sim):
    firewall = sim.state()["vms"]["pfsense"]
    _impostor(sim)                      # the label is ambiguous; the uuid is not
    config = make_config(sim, vms=(firewall["uuid"],))
    world = resolve_once(config, local_db_path=sim.local_db_path)
    assert world.missing == () and [vm.uuid for vm in world.vms] == [firewall["uuid"]]
    snapshot = dict(sim.db.record("VM", firewall["ref"]), name_label="renamed by someone")
    assert xapi_world._renamed(firewall["uuid"], snapshot) is False   # no resync for a uuid
    assert xapi_world._renamed("pfsense", snapshot) is True           # a label entry follows it
