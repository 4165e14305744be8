"""The resync: the XapiWorld the adapter reads through the real XenAPI client from the simulator."""

import logging
import os
import subprocess
import sys

import pytest

from agent.adapters.xapi import XapiError, resolve_once
from agent.adapters.xapi_world import read_auto_enable
from tests.xapi.conftest import NFS_SR, make_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNKNOWN_SR = "0badc0de-0000-4000-8000-000000000000"


def test_default_scenario_world_over_the_unix_socket(sim):
    """resolve_once over the pre-authenticated Unix socket resolves host, pool, the sspn network's
    bridge, the pfsense VM, and this host's PBD of the NFS SR, exactly as the simulator has them."""
    state = sim.state()
    world = resolve_once(make_config(sim), local_db_path=sim.local_db_path)

    assert world.missing == ()
    assert world.pool_auto_poweron is True
    host = world.host
    assert (host.ref, host.uuid, host.name_label) == (
        state["host"]["ref"], state["host"]["uuid"], "xcp-lab")
    assert host.enabled and host.auto_enable and host.is_master
    assert len(world.bindings) == 1
    binding = world.bindings[0]
    pfsense = state["vms"]["pfsense"]
    assert binding.network == "sspn"
    assert binding.bridge == state["networks"]["sspn"]["bridge"]
    assert binding.vm_refs == (pfsense["ref"],)
    (vm,) = world.vms
    assert (vm.ref, vm.name_label, vm.power_state, vm.uuid) == (
        pfsense["ref"], "pfsense", "Halted", pfsense["uuid"])
    assert vm.auto_poweron is True and vm.order == 0 and vm.start_delay == 0
    assert vm.network_refs == (state["networks"]["sspn"]["ref"],)
    assert set(vm.sr_uuids) == set(pfsense["srs"])
    (pbd,) = world.pbds
    sr = state["srs"][NFS_SR]
    assert (pbd.ref, pbd.sr_uuid, pbd.attached) == (sr["pbd"], NFS_SR, False)
    assert dict(pbd.device_config) == {"server": "198.51.100.10", "serverpath": "/export/vms"}
    assert (pbd.sr_type, pbd.shared, pbd.master_attached) == ("nfs", True, None)


def test_world_over_tcp_with_a_password_file(sim, scratch_dir, caplog):
    """A remote URL logs in with username + the password file's password, reads the same world,
    and the password appears in no log line."""
    secret = os.path.join(scratch_dir, "xapi.password")
    with open(secret, "w") as handle:
        handle.write("xcp-lab\n")
    os.chmod(secret, 0o600)
    caplog.set_level(logging.DEBUG)
    config = make_config(sim, url=sim.tcp_url, password_file=secret)
    world = resolve_once(config, local_db_path=sim.local_db_path)
    assert world == resolve_once(make_config(sim), local_db_path=sim.local_db_path)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("agent.adapters")]
    assert not [line for line in ours if "xcp-lab" in line]


def test_wrong_password_is_a_clear_error(sim, scratch_dir):
    """A rejected login raises XapiError naming SESSION_AUTHENTICATION_FAILED (not a traceback)."""
    secret = os.path.join(scratch_dir, "xapi.password")
    with open(secret, "w") as handle:
        handle.write("not-the-password\n")
    os.chmod(secret, 0o600)
    config = make_config(sim, url=sim.tcp_url, password_file=secret)
    with pytest.raises(XapiError) as info:
        resolve_once(config, local_db_path=sim.local_db_path)
    assert info.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
    assert "not-the-password" not in str(info.value)


def test_unreachable_socket_is_a_clear_error(scratch_dir):
    """With no XAPI socket, resolve_once raises XapiError naming the missing socket path."""
    path = os.path.join(scratch_dir, "xapi")
    with pytest.raises(XapiError) as info:
        resolve_once(make_config(socket=path))
    assert "no socket at %s" % path in str(info.value)


def test_unresolved_labels_and_uuids_are_reported_missing(sim):
    """A VM label matching no VM and an SR uuid XAPI does not know are listed in ``missing``;
    what does resolve is still returned."""
    config = make_config(sim, vms=("pfsense", "opnsense"), srs=(NFS_SR, UNKNOWN_SR))
    world = resolve_once(config, local_db_path=sim.local_db_path)
    assert set(world.missing) == {"vm 'opnsense'", "sr %s" % UNKNOWN_SR}
    assert [vm.name_label for vm in world.vms] == ["pfsense"]
    assert [p.sr_uuid for p in world.pbds] == [NFS_SR]


def test_snapshots_and_templates_do_not_count_and_a_second_vm_does_not_win(sim, xenapi_session):
    """A snapshot or template carrying the uplink label is ignored (snapshots keep their VM's
    name); a second real VM that takes the label later does not replace the uplink: the one
    pinned when first resolved (or, in a new process, the only one on the binding's network)
    is kept (docs/hostile.md, identity)."""
    x = xenapi_session.xenapi
    snapshot = x.VM.get_by_name_label("db before upgrade")[0]
    template = x.VM.get_by_name_label("Other install media")[0]
    x.VM.set_name_label(snapshot, "pfsense")
    x.VM.set_name_label(template, "pfsense")
    world = resolve_once(make_config(sim), local_db_path=sim.local_db_path)
    assert world.missing == () and [vm.name_label for vm in world.vms] == ["pfsense"]

    firewall = world.vms[0].uuid
    x.VM.set_name_label(x.VM.get_by_name_label("scratch")[0], "pfsense")
    world = resolve_once(make_config(sim), local_db_path=sim.local_db_path)
    assert world.missing == () and [vm.uuid for vm in world.vms] == [firewall]
    from agent.adapters import xapi_world
    xapi_world._PINS.clear()  # a new agent process: the VIF on network "sspn" decides
    world = resolve_once(make_config(sim), local_db_path=sim.local_db_path)
    assert world.missing == () and [vm.uuid for vm in world.vms] == [firewall]


def test_auto_enable_comes_from_local_db(sim):
    """host.disable(host, false) persists host_auto_enable=false in local.db; the resync reads it
    (HostView.auto_enable False, deliberately disabled); a missing local.db means True."""
    sim.host_disable(auto_enable=False)
    world = resolve_once(make_config(sim), local_db_path=sim.local_db_path)
    assert world.host.enabled is False and world.host.auto_enable is False
    assert world.host.deliberately_disabled
    assert read_auto_enable(sim.local_db_path + ".absent") is True


def test_importing_the_adapter_does_not_import_xenapi():
    """The adapter modules import XenAPI lazily (the CLI imports them without needing XenAPI)."""
    code = ("import sys, agent.adapters.xapi, agent.adapters.xapi_world, "
            "agent.adapters.xapi_transport; assert 'XenAPI' not in sys.modules")
    subprocess.check_call([sys.executable, "-c", code], cwd=ROOT)
