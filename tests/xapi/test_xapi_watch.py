"""The watcher: event.from on the watched objects becomes typed events; failures lead to resyncs."""

import logging
import os
import threading

from agent.decision import world as w
from tests.waiting import wait_until
from tests.xapi.conftest import NFS_SR, make_config


def _same_objects(a, b):
    """Worlds equal apart from the host's enabled flag (a restart toggles it)."""
    return (a.bindings, a.vms, a.pbds, a.missing, a.host.ref) == \
        (b.bindings, b.vms, b.pbds, b.missing, b.host.ref)


def test_first_event_is_the_full_world(sim, start_adapter):
    """start() connects and posts XapiConnected with the world resolve_once reads."""
    from agent.adapters.xapi import resolve_once
    _, recorder = start_adapter()
    world = recorder.wait_kind("xapi_connected").world
    assert world == resolve_once(make_config(sim), local_db_path=sim.local_db_path)


def test_vm_start_posts_vm_changed_running(sim, connected):
    """The uplink VM starting (outside the agent) posts VmChanged with power_state Running."""
    _, recorder, world = connected
    sim.vm_start("pfsense")
    event = recorder.wait_kind("vm_changed", vm__power_state="Running")
    assert event.vm.ref == world.vms[0].ref and event.vm.name_label == "pfsense"
    sim.vm_stop("pfsense")
    recorder.wait_kind("vm_changed", vm__power_state="Halted")


def test_host_disable_posts_host_changed(sim, connected):
    """host.disable posts HostChanged(enabled=False); with auto_enable=false and
    MAINTENANCE_MODE the view says it was disabled deliberately."""
    _, recorder, _ = connected
    sim.host_disable(auto_enable=False, maintenance_mode=True)
    host = recorder.wait_kind("host_changed", host__enabled=False).host
    if not host.deliberately_disabled:  # local.db and other_config may land in a later event
        recorder.wait_for(lambda e: e.kind == "host_changed" and e.host.deliberately_disabled,
                          what="HostChanged with auto_enable=false and MAINTENANCE_MODE")
    sim.host_enable()
    recorder.wait_kind("host_changed", host__enabled=True)


def test_pbd_changes_post_pbd_changed(sim, connected, xenapi_session):
    """This host's PBD of a configured SR being plugged and unplugged posts PbdChanged each time."""
    _, recorder, world = connected
    pbd = world.pbds[0]
    xenapi_session.xenapi.PBD.plug(pbd.ref)
    event = recorder.wait_kind("pbd_changed", pbd__attached=True)
    assert event.pbd.ref == pbd.ref and event.pbd.sr_uuid == NFS_SR
    sim.pbd_unplug(NFS_SR)
    recorder.wait_kind("pbd_changed", pbd__attached=False)


def test_toolstack_restart_loses_then_reconnects_with_a_full_world(sim, connected):
    """A toolstack restart posts XapiLost (connection refused) and, once xapi is back, a new
    XapiConnected carrying the whole world again; events flow afterwards."""
    _, recorder, world = connected
    sim.toolstack_restart(0.5)
    lost = recorder.wait_kind("xapi_lost")
    assert lost.error
    again = recorder.wait_kind("xapi_connected").world
    assert _same_objects(again, world)
    sim.vm_start("pfsense")
    recorder.wait_kind("vm_changed", vm__power_state="Running")


def test_a_short_outage_is_retried_quietly_and_fast(sim, connected):
    """While XAPI is away for less than the fast window, the watcher tries every 50 ms
    (agent/decision/schedule.py) but tells the machine once: one XapiLost per outage, then XapiConnected."""
    _, recorder, _world = connected
    calls = []
    dispatch = sim.dispatch
    sim.dispatch = lambda method, params, ctx=None: (calls.append(method), dispatch(method, params, ctx))[1]
    sim.toolstack_restart(1.0)
    recorder.wait_kind("xapi_lost")
    recorder.wait_kind("xapi_connected")
    assert [e.kind for e in recorder.seen].count("xapi_lost") == 1
    assert "session.login_with_password" in calls or "pool.get_all" in calls


def test_session_invalidated_during_event_from_resumes(sim, connected):
    """Sessions destroyed while event.from blocks: the client re-logs in, the adapter resyncs
    (XapiConnected again) and keeps following."""
    _, recorder, world = connected
    wait_until(lambda: sim.state()["event_waiters"] >= 1, message="watcher blocked in event.from")
    sim.invalidate_sessions()
    assert recorder.wait_kind("xapi_connected").world == world
    sim.vm_start("pfsense")
    recorder.wait_kind("vm_changed", vm__power_state="Running")


def test_unrelated_vms_churning_post_nothing(sim, connected):
    """1,000 unrelated VMs changing 2,000 times deliver no event: only the uplink VM's change
    arrives (object-scoped subscriptions, docs/xapi-behaviour.md §3)."""
    _, recorder, world = connected
    before = len(recorder.seen)
    sim.add_vms(1000)
    sim.churn(2000)
    sim.vm_start("pfsense")
    recorder.wait_kind("vm_changed", vm__power_state="Running")
    recorder.drain()
    after = recorder.seen[before:]
    assert after and all(e.kind == "vm_changed" for e in after), [e.kind for e in after]
    assert {e.vm.ref for e in after} == {world.vms[0].ref}


def test_uplink_vm_renamed_away_triggers_a_resync(sim, connected, xenapi_session):
    """Renaming the uplink VM away from its label resyncs: XapiConnected reports it missing;
    naming it back resolves it again (re-checked while a label is missing)."""
    _, recorder, world = connected
    x = xenapi_session.xenapi
    x.VM.set_name_label(world.vms[0].ref, "pfsense-old")
    assert recorder.wait_kind("xapi_connected").world.missing == ("vm 'pfsense'",)
    x.VM.set_name_label(world.vms[0].ref, "pfsense")
    assert recorder.wait_kind("xapi_connected").world == world


def test_event_from_garbage_resyncs_without_killing_the_watcher(sim, connected, caplog):
    """event.from answering garbage (not a struct, truncated events, no members) is logged and
    followed by a resync; the watcher survives and keeps posting changes."""
    adapter, recorder, world = connected
    caplog.set_level(logging.WARNING, logger="agent.adapters")
    sim.event_garbage(3)
    assert recorder.wait_kind("xapi_connected").world == world
    wait_until(lambda: sim.state()["event_waiters"] >= 1, message="watcher following again")
    assert adapter.running
    sim.vm_start("pfsense")
    recorder.wait_kind("vm_changed", vm__power_state="Running")
    assert any("resyncing" in r.getMessage() or "unavailable" in r.getMessage()
               for r in caplog.records)


def test_slow_xapi_times_out_then_recovers(sim, start_adapter):
    """XAPI answering slower than call_timeout (+ event_timeout) makes calls fail as timeouts
    (XapiLost, failed actions); once the latency is gone the adapter reconnects and acts again."""
    adapter, recorder = start_adapter(call_timeout=0.3, event_timeout=0.5)
    world = recorder.wait_kind("xapi_connected").world
    sim.set_latency(1.5)
    lost = recorder.wait_kind("xapi_lost")
    assert "no answer within" in lost.error
    adapter.request(w.EnableHost(world.host.ref))
    done = recorder.wait_kind("action_done")
    assert done.ok is False and "no answer within" in done.error[0]
    sim.set_latency(0)
    recorder.wait_kind("xapi_connected")
    adapter.request(w.EnableHost(world.host.ref))
    assert recorder.wait_kind("action_done").ok is True


def test_actions_queued_behind_a_timed_out_call_fail_unsent(sim, start_adapter):
    """A call that gets no answer fails the actions queued behind it at once, and their error
    says XAPI was unreachable: they were never sent (the watcher has not noticed anything yet,
    its event.from outlasts the call timeout)."""
    adapter, recorder = start_adapter(call_timeout=0.3, event_timeout=5.0)
    world = recorder.wait_kind("xapi_connected").world
    sim.set_latency(1.0)
    first, second = w.EnableHost(world.host.ref), w.ListAutostart()
    adapter.request(first)
    adapter.request(second)
    done = [recorder.wait_kind("action_done") for _ in range(2)]
    assert [d.action for d in done] == [first, second]
    assert [d.ok for d in done] == [False, False]
    assert done[0].error[0].startswith("no answer within the call timeout")
    assert list(done[1].error) == ["XAPI unreachable: " + done[0].error[0]]


def test_missing_socket_posts_xapi_lost_and_fails_actions(scratch_dir, sim, start_adapter, monkeypatch):
    """With no socket at the configured path the watcher posts XapiLost (naming the path) when
    the outage begins, retries quietly for the fast window (agent/decision/schedule.py), then posts
    XapiLost per attempt of its backoff; queued actions fail promptly instead of waiting."""
    import functools
    from agent.adapters import xapi as xapi_adapter
    monkeypatch.setattr(xapi_adapter, "ReconnectSchedule",
                        functools.partial(xapi_adapter.ReconnectSchedule, fast_window=0.3))
    path = os.path.join(scratch_dir, "xapi")
    adapter, recorder = start_adapter(make_config(socket=path))
    first = recorder.wait_kind("xapi_lost")
    assert first.error == "no socket at %s (is xapi running?)" % path
    recorder.wait_kind("xapi_lost")  # an attempt of the backoff, after the fast window
    adapter.request(w.ListAutostart())
    done = recorder.wait_kind("action_done")
    assert done.ok is False and path in done.error[0]


def test_stop_interrupts_the_long_poll_and_logs_out(sim, start_adapter):
    """stop() ends every thread although event.from would block for a minute, and logs every
    session out: the watcher's and one per lane (control, start, the one SR's plug lane)."""
    adapter, recorder = start_adapter(event_timeout=60.0)
    recorder.wait_kind("xapi_connected")
    wait_until(lambda: sim.state()["event_waiters"] >= 1, message="watcher blocked in event.from")
    adapter.request(w.ListAutostart())
    recorder.wait_kind("action_done")
    wait_until(lambda: sim.state()["sessions"] == 4, message="four sessions")
    adapter.stop()
    assert not adapter.running
    assert sim.state()["sessions"] == 0


def test_stop_interrupts_a_vm_start_waiting_its_start_delay(sim_factory, scenario_file,
                                                            start_adapter_for):
    """stop() also ends the worker while VM.start blocks for the VM's start_delay."""
    path = scenario_file(("start_delay = 0", "start_delay = 60"))
    simulator = sim_factory(scenario=path)
    adapter, recorder = start_adapter_for(simulator)
    world = recorder.wait_kind("xapi_connected").world
    adapter.request(w.StartVm(world.vms[0].ref, "pfsense"))
    recorder.wait_kind("vm_changed", vm__power_state="Running")
    done = threading.Event()

    def stop():
        adapter.stop()
        done.set()
    threading.Thread(target=stop).start()
    assert done.wait(30), "stop() did not return"
    assert not adapter.running


def test_unreadable_password_file_is_reported_not_crashed(sim, scratch_dir, start_adapter):
    """A remote URL whose password file vanished after validation: XapiLost and the failed
    action name the file and the fix (the ConfigError text), and the watcher keeps retrying."""
    secret = os.path.join(scratch_dir, "xapi.password")
    with open(secret, "w") as handle:
        handle.write("xcp-lab\n")
    os.chmod(secret, 0o600)
    config = make_config(sim, url=sim.tcp_url, password_file=secret)
    os.unlink(secret)
    adapter, recorder = start_adapter(config)
    lost = recorder.wait_kind("xapi_lost")
    assert secret in lost.error and "chmod 600" in lost.error
    recorder.wait_kind("xapi_lost")
    assert adapter.running
    adapter.request(w.ListAutostart())
    done = recorder.wait_kind("action_done")
    assert done.ok is False and secret in done.error[0]


def test_an_outage_that_begins_with_a_cut_reply_is_reported(sim, connected):
    """xapi goes away while its event.from reply is on the wire (a malformed reply reaches the
    watcher), and the resync that follows is refused: the machine is told XAPI is lost at
    once, not only when the fast reconnect window is over; then XapiConnected."""
    _, recorder, _world = connected
    take = sim.take_event_garbage

    def reply_then_go_away():
        value = take()
        if value is not None:
            sim.toolstack_restart(2.0)   # listeners closed; this reply still goes out
        return value
    sim.take_event_garbage = reply_then_go_away
    sim.event_garbage(1)
    assert recorder.wait_kind("xapi_lost").error
    recorder.wait_kind("xapi_connected")
