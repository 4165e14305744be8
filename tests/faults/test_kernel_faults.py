"""Kernel faults in the middle of real work, with the real agent process running (docs/testing.md §4).

The agent runs as its own process in the lab's dom0 namespace against the XAPI simulator
(agent/lab/harness.py); the faults are made with the ``ip`` command in dom0, as an operator,
xcp-networkd or a reboot would make them:

* the firewall VM rebooted SSPN_REBOOTS times (default 100): each reboot destroys its bridge
  xapiN with everything on it and builds a new one (new domid, new VIF); the agent binds again
  every time, and only once per reboot;
* netlink overflow: 10,000 route changes in one ``ip -batch`` with the v4 default route and the
  v6 SSPN address deleted in the middle, once with the agent working through the storm and once
  with the agent starved of CPU (SIGSTOP) so that its socket surely overflows (ENOBUFS); the
  watcher re-reads everything, the agent repairs, and the storm's own routes stay as the storm
  left them;
* a networkd-style flush (``ip addr flush`` of the SSPN bridge and of xenbr0, default routes
  deleted) while HEALTHY and while SR_PROBING: repaired, and the management address that the
  flush removed is *not* put back by the agent (its config does not name it).

Each test plants foreign state first (invariants.plant_foreign); the flush tests also keep
foreign addresses and routes on an interface of their own (keep0), because a flush of xenbr0
removes the foreign state planted there by the test's own hand. Waits are on the status file
(state, ``since``, transitions) with deadlines that only bound a failure.
"""

import contextlib
import os
import re
import shutil
import signal
import time

import pytest

from agent.lab.harness import FIREWALL, Host
from tests.faults import invariants as inv
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 `ip` to create network namespaces")

REBOOTS = int(os.environ.get("SSPN_REBOOTS", "100"))
MGMT_ADDRESS = "203.0.113.5/24"   # the lab's networkd-configured address (agent/lab/netns.py)
DEADLINE = 60.0                   # bounds a failure only (a repair takes milliseconds)

# Foreign state on an interface of the test's own (a veth pair: the lab kernel may lack dummy).
KEEP = "keep0"
KEEP_ADDRESSES = ("100.64.7.7/24", "2001:db8:97::7/64")
KEEP_ROUTES = ("100.100.0.0/16", "2001:db8:96::/48")

# The netlink burst: routes on a veth of its own; every third one stays.
BURST_DEV = "burst0"
BURST_ROUTES = 6000               # 6000 adds + 4000 deletes = 10,000 route changes


class KernelHost(Host):
    """The harness's host with a few config overrides written into its agent.toml."""

    def __init__(self, retry_budget=None, **kwargs):
        Host.__init__(self, **kwargs)
        self.retry_budget = retry_budget

    def write_config(self):
        path = Host.write_config(self)
        with open(path) as f:
            text = f.read()
        if self.retry_budget is not None:
            text, n = re.subn(r"(?m)^retry_budget = \d+$", "retry_budget = %d" % self.retry_budget, text)
            assert n == 1, "the harness config has no retry_budget line to override"
        # Room for the whole run in the trace (one bind per reboot is counted from it).
        text, n = re.subn(r"(?m)^trace_max_bytes = \d+$", "trace_max_bytes = %d" % (256 << 20), text)
        assert n == 1, "the harness config has no trace_max_bytes line to override"
        with open(path, "w") as f:
            f.write(text)
        return path


# --- helpers ---------------------------------------------------------------------------------

def start_healthy(host, state="HEALTHY"):
    """The agent up, the firewall running, the SR plugged: ``state`` with everything in place."""
    host.start_agent()
    host.wait_state("WAITING_VM", deadline=DEADLINE)
    host.sim.vm_start(FIREWALL)
    host.wait_state(state, deadline=DEADLINE)
    wait_until(lambda: not inv.missing(host), timeout=DEADLINE,
               message="the configured addresses and routes after the first bind")


def settled_after(host, since, state="HEALTHY", what="the fault"):
    """The status once the agent has made a transition after wall time ``since`` and is in ``state``."""
    return host.wait(lambda st: st.get("state") == state and st.get("since", 0) >= since
                     and inv.transitions_since(st, since),
                     "the agent to reach %s again after %s" % (state, what), DEADLINE)


def effects(host, what, results=("added", "replaced", "ok")):
    """Effects in the trace whose description starts with ``what`` and whose result is in ``results``."""
    return [e for r in host.trace() for e in ([r] if r.get("type") == "effect" else r.get("effects", []))
            if e["what"].startswith(what) and e["result"] in results]


def effects_since(host, since):
    """Changes the agent made (an address added, a route replaced, a XAPI call) at or after ``since``."""
    return [e for r in host.trace() if r.get("time", 0) >= since
            for e in ([r] if r.get("type") == "effect" else r.get("effects", []))
            if e["result"] in ("added", "replaced", "ok")]


def assert_noticed_by_netlink(transitions):
    """The first drift after a fault was seen through netlink (kernel_changed / kernel_resynced).

    Not through the slow reconcile timer: a watcher that died or stalled would still be rescued
    by that timer within a minute, and must not pass for one that noticed.
    """
    drift = [t for t in transitions if t["trigger"] in ("uplink_lost", "address_lost", "route_lost")]
    assert drift, "no drift transition in %s" % transitions
    assert drift[0]["cause"].startswith("kernel_"), drift[0]


def triggers(transitions):
    return [t["trigger"] for t in transitions]


def log_text(host):
    with open(os.path.join(host.dir, "agent.log")) as f:
        return f.read()


def overflows(host):
    return log_text(host).count("netlink receive buffer overflowed (ENOBUFS)")


def add_veth(host, name):
    """A veth pair in dom0 (``keep0``/``keepp``), both ends up, so routes through it are usable."""
    peer = name[:-1] + "p"
    host.topology.ip("dom0", batch=["link add %s type veth peer name %s" % (name, peer),
                                    "link set %s up" % name, "link set %s up" % peer])


def plant_keep(host):
    """Foreign addresses and routes on keep0: nothing the flush touches, nothing the agent owns."""
    add_veth(host, KEEP)
    host.topology.ip("dom0", batch=["addr add %s dev %s%s" % (a, KEEP, " nodad" if ":" in a else "")
                                    for a in KEEP_ADDRESSES]
                     + ["route add %s dev %s" % (r, KEEP) for r in KEEP_ROUTES])


def keep_missing(host):
    have, have_routes = inv.addresses(host), inv.routes(host)
    out = ["%s on %s" % (a, KEEP) for a in KEEP_ADDRESSES if (KEEP, a) not in have]
    out += ["%s dev %s" % (r, KEEP) for r in KEEP_ROUTES if (r, None, KEEP) not in have_routes]
    return out


def replant_mgmt(host):
    """Put back by hand what a flush of xenbr0 removed and the agent must not restore."""
    lines = ["addr replace %s dev %s" % (MGMT_ADDRESS, inv.MGMT)]
    lines += ["addr replace %s dev %s%s" % (a, dev, " nodad" if ":" in a else "")
              for dev, a in inv.FOREIGN_ADDRESSES]
    lines += ["route replace %s dev %s" % (dst, dev) for dst, dev in inv.FOREIGN_ROUTES]
    host.topology.ip("dom0", batch=lines)


def flush_lines(bridge):
    """What a networkd-style restart does: default routes gone, both bridges' addresses flushed."""
    return ["route del default via %s dev %s" % (gw, bridge) for gw in inv.GATEWAYS] + [
        "addr flush dev %s" % bridge,
        "addr flush dev %s" % inv.MGMT,
    ]


def assert_flush_outcome(host, bridge, since):
    """After a flush: repaired, named in the status, nothing foreign restored or removed."""
    wait_until(lambda: not inv.missing(host), timeout=DEADLINE,
               message="the configured addresses and routes after the flush")
    trs = inv.transitions_since(host.status(), since)
    assert "address_lost" in triggers(trs), trs
    assert_noticed_by_netlink(trs)
    have = inv.addresses(host)
    # The flush removed these; the config does not name them, so the agent must not re-add them.
    assert (inv.MGMT, MGMT_ADDRESS) not in have
    assert not [a for dev, a in inv.FOREIGN_ADDRESSES if (dev, a) in have]
    assert keep_missing(host) == [], "the agent removed foreign state on %s" % KEEP
    assert inv.tracebacks(host) == []
    assert not effects(host, "add %s" % MGMT_ADDRESS, results=("added", "present", "replaced"))


# --- 1. the firewall VM rebooting ------------------------------------------------------------

def bind_times(host, bridge):
    """Wall times of the trace records in which the agent added the v4 binding address to ``bridge``."""
    what = "add %s on %s" % (inv.ADDRESSES[0], bridge)
    return [r["time"] for r in host.trace()
            for e in ([r] if r.get("type") == "effect" else r.get("effects", []))
            if e["what"] == what and e["result"] == "added"]


def wait_rebound(host, bridge, n, before):
    """HEALTHY entered after the agent bound the bridge of reboot ``n`` (its (n+1)-th bind).

    The status alone is not enough: HEALTHY after ``before`` could be a transition of the
    previous reboot handled late; the bind itself is in the trace.
    """
    def rebound(st):
        if st.get("state") != "HEALTHY" or st.get("since", 0) < before:
            return False
        times = bind_times(host, bridge)
        assert len(times) <= n + 1, "reboot %d: %d binds, more than one per reboot" % (n, len(times))
        return len(times) == n + 1 and times[-1] >= before and st["since"] >= times[-1]
    return host.wait(rebound, "HEALTHY after the bind that follows firewall reboot %d" % n, DEADLINE)


def test_firewall_reboots_rebind_each_time():
    """SSPN_REBOOTS reboots of the firewall: after each the bridge is new and bound again,
    HEALTHY again; in all, one bind per reboot and nothing foreign touched."""
    with KernelHost() as host:
        inv.plant_foreign(host)
        start_healthy(host)
        bridge = inv.sspn_bridge(host)
        domids = [host.sim.state()["vms"][FIREWALL]["domid"]]
        for n in range(1, REBOOTS + 1):
            before = time.time()
            host.sim.vm_reboot(FIREWALL)
            st = wait_rebound(host, bridge, n, before)
            trs = inv.transitions_since(st, before)
            assert "BINDING" in [t["to"] for t in trs], "reboot %d: no re-bind in %s" % (n, trs)
            assert_noticed_by_netlink(trs)
            assert inv.missing(host) == [], "reboot %d: HEALTHY but not converged" % n
            domids.append(host.sim.state()["vms"][FIREWALL]["domid"])
            assert inv.sspn_bridge(host) == bridge
        assert len(set(domids)) == REBOOTS + 1, "every reboot gives the firewall a new domid"
        inv.assert_recovered(host, deadline=DEADLINE)
        # One bind per reboot (plus the first): a new bridge needs its addresses once, the
        # mirrors on xenbr0 survive the reboots and are never added again.
        for address in inv.ADDRESSES:
            assert len(effects(host, "add %s on %s" % (address, bridge))) == REBOOTS + 1, address
        for mirror in inv.MIRRORS:
            assert len(effects(host, "add %s on %s" % (mirror, inv.MGMT))) == 1, mirror
        assert len(effects(host, "PBD.plug")) == 1   # storage never went away
        assert not effects(host, "VM.start %s" % FIREWALL)
        counts = host.status()["counts"]
        assert counts.get("BINDING", 0) >= REBOOTS + 1
        assert counts.get("DEGRADED", 0) == 0
        # No phantom drift: a view read before the agent's own add, handled after it, is not
        # a loss (before that fix: 28 address_lost/route_lost transitions with nothing to do).
        phantom = [r for r in host.trace() if r.get("type") != "effect"
                   and r.get("trigger") in ("address_lost", "route_lost") and not r.get("effects")]
        assert phantom == [], "drift reported with nothing to repair: %s" % phantom[:3]


# --- 2. netlink overflow -----------------------------------------------------------------------

def burst_route(i):
    return "10.%d.%d.0/24" % (100 + i // 256, i % 256)


def burst_lines(bridge):
    """10,000 route changes on burst0; the v4 default route and the v6 SSPN address go in the middle."""
    lines = []
    for i in range(0, BURST_ROUTES, 3):
        a, b, c = burst_route(i), burst_route(i + 1), burst_route(i + 2)
        lines += ["route add %s dev %s" % (r, BURST_DEV) for r in (a, b, c)]
        lines += ["route del %s dev %s" % (r, BURST_DEV) for r in (b, c)]
    middle = len(lines) // 2
    lines[middle:middle] = ["route del default via %s dev %s" % (inv.GATEWAYS[0], bridge),
                            "addr del %s dev %s" % (inv.ADDRESSES[1], bridge)]
    return lines


def burst_routes_now(host):
    """The v4 routes on burst0 right now."""
    return set(r["dst"] for r in inv._ip_json(host, "-4", "route", "show", "dev", BURST_DEV))


@contextlib.contextmanager
def starved(host):
    """The agent process stopped (SIGSTOP) for the block, as a dom0 starved of CPU: nothing reads
    its netlink socket, so a storm is sure to overflow it. Continued (SIGCONT) on the way out."""
    pid = host.agent.pid   # `ip netns exec` execs the interpreter: this is the agent itself
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        assert b"agent\0run" in f.read(), "pid %d is not the agent process" % pid

    def stopped():
        tasks = os.listdir("/proc/%d/task" % pid)
        states = []
        for tid in tasks:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        return all(state in ("T", "t") for state in states)

    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(stopped, timeout=DEADLINE, message="every thread of the agent to stop")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def storm_and_check(host, starve):
    """The 10,000-change storm with the v4 default route and the v6 address deleted mid-way;
    returns how many overflows the agent reported."""
    inv.plant_foreign(host)
    start_healthy(host)
    bridge = inv.sspn_bridge(host)
    add_veth(host, BURST_DEV)
    host.wait(lambda st: st.get("state") == "HEALTHY", "HEALTHY after adding %s" % BURST_DEV)
    overflows_before = overflows(host)
    before = time.time()
    lines = burst_lines(bridge)
    assert len(lines) == 10000 + 2
    if starve:
        with starved(host):
            host.topology.ip("dom0", batch=lines)
    else:
        host.topology.ip("dom0", batch=lines)
    st = settled_after(host, before, what="the route storm")
    trs = inv.transitions_since(st, before)
    assert set(triggers(trs)) & {"address_lost", "route_lost"}, trs
    assert_noticed_by_netlink(trs)
    inv.assert_recovered(host, deadline=DEADLINE)
    # The storm's routes are exactly as the storm left them: the agent neither removed the
    # ones that stayed nor brought back the ones deleted.
    kept = set(burst_route(i) for i in range(0, BURST_ROUTES, 3))
    assert burst_routes_now(host) == kept
    # Each repaired once: the first bind plus the repair.
    assert len(effects(host, "add %s on %s" % (inv.ADDRESSES[1], bridge))) == 2
    assert len(effects(host, "default via %s dev %s" % (inv.GATEWAYS[0], bridge))) == 2
    # Remove the storm's routes ourselves: nothing the agent owns, so it has nothing to do.
    cleanup = time.time()
    host.topology.ip("dom0", "route", "flush", "dev", BURST_DEV)
    assert burst_routes_now(host) == set()
    host.topology.ip("dom0", "link", "del", BURST_DEV)
    inv.assert_recovered(host, deadline=DEADLINE)
    assert effects_since(host, cleanup) == [], "the agent acted on routes it does not own"
    return overflows(host) - overflows_before


def test_route_storm_while_the_agent_works():
    """A 10,000-change route storm with the agent running: the default route and an address
    deleted mid-storm are restored while the storm goes on, the storm's own routes are left
    alone. On an idle machine the agent's socket overflows here too; on a loaded one the
    storm's producer slows down with the agent and it may not (the next test forces it)."""
    with KernelHost() as host:
        storm_and_check(host, starve=False)


def test_route_storm_overflows_a_starved_agent():
    """The same storm while the agent gets no CPU (stopped): its netlink socket overflows for
    sure (ENOBUFS); once it runs again the watcher re-reads everything and the agent repairs."""
    with KernelHost() as host:
        assert storm_and_check(host, starve=True) >= 1, "the storm did not overflow the agent's socket"


# --- 3. networkd-style flush -------------------------------------------------------------------

def test_flush_while_healthy():
    """Both bridges flushed and the default routes deleted while HEALTHY: the agent restores what
    its config names, says address_lost in its status, and does not restore 203.0.113.5."""
    with KernelHost() as host:
        inv.plant_foreign(host)
        plant_keep(host)
        start_healthy(host)
        bridge = inv.sspn_bridge(host)
        before = time.time()
        host.topology.ip("dom0", batch=flush_lines(bridge))
        settled_after(host, before, what="the flush")
        assert_flush_outcome(host, bridge, before)
        replant_mgmt(host)
        inv.assert_recovered(host, deadline=DEADLINE)


def test_flush_while_probing_storage():
    """The same flush while the agent waits for unreachable storage (SR_PROBING): repaired, back
    to SR_PROBING, and HEALTHY once storage answers."""
    with KernelHost(retry_budget=100000) as host:  # stays in SR_PROBING, never DEGRADED
        host.topology.ip("lan", "route", "del", "default")
        inv.plant_foreign(host)
        plant_keep(host)
        start_healthy(host, state="SR_PROBING")
        bridge = inv.sspn_bridge(host)
        before = time.time()
        host.topology.ip("dom0", batch=flush_lines(bridge))
        st = settled_after(host, before, state="SR_PROBING", what="the flush")
        trs = inv.transitions_since(st, before)
        # The watcher may see the deleted routes before the flushed addresses: either drift first.
        assert trs[0]["from"] == "SR_PROBING" and trs[0]["trigger"] in ("address_lost", "route_lost"), trs
        assert_flush_outcome(host, bridge, before)
        assert not effects(host, "PBD.plug")
        host.topology.ip("lan", "route", "add", "default", "via", "198.51.100.1")
        host.wait_state("HEALTHY", deadline=DEADLINE)
        inv.plugs_traced(host, 1, deadline=DEADLINE)
        assert len(effects(host, "PBD.plug")) == 1
        replant_mgmt(host)
        inv.assert_recovered(host, deadline=DEADLINE)

