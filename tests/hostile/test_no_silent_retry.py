"""No silent retry (docs/hostile.md): a failing XAPI call is a traced effect with its reason
and spends a budget that leads to DEGRADED. The real machine with in-memory ports
(tests/memworld.py); the lab suite plants the same auto-power-on failure through XML-RPC.
"""

from tests.memworld import MemWorld

PARSE_ERROR = ["malformed reply (ExpatError: not well-formed (invalid token): line 1)"]


def _all_records(world):
    out = list(world.report.effects)
    for record in world.report.transitions:
        out += record.get("effects", [])
    return out


def test_a_failing_auto_power_on_list_is_traced_spends_its_budget_and_recovers():
    world = MemWorld(start=False)
    real = world.xapi._do_list_autostart
    world.xapi._do_list_autostart = lambda action: (False, PARSE_ERROR, None)
    world.boot()
    world.settle_until("DEGRADED")
    assert "autostart" in world.agent.reasons and "ExpatError" in world.agent.reasons["autostart"]
    failed = [e for e in _all_records(world) if e["what"] == "list auto-power-on VMs"
              and not e["ok"]]
    assert len(failed) >= world.config.timing.retry_budget
    assert all("ExpatError" in e["result"] and "retry_in" in e for e in failed)
    world.xapi._do_list_autostart = real          # the odd record is gone
    world.settle_until("HEALTHY")
    assert "autostart" not in world.agent.reasons
    assert world.agent.facts.autostart_done


def test_a_failing_publish_to_xapi_is_traced():
    world = MemWorld(start=False)
    world.xapi._do_publish_state = lambda action: (False, ["HOST_OFFLINE", "OpaqueRef:h"], None)
    world.boot()
    world.settle_until("HEALTHY")
    failed = [e for e in _all_records(world) if e["what"] == "publish_state"]
    assert failed and not failed[0]["ok"] and "HOST_OFFLINE" in failed[0]["result"]


def test_a_failing_uplink_start_spends_its_budget_leads_to_degraded_and_recovers():
    """After a lock-out fix the firewall's VM.start keeps failing: each failure is traced, the
    budget leads to DEGRADED with reason vm:pfsense (no bounce back to WAITING_VM), and once a
    start works the host ends HEALTHY."""
    world = MemWorld(vm_running=False, host_enabled=False)
    real = world.xapi._do_start_vm
    world.xapi._do_start_vm = lambda action: (False, ["NO_HOSTS_AVAILABLE"], None)
    world.settle_until("DEGRADED")
    assert "vm:pfsense" in world.agent.reasons
    assert "NO_HOSTS_AVAILABLE" in world.agent.reasons["vm:pfsense"]
    failed = [e for e in _all_records(world) if e["what"] == "VM.start pfsense" and not e["ok"]]
    assert len(failed) >= world.config.timing.retry_budget
    assert [t for t in world.report.transitions if t["to"] == "DEGRADED"][-1]["from"] == "WAITING_VM"
    world.xapi._do_start_vm = real                # the host can run it again
    world.settle_until("HEALTHY")
    assert "vm:pfsense" not in world.agent.reasons
