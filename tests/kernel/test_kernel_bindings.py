"""Several networks on the real kernel: each binding served on its own (namespaces, real agent).

Each test runs one `agent lab` scenario on the built-in two-network host (agent/lab/scenarios.py
several_plan: "sspn" with a CARP pair, "sspn-b" with one firewall, both families, both able to
carry each default route) with the real agent as its own process in the dom0 namespace, real
bridges, addresses, routes and ICMP; the XAPI simulator over its Unix socket.
"""

import os
import shutil

import pytest

from agent.lab import runner
from tests.kernel.labhelp import NETNS_REASON, namespaces_with_prefix

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason=NETNS_REASON),
]


def _run(name):
    from agent.lab import scenarios
    before = set(namespaces_with_prefix("sspn-%d-" % os.getpid()))
    run = runner.run_one(name, scenarios.default_plan(), memory=False)
    assert run["ok"], run["error"]
    assert set(namespaces_with_prefix("sspn-%d-" % os.getpid())) == before  # all removed
    return run


def _effects(run):
    from agent.lab import timeline
    return [(what, result) for _t, what, result, _ok in timeline.effects(run["timeline"])]


def test_two_bindings_one_firewall_halted_at_boot():
    """Only the first network's firewall runs: in WAITING_VM the first binding holds its
    addresses, mirrors and both default routes; the second firewall then starts: HEALTHY."""
    run = _run("one-firewall-down")
    assert "served_while_waiting" in run["summary"]


def test_one_firewall_stops_after_healthy_and_the_other_binding_is_repaired():
    """After HEALTHY the second firewall stops; the first binding's address and its management
    mirror are deleted in WAITING_VM: both come back (the mirror too) without that firewall."""
    run = _run("firewall-stops-later")
    assert "repaired_in_waiting_vm" in run["summary"]


def test_default_route_fails_over_and_returns():
    """The preferred network's firewall stops: both default routes move to the other network,
    traced with the route they replaced; it starts again: they come back."""
    run = _run("route-failover")
    moved = [w for w, _r in _effects(run) if w.startswith("default via 100.64.0.1")]
    assert any("instead of default via 192.0.2.1 dev" in w for w in moved), moved
    back = [w for w, _r in _effects(run) if w.startswith("default via 192.0.2.1")]
    assert any("instead of default via 100.64.0.1 dev" in w for w in back), back


def test_carp_pair_with_each_vm_down_in_turn():
    """Both VMs of the CARP pair run; each is stopped in turn: the binding keeps its bridge,
    addresses and routes, HEALTHY throughout, and the first ping after each takeover crosses
    the member that took over (on either bridge backend)."""
    run = _run("carp-failover")
    assert "carp_pfsense_down" in run["summary"] and "carp_pfsense-carp_down" in run["summary"]


def test_a_gateway_that_falls_silent_after_healthy_moves_the_route_and_gets_it_back():
    """The preferred firewall keeps running but stops answering on its IPv4 gateway: the
    recheck notices, the IPv4 route moves (traced with the route it replaced) and comes back
    once the gateway answers again."""
    run = _run("gateway-falls-silent")
    assert "silent_to_failover" in run["summary"] and "answers_to_return" in run["summary"]
    moved = [w for w, _r in _effects(run) if w.startswith("default via 100.64.0.1")]
    assert any("instead of default via 192.0.2.1 dev" in w for w in moved), moved
    silent = [r for w, r in _effects(run) if w.startswith("probe gateway4 192.0.2.1")]
    assert any(r.startswith("no answer") for r in silent) and silent[-1] == "answered", silent


def test_silent_v6_gateway_with_v4_answering():
    """No IPv6 gateway answers, IPv4 does: HEALTHY over IPv4, gateway6 named silent, and the
    trace never says an IPv6 gateway answered (checked by the scenario, again here)."""
    run = _run("silent-gateway6")
    effects = _effects(run)
    assert any(w.startswith("probe gateway4") and r == "answered" for w, r in effects)
    assert not any(w.startswith("probe gateway6") and r == "answered" for w, r in effects)
    assert any(w.startswith("probe gateway6") and r.startswith("no answer") for w, r in effects)
