"""Each hostile class planted against the real agent in the lab (docs/hostile.md).

One simulated host (XAPI simulator, real bridges in network namespaces, `agent run` as a
subprocess) goes through the plants in order; after each one the agent is HEALTHY with every
configured address, mirror and route, the planted foreign addresses and routes are intact, it
printed no traceback, and no credential is in any file it wrote nor in XAPI
(tests/faults/invariants.py for the kernel side).

Planted before the agent starts: a PBD whose device_config carries credentials and a
hostile string, and an auto-power-on VM whose record the XML-RPC parser rejects.
"""

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from agent.lab.harness import Host
from agent.lab.xapi import build
from tests.faults import invariants as inv
from tests.hostile.conftest import ROOT, read, run_agent
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 `ip` to create network namespaces")

SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
SECRET = "hunter2-Lab-S3cret"
# What XML-RPC can carry (ESC cannot: the unit tests plant it): newlines, C1 controls (\x9b is
# a terminal's CSI), bidi overrides, line separators, and length.
HOSTILE = "\n2026-01-01 00:00:00 FORGED -> HEALTHY\x9b31m\u202eevil\u2028" + "W" * 20000
DEADLINE = 30.0
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


@pytest.fixture(scope="module")
def host():
    with Host() as lab:                # starts the topology and the simulator
        sim = lab.sim
        pbd = sim.state()["srs"][SR]["pbd"]
        device_config = dict(sim.db.get("PBD", pbd, "device_config"))
        device_config.update({"password": SECRET, "chappassword": SECRET,
                              "note": HOSTILE})
        sim.db.update("PBD", pbd, device_config=device_config)
        lab.bad_vm = build.create_vm(sim.db, sim.index, "bad\x01vm", sim.rng, auto_poweron=True)
        inv.plant_foreign(lab)
        lab.start_agent()
        sim.vm_start("pfsense")        # the firewall boots: its bridge appears
        yield lab


def _files(host):
    out = {}
    for name in os.listdir(host.dir):
        path = os.path.join(host.dir, name)
        if os.path.isfile(path) and not os.path.islink(path) and name != "xapi":
            with open(path, "rb") as f:
                out[name] = f.read()
    return out


def _xapi_texts(host):
    state = host.sim.state()
    texts = [m["body"] for m in state["messages"]]
    texts += ["%s=%s" % kv for kv in state["host"]["other_config"].items()]
    return texts


def assert_nothing_lost(host):
    """HEALTHY, bindings intact, foreign state kept, no traceback, no secret anywhere."""
    inv.assert_recovered(host, deadline=DEADLINE)
    for name, data in _files(host).items():
        assert SECRET.encode() not in data, "the credential is in %s" % name
    assert not [t for t in _xapi_texts(host) if SECRET in t], "the credential reached XAPI"
    assert host.agent.poll() is None


def _log(host):
    with open(os.path.join(host.dir, "agent.log"), encoding="utf-8", errors="replace") as f:
        return f.read()


def _delete_address(host):
    host.topology.ip("dom0", "addr", "del", "192.0.2.2/24", "dev", inv.sspn_bridge(host))


def test_an_unparsable_autostart_record_is_traced_and_leads_to_degraded(host):
    st = host.wait(lambda s: s.get("state") == "DEGRADED" and "autostart" in s.get("reasons", {}),
                   "DEGRADED with reason autostart", DEADLINE)
    assert "attempts" in st["reasons"]["autostart"]
    failed = [r for r in host.trace() if "list auto-power-on VMs" in str(r)
              and "failed" in str(r)]
    assert failed, "the failing list call left no trace record"
    host.sim.db.update("VM", host.bad_vm, name_label="bad vm")  # fixed: the next retry works
    assert_nothing_lost(host)


def test_credentials_and_hostile_strings_stay_data(host):
    host.sim.pbd_unplug(SR)   # a PbdChanged carrying the device_config, then a re-plug
    host.wait(lambda s: any(t.get("cause", "").startswith("pbd_changed")
                            for t in s.get("transitions", ())),
              "a transition caused by the PBD change", DEADLINE)
    assert_nothing_lost(host)
    trace_path = os.path.join(host.dir, "trace.jsonl")
    code, out, err = run_agent("trace", "-n", "50", "--file", trace_path)
    assert code == 0 and SECRET not in out and "\x9b" not in out and "\u202e" not in out
    assert all(STAMP.match(line) for line in out.splitlines()), "a forged line in agent trace"
    assert max(len(line) for line in out.splitlines()) < 4000
    code, out, err = run_agent("status", "--file", os.path.join(host.dir, "status.json"))
    assert code == 0 and "\x9b" not in out and "FORGED" not in out.split("\n", 1)[0]
    assert all(len(line) < 4000 for line in _log(host).splitlines())


def test_a_second_agent_exits_at_once_and_the_first_stays_running(host):
    env = dict(os.environ, PYTHONPATH=ROOT)
    second = subprocess.run(["ip", "netns", "exec", host.topology.ns("dom0"), sys.executable,
                             "-m", "agent", "run", "--config", host.config_path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            timeout=DEADLINE)
    text = second.stdout.decode("utf-8", "replace")
    assert second.returncode == 75, text
    # `ip netns exec` execs the agent: its pid is the one holding the lock
    assert "already runs" in text and "pid %d" % host.agent.pid in text and "Traceback" not in text
    code, out, _ = run_agent("status", "--file", os.path.join(host.dir, "status.json"))
    assert code == 0 and "NOT RUNNING" not in out
    assert_nothing_lost(host)


def test_a_replaced_default_route_is_named(host):
    host.topology.ip("dom0", "route", "replace", "default", "via", "203.0.113.1", "dev", inv.MGMT)
    wanted = "default via 203.0.113.1 dev %s metric 0" % inv.MGMT
    wait_until(lambda: any(wanted in str(r) for r in host.trace()), DEADLINE,
               message="the trace to name the route the agent replaced")
    host.wait(lambda s: any(wanted in r.get("replaced", "") for r in s.get("replaced_routes", ())),
              "the status to name the replaced route", DEADLINE)
    assert "replaced %s" % wanted in _log(host)   # and the journal
    assert_nothing_lost(host)


def test_a_failing_status_write_is_retried_and_agent_status_says_stale(host):
    path = os.path.join(host.dir, "status.json")
    os.unlink(path)
    os.mkdir(path)                      # every write now fails (rename onto a directory)
    try:
        _delete_address(host)           # work the agent cannot report
        wait_until(lambda: "retrying every" in _log(host), DEADLINE,
                   message="the journal to say the status write fails")
        code, out, _ = run_agent("status", "--file", path)
        assert code == 4 and "running (pid" in out and "NOT RUNNING" not in out, out
    finally:
        os.rmdir(path)
    # no event comes now: only the retry timer can write the file again
    wait_until(lambda: host.status().get("state") == "HEALTHY", DEADLINE,
               message="the retry timer to rewrite the status file")
    wait_until(lambda: "written again after" in _log(host), DEADLINE,   # logged after the write
               message="the journal to say the status file is written again")
    assert_nothing_lost(host)


def test_a_link_planted_as_the_trace_is_not_followed(host):
    victim = os.path.join(host.dir, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.chmod(victim, 0o600)
    trace_path = os.path.join(host.dir, "trace.jsonl")
    os.rename(trace_path, trace_path + ".saved")
    os.symlink(victim, trace_path)
    try:
        _delete_address(host)
        wait_until(lambda: "symbolic link" in _log(host), DEADLINE,
                   message="the journal to say the trace is a link")
        inv.assert_recovered(host, deadline=DEADLINE)
        assert read(victim) == "precious\n" and os.stat(victim).st_mode & 0o777 == 0o600
    finally:
        os.unlink(trace_path)
        os.rename(trace_path + ".saved", trace_path)
    assert_nothing_lost(host)


def test_reload_names_restart_only_changes_and_survives_a_fifo(host):
    original = read(host.config_path)
    moved = original.replace('trace.jsonl"', 'trace-moved.jsonl"')
    try:
        with open(host.config_path, "w") as f:
            f.write(moved)
        host.agent.send_signal(signal.SIGHUP)
        wait_until(lambda: "[files] changed" in _log(host), DEADLINE,
                   message="the reload to name the [files] change")
        os.unlink(host.config_path)
        os.mkfifo(host.config_path)
        host.agent.send_signal(signal.SIGHUP)
        wait_until(lambda: "FIFO" in _log(host), DEADLINE, message="the reload of a FIFO refused")
        _delete_address(host)           # the decision thread still decides
        inv.assert_recovered(host, deadline=DEADLINE)
    finally:
        os.unlink(host.config_path)
        with open(host.config_path, "w") as f:
            f.write(original)
    assert not os.path.exists(os.path.join(host.dir, "trace-moved.jsonl"))
    assert_nothing_lost(host)


def test_a_second_vm_taking_the_firewall_label_does_not_win(host):
    firewall = host.sim.state()["vms"]["pfsense"]["uuid"]
    scratch = host.sim.db.find("VM", name_label="scratch")[0]
    host.sim.db.update("VM", scratch, name_label="pfsense")
    try:
        host.stop_agent()               # the next start resolves the label again
        host.start_agent(append=True)
        # until the new agent writes, status.json is the previous agent's (its DEGRADED counted)
        host.wait(lambda s: s.get("pid") == host.agent.pid, "the new agent's status", DEADLINE)
        wait_until(lambda: "carry the label 'pfsense': keeping VM %s" % firewall in _log(host),
                   DEADLINE, message="the journal to report the second VM")
        assert_nothing_lost(host)
        assert host.status().get("counts", {}).get("DEGRADED", 0) == 0
    finally:
        host.sim.db.update("VM", scratch, name_label="scratch")
