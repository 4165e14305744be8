"""VM power, host enable/disable and PBD plugging follow xapi (xapi_host.ml, xapi_vm_lifecycle.ml, xapi_pbd.ml)."""

import pytest
import XenAPI

from agent.lab.xapi import localdb
from agent.lab.xapi.scenario import load_scenario, parse_scenario

NFS_SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
BACKEND_108 = ["SR_BACKEND_FAILURE_108", "", "Unable to detect an NFS service on this target.", ""]


def _scenario(**vm_overrides):
    """The default scenario with some fields of the VM "pfsense" changed."""
    import attr
    base = load_scenario()
    vms = [attr.evolve(vm, **vm_overrides) if vm.name_label == "pfsense" else vm
           for vm in base.vms]
    return attr.evolve(base, vms=vms)


def test_start_waits_start_delay(sim_factory, sim_login, background, wait_until):
    """VM.start returns start_delay seconds (simulator clock) after the VM runs; other calls
    are answered meanwhile."""
    sim = sim_factory(scenario=_scenario(start_delay=1))
    x = sim_login(sim).xenapi
    pfsense = x.VM.get_by_name_label("pfsense")[0]
    call = background(x.VM.start, pfsense, False, False)
    other = sim_login(sim).xenapi
    wait_until(lambda: other.VM.get_power_state(pfsense) == "Running", what="pfsense running")
    running_seen = sim.clock()
    call.join()
    assert call.error is None and call.result == ""
    events = [(e["event"], e["t"]) for e in sim.state()["timeline"] if e["vm"] == "pfsense"]
    assert [name for name, _ in events] == ["start_requested", "running", "start_returned"]
    running_at, returned_at = events[1][1], events[2][1]
    assert running_at <= running_seen <= returned_at
    assert returned_at - running_at >= 1.0


def test_start_records_domid_and_hooks_run_before_commit(sim, xenapi_session):
    """Hooks get name, record, domid and bridges while XAPI still shows the old state."""
    seen = []

    def hook(name, record, domid, bridges, old, new):
        seen.append((name, record["domid"], domid, bridges, old, new,
                     sim.db.get("VM", sim.index.vms[name], "power_state")))
    sim.add_vm_power_hook(hook)
    x = xenapi_session.xenapi
    pfsense = x.VM.get_by_name_label("pfsense")[0]
    x.VM.start(pfsense, False, False)
    record = x.VM.get_record(pfsense)
    domid = int(record["domid"])
    assert domid > 0 and record["resident_on"] == x.host.get_all()[0]
    assert x.VIF.get_currently_attached(record["VIFs"][0]) is True
    bridge = sim.state()["networks"]["sspn"]["bridge"]
    assert seen == [("pfsense", str(domid), domid, [bridge], "Halted", "Running", "Halted")]
    sim.vm_stop("pfsense")
    assert seen[1] == ("pfsense", "-1", domid, [bridge], "Running", "Halted", "Running")
    assert x.VM.get_domid(pfsense) == "-1"
    sim.vm_reboot("pfsense")
    sim.vm_reboot("pfsense")
    assert int(x.VM.get_domid(pfsense)) > domid + 1


def test_start_of_running_vm_is_bad_power_state(sim, xenapi_session):
    """VM.start on a running VM: VM_BAD_POWER_STATE [vm, "halted", "running"]."""
    x = xenapi_session.xenapi
    sim.vm_start("pfsense")
    pfsense = x.VM.get_by_name_label("pfsense")[0]
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.start(pfsense, False, False)
    assert failure.value.details == ["VM_BAD_POWER_STATE", pfsense, "halted", "running"]


def test_disabled_host_has_no_hosts_available(sim, xenapi_session):
    """With the only host disabled VM.start fails NO_HOSTS_AVAILABLE; start_on says HOST_DISABLED."""
    x = xenapi_session.xenapi
    host = x.host.get_all()[0]
    x.host.disable(host)
    scratch = x.VM.get_by_name_label("scratch")[0]
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.start(scratch, False, False)
    assert failure.value.details == ["NO_HOSTS_AVAILABLE"]
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.start_on(scratch, host, False, False)
    assert failure.value.details == ["HOST_DISABLED", host]
    x.host.enable(host)
    x.VM.start(scratch, False, False)
    assert x.VM.get_power_state(scratch) == "Running"


def test_vm_on_unplugged_sr_cannot_start(sim, xenapi_session):
    """A VM whose disk SR is not plugged gets NO_HOSTS_AVAILABLE (start_on: VM_REQUIRES_SR)."""
    x = xenapi_session.xenapi
    web = x.VM.get_by_name_label("web")[0]
    sr = x.SR.get_by_uuid(NFS_SR)
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.start(web, False, False)
    assert failure.value.details == ["NO_HOSTS_AVAILABLE"]
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.start_on(web, x.host.get_all()[0], False, False)
    assert failure.value.details == ["VM_REQUIRES_SR", web, sr]
    x.PBD.plug(x.SR.get_PBDs(sr)[0])
    x.VM.start(web, False, False)
    assert x.VM.get_power_state(web) == "Running"


def test_pbd_plug_fails_while_target_unreachable(sim, xenapi_session):
    """PBD.plug: SR_BACKEND_FAILURE_108 while unreachable, then attaches; a second plug is a no-op."""
    x = xenapi_session.xenapi
    pbd = x.SR.get_PBDs(x.SR.get_by_uuid(NFS_SR))[0]
    sim.set_storage_reachable(NFS_SR, False)
    with pytest.raises(XenAPI.Failure) as failure:
        x.PBD.plug(pbd)
    assert failure.value.details == BACKEND_108
    assert x.PBD.get_currently_attached(pbd) is False
    sim.set_storage_reachable(NFS_SR, True)
    assert x.PBD.plug(pbd) == ""
    assert x.PBD.plug(pbd) == ""
    assert x.PBD.get_record(pbd)["currently_attached"] is True


def test_plug_failures_count_down(sim, xenapi_session):
    """sim.plug_failures(sr, 2): the next two plugs fail even though the target is reachable."""
    x = xenapi_session.xenapi
    pbd = x.SR.get_PBDs(x.SR.get_by_uuid(NFS_SR))[0]
    sim.plug_failures(NFS_SR, 2)
    for _ in range(2):
        with pytest.raises(XenAPI.Failure) as failure:
            x.PBD.plug(pbd)
        assert failure.value.details == BACKEND_108
    x.PBD.plug(pbd)
    assert sim.state()["srs"][NFS_SR]["attached"] is True


def test_storage_probe_overrides_reachability(sim, xenapi_session):
    """A storage_probe callable decides reachability from the PBD's device_config."""
    asked = []
    sim.storage_probe = lambda config: asked.append(config) or False
    x = xenapi_session.xenapi
    pbd = x.SR.get_PBDs(x.SR.get_by_uuid(NFS_SR))[0]
    with pytest.raises(XenAPI.Failure):
        x.PBD.plug(pbd)
    assert asked == [{"server": "198.51.100.10", "serverpath": "/export/vms"}]


def test_disable_without_auto_enable_persists_in_local_db(sim, xenapi_session):
    """host.disable(host, False) writes host_auto_enable=false to local.db; enable writes true."""
    x = xenapi_session.xenapi
    host = x.host.get_all()[0]
    x.host.disable(host, False)
    assert x.host.get_enabled(host) is False
    assert localdb.read(sim.local_db_path)["host_auto_enable"] == "false"
    with open(sim.local_db_path) as handle:
        # consider_enabling_host wrote host_disabled_until_reboot=false on the system boot.
        assert handle.read() == ('<?xml version="1.0" encoding="UTF-8"?>\n<config>'
                                 '<row key="host_auto_enable" value="false"/>'
                                 '<row key="host_disabled_until_reboot" value="false"/></config>')
    x.host.enable(host)
    assert localdb.read(sim.local_db_path)["host_auto_enable"] == "true"


def test_boot_phase_answers_host_still_booting(sim, xenapi_session):
    """During a boot phase host.enable of a disabled host fails with HOST_STILL_BOOTING."""
    x = xenapi_session.xenapi
    host = x.host.get_all()[0]
    x.host.disable(host)
    sim.boot_phase(60)
    with pytest.raises(XenAPI.Failure) as failure:
        x.host.enable(host)
    assert failure.value.details == ["HOST_STILL_BOOTING"]
    sim.boot_phase(0)
    x.host.enable(host)
    assert x.host.get_enabled(host) is True


def test_maintenance_mode_marks_other_config(sim, xenapi_session):
    """sim.host_disable(maintenance_mode=True) sets MAINTENANCE_MODE=true; sim.host_enable clears it."""
    x = xenapi_session.xenapi
    host = x.host.get_all()[0]
    sim.host_disable(auto_enable=False, maintenance_mode=True)
    record = x.host.get_record(host)
    assert record["enabled"] is False and record["other_config"]["MAINTENANCE_MODE"] == "true"
    assert sim.state()["host"]["auto_enable"] is False
    sim.host_enable()
    record = x.host.get_record(host)
    assert record["enabled"] is True and "MAINTENANCE_MODE" not in record["other_config"]


def test_scenario_running_vms_are_reported_to_hooks_at_start(sim_factory, sim_login):
    """VMs running in the scenario reach the hooks at start(), as Halted -> Running."""
    scenario = parse_scenario({
        "network": [{"name_label": "lan"}],
        "vm": [{"name_label": "fw", "power_state": "Running", "networks": ["lan"]}]})
    sim = sim_factory(scenario=scenario, start=False)
    seen = []
    sim.add_vm_power_hook(lambda name, rec, domid, bridges, old, new: seen.append(
        (name, bridges, old, new)))
    sim.start()
    assert seen == [("fw", ["xapi0"], "Halted", "Running")]
    x = sim_login(sim).xenapi
    assert x.VM.get_power_state(x.VM.get_by_name_label("fw")[0]) == "Running"


def test_scenario_boot_phase(sim_factory, sim_login, wait_until):
    """A scenario host with boot_seconds starts booting: HOST_STILL_BOOTING, then xapi's
    consider_enabling_host enables it (auto_enable is true)."""
    scenario = parse_scenario({"host": {"enabled": False, "boot_seconds": 0.3}})
    sim = sim_factory(scenario=scenario)
    x = sim_login(sim).xenapi
    host = x.host.get_all()[0]
    with pytest.raises(XenAPI.Failure) as failure:
        x.host.enable(host)
    assert failure.value.details == ["HOST_STILL_BOOTING"]
    wait_until(lambda: x.host.get_enabled(host), what="host enabled after boot")


def test_scenario_host_disabled_for_good_stays_disabled(sim_factory, sim_login):
    """enabled=false with auto_enable=false is written to local.db and survives the boot phase."""
    scenario = parse_scenario({"host": {"enabled": False, "auto_enable": False}})
    sim = sim_factory(scenario=scenario)
    assert localdb.read(sim.local_db_path)["host_auto_enable"] == "false"
    x = sim_login(sim).xenapi
    assert x.host.get_enabled(x.host.get_all()[0]) is False
