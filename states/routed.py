"""ROUTED: the default route of each family via the preferred binding, then every gateway verified.

The routes are the per-binding keeper's (agent/decision/keeper.py): replaced in the main table
(idempotent) and read back; the kernel drops a v4 default route silently when its address goes,
which the loop sees as route_lost. Every configured gateway whose bridge exists is probed on its
own every probe_interval until it answers; one silent for the retry budget is named (reason
``gateway4`` / ``gateway6`` with its address and bridge) and the route of its family fails over
to the next preferred binding. The host goes on once each route's gateway has answered or spent
its budget and at least one answered; when none answers, DEGRADED (probes continue).
"""

from agent.decision import desired, keeper

NAME = "ROUTED"
WAITS_FOR = "the default route(s) installed and every gateway answering ICMP echo"
REASONS = ("route", "gateway4", "gateway6")


def work(ctx, event):
    """Routes first; then wait until each route's gateway answered (or went silent)."""
    facts = ctx.facts
    failed = keeper.keep_routes(ctx)
    spent = keeper.spent_now(ctx, [keeper.route_key(b) for b in ctx.config.bindings], failed)
    if spent:
        ctx.set_reason("route", "default route not installed: %s" % spent)
        return "budget_spent"
    if desired.missing_routes(ctx.config, facts):
        return None  # backing off after a failure; the timer event brings us back
    ctx.clear_reason("route")
    if not ctx.config.route.probe:
        return "gateway_answered"
    keeper.keep_probes(ctx)
    verdicts = [facts.gateway_verdicts.get((f, str(gw), br))
                for f, gw, br in desired.wanted_routes(ctx.config, facts)]
    if not verdicts or all(v == "answered" for v in verdicts):
        return _answered(ctx)
    if all(v in ("answered", "silent") for v in verdicts):
        silent = keeper.silent_reasons(ctx)
        if "answered" in verdicts:
            return _answered(ctx)  # the silent one stays named (agent status, XAPI)
        for key, text in silent.items():
            ctx.set_reason(key, text)
        return "budget_spent"
    return None


def _answered(ctx):
    ctx.clear_reason("gateway4")
    ctx.clear_reason("gateway6")
    return "gateway_answered"


def blockers(ctx):
    """Routes missing, or gateways not answering yet."""
    facts = ctx.facts
    out = ["default via %s dev %s missing" % (gw, br)
           for _f, gw, br in desired.missing_routes(ctx.config, facts)]
    for target in desired.gateway_targets(ctx.config, facts):
        verdict = facts.gateway_verdicts.get(target)
        if verdict != "answered" and ctx.config.route.probe:
            retry = ctx.retries["gateway:" + desired.probe_text(target)]
            out.append("%s not answering yet%s" % (
                keeper.gateway_name(target),
                " (%d probes failed)" % retry.failures if retry.failures else ""))
    return out
