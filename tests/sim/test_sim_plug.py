"""PBD.plug as xapi and SM do it (plug.py, sm.py), over the real XenAPI client: failure codes,
durations as settings, a real TCP probe, concurrent plugs, plugs on a disabled host."""

import os
import random
import shutil
import socket
import subprocess

import pytest
import XenAPI

from agent.lab.xapi import sm

NFS_SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"


def _pbd(x):
    return x.SR.get_PBDs(x.SR.get_by_uuid(NFS_SR))[0]


def _plug_error(x, pbd):
    with pytest.raises(XenAPI.Failure) as failure:
        x.PBD.plug(pbd)
    return failure.value.details


@pytest.mark.parametrize("state, code, description", [
    ("down", "SR_BACKEND_FAILURE_108", "Unable to detect an NFS service on this target."),
    ("refused", "SR_BACKEND_FAILURE_108", "Unable to detect an NFS service on this target."),
    ("unresolvable", "SR_BACKEND_FAILURE_140", "Incorrect DNS name, unable to resolve."),
    ("stalled", "SR_BACKEND_FAILURE_73", "NFS mount error"),
    ("no-rpcbind", "SR_BACKEND_FAILURE_72", "Required NFS server version unsupported"),
])
def test_sm_failures_have_sm_codes(sim, xenapi_session, state, code, description):
    """Each storage state fails the plug with SM's code, as [code, "", description, ""]."""
    x = xenapi_session.xenapi
    sim.set_storage_state(NFS_SR, state)
    assert _plug_error(x, _pbd(x)) == [code, "", description, ""]
    assert x.PBD.get_currently_attached(_pbd(x)) is False


def test_unreachable_plug_waits_the_connect_timeout(sim_factory, sim_login, background,
                                                    wait_until):
    """A target that does not answer holds the plug for plug_connect_timeout; meanwhile the
    SR's current_operations names the plug's task, and other calls are answered."""
    sim = sim_factory(settings={"plug_connect_timeout": 30.0})
    x = sim_login(sim).xenapi              # a XenAPI.Session is one connection: one per thread
    plugger = sim_login(sim).xenapi
    sim.set_storage_reachable(NFS_SR, False)
    call = background(plugger.PBD.plug, _pbd(x))
    sr = x.SR.get_by_uuid(NFS_SR)
    wait_until(lambda: x.SR.get_current_operations(sr), what="SR marked for plug")
    assert list(x.SR.get_current_operations(sr).values()) == ["plug"]
    assert not call.done
    assert x.host.get_enabled(x.host.get_all()[0]) is True   # not held up
    sim.stop()   # ends the wait: the client's connection drops
    call.join()
    assert call.error is not None


def test_plug_allowed_on_disabled_host_and_mods_the_sr(sim, xenapi_session):
    """PBD.plug works on a disabled host; the SR gets a mod event after the plug (SR.stat)."""
    x = xenapi_session.xenapi
    host = x.host.get_all()[0]
    x.host.disable(host)
    sr = x.SR.get_by_uuid(NFS_SR)
    token = x.event_from(["sr"], "", 0.0)["token"]
    x.PBD.plug(_pbd(x))
    assert x.PBD.get_currently_attached(_pbd(x)) is True
    events = x.event_from(["sr"], token, 1.0)["events"]
    assert [(e["ref"], e["operation"]) for e in events] == [(sr, "mod")]


def test_two_plugs_of_one_sr_are_both_admitted_and_serialised(sim_factory, sim_login,
                                                              background, wait_until):
    """plug is safe to parallelise (xapi_sr_operations.ml): a second plug is not refused; SM's
    attaches of one SR run one at a time and the second returns once the first attached."""
    sim = sim_factory(settings={"plug_seconds": 0.5})
    first_session, second_session = sim_login(sim), sim_login(sim)
    x = first_session.xenapi
    pbd = _pbd(x)
    first = background(x.PBD.plug, pbd)
    wait_until(lambda: sim.plugger.in_flight[NFS_SR] == 1, what="first plug inside")
    second = background(second_session.xenapi.PBD.plug, pbd)
    first.join()
    second.join()
    assert first.error is None and second.error is None
    assert sim.plugger.most_in_flight[NFS_SR] == 2 and sim.plugger.started[NFS_SR] == 2
    assert x.PBD.get_currently_attached(pbd) is True


def test_async_plug_and_task(sim, xenapi_session, wait_until):
    """Async.PBD.plug: a task; failure carries SM's error in error_info."""
    x = xenapi_session.xenapi
    sim.set_storage_state(NFS_SR, "unresolvable")
    task = x.Async.PBD.plug(_pbd(x))
    wait_until(lambda: x.task.get_status(task) != "pending", what="plug task done")
    assert x.task.get_status(task) == "failure"
    assert x.task.get_error_info(task)[0] == "SR_BACKEND_FAILURE_140"
    sim.set_storage_state(NFS_SR, "")
    task = x.Async.PBD.plug(_pbd(x))
    wait_until(lambda: x.task.get_status(task) != "pending", what="plug task done")
    assert x.task.get_status(task) == "success"


def _listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    return server


def test_tcp_probe_asks_what_sm_asks():
    """TcpProbe: a listening port is up, a closed one refused, a bad name unresolvable."""
    server = _listener()
    port = server.getsockname()[1]
    try:
        probe = sm.TcpProbe(timeout=1.0, sr_type="iscsi")
        assert probe({"target": "127.0.0.1", "port": str(port)}) == "up"
        closed = _listener()
        closed_port = closed.getsockname()[1]
        closed.close()
        assert probe({"target": "127.0.0.1", "port": str(closed_port)}) == "refused"
        assert probe({"target": "no-such-host.invalid"}) == "unresolvable"
    finally:
        server.close()


def test_service_of_device_configs():
    """The ports SM tests, from each device_config form."""
    assert sm.service_of({"server": "nas", "serverpath": "/x"}) == ("nfs", "nas", [2049, 111])
    assert sm.service_of({"server": "nas", "nfsversion": "4.1"}) == ("nfs", "nas", [2049])
    assert sm.service_of({"location": "nas:/iso"}, "iso") == ("nfs", "nas", [2049, 111])
    assert sm.service_of({"location": "nfs://nas/iso"}, "iso") == ("nfs", "nas", [2049, 111])
    assert sm.service_of({"location": "//nas/share"}, "iso") == ("smb", "nas", [445])
    assert sm.service_of({"server": "//nas/share"}, "smb") == ("smb", "nas", [445])
    assert sm.service_of({"target": "10.0.0.9", "port": "3260"}, "lvmoiscsi") == (
        "iscsi", "10.0.0.9", [3260])


def test_storage_probe_outcome_strings(sim, xenapi_session):
    """A storage_probe may answer an outcome string (e.g. a TcpProbe)."""
    x = xenapi_session.xenapi
    sim.storage_probe = lambda dc: "refused"
    assert _plug_error(x, _pbd(x))[0] == "SR_BACKEND_FAILURE_108"
    sim.storage_probe = lambda dc: "up"
    x.PBD.plug(_pbd(x))


def test_cancel_does_not_shorten_a_plug(sim_factory, sim_login, wait_until):
    """A plug's task is cancellable (allowed_operations) but SM's attach runs to its end:
    the task ends with SM's failure, not cancelled."""
    sim = sim_factory(settings={"plug_stall_seconds": 0.4})
    x = sim_login(sim).xenapi
    sim.set_storage_state(NFS_SR, "stalled")
    task = x.Async.PBD.plug(_pbd(x))
    wait_until(lambda: x.task.get_allowed_operations(task) == ["cancel"], what="cancellable")
    x.task.cancel(task)
    wait_until(lambda: x.task.get_status(task) != "pending", what="plug task done")
    assert x.task.get_status(task) == "failure"
    assert x.task.get_error_info(task)[0] == "SR_BACKEND_FAILURE_73"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                    reason="needs root and iproute2 to make a network namespace")
def test_tcp_probe_connects_from_inside_the_namespace():
    """TcpProbe(netns=...) connects from that namespace: a port listening in this namespace
    is "up" here and "refused" from a fresh namespace's loopback."""
    name = "sspn-fid-%d-%06x" % (os.getpid(), random.getrandbits(24))
    subprocess.check_call(["ip", "netns", "add", name])
    server = _listener()
    try:
        subprocess.check_call(["ip", "-n", name, "link", "set", "lo", "up"])
        config = {"target": "127.0.0.1", "port": str(server.getsockname()[1])}
        assert sm.TcpProbe(timeout=1.0, sr_type="iscsi")(config) == "up"
        assert sm.TcpProbe(netns=name, timeout=1.0, sr_type="iscsi")(config) == "refused"
    finally:
        server.close()
        subprocess.call(["ip", "netns", "del", name])
