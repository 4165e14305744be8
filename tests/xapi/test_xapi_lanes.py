"""Lanes: a slow PBD.plug holds up no other XAPI action, and one SR is never plugged twice at
once (the real XenAPI client against the simulator; the plug is held by the simulator's
storage reachability hook, as SM holds it while a half-answering NFS server stalls)."""

import threading

from agent.decision import world as w
from agent.adapters.xapi import lane_of
from tests.xapi.conftest import NFS_SR


class HeldStorage(object):
    """The simulator's storage_probe: the first plug waits for ``release`` and fails, later
    plugs answer at once; counts plugs in flight."""

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.inflight = 0
        self.most = 0

    def __call__(self, device_config):
        with self.lock:
            self.calls += 1
            first = self.calls == 1
            self.inflight += 1
            self.most = max(self.most, self.inflight)
        self.entered.set()
        try:
            if first:
                self.release.wait(30.0)
                return False
            return True
        finally:
            with self.lock:
                self.inflight -= 1


def _done(recorder, kind, what):
    return recorder.wait_for(lambda e: e.kind == "action_done" and isinstance(e.action, kind),
                             what=what)


def test_a_held_plug_delays_neither_host_enable_nor_vm_start_nor_publishing(sim, connected):
    """While PBD.plug is held, host.enable, VM.start and the state publishing all complete;
    a second plug of the same SR waits until the first has ended (never two in flight)."""
    adapter, recorder, world = connected
    held = HeldStorage()
    sim.storage_probe = held
    plug = w.PlugPbd(world.pbds[0].ref, NFS_SR)
    adapter.request(plug)
    assert held.entered.wait(10.0)
    sim.host_disable()
    recorder.wait_kind("host_changed", host__enabled=False)
    vm = world.vms[0]
    adapter.request(w.EnableHost(world.host.ref))
    adapter.request(w.PublishState(world.host.ref, {"sspn-agent-state": "MAINTENANCE"}))
    assert _done(recorder, w.EnableHost, "host.enable").ok
    # the agent asks for the firewall only once the host is enabled (VM.start has its own lane)
    adapter.request(w.StartVm(vm.ref, vm.name_label))
    assert _done(recorder, w.PublishState, "publish").ok
    assert _done(recorder, w.StartVm, "VM.start").ok
    assert held.inflight == 1 and not held.release.is_set()
    assert sim.state()["vms"]["pfsense"]["power_state"] == "Running"
    adapter.request(w.PlugPbd(world.pbds[0].ref, NFS_SR, ))
    held.release.set()
    first = _done(recorder, w.PlugPbd, "first plug")
    assert not first.ok and first.error[0] == "SR_BACKEND_FAILURE_108"
    assert _done(recorder, w.PlugPbd, "second plug").ok
    assert held.calls == 2 and held.most == 1


def test_lanes_by_action():
    """Each SR's plugs share one lane; VM.start has its own; the rest share the control lane."""
    assert lane_of(w.PlugPbd("OpaqueRef:p1", "a")) == lane_of(w.PlugPbd("OpaqueRef:p2", "a"))
    assert lane_of(w.PlugPbd("OpaqueRef:p1", "a")) != lane_of(w.PlugPbd("OpaqueRef:p1", "b"))
    assert lane_of(w.StartVm("OpaqueRef:v")) == "start"
    assert {lane_of(w.EnableHost("h")), lane_of(w.ListAutostart()),
            lane_of(w.PublishState("h", {})), lane_of(w.RaiseMessage("n", "b"))} == {"control"}


def test_a_stalled_plug_is_answered_at_its_deadline_and_the_next_plug_waits_for_its_task(
        sim, start_adapter):
    """Async.PBD.plug of a stalled NFS mount (SM: 73 after plug_stall_seconds): at the deadline
    (6 call timeouts) the task is cancelled and the action answered TIMEOUT; a plug of the same
    SR requested then runs only after XAPI has ended the first (never two in flight)."""
    sim.set_setting("plug_stall_seconds", 3.0)
    sim.set_storage_state(NFS_SR, "stalled")
    adapter, recorder = start_adapter(call_timeout=0.25)   # deadline 1.5 s
    world = recorder.wait_kind("xapi_connected").world
    plug = w.PlugPbd(world.pbds[0].ref, NFS_SR)
    adapter.request(plug)
    first = _done(recorder, w.PlugPbd, "first plug")
    assert not first.ok and first.error[0] == "TIMEOUT" and "cancelled" in first.error[1]
    sim.set_storage_state(NFS_SR, "up")
    adapter.request(plug)
    assert _done(recorder, w.PlugPbd, "second plug").ok
    assert sim.plugger.most_in_flight[NFS_SR] == 1
    assert sim.state()["srs"][NFS_SR]["attached"]
