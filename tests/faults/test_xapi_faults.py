"""XAPI faults in the middle of real work, with the real agent process running (docs/testing.md §4).

The agent runs as its own process in the lab's dom0 namespace against the XAPI simulator
(agent/lab/harness.py), which runs in this process as ``host.sim``; the faults are the
simulator's controls (agent/lab/xapi/control.py):

* XAPI answering slowly (``set_latency``), longer than every timeout the agent gives a call,
  injected in BOOTING, in WAITING_VM, in SR_PROBING while PBD.plug is in flight and in
  HEALTHY: the decision loop keeps going (an address deleted meanwhile is repaired, since
  BINDING and ROUTED need no XAPI), the status says XAPI does not answer, and once the latency
  is gone the agent converges to HEALTHY; in DEGRADED entered from BOOTING the agent must not
  move on without XAPI (it did: a lost mirror fired address_lost before any label was read);
* ``event.from`` answering garbage (``event_garbage``: a non-struct, truncated events with a
  bad token, an empty struct) in WAITING_VM and HEALTHY: the agent reads everything afresh, and
  a firewall VM start or a PBD detach that happens during or after the garbage is still seen;
* PBD.plug failing N times (``plug_failures``) after a PBD detached in HEALTHY: N traced
  failures with XAPI's error code, then success; more failures than the retry budget lead to
  DEGRADED with reason ``sr:<uuid>``, and to HEALTHY once the failures stop;
* a toolstack restart at the moment the firewall's bridge appears: the eighth state of
  tests/lab/test_toolstack_restart_states.py, BINDING, passed through and completed while XAPI
  is away.

Each test plants foreign state first (invariants.plant_foreign) and ends with
invariants.assert_recovered. Waits are on the status file, the trace and the agent's log with
deadlines that only bound a failure; nothing asserts a duration.
"""

import os
import re
import shutil
import time

import pytest

from agent.lab.harness import FIREWALL, Host
from tests.faults import invariants as inv
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 `ip` to create network namespaces")

SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
SR_KEY = "sr:" + SR
ADDRESS = inv.ADDRESSES[0]          # 192.0.2.2/24 on the SSPN bridge
MIRROR = inv.MIRRORS[0]             # 192.0.2.2/32 on xenbr0
DEADLINE = 60.0                     # bounds a failure only

# A short call timeout keeps the slow-XAPI tests short: every call may take CALL_TIMEOUT,
# event.from CALL_TIMEOUT + EVENT_TIMEOUT, PBD.plug and VM.start 6 * CALL_TIMEOUT
# (agent/adapters/xapi.py SLOW_CALL_FACTOR). SLOW exceeds all three.
CALL_TIMEOUT = 0.5
EVENT_TIMEOUT = 2.0
SLOW = 4.0
assert SLOW > max(CALL_TIMEOUT + EVENT_TIMEOUT, 6 * CALL_TIMEOUT)
TIMEOUT_TEXT = "no answer within the call timeout"   # describe_error(socket.timeout)


class XapiFaultHost(Host):
    """The harness's host (fast timings), its agent.toml with a short XAPI call and event.from
    timeout: the harness's own config text with those two keys changed."""

    def write_config(self):
        path = Host.write_config(self)
        with open(path) as f:
            text = f.read()
        changed = re.sub(r"(?m)^event_timeout = .*$", "event_timeout = %s" % EVENT_TIMEOUT, text)
        changed = re.sub(r"(?m)^call_timeout = .*$", "call_timeout = %s" % CALL_TIMEOUT, changed)
        assert changed.count("call_timeout") == 1 and "event_timeout = %s\n" % EVENT_TIMEOUT in changed, \
            "the harness's agent.toml changed shape: update this test\n" + text
        with open(path, "w") as f:
            f.write(changed)
        return path


# --- helpers ---------------------------------------------------------------------------------

def effects(host, what, since=0.0):
    """Effect entries (standalone or inside a transition) whose ``what`` starts with ``what``."""
    out = []
    for record in host.trace():
        if record.get("time", 0) < since:
            continue
        entries = [record] if record.get("type") == "effect" else record.get("effects", [])
        out += [e for e in entries if e.get("what", "").startswith(what)]
    return out


def transitions(host, since=0.0):
    """Transition records of the trace at or after wall time ``since``."""
    return [r for r in host.trace() if r.get("type") != "effect" and "to" in r
            and r.get("time", 0) >= since]


def log_lines(host, text):
    """Lines of the agent's log containing ``text``."""
    try:
        with open(os.path.join(host.dir, "agent.log")) as f:
            return [line for line in f if text in line]
    except OSError:
        return []


def xapi_unanswered(host, text=TIMEOUT_TEXT):
    """Wait until the status says XAPI is not connected, its error containing ``text``."""
    return host.wait(lambda st: not st["xapi"]["connected"] and text in st["xapi"]["error"],
                     "the status to say XAPI does not answer (%s)" % text, DEADLINE)


def xapi_connected(host):
    return host.wait(lambda st: st["xapi"]["connected"], "the agent to reconnect to XAPI", DEADLINE)


def delete_and_see_repaired(host, ifname, address):
    """`ip addr del` an address the agent owns; wait until the agent has put it back."""
    before = len(effects(host, "add %s on %s" % (address, ifname)))
    host.topology.ip("dom0", "addr", "del", address, "dev", ifname)
    wait_until(lambda: (ifname, address) in inv.addresses(host), timeout=DEADLINE,
               message="the agent to restore %s on %s" % (address, ifname))
    wait_until(lambda: len(effects(host, "add %s on %s" % (address, ifname))) > before,
               timeout=DEADLINE, message="the trace to show %s added again" % address)


def record_calls(host):
    """From now on, list (method, latency in force, params) of every XAPI call the simulator
    receives."""
    calls = []
    dispatch = host.sim.dispatch

    def recording(method, params, ctx=None):
        calls.append((method, host.sim.latency, list(params)))
        return dispatch(method, params, ctx)
    host.sim.dispatch = recording   # Simulator._handle calls self.dispatch
    return calls


def to_healthy(host):
    """Start the agent and the firewall; wait for HEALTHY."""
    host.start_agent()
    host.wait_state("WAITING_VM")
    host.sim.vm_start(FIREWALL)
    host.wait_state("HEALTHY", deadline=DEADLINE)


# --- 1. XAPI answering slowly ------------------------------------------------------------------

def test_slow_xapi_in_booting():
    """XAPI too slow from the start: BOOTING never gets an answer, yet the early management
    mirror is kept (a deleted mirror comes back); latency gone -> HEALTHY."""
    with XapiFaultHost() as host:
        inv.plant_foreign(host)
        host.sim.vm_start(FIREWALL)
        host.sim.set_latency(SLOW)
        host.start_agent()
        st = xapi_unanswered(host)
        assert st["state"] in ("BOOTING", "DEGRADED"), st["state"]
        wait_until(lambda: (inv.MGMT, MIRROR) in inv.addresses(host), timeout=DEADLINE,
                   message="the early management mirror")
        delete_and_see_repaired(host, inv.MGMT, MIRROR)
        st = host.status()
        assert not st["xapi"]["connected"]
        assert st["state"] in ("BOOTING", "DEGRADED"), \
            "left BOOTING without XAPI ever answering: %s" % st["transitions"]
        host.sim.set_latency(0)
        inv.assert_recovered(host, deadline=DEADLINE)


def test_slow_xapi_in_degraded_from_booting():
    """XAPI too slow until BOOTING spends its budget: DEGRADED with reason xapi; a deleted mirror
    is restored there and the agent stays DEGRADED (nothing past BOOTING without XAPI)."""
    with XapiFaultHost() as host:
        inv.plant_foreign(host)
        host.sim.vm_start(FIREWALL)
        host.sim.set_latency(SLOW)
        host.start_agent()
        st = host.wait_state("DEGRADED", deadline=DEADLINE)
        assert "xapi" in st["reasons"] and TIMEOUT_TEXT in st["reasons"]["xapi"], st["reasons"]
        since = time.time()
        delete_and_see_repaired(host, inv.MGMT, MIRROR)
        st = host.status()
        try:
            assert not [t["to"] for t in transitions(host, since)], \
                "left DEGRADED without XAPI ever answering"
            assert st["state"] == "DEGRADED" and "xapi" in st["reasons"], st
        finally:
            host.sim.set_latency(0)
            inv.assert_recovered(host, deadline=DEADLINE)


def test_slow_xapi_in_waiting_vm():
    """XAPI slow while waiting for the firewall: its bridge still gets bound and routed by the
    kernel side alone, a deleted address is restored; latency gone -> HEALTHY."""
    with XapiFaultHost() as host:
        inv.plant_foreign(host)
        host.start_agent()
        host.wait_state("WAITING_VM")
        host.sim.set_latency(SLOW)
        xapi_unanswered(host)
        host.sim.vm_start(FIREWALL)
        # BINDING and ROUTED need no XAPI; SR_PROBING does (PBD.plug), so it waits there
        # (or in DEGRADED once the plug attempts are spent).
        host.wait(lambda st: st["state"] in ("SR_PROBING", "DEGRADED") and st["counts"].get("ROUTED"),
                  "the agent to bind and route without XAPI", DEADLINE)
        delete_and_see_repaired(host, inv.sspn_bridge(host), ADDRESS)
        assert not host.status()["xapi"]["connected"]
        host.sim.set_latency(0)
        inv.assert_recovered(host, deadline=DEADLINE)


def test_slow_pbd_plug_in_sr_probing():
    """SR_PROBING with XAPI slow: PBD.plug runs past its timeout, the loop keeps repairing the
    kernel side meanwhile; latency gone -> the PBD is found plugged, HEALTHY."""
    with XapiFaultHost() as host:
        inv.plant_foreign(host)
        host.topology.ip("lan", "route", "del", "default")   # storage unreachable: held here
        host.start_agent()
        host.wait_state("WAITING_VM")
        host.sim.vm_start(FIREWALL)
        host.wait_state("SR_PROBING", deadline=DEADLINE)
        wait_until(lambda: effects(host, "probe " + SR_KEY), timeout=DEADLINE,
                   message="a storage probe round")   # the agent is idle, probing
        calls = record_calls(host)
        since = time.time()
        host.sim.set_latency(SLOW)
        host.topology.ip("lan", "route", "add", "default", "via", "198.51.100.1")
        # The probe answers, PBD.plug goes out and gets no answer within its (longer) timeout;
        # "failed: <timeout>" is a plug that was sent ("XAPI unreachable: ..." one that was not).
        wait_until(lambda: [e for e in effects(host, "PBD.plug " + SR_KEY, since)
                            if e["result"].startswith("failed: " + TIMEOUT_TEXT)],
                   timeout=DEADLINE, message="a PBD.plug to time out")
        assert [c for c in calls if c[0] in ("PBD.plug", "Async.PBD.plug") and c[1] == SLOW], \
            calls   # it was sent
        delete_and_see_repaired(host, inv.sspn_bridge(host), ADDRESS)
        xapi_unanswered(host)
        host.sim.set_latency(0)
        inv.assert_recovered(host, deadline=DEADLINE)
        assert host.sim.state()["srs"][SR]["attached"]


def test_slow_xapi_in_healthy():
    """XAPI slow in HEALTHY: the status says so, a deleted address is restored without XAPI,
    and the agent reconnects once the latency is gone."""
    with XapiFaultHost() as host:
        inv.plant_foreign(host)
        to_healthy(host)
        host.sim.set_latency(SLOW)
        xapi_unanswered(host)
        delete_and_see_repaired(host, inv.sspn_bridge(host), ADDRESS)
        host.wait_state("HEALTHY", deadline=DEADLINE)
        assert not host.status()["xapi"]["connected"]
        host.sim.set_latency(0)
        xapi_connected(host)
        inv.assert_recovered(host, deadline=DEADLINE)


# --- 2. event.from answering garbage -------------------------------------------------------------

GARBAGE_LOG = "event.from returned"   # GarbageReply texts (agent/adapters/xapi_world.py)


def inject_garbage(host, n):
    """The next ``n`` event.from replies are garbage; returns the calls recorded from now on."""
    calls = record_calls(host)
    host.sim.event_garbage(n)
    return calls


def wait_garbage_handled(host, n, calls):
    """Every one of the ``n`` garbage replies was noticed (the agent logs each), then XAPI was
    read afresh: a full read ends with an event.from from the empty token (xapi_world.py)."""
    wait_until(lambda: len(log_lines(host, GARBAGE_LOG)) >= n, timeout=DEADLINE,
               message="the agent to notice %d garbage event.from replies (log: %s)"
               % (n, log_lines(host, GARBAGE_LOG)))
    polls = lambda: [c for c in calls if c[0] == "event.from"]  # noqa: E731
    wait_until(lambda: [c for c in polls()[n:] if c[2][2] == ""], timeout=DEADLINE,
               message="a full read (event.from from token \"\") after the garbage")
    xapi_connected(host)


def test_event_garbage_in_waiting_vm():
    """Garbage while waiting for the firewall, which starts meanwhile: the fresh read after the
    garbage sees it running (the status names it), and its bridge leads to HEALTHY."""
    with XapiFaultHost() as host:
        inv.plant_foreign(host)
        host.start_agent()
        host.wait_state("WAITING_VM")
        # Hold the lab's bridge back, so that what the agent learnt from XAPI shows in the
        # status (WAITING_VM's blocker lists the uplink VMs XAPI reports running).
        hooks = list(host.sim.power.hooks)
        for hook in hooks:
            host.sim.remove_vm_power_hook(hook)
        calls = inject_garbage(host, 3)
        host.sim.vm_start(FIREWALL)
        wait_garbage_handled(host, 3, calls)
        host.wait(lambda st: st["state"] == "WAITING_VM" and st["xapi"]["connected"]
                  and any("uplink VMs running: %s" % FIREWALL in b for b in st["blockers"]),
                  "the status to show the firewall running after the garbage", DEADLINE)
        for hook in hooks:
            host.sim.add_vm_power_hook(hook)
        host.sim.vm_reboot(FIREWALL)   # now with its bridge
        inv.assert_recovered(host, deadline=DEADLINE)


def test_event_garbage_in_healthy():
    """Garbage in HEALTHY while the firewall reboots: the agent re-reads XAPI, binds the new
    bridge, and a PBD detached after the garbage is still seen and plugged again."""
    with XapiFaultHost() as host:
        inv.plant_foreign(host)
        to_healthy(host)
        since = time.time()
        calls = inject_garbage(host, 3)
        host.sim.vm_reboot(FIREWALL)
        wait_garbage_handled(host, 3, calls)
        host.wait_state("HEALTHY", deadline=DEADLINE)
        unplugged = time.time()
        host.sim.pbd_unplug(SR)
        host.wait(lambda st: any(t["to"] == "SR_PROBING" and t["trigger"] == "pbd_detached"
                                 for t in inv.transitions_since(st, unplugged)),
                  "the agent to see the PBD detached after the garbage", DEADLINE)
        inv.assert_recovered(host, deadline=DEADLINE)
        assert host.sim.state()["srs"][SR]["attached"]
        assert [e for e in effects(host, "PBD.plug " + SR_KEY, unplugged) if e["ok"]]
        assert [t for t in transitions(host, since) if t["to"] == "BINDING"], \
            "the firewall's new bridge was not bound"


# --- 3. PBD.plug failing -----------------------------------------------------------------------

def detach_with_failures(host, n):
    """In HEALTHY: the next ``n`` plugs fail, then the PBD detaches; returns the wall time.

    First the answer to the plug that led to HEALTHY, which can come after HEALTHY: arriving
    after the detach, it counted as one of the plugs under test ("ok, but detached again
    since")."""
    inv.plugs_traced(host, 1, deadline=DEADLINE)
    host.sim.plug_failures(SR, n)
    since = time.time()
    host.sim.pbd_unplug(SR)
    return since


def test_pbd_plug_fails_within_budget():
    """3 failed plugs (fewer than the budget of 5): each traced with XAPI's error code, then a
    successful one, HEALTHY, without DEGRADED."""
    n = 3
    with XapiFaultHost() as host:
        inv.plant_foreign(host)
        to_healthy(host)
        since = detach_with_failures(host, n)
        wait_until(lambda: [e for e in effects(host, "PBD.plug " + SR_KEY, since) if e["ok"]],
                   timeout=DEADLINE, message="a successful PBD.plug")
        inv.assert_recovered(host, deadline=DEADLINE)
        plugs = effects(host, "PBD.plug " + SR_KEY, since)
        assert [e["ok"] for e in plugs] == [False] * n + [True], plugs
        for failed in plugs[:n]:
            assert "SR_BACKEND_FAILURE_108" in failed["result"], failed
        assert not [t for t in transitions(host, since) if t["to"] == "DEGRADED"]
        assert host.sim.state()["srs"][SR]["attached"]


def test_pbd_plug_fails_beyond_budget():
    """Plugs keep failing: DEGRADED with reason sr:<uuid> in the status; failures stop ->
    plugged, HEALTHY."""
    with XapiFaultHost() as host:
        inv.plant_foreign(host)
        to_healthy(host)
        since = detach_with_failures(host, 1000)
        st = host.wait_state("DEGRADED", deadline=DEADLINE, after=since)
        assert SR_KEY in st["reasons"], st["reasons"]
        assert "SR_BACKEND_FAILURE_108" in st["reasons"][SR_KEY]
        assert any(b.startswith(SR_KEY) for b in st["blockers"]), st["blockers"]
        sr = [s for s in st["srs"] if s["uuid"] == SR][0]
        assert sr["state"] == "detached" and sr["attempts"] >= 5, sr
        failed = [e for e in effects(host, "PBD.plug " + SR_KEY, since) if not e["ok"]]
        assert len(failed) >= 5 and all("SR_BACKEND_FAILURE_108" in e["result"] for e in failed)
        host.sim.plug_failures(SR, 0)
        inv.assert_recovered(host, deadline=DEADLINE)
        assert host.sim.state()["srs"][SR]["attached"]
        assert host.status()["reasons"] == {}


# --- 4. toolstack restart in BINDING -----------------------------------------------------------

OUTAGE = 3.0   # seconds xapi stays away; it is down during [restart time, + OUTAGE] at least


def test_toolstack_restart_in_binding():
    """xapi restarts as the firewall goes Running, before its bridge appears: the agent enters
    BINDING and binds while xapi is down, then reconnects and reaches HEALTHY."""
    with XapiFaultHost() as host:
        inv.plant_foreign(host)
        host.start_agent()
        host.wait_state("WAITING_VM")
        restarted = []

        def restart_toolstack(vm_name, vm_record, domid, bridges, old_state, new_state):
            if vm_name == FIREWALL and new_state == "Running" and not restarted:
                restarted.append(time.time())
                host.sim.toolstack_restart(OUTAGE)

        # Run before the lab's hook, which makes the bridge: xapi is gone when it appears.
        hooks = list(host.sim.power.hooks)
        for hook in hooks:
            host.sim.remove_vm_power_hook(hook)
        for hook in [restart_toolstack] + hooks:
            host.sim.add_vm_power_hook(hook)
        host.sim.vm_start(FIREWALL)
        assert restarted
        down_from, down_until = restarted[0], restarted[0] + OUTAGE
        inv.assert_recovered(host, deadline=DEADLINE)

        trace = transitions(host, down_from)
        binding = [t for t in trace if t["from"] == "WAITING_VM" and t["to"] == "BINDING"]
        bound = [t for t in trace if t["from"] == "BINDING" and t["to"] == "ROUTED"
                 and t["trigger"] == "addresses_bound"]
        assert binding and bound, trace
        assert down_from <= binding[0]["time"] <= bound[0]["time"] <= down_until, \
            "BINDING was not passed while xapi was down (%.3f..%.3f): %s" % (down_from, down_until, trace)
        added = set(e["what"] for e in binding[0]["effects"] if e["result"] == "added")
        bridge = inv.sspn_bridge(host)
        assert set("add %s on %s" % (a, bridge) for a in inv.ADDRESSES) <= added, binding[0]
        # the agent did notice xapi going away (and came back: assert_recovered needs XAPI)
        assert log_lines(host, "XAPI event stream failed") + log_lines(host, "XAPI unavailable"), \
            "the agent did not notice the toolstack restart"
