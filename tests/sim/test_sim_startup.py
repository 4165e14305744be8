"""Start-up and host.enable as xen-api does them (xapi_host_helpers.ml consider_enabling_host,
xapi_host.ml enable/disable/assert_safe_to_reenable), over the real XenAPI client."""

import pytest
import XenAPI

from agent.lab.xapi import localdb
from agent.lab.xapi.scenario import parse_scenario

NFS = {"name_label": "nfs", "uuid": "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01", "attached": False,
       "device_config": {"server": "198.51.100.10", "serverpath": "/x"}}


def _enable_error(x):
    host = x.host.get_all()[0]
    with pytest.raises(XenAPI.Failure) as failure:
        x.host.enable(host)
    return host, failure.value.details


def test_disabled_host_enables_itself_when_start_up_completes(sim_factory, sim_login, wait_until):
    """A host that xapi finds disabled is enabled by consider_enabling_host; until then
    host.enable answers HOST_STILL_BOOTING []."""
    sim = sim_factory(scenario=parse_scenario({"host": {"enabled": False, "boot_seconds": 0.5}}))
    x = sim_login(sim).xenapi
    host, details = _enable_error(x)
    assert details == ["HOST_STILL_BOOTING"]
    assert x.host.get_enabled(host) is False
    wait_until(lambda: x.host.get_enabled(host), what="xapi enabling the host itself")


def test_disabled_without_boot_phase_is_enabled_at_once(sim_factory, sim_login):
    """enabled=false with auto_enable=true and no boot phase does not stay disabled."""
    sim = sim_factory(scenario=parse_scenario({"host": {"enabled": False}}))
    x = sim_login(sim).xenapi
    assert x.host.get_enabled(x.host.get_all()[0]) is True


def test_operator_disable_lives_in_memory_only(sim_factory, sim_login, wait_until):
    """operator_disabled: a plain host.disable after start-up; host.enable works; a toolstack
    restart forgets it and xapi enables the host again."""
    sim = sim_factory(scenario=parse_scenario({"host": {"operator_disabled": True}}))
    x = sim_login(sim).xenapi
    host = x.host.get_all()[0]
    assert x.host.get_enabled(host) is False
    assert localdb.read(sim.local_db_path)["host_auto_enable"] == "true"
    sim.toolstack_restart(0.05)
    wait_until(lambda: sim.is_up and sim.state()["host"]["enabled"], what="re-enabled by restart")


def test_operator_disable_then_enable(sim_factory, sim_login):
    """After a plain host.disable, host.enable succeeds (nothing forbids it)."""
    sim = sim_factory()
    x = sim_login(sim).xenapi
    host = x.host.get_all()[0]
    x.host.disable(host)
    assert sim.user_requested_host_disable is True
    x.host.enable(host)
    assert x.host.get_enabled(host) is True and sim.user_requested_host_disable is False


def test_pending_guidance_keeps_host_disabled_and_refuses_enable(sim_factory, sim_login):
    """Pending mandatory guidance: no self-enable; HOST_PENDING_MANDATORY_GUIDANCE_NOT_EMPTY."""
    sim = sim_factory(scenario=parse_scenario(
        {"host": {"enabled": False, "pending_guidances": ["reboot_host"]}}))
    x = sim_login(sim).xenapi
    host, details = _enable_error(x)
    assert x.host.get_enabled(host) is False
    assert details == ["HOST_PENDING_MANDATORY_GUIDANCE_NOT_EMPTY", host]
    sim.set_pending_guidances([])
    x.host.enable(host)
    assert x.host.get_enabled(host) is True


def test_disabled_until_reboot_survives_a_toolstack_restart_not_a_boot(sim_factory, sim_login):
    """host_disabled_until_reboot: kept when xapi restarts without a reboot (system_boot=false)
    and host.enable answers HOST_DISABLED_UNTIL_REBOOT [host]; a system boot clears it."""
    restart = parse_scenario({"host": {"enabled": False, "disabled_until_reboot": True,
                                       "system_boot": False}})
    sim = sim_factory(scenario=restart)
    x = sim_login(sim).xenapi
    host, details = _enable_error(x)
    assert details == ["HOST_DISABLED_UNTIL_REBOOT", host]
    assert x.host.get_enabled(host) is False
    boot = parse_scenario({"host": {"enabled": False, "disabled_until_reboot": True}})
    sim2 = sim_factory(scenario=boot)
    x2 = sim_login(sim2).xenapi
    assert x2.host.get_enabled(x2.host.get_all()[0]) is True
    assert localdb.read(sim2.local_db_path)["host_disabled_until_reboot"] == "false"


def test_ha_with_unplugged_pbd_of_protected_vm(sim_factory, sim_login):
    """HA armed and a PBD unplugged: no self-enable; host.enable answers
    HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED [sr] while a protected VM has a disk there."""
    scenario = parse_scenario({
        "pool": {"ha_enabled": True}, "host": {"enabled": False}, "sr": [NFS],
        "vm": [{"name_label": "guarded", "srs": ["nfs"], "ha_protected": True}]})
    sim = sim_factory(scenario=scenario)
    x = sim_login(sim).xenapi
    host, details = _enable_error(x)
    sr = x.SR.get_by_uuid(NFS["uuid"])
    assert details == ["HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", sr]
    assert x.host.get_enabled(host) is False
    x.PBD.plug(x.SR.get_PBDs(sr)[0])   # allowed on a disabled host
    x.host.enable(host)
    assert x.host.get_enabled(host) is True


def test_auto_enable_false_stays_disabled_and_enable_is_allowed(sim_factory, sim_login):
    """auto_enable=false (persisted): xapi leaves the host disabled; the user may enable."""
    sim = sim_factory(scenario=parse_scenario({"host": {"enabled": False, "auto_enable": False}}))
    x = sim_login(sim).xenapi
    host = x.host.get_all()[0]
    assert x.host.get_enabled(host) is False
    x.host.enable(host)
    assert localdb.read(sim.local_db_path)["host_auto_enable"] == "true"


def test_startup_plugs_attach_reachable_srs(sim_factory, sim_login):
    """startup_plugs: xapi plugs the host's PBDs at start-up; an unreachable one stays
    unplugged and start-up still completes."""
    scenario = parse_scenario({"sr": [NFS, dict(NFS, name_label="dead",
                                                 uuid="5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a02",
                                                 reachable=False)],
                               "simulator": {"startup_plugs": True}})
    sim = sim_factory(scenario=scenario)
    srs = sim.state()["srs"]
    assert srs[NFS["uuid"]]["attached"] is True
    assert srs["5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a02"]["attached"] is False
    assert sim.state()["startup_complete"] is True


def test_settings_from_scenario_wire_and_refusals(sim_factory, sim_rpc):
    """[simulator] settings are validated; sim.set_setting works over the wire."""
    from agent.lab.xapi.scenario import ScenarioError
    with pytest.raises(ScenarioError, match="simulator.no_such"):
        parse_scenario({"simulator": {"no_such": 1}})
    with pytest.raises(ScenarioError, match="true or false"):
        parse_scenario({"simulator": {"autostart_vms": 1}})
    sim = sim_factory(scenario=parse_scenario({"simulator": {"plug_seconds": 0.25}}))
    assert sim.settings["plug_seconds"] == 0.25
    proxy = sim_rpc(sim)
    assert proxy.sim.set_setting("plug_connect_timeout", 5)["Status"] == "Success"
    assert sim.settings["plug_connect_timeout"] == 5.0
    reply = proxy.sim.set_setting("nope", 1)
    assert reply["Status"] == "Failure" and reply["ErrorDescription"][0] == "INVALID_VALUE"
