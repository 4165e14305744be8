"""A simulated toolstack restart looks like xapi's from the client (xapi.ml, xapi_host_helpers.ml)."""

import os

import pytest
import XenAPI

from agent.lab.xapi import localdb


def test_outage_refuses_connections_then_client_relogs_in(sim, xenapi_session, wait_until):
    """During the outage calls raise ConnectionRefusedError (socket file kept); afterwards the
    client's next call gets SESSION_INVALID, logs in again and succeeds; the DB generation stays."""
    x = xenapi_session.xenapi
    token = x.event_from(["vm"], "", 0.0)["token"]
    old_handle = xenapi_session.handle
    sim.toolstack_restart(0.3)
    assert os.path.exists(sim.socket_path)
    with pytest.raises(ConnectionRefusedError):
        x.VM.get_all()
    wait_until(lambda: sim.is_up, what="simulator back up")
    assert len(x.VM.get_all()) == 7
    assert xenapi_session.handle != old_handle
    assert x.event_from(["vm"], "", 0.0)["token"] >= token


def test_blocked_event_from_sees_the_restart(sim, xenapi_session, background, wait_until):
    """A blocked event.from loses its connection (no reply); the client's retry is refused."""
    x = xenapi_session.xenapi
    token = x.event_from(["vm"], "", 0.0)["token"]
    call = background(x.event_from, ["vm"], token, 30.0)
    wait_until(lambda: sim.state()["event_waiters"] == 1, what="event.from blocked")
    sim.toolstack_restart(0.5)
    call.join()
    assert isinstance(call.error, ConnectionRefusedError)


def test_restart_over_the_wire_replies_first(sim, sim_rpc, wait_until):
    """sim.toolstack_restart over the socket answers Success, then the listener goes away."""
    assert sim_rpc(sim).sim.toolstack_restart(0.2) == {"Status": "Success", "Value": ""}
    wait_until(lambda: sim.is_up, what="simulator back up")


def test_restart_re_enables_host_unless_auto_enable_false(sim, sim_login, wait_until):
    """After a restart a host disabled with the default auto_enable comes back enabled; one
    disabled with auto_enable=false stays disabled (Localdb host_auto_enable)."""
    x = sim_login(sim).xenapi
    host = x.host.get_all()[0]
    x.host.disable(host)
    sim.toolstack_restart(0.05)
    wait_until(lambda: sim.is_up, what="simulator back up")
    x = sim_login(sim).xenapi
    assert x.host.get_enabled(host) is True
    x.host.disable(host, False)
    sim.toolstack_restart(0.05)
    wait_until(lambda: sim.is_up, what="simulator back up")
    x = sim_login(sim).xenapi
    assert x.host.get_enabled(host) is False
    assert localdb.read(sim.local_db_path)["host_auto_enable"] == "false"


def test_restart_with_boot_phase(sim, sim_login, wait_until):
    """With boot_seconds the host is disabled and host.enable says HOST_STILL_BOOTING until
    start-up completes, then consider_enabling_host enables it."""
    sim.toolstack_restart(0.05, boot_seconds=0.5)
    wait_until(lambda: sim.is_up, what="simulator back up")
    x = sim_login(sim).xenapi
    host = x.host.get_all()[0]
    assert x.host.get_enabled(host) is False
    with pytest.raises(XenAPI.Failure) as failure:
        x.host.enable(host)
    assert failure.value.details == ["HOST_STILL_BOOTING"]
    wait_until(lambda: x.host.get_enabled(host), what="host enabled after boot")
    assert sim.state()["booting"] is False


def test_start_delay_wait_is_cut_by_restart(sim_factory, sim_login, background, wait_until):
    """A VM.start waiting its start_delay loses its connection when the toolstack restarts;
    the VM keeps running."""
    import attr
    from agent.lab.xapi import load_scenario
    base = load_scenario()
    scenario = attr.evolve(base, vms=[attr.evolve(vm, start_delay=60) if vm.name_label ==
                                      "scratch" else vm for vm in base.vms])
    sim = sim_factory(scenario=scenario)
    x = sim_login(sim).xenapi
    scratch = x.VM.get_by_name_label("scratch")[0]
    call = background(x.VM.start, scratch, False, False)
    wait_until(lambda: sim.state()["vms"]["scratch"]["power_state"] == "Running",
               what="scratch running")
    sim.toolstack_restart(0.5)
    call.join()
    assert isinstance(call.error, OSError)   # dropped, then the retry is refused
    assert sim.state()["vms"]["scratch"]["power_state"] == "Running"
