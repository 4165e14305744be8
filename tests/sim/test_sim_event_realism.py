"""The event stream as xen-api writes it (xapi_event.ml from_inner/collect_events), periodic
SR.stat, bridge timing around Halted, reboots, a toolstack restart cutting a blocked
event.from, and the empty-database window, over the real XenAPI client."""

import socket

import pytest
import XenAPI

NFS_SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"


def test_order_is_add_mod_del_not_generation(sim, xenapi_session):
    """A mod made before an add still comes after it; a del comes last; an add's id is its
    creation generation even when it was modified later."""
    x = xenapi_session.xenapi
    token = x.event_from(["vm"], "", 0.0)["token"]
    scratch = x.VM.get_by_name_label("scratch")[0]
    x.VM.add_to_other_config(scratch, "first", "1")           # a mod, early
    doomed = sim.add_vms(2)
    refs = [x.VM.get_by_name_label(n)[0] for n in doomed]
    x.VM.add_to_other_config(refs[0], "later", "1")            # the add is modified after
    victim = x.VM.get_by_name_label("db before upgrade")[0]
    x.VM.destroy(victim)
    batch = x.event_from(["vm"], token, 5.0)
    ops = [(e["operation"], e["ref"]) for e in batch["events"]]
    assert ops == [("add", refs[0]), ("add", refs[1]), ("mod", scratch), ("del", victim)]
    ids = [int(e["id"]) for e in batch["events"]]
    assert ids[0] < ids[1] and ids != sorted(ids)   # not sorted by generation
    assert batch["events"][0]["snapshot"]["other_config"] == {"later": "1"}


def test_messages_come_first(sim, xenapi_session):
    """With "*" subscribed, message events precede object events."""
    x = xenapi_session.xenapi
    token = x.event_from(["*"], "", 0.0)["token"]
    x.VM.add_to_other_config(x.VM.get_by_name_label("scratch")[0], "k", "v")
    x.message.create("sspn", "2", "Host", x.host.get_uuid(x.host.get_all()[0]), "body")
    events = x.event_from(["*"], token, 5.0)["events"]
    assert events[0]["class"] == "message" and events[-1]["class"] == "vm"


def test_timeout_returns_the_callers_token_with_unrelated_changes(sim, xenapi_session):
    """Changes to classes not subscribed do not move the token of a timed-out call."""
    x = xenapi_session.xenapi
    token = x.event_from(["pool"], "", 0.0)["token"]
    x.VM.add_to_other_config(x.VM.get_by_name_label("scratch")[0], "k", "v")
    batch = x.event_from(["pool"], token, 0.2)
    assert batch["events"] == [] and batch["token"] == token
    assert token.split(",")[1] == "0" * 20    # messages not subscribed: 0


def test_periodic_sr_stat_mods_srs(sim_factory, sim_login):
    """sr_stat_interval: attached SRs get a mod event every interval."""
    sim = sim_factory(settings={"sr_stat_interval": 0.2})
    x = sim_login(sim).xenapi
    token = x.event_from(["sr"], "", 0.0)["token"]
    batch = x.event_from(["sr"], token, 5.0)
    assert batch["events"] and all(e["operation"] == "mod" for e in batch["events"])


def test_bridge_may_go_after_the_halted_event(sim_factory, sim_login, wait_until):
    """bridge_after_halted: the Halted state is written first, the hooks (bridge removal)
    run later."""
    sim = sim_factory(settings={"bridge_after_halted": 0.3})
    seen = []
    sim.add_vm_power_hook(lambda name, rec, domid, bridges, old, new: seen.append(
        (new, sim.db.get("VM", rec_ref(sim, name), "power_state"))))
    x = sim_login(sim).xenapi
    vm = x.VM.get_by_name_label("pfsense")[0]
    x.VM.start(vm, False, False)
    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    wait_until(lambda: len(seen) == 2, what="delayed bridge release")
    assert seen == [("Running", "Halted"), ("Halted", "Halted")]
    events = [e["event"] for e in sim.state()["timeline"]]
    assert events.index("halted") < events.index("bridge_released")


def rec_ref(sim, name):
    return sim.index.vms[name]


def test_reboot_keeps_or_remakes_the_bridge(sim_factory, sim_login):
    """Default: a reboot is Halted then Running for the hooks; reboot_keeps_bridge: one
    Running -> Running call with a new domid, power_state never Halted."""
    for keep, expected in ((False, [("Running", "Halted"), ("Halted", "Running")]),
                           (True, [("Running", "Running")])):
        sim = sim_factory(settings={"reboot_keeps_bridge": keep})
        x = sim_login(sim).xenapi
        vm = x.VM.get_by_name_label("pfsense")[0]
        x.VM.start(vm, False, False)
        domid = x.VM.get_domid(vm)
        seen = []
        sim.add_vm_power_hook(lambda n, r, d, b, old, new: seen.append((old, new)))
        x.VM.clean_reboot(vm)
        assert seen == expected
        assert x.VM.get_domid(vm) != domid and x.VM.get_power_state(vm) == "Running"


def _http_event_from(path, session, token):
    body = ("<?xml version='1.0'?><methodCall><methodName>event.from</methodName><params>"
            "<param><value><string>%s</string></value></param>"
            "<param><value><array><data><value><string>vm</string></value></data></array>"
            "</value></param><param><value><string>%s</string></value></param>"
            "<param><value><double>30</double></value></param></params></methodCall>"
            % (session, token)).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    return sock


def test_restart_drops_a_blocked_event_from_without_reply(sim, xenapi_session, wait_until):
    """A toolstack restart closes a blocked event.from connection with no reply at all."""
    x = xenapi_session.xenapi
    token = x.event_from(["vm"], "", 0.0)["token"]
    sock = _http_event_from(sim.socket_path, xenapi_session.handle, token)
    try:
        wait_until(lambda: sim.state()["event_waiters"] == 1, what="event.from blocked")
        sim.toolstack_restart(0.5)
        sock.settimeout(10.0)
        assert sock.recv(65536) == b""
    finally:
        sock.close()


def test_empty_database_window(sim_factory, sim_login, wait_until):
    """empty_db_seconds: after start-up calls see empty tables, then the real ones."""
    sim = sim_factory(settings={"empty_db_seconds": 0.4})
    x = sim_login(sim).xenapi
    assert x.pool.get_all() == [] and x.VM.get_all_records() == {}
    with pytest.raises(XenAPI.Failure) as failure:
        x.SR.get_by_uuid(NFS_SR)
    assert failure.value.details == ["UUID_INVALID", "SR", NFS_SR]
    wait_until(lambda: x.pool.get_all() != [], what="database loaded")


def test_old_deletions_are_lost_silently(sim, xenapi_session):
    """Deletions are kept per table up to 512, trimmed to the newest 256 (db_cache_types.ml
    Table.remove): a token older than that sees only the newest dels, with no error."""
    x = xenapi_session.xenapi
    names = sim.add_vms(600)
    token = x.event_from(["vm"], "", 0.0)["token"]
    for name in names:
        x.VM.destroy(x.VM.get_by_name_label(name)[0])
    dels = [e for e in x.event_from(["vm"], token, 5.0)["events"] if e["operation"] == "del"]
    assert 0 < len(dels) < 600
