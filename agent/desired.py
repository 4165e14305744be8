"""The desired state: which addresses, routes and PBDs the config asks for, given the facts.

Pure functions of (config, facts, management bridge). The guards of the machine and the
state steps both read them, so "what we want" is written down exactly once.
"""

from agent import sm_targets
from agent.facts import interface_text, mirror_of


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


def wanted_mirrors(config, mgmt_bridge):
    """[(mgmt bridge, /32 or /128)] when mirroring is on and the bridge is known."""
    if not (config.management.mirror and mgmt_bridge):
        return []
    return [(mgmt_bridge, mirror_of(iface)) for b in config.bindings for iface in b.addresses]


def wanted_routes(config, facts):
    """[(family, gateway address, bridge)] for each configured gateway whose bridge is known."""
    out = []
    for gateway in (config.route.gateway4, config.route.gateway6):
        if gateway is None:
            continue
        index = config.binding_for_gateway(gateway)
        bridge = facts.bridges[index] if index is not None and index < len(facts.bridges) else ""
        if bridge:
            out.append((gateway.version, gateway, bridge))
    return out


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
            if (fam, str(gw), br) not in facts.routes]


def missing_bridges(config, facts):
    """[(network label, bridge or "")] for bindings whose bridge is unresolved or absent."""
    out = []
    for index, binding in enumerate(config.bindings):
        bridge = facts.bridges[index] if index < len(facts.bridges) else ""
        if not bridge or bridge not in facts.links:
            out.append((binding.network, bridge))
    return out


def storage_targets(sr_config, pbd):
    """Probe targets of an SR (agent/sm_targets.py): in probe_mode "tcp" the service ports SM
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
