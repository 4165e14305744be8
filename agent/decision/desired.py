"""The desired state: which addresses, routes and PBDs the config asks for, given the facts.

Pure functions of (config, facts, management bridge). The guards of the machine and the
state steps both read them, so "what we want" is written down exactly once.
"""

import functools
import ipaddress

from agent.decision import sm_targets
from agent.decision.facts import interface_text, mirror_of


def wanted_addresses(config, facts, mgmt_bridge):
    """[(ifname, interface)] for every binding address on its bridge, then the mirrors."""
    return wanted_binding_addresses(config, facts) + wanted_mirrors(config, mgmt_bridge)


def wanted_binding_addresses(config, facts):
    """[(bridge, interface)] for every address of every binding whose bridge is resolved."""
    out = []
    for index, binding in enumerate(config.bindings):
        bridge = facts.bridges[index] if index < len(facts.bridges) else ""
        if not bridge:
            continue
        out.extend((bridge, iface) for iface in binding.addresses)  # ip_interface (config)
    return out


_MIRRORS = {}  # (id(config), bridge) -> (config, [(bridge, mirror)])


def wanted_mirrors(config, mgmt_bridge):
    """[(mgmt bridge, /32 or /128)] when mirroring is on and the bridge is known (computed once
    per loaded config: the keeper asks after every event)."""
    if not (config.management.mirror and mgmt_bridge):
        return []
    cached = _MIRRORS.get((id(config), mgmt_bridge))
    if cached is None or cached[0] is not config:
        _MIRRORS.clear()
        cached = _MIRRORS[(id(config), mgmt_bridge)] = (config, [
            (mgmt_bridge, mirror_of(iface)) for b in config.bindings for iface in b.addresses])
    return list(cached[1])


def bridge_of(facts, index):
    """The resolved bridge of binding ``index`` ("" while unresolved)."""
    return facts.bridges[index] if index < len(facts.bridges) else ""


def network_of_bridge(config, facts, bridge):
    """The network label of the binding on ``bridge`` ("" if none)."""
    for index, binding in enumerate(config.bindings):
        if bridge and bridge_of(facts, index) == bridge:
            return binding.network
    return ""


_CANDIDATES = {}  # id(config) -> (config, {family: Config.route_candidates(family)})


def route_candidates(config, family):
    """Config.route_candidates, computed once per loaded config (the keeper asks after every
    event; parsing the gateways each time cost most of its 100 us on 3.11)."""
    cached = _CANDIDATES.get(id(config))
    if cached is None or cached[0] is not config:
        _CANDIDATES.clear()
        cached = _CANDIDATES[id(config)] = (config, dict(
            (f, tuple(config.route_candidates(f))) for f in (4, 6)))
    return cached[1][family]


@functools.lru_cache(maxsize=64)
def text(address):
    """str() of an address, cached (ipaddress formats IPv6 slowly)."""
    return str(address)


def route_choices(config, facts, family):
    """[(binding index, gateway, bridge)] that could carry ``family``'s default route now (their
    bridge exists), most preferred first (Config.route_candidates)."""
    out = []
    for index, gateway in route_candidates(config, family):
        bridge = bridge_of(facts, index)
        if bridge and bridge in facts.links:
            out.append((index, gateway, bridge))
    return out


def chosen_route(config, facts, family):
    """(binding index, gateway, bridge) that carries ``family``'s default route: the preferred one
    whose bridge exists and whose gateway is not silent; all silent: the preferred; None if no
    bridge exists."""
    choices = route_choices(config, facts, family)
    for index, gateway, bridge in choices:
        if facts.gateway_verdicts.get((family, text(gateway), bridge)) != "silent":
            return index, gateway, bridge
    return choices[0] if choices else None


def wanted_routes(config, facts):
    """[(family, gateway address, bridge)] of the default route each family should have now."""
    out = []
    for family in (4, 6):
        chosen = chosen_route(config, facts, family)
        if chosen is not None:
            out.append((family, chosen[1], chosen[2]))
    return out


def gateway_targets(config, facts):
    """[(family, gateway text, bridge)] of every configured gateway whose bridge exists."""
    return [(family, text(gateway), bridge) for family in (4, 6)
            for _index, gateway, bridge in route_choices(config, facts, family)]


def probe_text(target):
    """A gateway as a probe target; link-local IPv6 carries its scope (fe80::1%xapi1)."""
    family, gateway, bridge = target
    return "%s%%%s" % (gateway, bridge) if _link_local(gateway) else gateway


@functools.lru_cache(maxsize=64)
def _link_local(gateway_text):
    return ipaddress.ip_address(gateway_text).is_link_local


def missing_addresses(config, facts, mgmt_bridge):
    """The wanted addresses, on interfaces that exist, that the kernel view does not show.

    An absent uplink bridge is WAITING_VM's business, and an absent management bridge only
    costs the mirror, so neither counts as a missing address.
    """
    return [(ifname, iface) for ifname, iface in wanted_addresses(config, facts, mgmt_bridge)
            if ifname in facts.links and (ifname, interface_text(iface)) not in facts.addresses]


def missing_routes(config, facts):
    """The wanted default routes the kernel view does not show."""
    return [(fam, gw, br) for fam, gw, br in wanted_routes(config, facts)
            if (fam, text(gw), br) not in facts.routes]


def missing_bridges(config, facts):
    """[(network label, bridge or "")] for bindings whose bridge is unresolved or absent."""
    out = []
    for index, binding in enumerate(config.bindings):
        bridge = facts.bridges[index] if index < len(facts.bridges) else ""
        if not bridge or bridge not in facts.links:
            out.append((binding.network, bridge))
    return out


def storage_targets(sr_config, pbd):
    """Probe targets of an SR (agent/decision/sm_targets.py): in probe_mode "tcp" the service ports SM
    connects to ("host:port"), on the config's probe addresses or the PBD's servers (names kept
    as text, resolved at probe time); in "icmp" the bare hosts, to ping."""
    if pbd is None and not sr_config.probe:
        return []
    sr_type, device_config = (pbd.sr_type, dict(pbd.device_config)) if pbd is not None else ("", {})
    return sm_targets.targets_for(sr_type, device_config, sr_config.probe_mode,
                                  [str(t) for t in sr_config.probe], sr_config.probe_ports)


def detached_srs(config, facts):
    """Configured SRs whose PBD on this host is known and not attached."""
    out = []
    for sr in config.srs:
        pbd = facts.pbds.get(sr.uuid)
        if pbd is not None and not pbd.attached:
            out.append(sr)
    return out


def unknown_srs(config, facts):
    """[(SrConfig, what XAPI lacks)] for configured SRs XAPI does not know on this host (no such
    uuid, or no PBD here): SR_PROBING keeps them as DEGRADED reasons until they appear."""
    out = []
    for sr in config.srs:
        prefix = "sr %s" % sr.uuid
        found = [m for m in facts.missing if m == prefix or m.startswith(prefix + " ")]
        if found and sr.uuid not in facts.pbds:
            out.append((sr, found[0]))
    return out


def autostart_due(config, facts):
    """True while the once-per-boot autostart of auto-power-on VMs has not run yet."""
    m = config.maintenance
    if not m.autostart or facts.autostart_done:
        return False
    if m.require_pool_auto_poweron and facts.world is not None and not facts.world.pool_auto_poweron:
        return False
    return True
