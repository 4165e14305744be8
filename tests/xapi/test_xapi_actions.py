"""The action worker: each requested action runs its XAPI calls and posts exactly one ActionDone."""

from agent.decision import world as w
from tests.xapi.conftest import NFS_SR


def test_enable_host_during_boot_fails_still_booting_then_succeeds(sim, connected):
    """host.enable while xapi is still starting up fails with HOST_STILL_BOOTING; after start-up
    the same action succeeds and the host's HostChanged(enabled=True) follows."""
    adapter, recorder, world = connected
    sim.host_disable()
    recorder.wait_kind("host_changed", host__enabled=False)
    sim.boot_phase(60)
    action = w.EnableHost(world.host.ref)
    adapter.request(action)
    done = recorder.wait_kind("action_done")
    assert done.action == action and done.ok is False
    assert done.error[0] == "HOST_STILL_BOOTING"
    sim.boot_phase(0)
    adapter.request(action)
    assert recorder.wait_kind("action_done").ok is True
    recorder.wait_kind("host_changed", host__enabled=True)


def test_plug_pbd_fails_while_storage_is_down_then_plugs(sim, connected):
    """PBD.plug with the NFS server unreachable fails with SR_BACKEND_FAILURE_108; once it
    answers the plug succeeds and PbdChanged(attached=True) follows."""
    adapter, recorder, world = connected
    pbd = world.pbds[0]
    sim.set_storage_reachable(NFS_SR, False)
    adapter.request(w.PlugPbd(pbd.ref, NFS_SR))
    done = recorder.wait_kind("action_done")
    assert done.ok is False and done.error[0] == "SR_BACKEND_FAILURE_108"
    sim.set_storage_reachable(NFS_SR, True)
    sim.plug_failures(NFS_SR, 1)
    adapter.request(w.PlugPbd(pbd.ref, NFS_SR))
    assert recorder.wait_kind("action_done").error[0] == "SR_BACKEND_FAILURE_108"
    adapter.request(w.PlugPbd(pbd.ref, NFS_SR))
    assert recorder.wait_kind("action_done").ok is True
    recorder.wait_kind("pbd_changed", pbd__attached=True)


def test_start_vm_starts_the_uplink_vm(sim, connected):
    """StartVm runs VM.start(vm, false, false): ActionDone ok and VmChanged Running; starting it
    again fails with XAPI's VM_BAD_POWER_STATE list."""
    adapter, recorder, world = connected
    vm = world.vms[0]
    adapter.request(w.StartVm(vm.ref, vm.name_label))
    assert recorder.wait_kind("action_done").ok is True
    recorder.wait_kind("vm_changed", vm__power_state="Running")
    assert sim.state()["vms"]["pfsense"]["power_state"] == "Running"
    adapter.request(w.StartVm(vm.ref, vm.name_label))
    done = recorder.wait_kind("action_done")
    assert done.ok is False
    assert list(done.error) == ["VM_BAD_POWER_STATE", vm.ref, "halted", "running"]


def test_list_autostart_returns_halted_auto_poweron_vms(sim, connected, xenapi_session):
    """ListAutostart returns the halted, non-template VMs whose other_config auto_poweron is the
    string "true" (not "True"), with int order and start_delay and the SRs of their disks."""
    adapter, recorder, _ = connected
    x = xenapi_session.xenapi
    scratch = x.VM.get_by_name_label("scratch")[0]
    x.VM.add_to_other_config(scratch, "auto_poweron", "True")
    sim.vm_start("db")
    adapter.request(w.ListAutostart())
    done = recorder.wait_kind("action_done")
    assert done.ok is True and isinstance(done.value, tuple)
    by_name = dict((vm.name_label, vm) for vm in done.value)
    assert sorted(by_name) == ["pfsense", "web"]
    assert (by_name["pfsense"].order, by_name["web"].order) == (0, 2)
    assert all(isinstance(vm.order, int) and isinstance(vm.start_delay, int)
               for vm in done.value)
    assert all(vm.auto_poweron and vm.power_state == "Halted" for vm in done.value)
    assert by_name["web"].sr_uuids == (NFS_SR,)
    assert set(by_name["pfsense"].sr_uuids) == set(sim.state()["vms"]["pfsense"]["srs"])


def test_publish_state_writes_host_other_config(sim, connected):
    """PublishState replaces each key in the host's other_config (remove + add), so writing
    twice leaves the newest values; the HostChanged shows them."""
    adapter, recorder, world = connected
    first = {"sspn-agent-state": "BOOTING", "sspn-agent-reason": "waiting for pfsense"}
    adapter.request(w.PublishState(world.host.ref, first))
    assert recorder.wait_kind("action_done").ok is True
    second = {"sspn-agent-state": "HEALTHY", "sspn-agent-reason": ""}
    adapter.request(w.PublishState(world.host.ref, second))
    assert recorder.wait_kind("action_done").ok is True
    other = sim.state()["host"]["other_config"]
    assert other["sspn-agent-state"] == "HEALTHY" and other["sspn-agent-reason"] == ""
    recorder.wait_for(lambda e: e.kind == "host_changed"
                      and dict(e.host.other_config).get("sspn-agent-state") == "HEALTHY",
                      what="HostChanged with the published state")


def test_raise_message_creates_a_host_message(sim, connected):
    """RaiseMessage creates an XAPI message on this host (found by uuid when none is given)."""
    adapter, recorder, world = connected
    adapter.request(w.RaiseMessage("SSPN_AGENT_DEGRADED", "gateway 192.0.2.1 silent", 2))
    done = recorder.wait_kind("action_done")
    assert done.ok is True and done.value.startswith("OpaqueRef:")
    (message,) = sim.state()["messages"]
    assert message["name"] == "SSPN_AGENT_DEGRADED"
    assert message["body"] == "gateway 192.0.2.1 silent"
    assert message["obj_uuid"] == world.host.uuid and int(message["priority"]) == 2


def test_every_request_gets_exactly_one_action_done(sim, connected):
    """A burst of actions, including an unknown one, is answered one ActionDone per request,
    in order."""
    adapter, recorder, world = connected
    actions = [w.ListAutostart(), object(), w.EnableHost(world.host.ref), w.ListAutostart()]
    for action in actions:
        adapter.request(action)
    done = [recorder.wait_kind("action_done") for _ in actions]
    assert [d.action for d in done] == actions
    assert [d.ok for d in done] == [True, False, True, True]
    assert "unknown XAPI action" in done[1].error[0]
    recorder.drain()
    assert len([e for e in recorder.seen if e.kind == "action_done"]) == len(actions)
