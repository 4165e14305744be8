"""ROUTED: install the default route(s) via the firewall, then wait for the gateway to answer.

Routes are replaced in the main table (idempotent) and read back. The kernel drops a v4
default route silently when its address goes (libraries.md §2.4), which the loop sees as
route_lost. The gateway is probed until it answers, on the schedule of agent/schedule.py
(0.1 s after the route, growing to probe_interval); after the retry budget (rounds at the full
interval) the machine enters DEGRADED with reason "gateway" and keeps probing.
"""

from agent import desired
from agent import events as ev
from agent.ports import NetError

NAME = "ROUTED"
WAITS_FOR = "the default route(s) installed and the gateway answering ICMP echo"
REASONS = ("route", "gateway")
ROUTE_TIMER = "retry:route"
PROBE_TIMER = "probe:gateway"
PROBE_KEY = "gateway"


def ensure_routes(ctx):
    """Ensure every wanted default route the kernel view lacks; return the failures as text."""
    failures = []
    for family, gateway, bridge in desired.wanted_routes(ctx.config, ctx.facts):
        if ctx.facts.kernel_seen and (family, str(gateway), bridge) in ctx.facts.routes:
            continue
        ctx.route_writing(bridge)
        try:
            result = ctx.net.ensure_default_route(gateway, bridge)
        except NetError as e:
            failures.append(str(e))
            ctx.effect("default via %s dev %s" % (gateway, bridge), "failed: %s" % e, ok=False)
            continue
        ctx.facts.wrote_route((family, str(gateway), bridge), ctx.clock.monotonic())
        if result != "present":
            ctx.effect("default via %s dev %s" % (gateway, bridge), result)
    return failures


def gateway_targets(ctx):
    """Gateways as probe targets; link-local IPv6 carries its scope (fe80::1%xapi1)."""
    out = []
    for _family, gateway, bridge in desired.wanted_routes(ctx.config, ctx.facts):
        out.append("%s%%%s" % (gateway, bridge) if gateway.is_link_local else str(gateway))
    return out


def work(ctx, event):
    """Routes first; then probe the gateway until it answers."""
    facts = ctx.facts
    if ctx.timers.armed(ROUTE_TIMER):
        return None  # backing off after a failure; the timer event brings us back
    failures = ensure_routes(ctx)
    retry = ctx.retries["route"]
    if failures:
        ctx.arm(ROUTE_TIMER, retry.failed("; ".join(failures)))
        if retry.spent:
            ctx.set_reason("route", "default route not installed after %d attempts: %s"
                           % (retry.failures, "; ".join(failures)))
            return "budget_spent"
        return None
    retry.succeeded()
    ctx.clear_reason("route")
    targets = gateway_targets(ctx)
    if not ctx.config.route.probe or not targets:
        facts.gateway_ok = True
    if isinstance(event, ev.ProbeDone) and event.key == PROBE_KEY:
        retry = ctx.retries["gateway"]
        if event.answered():
            facts.gateway_ok = True
            retry.succeeded()
            ctx.clear_reason("gateway")
            ctx.effect("probe gateway %s" % ", ".join(targets), "answered")
        else:
            if ctx.probe_counts(PROBE_KEY):  # the fast rounds after a change do not count
                retry.failed("no answer from %s" % ", ".join(targets))
            ctx.effect("probe gateway %s" % ", ".join(targets), "no answer", ok=False)
            ctx.arm(PROBE_TIMER, ctx.next_probe_in(PROBE_KEY))
            if retry.spent:
                ctx.set_reason("gateway", "gateway %s silent for %d probes"
                               % (", ".join(targets), retry.failures))
                return "budget_spent"
    if facts.gateway_ok:
        return "gateway_answered"
    if not ctx.timers.armed(PROBE_TIMER):
        ctx.probe(PROBE_KEY, targets)
    return None


def blockers(ctx):
    """Routes missing, or the gateway not answering yet."""
    out = ["default via %s dev %s missing" % (gw, br)
           for _f, gw, br in desired.missing_routes(ctx.config, ctx.facts)]
    if not ctx.facts.gateway_ok:
        retry = ctx.retries["gateway"]
        out.append("gateway %s not answering yet%s" % (
            ", ".join(gateway_targets(ctx)),
            " (%d probes failed)" % retry.failures if retry.failures else ""))
    return out
