"""BINDING: put every configured address on its bridge and the /32 (/128) management mirror.

Each address is ensured through the Net port, which reads it back; nothing is ever removed.
The mirror keeps XAPI's console and performance links working (docs/architecture.md); a missing
management bridge only costs the mirror, with a warning. Failures back off and, after the
retry budget, lead to DEGRADED with reason "bind".
"""

from agent import desired
from agent.facts import interface_text
from agent.ports import NetError
from states.routed import ROUTE_TIMER

NAME = "BINDING"
WAITS_FOR = "every configured address present on its bridge, and its management mirror"
REASONS = ("bind",)
TIMER = "retry:bind"


def ensure_addresses(ctx, wanted):
    """Ensure each (ifname, interface) in ``wanted`` that the kernel view lacks; return failures.

    The kernel facts are the watcher's latest full read, so what they show present is left
    alone: a repair should pay only for what is missing (each ensure is a lookup, a read, a request
    and a read-back).
    """
    failures = []
    for ifname, iface in wanted:
        if ctx.facts.kernel_seen and (ifname, interface_text(iface)) in ctx.facts.addresses:
            continue
        if not ctx.link_exists(ifname):
            failures.append("%s: interface %s does not exist" % (iface, ifname))
            continue
        try:
            result = ctx.net.ensure_address(ifname, iface)
        except NetError as e:
            failures.append(str(e))
            ctx.effect("add %s on %s" % (iface, ifname), "failed: %s" % e, ok=False)
            continue
        ctx.facts.wrote_address(ifname, interface_text(iface), ctx.clock.monotonic())
        if result != "present":
            ctx.effect("add %s on %s" % (iface, ifname), result)
            # A route that failed for want of this address (ENETUNREACH: a view read between
            # an address going and its route going) can work now: no waiting out its backoff.
            ctx.timers.cancel(ROUTE_TIMER)
    return failures


def ensure_mirrors(ctx):
    """Best effort: the management mirror, whenever the management bridge exists."""
    mirrors = desired.wanted_mirrors(ctx.config, ctx.mgmt_bridge)
    if mirrors and ctx.link_exists(ctx.mgmt_bridge):
        for failure in ensure_addresses(ctx, mirrors):
            ctx.log.warning("management mirror: %s, retrying on the next event", failure)


def work(ctx, event):
    """Ensure the binding addresses (and mirrors); addresses_bound once all are verified."""
    if ctx.facts.world is not None and not desired.missing_bridges(ctx.config, ctx.facts):
        ctx.facts.uplinks_seen = True  # the uplink VMs have run in this boot (see WAITING_VM)
    if ctx.timers.armed(TIMER):
        return None  # backing off after a failure; the timer event brings us back
    wanted = desired.wanted_binding_addresses(ctx.config, ctx.facts)
    if ctx.mgmt_bridge and ctx.link_exists(ctx.mgmt_bridge):
        wanted += desired.wanted_mirrors(ctx.config, ctx.mgmt_bridge)
    failures = ensure_addresses(ctx, wanted)
    retry = ctx.retries["bind"]
    if failures:
        delay = retry.failed("; ".join(failures))
        ctx.arm(TIMER, delay)
        if retry.spent:
            ctx.set_reason("bind", "addresses not bound after %d attempts: %s"
                           % (retry.failures, "; ".join(failures)))
            return "budget_spent"
        return None
    retry.succeeded()
    ctx.clear_reason("bind")
    return "addresses_bound"


def blockers(ctx):
    """Addresses still missing, and the last failure."""
    out = ["%s missing on %s" % (iface, ifname)
           for ifname, iface in desired.missing_addresses(ctx.config, ctx.facts, ctx.mgmt_bridge)]
    retry = ctx.retries["bind"]
    if retry.failures:
        out.append("last failure: %s" % retry.last_error)
    return out
