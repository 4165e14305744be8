"""A pool member in emergency mode (its master unreachable): the adapter names it, keeps
retrying with backoff, and connects once the master answers (real XenAPI client, simulator
following xen-api api_server.ml / xapi.ml, see agent/lab/xapi/member.py)."""

from agent.decision import world as w


def test_emergency_mode_is_named_and_ends_when_the_master_answers(sim, start_adapter):
    """Login refused with HOST_HAS_NO_MANAGEMENT_IP / HOST_MASTER_CANNOT_TALK_BACK: XapiLost
    says "emergency mode" with the code (asked with host.is_in_emergency_mode), an action is
    failed unsent; once emergency mode ends the adapter connects."""
    sim.set_emergency("no-management-ip")
    adapter, recorder = start_adapter()
    lost = recorder.wait_kind("xapi_lost")
    assert "emergency mode" in lost.error and "HOST_HAS_NO_MANAGEMENT_IP" in lost.error
    sim.set_emergency("cannot-talk-back")
    recorder.wait_for(lambda e: e.kind == "xapi_lost" and "HOST_MASTER_CANNOT_TALK_BACK" in e.error
                      and "emergency mode" in e.error, what="cannot-talk-back")
    adapter.request(w.ListAutostart())
    done = recorder.wait_kind("action_done")
    assert not done.ok and "emergency mode" in " ".join(done.error)
    sim.set_emergency("")
    recorder.wait_kind("xapi_connected")

