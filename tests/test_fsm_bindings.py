"""Each binding is served on its own: several networks, CARP pairs, every gateway (unit tier).

The in-memory world with two bindings (make_two): network "sspn" on xapi1 (pfsense, pfsense2)
and "sspn-b" on xapi2 (fwb1, fwb2), both families, both able to carry each default route.
"""

from agent.report import snapshot
from agent.report.status import render
from agent.decision.world import PublishState
from memworld import BRIDGE, BRIDGE_B, MGMT, MemWorld, make_config, make_two

A_ADDR = [(BRIDGE, "192.0.2.2/24"), (BRIDGE, "2001:db8:1::2/64")]
B_ADDR = [(BRIDGE_B, "100.64.0.2/24"), (BRIDGE_B, "2001:db8:2::2/64")]
MIRRORS = [(MGMT, "192.0.2.2/32"), (MGMT, "2001:db8:1::2/128"), (MGMT, "100.64.0.2/32"),
           (MGMT, "2001:db8:2::2/128")]
A_ROUTES = [(4, "192.0.2.1", BRIDGE), (6, "2001:db8:1::1", BRIDGE)]
B_ROUTES = [(4, "100.64.0.1", BRIDGE_B), (6, "2001:db8:2::1", BRIDGE_B)]


def _effects(world):
    return world.report.effects + [e for t in world.report.transitions for e in t["effects"]]


def _published(world):
    """The last values the agent wrote into the host's other_config."""
    return dict([c[0] for c in world.xapi.calls if isinstance(c[0], PublishState)][-1].values)


def _binding(world, network):
    return next(b for b in snapshot.build(world.agent)["bindings"] if b["network"] == network)


def _holds(world, entries):
    return all(e in world.net.addresses or e in world.net.routes for e in entries)


def test_a_halted_firewall_does_not_keep_the_other_binding_waiting():
    """B's firewall halted at boot: the host waits (WAITING_VM) but A has its addresses, every
    mirror and both default routes; status says B waits for its bridge."""
    w = MemWorld(config=make_two(), start=False)
    w.xapi.set_power("fwb1", "Halted")
    w.boot()
    assert w.settle() == "WAITING_VM"
    assert _holds(w, A_ADDR + MIRRORS + A_ROUTES)
    b = _binding(w, "sspn-b")
    assert not b["bridge_exists"] and "bridge xapi2" in b["waits_for"]
    assert _binding(w, "sspn")["waits_for"] == "" and not _binding(w, "sspn")["missing"]
    text = render(snapshot.build(w.agent), True)
    assert "binding sspn-b: bridge xapi2 absent; waits for bridge xapi2" in text


def test_drift_on_one_binding_is_repaired_while_the_other_firewall_is_stopped():
    """After HEALTHY, B's firewall stops (WAITING_VM); A's address, its mirror and its route are
    removed by someone: all come back without B's firewall."""
    w = MemWorld(config=make_two())
    w.settle_until("HEALTHY")
    w.xapi.set_power("fwb1", "Halted")
    w.settle_until("WAITING_VM")
    w.net.remove_address(BRIDGE, "192.0.2.2/24")    # the kernel drops the v4 route with it
    w.net.remove_address(MGMT, "192.0.2.2/32")
    w.net.remove_route(6, "2001:db8:1::1", BRIDGE)
    w.settle_until("WAITING_VM")
    assert _holds(w, A_ADDR + MIRRORS + A_ROUTES)


def test_the_mirror_removed_in_waiting_vm_is_restored():
    """One binding, firewall halted: a management mirror someone removes comes back at once."""
    w = MemWorld(vm_running=False)
    w.settle_until("WAITING_VM")
    w.net.remove_address(MGMT, "2001:db8:1::2/128")
    w.agent.run_pending()                                  # no clock advance
    assert (MGMT, "2001:db8:1::2/128") in w.net.addresses


def test_the_default_route_fails_over_to_the_next_binding_and_comes_back():
    """A (preferred: first in file) halts: both routes move to B, traced with the route they
    replaced; A back: they return to A."""
    w = MemWorld(config=make_two())
    w.settle_until("HEALTHY")
    assert _holds(w, A_ROUTES) and not any(r in w.net.routes for r in B_ROUTES)
    w.xapi.set_power("pfsense", "Halted")
    w.settle_until("WAITING_VM")
    assert _holds(w, B_ROUTES + B_ADDR)
    moved = [e["what"] for e in _effects(w) if e["what"].startswith("default via 100.64.0.1 dev xapi2")]
    assert moved and "instead of default via 192.0.2.1 dev xapi1" in moved[-1]
    w.xapi.set_power("pfsense", "Running")
    w.settle_until("HEALTHY")
    assert _holds(w, A_ROUTES) and not any(r in w.net.routes for r in B_ROUTES)
    back = [e["what"] for e in _effects(w) if e["what"].startswith("default via 192.0.2.1 dev xapi1")]
    assert "instead of default via 100.64.0.1 dev xapi2" in back[-1]


def test_route_prefer_picks_the_binding_that_carries_the_default_route():
    """[route] prefer = ["sspn-b"]: B carries both routes while its bridge exists."""
    w = MemWorld(config=make_two(prefer=["sspn-b"]))
    w.settle_until("HEALTHY")
    assert _holds(w, B_ROUTES) and not any(r in w.net.routes for r in A_ROUTES)


def test_a_carp_pair_keeps_working_with_either_vm_down():
    """Two VMs on one network: the bridge, addresses and routes stay while either one runs."""
    w = MemWorld(config=make_two())
    w.xapi.set_power("pfsense2", "Running")
    w.settle_until("HEALTHY")
    for down, up in (("pfsense", "pfsense2"), ("pfsense2", "pfsense")):
        if w.xapi.vms[up].power_state != "Running":
            w.xapi.set_power(up, "Running")
        w.xapi.set_power(down, "Halted")
        w.settle_until("HEALTHY")
        assert _holds(w, A_ADDR + A_ROUTES + MIRRORS)


def test_a_silent_v6_gateway_is_named_while_v4_answers():
    """v6 gateway silent, v4 answering: each probed on its own; the host goes on after the v6
    budget, the reason gateway6 names address and bridge in status and XAPI; the trace never
    says "answered" for the v6 gateway."""
    w = MemWorld(start=False)
    w.prober.reachable.discard("2001:db8:1::1")
    w.boot()
    w.settle_until("HEALTHY", max_time=600)
    for e in _effects(w):
        if "2001:db8:1::1" in e["what"] and e["what"].startswith("probe"):
            assert e["result"] != "answered" and not e["ok"], e
    assert [e for e in _effects(w) if e["what"] == "probe gateway4 192.0.2.1 on xapi1"
            and e["result"] == "answered"]
    reason = _published(w)["sspn-agent-reason"]
    assert "gateway6: 2001:db8:1::1 on xapi1 (network 'sspn') silent" in reason
    assert "gateway4" not in reason
    status = snapshot.build(w.agent)
    gateways = dict((g["gateway"], g["verdict"]) for g in _binding(w, "sspn")["gateways"])
    assert gateways == {"192.0.2.1": "answered", "2001:db8:1::1": "silent"}
    assert "gateway6 2001:db8:1::1: silent" in render(status, True)
    w.prober.reachable.add("2001:db8:1::1")               # it comes back: the reason goes
    w.settle(max_time=60)
    assert "gateway6" not in _published(w)["sspn-agent-reason"]


def test_all_gateways_silent_is_degraded_with_each_one_named():
    """No gateway answers: DEGRADED with reasons gateway4 and gateway6; recovers when they do."""
    w = MemWorld(start=False)
    w.prober.reachable.difference_update(["192.0.2.1", "2001:db8:1::1"])
    w.boot()
    w.settle(max_time=600)
    assert w.agent.state == "DEGRADED"
    assert "192.0.2.1 on xapi1" in w.agent.reasons["gateway4"]
    assert "2001:db8:1::1 on xapi1" in w.agent.reasons["gateway6"]
    w.prober.reachable.update(["192.0.2.1", "2001:db8:1::1"])
    w.settle_until("HEALTHY")



def test_a_gateway_that_stays_silent_is_published_once_not_every_round():
    """The reason XAPI shows names the budget, not a count that grows each round: the rounds
    go on in DEGRADED, the host's other_config is not written again (each write wakes every
    event.from client of the pool)."""
    w = MemWorld(start=False)
    w.prober.reachable.difference_update(["192.0.2.1", "2001:db8:1::1"])
    w.boot()
    w.settle(max_time=300)
    assert w.agent.state == "DEGRADED"
    rounds = len(w.prober.rounds)
    writes = [c for c in w.xapi.calls if isinstance(c[0], PublishState)]
    w.settle(max_time=300)
    assert len(w.prober.rounds) >= rounds + 300 / 5 - 2   # a round every probe_interval
    assert [c for c in w.xapi.calls if isinstance(c[0], PublishState)] == writes
    assert "silent for %d probes" % w.agent.config.timing.retry_budget in _published(w)["sspn-agent-reason"]

def test_a_silent_preferred_gateway_moves_the_route_and_its_return_brings_it_back():
    """A's v4 gateway goes silent at boot: after its budget the v4 route is B's; v6 stays on A.
    Once A's gateway answers again, the v4 route returns to A."""
    w = MemWorld(config=make_two(), start=False)
    w.prober.reachable.discard("192.0.2.1")
    w.boot()
    w.settle(max_time=600)
    assert (4, "100.64.0.1", BRIDGE_B) in w.net.routes and (6, "2001:db8:1::1", BRIDGE) in w.net.routes
    w.prober.reachable.add("192.0.2.1")
    w.settle(max_time=60)
    assert (4, "192.0.2.1", BRIDGE) in w.net.routes


def test_one_binding_failing_to_bind_does_not_hold_back_the_others_routes():
    """B's bridge refuses addresses (EPERM, past the budget): A still gets both default routes."""
    w = MemWorld(config=make_two(), start=False)
    real = w.net.ensure_address

    def refuse_on_b(ifname, interface):
        if ifname == BRIDGE_B:
            from agent.ports import NetError
            raise NetError("add %s on %s: Operation not permitted" % (interface, ifname), 1)
        return real(ifname, interface)
    w.net.ensure_address = refuse_on_b
    w.boot()
    w.settle(max_time=300)
    assert w.agent.state == "DEGRADED" and "bind" in w.agent.reasons
    assert _holds(w, A_ADDR + A_ROUTES)


def test_single_binding_route_form_is_unchanged():
    """The [route] gateway4/gateway6 form alone: both routes on the one bridge, as before."""
    w = MemWorld(config=make_config())
    w.settle_until("HEALTHY")
    assert _holds(w, A_ROUTES)


def test_a_gateway_that_falls_silent_after_healthy_moves_the_route_and_gets_it_back():
    """From HEALTHY, A's v4 gateway stops answering (its firewall still runs): the slow recheck
    notices, gateway4 is named once its budget is spent, the v4 route moves to B; v6 stays on A.
    A answers again: the route returns, the problem goes."""
    from agent.decision import keeper
    w = MemWorld(config=make_two())
    w.settle_until("HEALTHY")
    assert keeper.RECHECK_TIMER in w.agent.timers.pending()
    w.prober.reachable.discard("192.0.2.1")
    w.clock.now = w.agent.timers.deadline(keeper.RECHECK_TIMER)   # quiet until the recheck
    w.settle(max_time=600)
    assert (4, "100.64.0.1", BRIDGE_B) in w.net.routes and (6, "2001:db8:1::1", BRIDGE) in w.net.routes
    assert "gateway4" in keeper.problems(w.agent) and "192.0.2.1" in keeper.problems(w.agent)["gateway4"]
    moved = [e["what"] for e in _effects(w) if e["what"].startswith("default via 100.64.0.1")]
    assert any("instead of default via 192.0.2.1 dev %s" % BRIDGE in m for m in moved), moved
    w.prober.reachable.add("192.0.2.1")
    w.settle(max_time=60)
    assert (4, "192.0.2.1", BRIDGE) in w.net.routes and "gateway4" not in keeper.problems(w.agent)
    assert w.agent.state == "HEALTHY"


def test_an_answered_gateway_is_asked_again_only_on_the_recheck_or_a_failed_neighbour():
    """HEALTHY and quiet: one gateway round per RECHECK_ROUNDS probe intervals; the kernel's neighbour entry
    of a gateway turning invalid brings a round at once."""
    from agent.decision import events as ev
    from agent.decision import keeper
    w = MemWorld()
    w.settle_until("HEALTHY")
    rounds = lambda: len([r for r in w.prober.rounds if r[0] == keeper.PROBE_KEY])  # noqa: E731
    before = rounds()
    for _ in range(4):
        w.clock.now = w.agent.timers.deadline(keeper.RECHECK_TIMER)
        w.agent.run_pending()
    assert rounds() == before + 4
    w.agent.post(ev.NeighbourChanged("192.0.2.1", 0, valid=False))
    w.agent.run_pending()                                  # no clock advance
    assert rounds() == before + 5
    w.agent.post(ev.NeighbourChanged("198.51.100.99", 0, valid=False))   # not a gateway
    w.agent.run_pending()
    assert rounds() == before + 5
