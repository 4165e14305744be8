"""Several networks and CARP pairs: each binding is served on its own (docs/bindings.md).
The scenarios run on a built-in host with two internal networks unless the operator's config
(`agent lab --config`) can run them itself (``applicable``)."""

import attr

from agent import config as cfgmod
from agent.lab import netns, timeline
from agent.lab.rehearsal import LAB_TIMING, plan_for


# The second internal network, with its own firewall and gateways (bench/kernel_latency.py
# adds it to the lab's host too).
SECOND_BINDING = """
[[binding]]
network = "sspn-b"
vms = ["opnsense"]
addresses = ["100.64.0.2/24", "2001:db8:3::2/64"]
gateway4 = "100.64.0.1"
gateway6 = "2001:db8:3::1"
"""

SEVERAL = """
[[binding]]
network = "sspn"
vms = ["pfsense", "pfsense-carp"]
addresses = ["192.0.2.2/24", "2001:db8:1::2/64"]""" + SECOND_BINDING + """[route]
gateway4 = "192.0.2.1"
gateway6 = "2001:db8:1::1"
[[sr]]
uuid = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
"""


def several_plan():
    """A host with two internal networks: "sspn" with a CARP pair (pfsense, pfsense-carp) and
    "sspn-b" with opnsense, each able to carry both default routes ("sspn" preferred)."""
    config = cfgmod.parse_config(SEVERAL, "two networks (built in)")
    plan = plan_for(attr.evolve(config, timing=LAB_TIMING), "two networks (built in)")
    return plan


def plan_for_scenario(name, plan):
    """The plan a scenario runs on: one that needs several networks or VMs gets several_plan()
    unless the given plan (an operator's config) can run it."""
    if name in SEVERAL_SCENARIOS and name not in applicable(plan.config):
        return several_plan()
    return plan


def applicable(config):
    """The several-networks scenarios ``config`` itself can run (`agent lab --config`)."""
    out = []
    if any(len(b.vms) > 1 for b in config.bindings):
        out.append("carp-failover")
    if len(config.bindings) > 1:
        out.extend(("one-firewall-down", "firewall-stops-later"))
        if all(len(config.route_candidates(f)) > 1 for f in (4, 6) if config.route_candidates(f)) \
                and any(config.route_candidates(f) for f in (4, 6)):
            out.append("route-failover")
            if config.route.probe and len(config.route_candidates(4)) > 1:
                out.append("gateway-falls-silent")
    if config.route.probe and config.route_candidates(4) and config.route_candidates(6):
        out.append("silent-gateway6")
    return out


def _binding_status(lab, network):
    return next((b for b in (lab.status() or {}).get("bindings", []) if b["network"] == network), None)


def _serves(lab, network):
    """True when the status shows ``network`` holding everything and the kernel agrees."""
    b = _binding_status(lab, network)
    return bool(b and b["bridge_exists"] and not b["missing"])


def _start_all(lab):
    """Start every VM the config names (standby members of a CARP pair too)."""
    for binding in lab.config.bindings:
        for vm in binding.vms:
            if lab.sim.state()["vms"].get(vm, {}).get("power_state") != "Running":
                lab.act("start VM %s" % vm, lambda vm=vm: lab.sim.vm_start(vm))


def carp_failover(lab):
    """A CARP pair on one network: with both VMs running, each is stopped in turn; the bridge
    stays, and the binding's addresses and routes stay, with either VM down; after each stop
    dom0 reaches the storage LAN through the member that took over (docs/bindings.md)."""
    lab.start_agent()
    _start_all(lab)
    lab.wait_healthy(lab.fault_at, kernel=True)
    first = lab.config.bindings[[len(b.vms) for b in lab.config.bindings].index(
        max(len(b.vms) for b in lab.config.bindings))]
    for down, up in ((first.vms[0], first.vms[1]), (first.vms[1], first.vms[0])):
        if lab.sim.state()["vms"][up]["power_state"] != "Running":
            lab.act("start VM %s" % up, lambda up=up: lab.sim.vm_start(up))
        t = lab.act("stop VM %s (its CARP peer %s keeps the gateway)" % (down, up),
                    lambda down=down: lab.sim.vm_stop(down), fault="%s stopped" % down)
        lab.wait_status(lambda s: s.get("state") == "HEALTHY" and _serves(lab, first.network)
                        and not lab.env.kernel_missing(), "HEALTHY with %s down" % down)
        lab.healthy_time = lab.now()
        lab.note("carp_%s_down" % down, round(lab.healthy_time - t, 3))
        ping = lab.env.ping(lab.plan.ping_target)  # a takeover is announced: no waiting for it
        if not ping["ok"]:
            lab.fail("no answer from %s through %s after %s stopped (%s)" % (
                lab.plan.ping_target, up, down, ping["how"]))


def one_firewall_down(lab):
    """Two networks, only the first one's firewall runs: the host waits (WAITING_VM) for the
    other, and meanwhile the first binding holds its addresses, mirrors and default routes."""
    lab.start_agent()
    first = lab.config.bindings[0]
    lab.act("start VM %s only" % first.vms[0], lambda: lab.sim.vm_start(first.vms[0]),
            fault="first firewall started")
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM" and _serves(lab, first.network)
                    and any(r["state"] == "present" for r in _binding_status(lab, first.network)["routes"]),
                    "%s served while the other firewall is halted" % first.network)
    lab.note("served_while_waiting", round(lab.now() - lab.fault_at, 3))
    t = lab.act("start the other firewalls", lambda: [lab.sim.vm_start(b.vms[0])
                                                     for b in lab.config.bindings[1:]])
    lab.wait_healthy(t, kernel=True)


def firewall_stops_later(lab):
    """From HEALTHY, the second network's firewall stops (WAITING_VM); then someone deletes the
    first binding's address and a management mirror: both come back without that firewall."""
    lab.start_agent()
    lab.act("start the firewalls", lambda: [lab.sim.vm_start(b.vms[0]) for b in lab.config.bindings])
    lab.wait_healthy(lab.fault_at)
    first, second = lab.config.bindings[0], lab.config.bindings[1]
    lab.act("stop VM %s" % second.vms[0], lambda: lab.sim.vm_stop(second.vms[0]),
            fault="second firewall stopped")
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM", "WAITING_VM")
    address = first.addresses[0]
    bridge = lab.env.bridge_of[first.network]
    mirror = "%s/%d" % (address.ip, address.max_prefixlen)
    t = lab.act("delete %s from %s and %s from %s" % (address, bridge, mirror, netns.MGMT_BRIDGE),
                lambda: lab.env.delete_addresses([(bridge, str(address)),
                                                  (netns.MGMT_BRIDGE, mirror)]), fault="the deletes")
    lab.wait_for(lambda: not [m for m in lab.env.kernel_missing() if first.network and bridge in m
                              or mirror in m], "%s and its mirror back" % address)
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM" and _serves(lab, first.network),
                    "the first binding served again in WAITING_VM")
    lab.note("repaired_in_waiting_vm", round(lab.now() - t, 3))
    lab.act("start VM %s again" % second.vms[0], lambda: lab.sim.vm_start(second.vms[0]))
    lab.wait_healthy(lab.fault_at, kernel=True)


def _default_routes(lab):
    """{family: (gateway, ifname)} of dom0's default routes now."""
    _addresses, routes = lab.env.kernel_state()
    return dict((family, (gateway, ifname)) for family, gateway, ifname in routes)


def route_failover(lab):
    """Both networks' firewalls run; the preferred network's firewalls stop: both default routes
    move to the other network (traced with the route they replaced); they start: back again."""
    lab.start_agent()
    lab.act("start the firewalls", lambda: [lab.sim.vm_start(b.vms[0]) for b in lab.config.bindings])
    lab.wait_healthy(lab.fault_at, kernel=True)
    family = 4 if lab.config.route_candidates(4) else 6
    order = [i for i, _gw in lab.config.route_candidates(family)]
    first, second = lab.config.bindings[order[0]], lab.config.bindings[order[1]]
    home = dict((f, (str(gw), lab.env.bridge_of[lab.config.bindings[i].network]))
                for f in (4, 6) for i, gw in lab.config.route_candidates(f)[:1])
    away = dict((f, (str(gw), lab.env.bridge_of[lab.config.bindings[i].network]))
                for f in (4, 6) for i, gw in lab.config.route_candidates(f)[1:2])
    lab.wait_for(lambda: _default_routes(lab) == home, "default routes via %s" % first.network)
    t = lab.act("stop every VM of %s" % first.network,
                lambda: [lab.sim.vm_stop(vm) for vm in first.vms], fault="failover")
    lab.wait_for(lambda: _default_routes(lab) == away, "default routes via %s" % second.network)
    lab.note("failover", round(lab.now() - t, 3))
    t = lab.act("start VM %s again" % first.vms[0], lambda: lab.sim.vm_start(first.vms[0]),
                fault="return")
    lab.wait_for(lambda: _default_routes(lab) == home, "default routes back via %s" % first.network)
    lab.note("return", round(lab.now() - t, 3))
    lab.wait_healthy(t, kernel=True)


def silent_gateway6(lab):
    """The firewalls answer ICMP on their IPv4 gateways only (the IPv6 gateway addresses are
    gone): each gateway is probed on its own, the host goes on over IPv4, and every IPv6 gateway
    is named silent (status, XAPI's sspn-agent-reason); the trace never says it answered."""
    lab.act("start the firewalls", lambda: [lab.sim.vm_start(b.vms[0]) for b in lab.config.bindings])
    gone = [(lab.env.bridge_of[lab.config.bindings[i].network], "%s/64" % gw)
            for i, gw in lab.config.route_candidates(6)]
    lab.act("remove the IPv6 gateway addresses %s from the firewalls" % ", ".join(g for _b, g in gone),
            lambda: lab.env.silence_gateways(gone))
    lab.start_agent()
    lab.wait_status(lambda s: s.get("state") == "HEALTHY" and "gateway6" in s.get("problems", {}),
                    "HEALTHY over IPv4 with gateway6 named silent")
    lab.healthy_time = lab.now()
    for _t, what, result, _ok in timeline.effects(lab.entries()):
        if what.startswith("probe gateway6") and result == "answered":
            lab.fail("the trace says %s answered" % what)


def gateway_falls_silent(lab):
    """From HEALTHY, the preferred network's firewall keeps running but its IPv4 gateway stops
    answering: the agent's recheck notices, names gateway4 and moves the IPv4 default route to
    the next network; the gateway answers again: the route comes back, the problem goes."""
    lab.start_agent()
    lab.act("start the firewalls", lambda: [lab.sim.vm_start(b.vms[0]) for b in lab.config.bindings])
    lab.wait_healthy(lab.fault_at, kernel=True)
    (first, gateway), (second, other) = [(lab.config.bindings[i], gw)
                                         for i, gw in lab.config.route_candidates(4)[:2]]
    home = (str(gateway), lab.env.bridge_of[first.network])
    away = (str(other), lab.env.bridge_of[second.network])
    prefix = [a for a in first.addresses if a.version == 4][0].network.prefixlen
    lab.wait_for(lambda: _default_routes(lab).get(4) == home, "the IPv4 default route via %s" % first.network)
    t = lab.act("the firewall of %s stops answering on %s (it keeps running)" % (first.network, gateway),
                lambda: lab.env.silence_gateways([(home[1], "%s/%d" % (gateway, prefix))]),
                fault="gateway silent")
    lab.wait_for(lambda: _default_routes(lab).get(4) == away and "gateway4" in lab.status().get("problems", {}),
                 "the IPv4 default route via %s and gateway4 named" % second.network)
    lab.note("silent_to_failover", round(lab.now() - t, 3))
    t = lab.act("the gateway %s answers again" % gateway, lab.env.restore_gateways, fault="gateway back")
    lab.wait_for(lambda: _default_routes(lab).get(4) == home and "gateway4" not in lab.status().get("problems", {}),
                 "the IPv4 default route back via %s" % first.network)
    lab.note("answers_to_return", round(lab.now() - t, 3))
    lab.wait_healthy(t, kernel=True)


SEVERAL_SCENARIOS = ("carp-failover", "one-firewall-down", "firewall-stops-later", "route-failover",
                     "silent-gateway6", "gateway-falls-silent")
