"""A pool member in emergency mode (api_server.ml callback1, xapi.ml member start-up), over the
real XenAPI client."""

import pytest
import XenAPI

from agent.lab.xapi.scenario import parse_scenario


def _member(sim_factory, stage):
    return sim_factory(scenario=parse_scenario(
        {"host": {"pool_member": True, "address": "203.0.113.7", "emergency": stage},
         "vm": [{"name_label": "pfsense", "auto_poweron": True}]}))


@pytest.mark.parametrize("stage, details", [
    ("no-management-ip", ["HOST_HAS_NO_MANAGEMENT_IP"]),
    ("still-booting", ["HOST_STILL_BOOTING"]),
    ("cannot-talk-back", ["HOST_MASTER_CANNOT_TALK_BACK", "203.0.113.7"]),
])
def test_login_is_refused_with_the_emergency_error(sim_factory, stage, details):
    """session.login_with_password is not an emergency call: it gets the stage's error."""
    sim = _member(sim_factory, stage)
    session = sim.client()
    with pytest.raises(XenAPI.Failure) as failure:
        session.xenapi.login_with_password("root", "", "1.0", "sspn-tests")
    assert failure.value.details == details


def test_only_emergency_calls_work_and_vm_start_never(sim_factory):
    """A local slave login and host.is_in_emergency_mode work; VM.start (even with a valid
    local session), its Async form and the Class_method alias of an emergency call do not."""
    sim = _member(sim_factory, "no-management-ip")
    session = sim.client()
    session.slave_local_login_with_password("root", "")   # XenAPI routes slave_local_* to _login
    x = session.xenapi
    assert x.host.is_in_emergency_mode() is True
    vm = sim.state()["vms"]["pfsense"]["ref"]
    for call in (lambda: x.VM.start(vm, False, False), lambda: x.Async.VM.start(vm, False, False),
                 lambda: x.VM.get_all(), lambda: x.host_is_in_emergency_mode()):
        with pytest.raises(XenAPI.Failure) as failure:
            call()
        assert failure.value.details == ["HOST_HAS_NO_MANAGEMENT_IP"]
    assert sim.state()["vms"]["pfsense"]["power_state"] == "Halted"
    session.xenapi.logout()


def test_leaving_emergency_mode(sim_factory, sim_login):
    """Once the master answers, emergency mode ends and the pool's master is another host."""
    sim = _member(sim_factory, "still-booting")
    sim.set_emergency("")
    session = sim_login(sim)
    x = session.xenapi
    assert x.host.is_in_emergency_mode() is False
    master = x.pool.get_master(x.pool.get_all()[0])
    assert master != x.session.get_this_host(session.handle)
    assert x.host.get_address(master) == "192.0.2.1"
