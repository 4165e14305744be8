"""Guards and drift predicates: pure functions of (config, facts[, management bridge]).

The machine's guard names (agent.decision.machine.GUARDS) and the drift triggers map onto these.
"""

from agent.decision import desired


def needs_host_fix(config, facts):
    """Host disabled and [maintenance] enable_host allows calling host.enable now (not while
    XAPI refuses it for a reason retrying cannot fix: MAINTENANCE keeps that as DEGRADED)."""
    return host_fix_allowed(config, facts) and not facts.enable_refused


def host_fix_allowed(config, facts):
    """Host disabled and [maintenance] enable_host allows a fix (whatever XAPI answers)."""
    host = facts.host
    if host is None or host.enabled:
        return False
    policy = config.maintenance.enable_host
    if policy == "never":
        return False
    if policy == "always":
        return True
    # when-locked-out: only while no uplink VM runs, and never against a deliberate disable
    return not host.deliberately_disabled and not facts.uplink_running()


def uplink_present(config, facts):
    """Every binding's bridge is resolved and exists in the kernel."""
    return bool(config.bindings) and not desired.missing_bridges(config, facts)


def addresses_present(config, facts, mgmt_bridge):
    """Every wanted address on an existing interface is in the kernel view."""
    return not desired.missing_addresses(config, facts, mgmt_bridge)


def routes_present(config, facts):
    """Every wanted default route is in the kernel view."""
    return not desired.missing_routes(config, facts)


def srs_attached(config, facts):
    """No configured SR is known to be detached on this host, or unknown to XAPI."""
    return not desired.detached_srs(config, facts) and not desired.unknown_srs(config, facts)


def has_storage_work(config, facts):
    """A configured SR is detached here, or the once-per-boot autostart is still due."""
    return not srs_attached(config, facts) or desired.autostart_due(config, facts)


def has_missing_labels(config, facts):
    """A network or VM label in the config resolved to no XAPI object (an unknown SR is
    SR_PROBING's reason: the network can still be brought up)."""
    return any(not m.startswith("sr ") for m in facts.missing)


def has_xapi_world(config, facts):
    """XAPI has answered at least once since the last (re)load."""
    return facts.world is not None


def drift(trigger, config, facts, mgmt_bridge):
    """True when the drift ``trigger`` describes the world now."""
    if trigger == "host_disabled":
        return needs_host_fix(config, facts)
    if trigger == "uplink_lost":
        # only a resolved bridge can be lost; an unresolved label is BOOTING's/DEGRADED's reason;
        # while XAPI refuses host.enable the lost bridge is a consequence, kept in DEGRADED
        return not facts.enable_refused and \
            any(bridge for _network, bridge in desired.missing_bridges(config, facts))
    if trigger == "address_lost":
        return not addresses_present(config, facts, mgmt_bridge)
    if trigger == "route_lost":  # (a route through the bridge a refusal lost: as above)
        return not routes_present(config, facts) and not (
            facts.enable_refused and desired.missing_bridges(config, facts))
    if trigger == "pbd_detached":
        return not srs_attached(config, facts)
    raise ValueError("not a drift trigger: %s" % trigger)
