"""The machine against XAPI as it is (docs/xapi-fidelity.md, "Agent-side behaviours"): start-up,
refused host.enable, maintenance evacuating the firewall, xapi-autostart-vms racing the agent,
unknown SRs. Unit tier: the real machine on the in-memory world."""

import states
from agent.decision.world import EnableHost, StartVm
from memworld import SR, MemWorld


def _effects(world):
    return world.report.effects + [e for t in world.report.transitions for e in t["effects"]]


def _calls(world, kind, name=None):
    return [c[0] for c in world.xapi.calls if isinstance(c[0], kind)
            and (name is None or c[0].name_label == name)]


def test_host_still_booting_is_asked_once_per_backoff_cap_and_xapi_enables_it_itself():
    """HOST_STILL_BOOTING: no retry-spam (one call per backoff_cap), no failure counted; xapi
    enables the host itself when start-up completes; the agent, not having enabled it, does
    not start the firewall (xapi-autostart-vms does)."""
    w = MemWorld(vm_running=False, host_enabled=False)
    w.xapi.booting = True
    w.settle(max_time=95.0)  # backoff_cap is 30 s in the test config
    assert w.agent.state == "MAINTENANCE"
    assert 1 <= len(_calls(w, EnableHost)) <= 4
    assert w.agent.retries["host-enable"].failures == 0
    assert any("enables the host itself" in b for b in states.module("MAINTENANCE").blockers(w.agent))
    asked = len(_calls(w, EnableHost))
    w.xapi.finish_boot()
    w.settle_until("WAITING_VM")
    assert len(_calls(w, EnableHost)) == asked
    assert not _calls(w, StartVm)
    assert any("HOST_STILL_BOOTING" in e["result"] for e in _effects(w))


def test_refused_host_enable_goes_degraded_at_once_with_code_meaning_and_fix():
    """Each refusal from assert_safe_to_reenable: DEGRADED on the first answer, the reason
    names the code and the fix; asked again only every backoff_cap; once the cause is gone
    the host is enabled and the firewall started."""
    for code in ("HOST_DISABLED_UNTIL_REBOOT", "HOST_PENDING_MANDATORY_GUIDANCE_NOT_EMPTY",
                 "HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED"):
        w = MemWorld(vm_running=False, host_enabled=False, start=False)
        w.xapi.enable_refusal = [code, "OpaqueRef:host"]
        w.boot()
        w.agent.run_pending()
        assert w.agent.state == "DEGRADED", code
        reason = w.agent.reasons["host-enable"]
        assert code in reason and "fix:" in reason
        w.settle(max_time=95.0)
        assert w.agent.state == "DEGRADED" and 2 <= len(_calls(w, EnableHost)) <= 4
        w.xapi.enable_refusal = None
        w.settle_until("HEALTHY")
        assert _calls(w, StartVm, "pfsense")


def test_a_disabled_host_whose_firewall_is_evacuated_is_enabled_and_the_firewall_started():
    """HEALTHY; a plain host.disable (the firewall runs: not locked out, left alone); then the
    firewall halts (evacuation): host.enable and VM.start of the firewall, ending HEALTHY."""
    w = MemWorld()
    w.settle_until("HEALTHY")
    w.xapi.set_host(enabled=False)
    w.settle_until("HEALTHY")
    assert not _calls(w, EnableHost)
    w.xapi.set_power("pfsense", "Halted")
    w.settle_until("HEALTHY")
    assert len(_calls(w, EnableHost)) == 1 and len(_calls(w, StartVm, "pfsense")) == 1
    assert w.xapi.host.enabled and w.xapi.vms["pfsense"].power_state == "Running"


def test_a_firewall_stopped_while_the_host_stays_enabled_stays_stopped():
    """An operator's stop (host enabled) is respected, even after a lock-out fix earlier."""
    for locked in (False, True):
        w = MemWorld(vm_running=not locked, host_enabled=not locked)
        w.settle_until("HEALTHY")
        before = len(_calls(w, StartVm, "pfsense"))
        w.xapi.set_power("pfsense", "Halted")
        w.settle_until("WAITING_VM")
        assert len(_calls(w, StartVm, "pfsense")) == before


def test_an_uplink_started_by_another_client_is_waited_for_never_started_twice():
    """The agent's VM.start meets OTHER_OPERATION_IN_PROGRESS: it waits for the power state,
    says so in the trace, and asks again only after backoff_cap."""
    w = MemWorld(vm_running=False, host_enabled=False)
    w.xapi.starting_elsewhere.add("pfsense")
    w.settle(max_time=20.0)
    assert w.agent.state == "WAITING_VM" and len(_calls(w, StartVm, "pfsense")) == 1
    assert any("another client is starting it" in e["result"] for e in _effects(w))
    assert w.agent.retries["vm:pfsense"].failures == 0
    w.xapi.finish_start_elsewhere("pfsense")
    w.settle_until("HEALTHY")
    assert len(_calls(w, StartVm, "pfsense")) == 1


def test_autostart_racing_xapi_autostart_vms_keeps_the_order():
    """An autostart VM another client is starting: its group waits for it (the agent does not
    start it twice), the next order group starts only after it runs."""
    w = MemWorld(start=False)
    w.xapi.starting_elsewhere.add("web")
    w.boot()
    w.settle(max_time=20.0)
    assert w.agent.state == "SR_PROBING"
    assert len(_calls(w, StartVm, "web")) == 1 and not _calls(w, StartVm, "db")
    w.xapi.finish_start_elsewhere("web")
    w.settle_until("HEALTHY")
    assert len(_calls(w, StartVm, "web")) == 1 and len(_calls(w, StartVm, "db")) == 1


def test_an_unknown_sr_stays_degraded_with_its_reason_while_the_network_comes_up():
    """An [[sr]] uuid XAPI does not know: the network is bound and routed, autostart runs,
    and the agent stays DEGRADED naming the SR and the fix until XAPI knows it."""
    w = MemWorld(start=False)
    del w.xapi.pbd_attached[SR]
    w.boot()
    w.settle_until("DEGRADED")
    w.settle(max_time=600.0)
    assert w.agent.state == "DEGRADED"
    reason = w.agent.reasons["sr:" + SR]
    assert "XAPI knows no SR" in reason and "fix:" in reason
    assert ("xapi1", "192.0.2.2/24") in w.net.addresses
    assert w.xapi.vms["web"].power_state == "Running"
    w.xapi.pbd_attached[SR] = False
    w.xapi.restart()
    w.settle_until("HEALTHY")
    assert w.xapi.pbd_attached[SR] and not w.agent.reasons


def test_a_pool_member_in_emergency_mode_says_so_and_keeps_its_kernel_part():
    """XAPI refusing everything (a member whose master is unreachable): DEGRADED naming
    emergency mode (status and trace carry the reason), the management mirrors in place."""
    from agent.adapters.xapi import EMERGENCY_TEXT
    from memworld import MGMT
    w = MemWorld(start=False)
    w.xapi.up = False
    w.xapi.lost_error = EMERGENCY_TEXT % "HOST_HAS_NO_MANAGEMENT_IP"
    w.boot()
    for _ in range(3):
        w.xapi.connect()
        w.settle()
    assert w.agent.state == "DEGRADED"
    assert "emergency mode" in w.agent.reasons["xapi"]
    assert any("emergency mode" in b for b in states.module("DEGRADED").blockers(w.agent))
    assert (MGMT, "192.0.2.2/32") in w.net.addresses
    w.xapi.up = True
    w.xapi.connect()
    w.settle_until("HEALTHY")


def test_a_bridge_that_outlives_the_halted_event_changes_nothing_until_it_goes():
    """xapi may destroy the bridge after the Halted event (detach_for_vm runs later): the agent
    decides on the kernel's bridge, not on the event's order; a reboot that keeps the bridge
    (only the VIF swapped) is no drift at all."""
    import attr
    from agent.decision import events as ev
    from memworld import BRIDGE
    w = MemWorld()
    w.settle_until("HEALTHY")
    vm = w.xapi.vm_view(w.xapi.vms["pfsense"])
    w.agent.post(ev.VmChanged(attr.evolve(vm, power_state="Halted")))
    w.settle_until("HEALTHY")
    w.net.remove_link(BRIDGE)
    w.settle_until("WAITING_VM")
    w.net.add_link(BRIDGE)
    w.agent.post(ev.VmChanged(vm))
    w.settle_until("HEALTHY")
    assert (BRIDGE, "192.0.2.2/24") in w.net.addresses


def test_an_sr_plugged_by_a_plug_whose_reply_timed_out_leaves_degraded():
    """Plugs fail (timed out) past the budget: DEGRADED sr:<uuid>; the PBD then turns up
    attached (XAPI finished a plug whose reply the agent gave up on): HEALTHY, reason gone."""
    w = MemWorld(storage_up=True, start=False)
    w.xapi.plug_failures[SR] = 100
    w.boot()
    w.settle(max_time=20.0)
    assert w.agent.state == "DEGRADED" and "sr:" + SR in w.agent.reasons
    w.xapi.set_pbd(SR, True)
    w.settle_until("HEALTHY")
    assert not w.agent.reasons


def test_a_pbd_unplugged_between_its_plug_and_the_reply_is_plugged_again():
    """The plug succeeds, someone unplugs the PBD before the reply (whose value is
    currently_attached read after the plug: False): the agent does not take the reply's word
    for it, probes again and plugs again."""
    w = MemWorld(start=False)
    w.xapi.unplug_after_plug.add(SR)
    w.boot()
    w.settle_until("HEALTHY")
    plugs = [c for c in w.xapi.calls if c[0].kind == "plug_pbd"]
    assert len(plugs) == 2 and w.xapi.pbd_attached[SR]
    assert any(e["result"] == "ok, but detached again since" for e in _effects(w))


def test_a_plug_whose_reply_is_lost_after_xapi_attached_the_sr_is_not_a_failure():
    """xe-toolstack-restart cuts the connection after SM attached the SR and xapi's event said
    so: the lost reply spends nothing of the SR's budget, no second plug is sent, HEALTHY."""
    w = MemWorld(start=False)
    w.xapi.reply_lost_after_plug.add(SR)
    w.boot()
    w.settle_until("HEALTHY")
    plugs = [c for c in w.xapi.calls if c[0].kind == "plug_pbd"]
    assert len(plugs) == 1 and w.xapi.pbd_attached[SR]
    assert w.agent.retries["sr:" + SR].failures == 0
    assert any(e["result"].startswith("attached; its reply was lost") for e in _effects(w))


def test_the_warning_on_entering_degraded_says_what_happens_next(caplog):
    """The journal line of a transition into DEGRADED ends with what the agent does next."""
    import logging
    w = MemWorld(vm_running=False, host_enabled=False, start=False)
    w.xapi.enable_refusal = ["HOST_DISABLED_UNTIL_REBOOT", "OpaqueRef:host"]
    with caplog.at_level(logging.WARNING, logger="sspn-agent"):
        w.boot()
        w.agent.run_pending()
    assert w.agent.state == "DEGRADED"
    line = [r.getMessage() for r in caplog.records if "-> DEGRADED" in r.getMessage()][-1]
    assert line.endswith("MAINTENANCE's step keeps retrying, at most 30 s apart "
                         "(agent status names the reasons)"), line
