"""event.from in the simulator behaves like xapi's (xapi_event.ml)."""

import re

import pytest
import XenAPI

TOKEN = re.compile(r"^\d{20},\d{20}$")


def test_empty_token_dumps_everything_as_add(xenapi_session):
    """Token "" returns every object of the subscribed classes as add, with full snapshots."""
    x = xenapi_session.xenapi
    batch = x.event_from(["vm", "host"], "", 0.0)
    assert set(batch) == {"events", "valid_ref_counts", "token"}
    assert TOKEN.match(batch["token"])
    events = batch["events"]
    assert {e["operation"] for e in events} == {"add"}
    assert {e["class"] for e in events} == {"vm", "host"}
    assert len([e for e in events if e["class"] == "vm"]) == 7
    for event in events:
        assert event["timestamp"] == "0.0" and event["id"].isdigit()
        assert event["snapshot"] == getattr(x, {"vm": "VM", "host": "host"}[event["class"]]
                                            ).get_record(event["ref"])
    counts = batch["valid_ref_counts"]
    assert counts["vm"] == 7 and counts["host"] == 1 and counts["pbd"] == 2  # all tables, ints


def test_both_wire_names_work(xenapi_session):
    """event_from (Class_method) and event.from (getattr) answer the same."""
    x = xenapi_session.xenapi
    a = x.event_from(["pool"], "", 0.0)
    b = getattr(x.event, "from")(["pool"], "", 0.0)
    assert a["token"] == b["token"] and len(a["events"]) == len(b["events"]) == 1


def test_changes_coalesce_into_one_mod(sim, xenapi_session):
    """Several changes to one object since the token give one mod with the latest snapshot."""
    x = xenapi_session.xenapi
    token = x.event_from(["VM"], "", 0.0)["token"]
    web = x.VM.get_by_name_label("web")[0]
    x.VM.add_to_other_config(web, "a", "1")
    x.VM.remove_from_other_config(web, "a")
    x.VM.add_to_other_config(web, "a", "2")
    batch = x.event_from(["VM"], token, 5.0)
    assert [(e["operation"], e["ref"]) for e in batch["events"]] == [("mod", web)]
    assert batch["events"][0]["snapshot"]["other_config"]["a"] == "2"
    assert batch["token"] > token


def test_object_subscription_ignores_churn(sim, xenapi_session, background, wait_until):
    """A vm/<ref> subscription never sees 1,000 changes to other VMs, only its own VM's."""
    x = xenapi_session.xenapi
    pfsense = x.VM.get_by_name_label("pfsense")[0]
    sim.add_vms(20)
    token = x.event_from(["vm/" + pfsense], "", 0.0)["token"]
    watcher = sim.client()
    watcher.xenapi.login_with_password("root", "", "1.0", "watcher")
    call = background(watcher.xenapi.event_from, ["vm/" + pfsense], token, 30.0)
    wait_until(lambda: sim.state()["event_waiters"] == 1, what="event.from blocked")
    sim.churn(1000)
    assert not call.done
    sim.vm_start("pfsense")
    call.join()
    assert call.error is None
    assert {e["ref"] for e in call.result["events"]} == {pfsense}
    assert call.result["events"][0]["snapshot"]["power_state"] == "Running"


def test_class_subscription_is_case_insensitive(sim, xenapi_session):
    """Subscribing to "PbD" gets pbd events; other classes are not delivered."""
    x = xenapi_session.xenapi
    token = x.event_from(["PbD"], "", 0.0)["token"]
    sim.vm_start("pfsense")
    sim.pbd_unplug("5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01")
    x.PBD.plug(x.PBD.get_all_records_where('field "currently_attached"="false"').popitem()[0])
    batch = x.event_from(["PbD"], token, 5.0)
    assert {e["class"] for e in batch["events"]} == {"pbd"}


def test_timeout_returns_an_empty_batch(xenapi_session):
    """With nothing new, event.from returns an empty events list and the same token at timeout."""
    x = xenapi_session.xenapi
    token = x.event_from(["vm"], "", 0.0)["token"]
    batch = x.event_from(["vm"], token, 0.2)
    assert batch["events"] == [] and batch["token"] == token


def test_delete_gives_del_without_snapshot(xenapi_session):
    """A destroyed object is reported as del with no snapshot member; its VIFs too."""
    x = xenapi_session.xenapi
    token = x.event_from(["vm", "vif"], "", 0.0)["token"]
    web = x.VM.get_by_name_label("web")[0]
    vif = x.VM.get_VIFs(web)[0]
    x.VM.destroy(web)
    events = x.event_from(["vm", "vif"], token, 5.0)["events"]
    dels = [e for e in events if e["operation"] == "del"]
    assert {(e["class"], e["ref"]) for e in dels} == {("vm", web), ("vif", vif)}
    assert all("snapshot" not in e for e in dels)


def test_message_events(sim, xenapi_session):
    """message.create shows up as a message add with id "0" and the token's second half moves."""
    x = xenapi_session.xenapi
    token = x.event_from(["message"], "", 0.0)["token"]
    pool_uuid = x.pool.get_uuid(x.pool.get_all()[0])
    ref = x.message.create("TEST", 5, "pool", pool_uuid, "hello")
    batch = x.event_from(["message"], token, 5.0)
    assert [(e["class"], e["operation"], e["id"], e["ref"]) for e in batch["events"]] == [
        ("message", "add", "0", ref)]
    assert batch["token"].split(",")[1] > token.split(",")[1]


def test_bad_token_is_a_parse_failure(xenapi_session):
    """A token that is not "" or "N,N" fails with EVENT_FROM_TOKEN_PARSE_FAILURE [token]."""
    with pytest.raises(XenAPI.Failure) as failure:
        xenapi_session.xenapi.event_from(["vm"], "garbage", 0.0)
    assert failure.value.details == ["EVENT_FROM_TOKEN_PARSE_FAILURE", "garbage"]


def test_blocked_call_wakes_with_session_invalid(sim, sim_rpc, background, wait_until):
    """Ending the session wakes a blocked event.from with SESSION_INVALID [session]."""
    proxy = sim_rpc(sim)
    session = getattr(proxy, "session.login_with_password")("root", "xcp-lab")["Value"]
    token = getattr(proxy, "event.from")(session, ["vm"], "", 0.0)["Value"]["token"]
    call = background(getattr(sim_rpc(sim), "event.from"), session, ["vm"], token, 30.0)
    wait_until(lambda: sim.state()["event_waiters"] == 1, what="event.from blocked")
    sim.invalidate_sessions()
    call.join()
    assert call.result == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", session]}


def test_client_relogs_in_after_sessions_vanish(sim, xenapi_session, background):
    """The XenAPI client answers SESSION_INVALID by logging in again and re-issuing event.from."""
    x = xenapi_session.xenapi
    old = xenapi_session.handle
    token = x.event_from(["vm"], "", 0.0)["token"]
    call = background(x.event_from, ["vm"], token, 30.0)
    sim.invalidate_sessions()
    sim.vm_start("scratch")
    call.join()
    assert call.error is None
    assert [e["snapshot"]["name_label"] for e in call.result["events"]] == ["scratch"]
    assert xenapi_session.handle != old


def test_event_garbage(sim, xenapi_session):
    """sim.event_garbage(n) makes the next n replies malformed, then event.from is normal again."""
    x = xenapi_session.xenapi
    sim.event_garbage(3)
    assert x.event_from(["vm"], "", 0.0) == "OpaqueRef:garbage"
    assert x.event_from(["vm"], "", 0.0)["token"] == "garbage"
    assert x.event_from(["vm"], "", 0.0) == {}
    assert TOKEN.match(x.event_from(["vm"], "", 0.0)["token"])
