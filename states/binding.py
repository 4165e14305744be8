"""BINDING: every binding's addresses on its bridge and the /32 (/128) management mirrors.

The work itself is the per-binding keeper's (agent/decision/keeper.py): each address is ensured through
the Net port, which reads it back; nothing is ever removed; each binding backs off on its own.
The mirror keeps XAPI's console and performance links working (docs/bindings.md); a missing
management bridge only costs the mirror. This state judges the host's progress: once every
address is present, ROUTED; once a binding (or the mirror) spent its retry budget, DEGRADED
with reason "bind".
"""

from agent.decision import desired, keeper
from agent.decision.facts import interface_text
from agent.ports import NetError

NAME = "BINDING"
WAITS_FOR = "every configured address present on its bridge, and its management mirror"
REASONS = ("bind",)


def ensure_addresses(ctx, wanted, route_timer=None):
    """Ensure each (ifname, interface) in ``wanted`` that the kernel view lacks; return failures.

    The kernel facts are the watcher's latest full read, so what they show present is left
    alone: a repair should pay only for what is missing (each ensure is a lookup, a read, a request
    and a read-back). ``route_timer``: the backoff of the routes that need these addresses.
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
            if route_timer:
                ctx.timers.cancel(route_timer)
    return failures


def ensure_mirrors(ctx):
    """The management mirrors, whenever the management bridge exists (with their own backoff)."""
    keeper.keep_mirrors(ctx)


def work(ctx, event):
    """Ensure every binding's addresses (and mirrors); addresses_bound once all are verified."""
    if ctx.facts.world is not None and not desired.missing_bridges(ctx.config, ctx.facts):
        ctx.facts.uplinks_seen = True  # the uplink VMs have run in this boot (see WAITING_VM)
    failed = keeper.keep_addresses(ctx)
    spent = keeper.spent_now(ctx, [keeper.bind_key(b) for b in ctx.config.bindings]
                             + [keeper.MIRROR_KEY], failed)
    if spent:
        ctx.set_reason("bind", "addresses not bound: %s" % spent)
        return "budget_spent"
    if desired.missing_addresses(ctx.config, ctx.facts, ctx.mgmt_bridge):
        return None  # a binding backs off after a failure; its timer brings us back
    ctx.clear_reason("bind")
    return "addresses_bound"


def blockers(ctx):
    """Addresses still missing, and the last failure of each binding."""
    out = ["%s missing on %s" % (iface, ifname)
           for ifname, iface in desired.missing_addresses(ctx.config, ctx.facts, ctx.mgmt_bridge)]
    keys = [keeper.bind_key(b) for b in ctx.config.bindings] + [keeper.MIRROR_KEY]
    for key in keys:
        retry = ctx.retries[key]
        if retry.failures:
            out.append("%s last failure: %s" % (key, retry.last_error))
    return out
