"""The per-binding keeper: whenever a binding's bridge exists, its kernel state is kept, in every state.

The eight machine states describe the host; the kernel work is per binding (docs/bindings.md).
After every event the decision thread runs ``keep``: for each binding whose bridge exists, its
addresses; every management mirror; for each family, the default route of the most preferred
binding whose bridge exists and whose gateway is not silent; and a probe of every gateway that has
not answered yet. A gateway that answered is asked again every RECHECK_ROUNDS probe intervals, and
at once when the kernel's neighbour entry for it stops being valid: one that falls silent later is
probed on the usual schedule, named, and its family's route fails over. Each binding backs off on
its own (``retry:bind:<network>``, ``retry:route:<network>``), so one binding's failure never
delays another. BINDING and ROUTED call the same functions and judge the host's progress from the
result.
"""

from agent.decision import desired
from agent.decision import events as ev
from agent.decision.facts import interface_text, mirror_of
from agent.ports import NetError

MIRROR_KEY = "mirror"
PROBE_KEY = "gateway"
PROBE_TIMER = "probe:gateway"
RECHECK_TIMER = "recheck:gateway"
# An answered gateway is asked again every RECHECK_ROUNDS probe intervals (60 s by default;
# docs/bindings.md, "Every gateway verified"): one echo per gateway each time. Every 30 s
# cost 1.2-2.8 CPU-s/hour on 3.6 while HEALTHY, over the 1 CPU-s/hour allowed idle
# (docs/performance.md, row 6).
RECHECK_ROUNDS = 12


def bind_key(binding):
    """Retry key of a binding's addresses."""
    return "bind:" + binding.network


def route_key(binding):
    """Retry key of the default routes a binding carries."""
    return "route:" + binding.network


def keep(ctx):
    """Serve every binding whose bridge exists: addresses, mirrors, default routes, gateway probes."""
    keep_addresses(ctx)
    keep_routes(ctx)
    keep_probes(ctx)


def keep_addresses(ctx):
    """Ensure the addresses of each binding whose bridge exists, then every management mirror;
    return the retry keys whose attempt failed now."""
    from states.binding import ensure_addresses
    failed = []
    for index, binding in enumerate(ctx.config.bindings):
        bridge = desired.bridge_of(ctx.facts, index)
        if not bridge or not ctx.link_exists(bridge):
            # Its backoff concerned a bridge that is gone: the next one is bound at once (the
            # retry count stays, so a bridge that keeps vanishing mid-bind still spends it).
            ctx.timers.cancel("retry:" + bind_key(binding))
            ctx.timers.cancel("retry:" + route_key(binding))
            continue
        if _attempt(ctx, bind_key(binding), [(bridge, iface) for iface in binding.addresses],
                    lambda wanted, b=binding: ensure_addresses(ctx, wanted, "retry:" + route_key(b))):
            failed.append(bind_key(binding))
    if keep_mirrors(ctx):
        failed.append(MIRROR_KEY)
    return failed


def keep_mirrors(ctx):
    """Every binding address's /32 (/128) mirror, whenever the management bridge exists."""
    from states.binding import ensure_addresses
    mirrors = desired.wanted_mirrors(ctx.config, ctx.mgmt_bridge)
    if mirrors and ctx.link_exists(ctx.mgmt_bridge):
        return _attempt(ctx, MIRROR_KEY, mirrors, lambda wanted: ensure_addresses(ctx, wanted))
    return False


_TEXTS = {}  # id(config) -> (config, {interface: "addr/prefix"})


def _all_present(ctx, wanted):
    """True when the kernel view holds every (ifname, interface) of ``wanted`` (the check runs
    after every event: the interfaces' texts are computed once per loaded config)."""
    config = ctx.config
    cached = _TEXTS.get(id(config))
    if cached is None or cached[0] is not config:
        _TEXTS.clear()
        texts = {}
        for binding in config.bindings:
            for iface in binding.addresses:
                texts[iface] = interface_text(iface)
                mirror = mirror_of(iface)
                texts[mirror] = interface_text(mirror)
        cached = _TEXTS[id(config)] = (config, texts)
    texts, addresses = cached[1], ctx.facts.addresses
    for ifname, iface in wanted:
        if (ifname, texts.get(iface) or interface_text(iface)) not in addresses:
            return False
    return True


def spent_now(ctx, keys, failed):
    """"key after N attempts: error; ..." for the steps among ``keys`` whose attempt just now
    (``failed``) spent their retry budget, or "" when none did (BINDING's and ROUTED's reason)."""
    return "; ".join("%s after %d attempts: %s" % (k, ctx.retries[k].failures, ctx.retries[k].last_error)
                     for k in keys if k in failed and ctx.retries[k].spent)


def _attempt(ctx, key, wanted, ensure):
    """One attempt for retry ``key`` unless it is backing off; failures arm its own timer.
    True when an attempt failed now."""
    timer = "retry:" + key
    if ctx.timers.armed(timer):
        return False
    if ctx.facts.kernel_seen and _all_present(ctx, wanted):
        return False  # the cheap, common case: all present
    failures = ensure(wanted)
    retry = ctx.retries[key]
    if failures:
        delay = retry.failed("; ".join(failures))
        ctx.arm(timer, delay)
        ctx.log.warning("%s: %s, retrying in %.1f s", key, "; ".join(failures), delay)
        return True
    retry.succeeded()
    return False


def keep_routes(ctx):
    """For each family, the default route of the preferred binding that can carry it now; return
    the retry keys whose attempt failed now."""
    facts = ctx.facts
    failed = []
    for family in (4, 6):
        chosen = desired.chosen_route(ctx.config, facts, family)
        if chosen is None:
            continue
        index, gateway, bridge = chosen
        route = (family, desired.text(gateway), bridge)
        if facts.kernel_seen and route in facts.routes:
            continue
        binding = ctx.config.bindings[index]
        key = route_key(binding)
        if ctx.timers.armed("retry:" + key):
            continue
        what = "default via %s dev %s" % (gateway, bridge)
        before = sorted(r for r in facts.routes if r[0] == family)
        held = facts.routes_held.get(family)
        ctx.route_writing(bridge)  # probes start fast again; the gateway is resolved quickly
        try:
            result = ctx.net.ensure_default_route(gateway, bridge)
        except NetError as e:
            delay = ctx.retries[key].failed(str(e))
            ctx.arm("retry:" + key, delay)
            ctx.effect(what, "failed: %s" % e, ok=False, retry_in=round(delay, 3))
            failed.append(key)
            continue
        facts.wrote_route(route, ctx.clock.monotonic())
        facts.routes_held[family] = route
        ctx.retries[key].succeeded()
        if result == "present":
            continue
        # the route it replaced, in the description (results stay "replaced"/"added")
        if before and before[0] != route:
            what += " instead of default via %s dev %s" % (before[0][1], before[0][2])
        elif held is not None and held != route:
            what += " instead of default via %s dev %s (gone with its bridge)" % (held[1], held[2])
        ctx.effect(what, result, network=binding.network)
    return failed


def gateway_name(target):
    """"gateway4 192.0.2.1 on xapi1" for a (family, gateway, bridge) target."""
    family, gateway, bridge = target
    return "gateway%d %s on %s" % (family, gateway, bridge)


def keep_probes(ctx):
    """Probe, each on its own, every gateway of an existing bridge that has not answered yet;
    when all have, keep the slow recheck armed."""
    facts = ctx.facts
    targets = desired.gateway_targets(ctx.config, facts)
    for gone in set(facts.gateway_verdicts) - set(targets):
        # its bridge went: a new firewall boot is asked again, from a clean count
        del facts.gateway_verdicts[gone]
        ctx.retries["gateway:" + desired.probe_text(gone)].succeeded()
    if not ctx.config.route.probe:
        return
    due = [desired.probe_text(t) for t in targets if facts.gateway_verdicts.get(t) != "answered"]
    if due:
        if not ctx.timers.armed(PROBE_TIMER):
            ctx.probe(PROBE_KEY, due)
    elif targets and not ctx.timers.armed(RECHECK_TIMER):
        ctx.arm(RECHECK_TIMER, RECHECK_ROUNDS * ctx.config.timing.probe_interval)


def recheck(ctx):
    """Ask every gateway of an existing bridge again (the recheck timer fired, or the kernel's
    neighbour entry of an answered gateway stopped being valid); a miss is folded as any other."""
    ctx.timers.cancel(RECHECK_TIMER)
    if ctx.config.route.probe:
        targets = desired.gateway_targets(ctx.config, ctx.facts)
        if targets:
            ctx.probe(PROBE_KEY, [desired.probe_text(t) for t in targets])


def fold(ctx, event):
    """Fold a gateway probe round into per-gateway verdicts ("answered", "failing", "silent");
    the recheck timer starts a round of every gateway."""
    if isinstance(event, ev.TimerFired) and event.name == RECHECK_TIMER:
        recheck(ctx)
        return
    if not (isinstance(event, ev.ProbeDone) and event.key == PROBE_KEY):
        return
    facts = ctx.facts
    by_text = dict((desired.probe_text(t), t) for t in desired.gateway_targets(ctx.config, facts))
    silent = False
    for text, ok in event.results:
        target = by_text.get(text)
        if target is None:
            continue  # its bridge went while the probe ran
        retry = ctx.retries["gateway:" + text]
        was = facts.gateway_verdicts.get(target)
        if ok:
            retry.succeeded()
            facts.gateway_verdicts[target] = "answered"
            if was != "answered":
                ctx.effect("probe " + gateway_name(target), "answered")
            continue
        silent = True
        counts = ctx.probe_counts(PROBE_KEY)  # the fast rounds after a change do not count
        if counts:
            retry.failed("no answer from %s" % text)
        verdict = "silent" if retry.spent else "failing"
        facts.gateway_verdicts[target] = verdict
        if counts and was != "silent":  # after the budget the status says it; no line every round
            ctx.effect("probe " + gateway_name(target), "no answer (%d in a row)" % retry.failures,
                       ok=False, retry_in=round(ctx.next_probe_in(PROBE_KEY), 3))
    if silent:
        ctx.arm(PROBE_TIMER, ctx.next_probe_in(PROBE_KEY))


def silent_reasons(ctx):
    """{"gateway4": text, "gateway6": text} for the gateways that spent their probe budget.
    The texts name the budget, not the running count: they are published to XAPI when they
    change, and a count that grows with every round would publish every round."""
    out = {}
    for target in sorted(ctx.facts.gateway_verdicts):
        if ctx.facts.gateway_verdicts[target] != "silent":
            continue
        family, gateway, bridge = target
        retry = ctx.retries["gateway:" + desired.probe_text(target)]
        text = "%s on %s (network '%s') silent for %d probes" % (
            gateway, bridge, desired.network_of_bridge(ctx.config, ctx.facts, bridge), retry.budget)
        key = "gateway%d" % family
        out[key] = out[key] + "; " + text if key in out else text
    return out


def problems(ctx):
    """{reason key: text} of every binding's trouble, whatever the host's state (published
    when it changes: no text here may change while nothing does)."""
    out = silent_reasons(ctx) if ctx.config.route.probe else {}
    for binding in ctx.config.bindings:
        for key in (bind_key(binding), route_key(binding)):
            retry = ctx.retries[key]
            if retry.spent:
                out[key] = "%d failed attempts: %s" % (retry.budget, retry.last_error)
    retry = ctx.retries[MIRROR_KEY]
    if retry.spent:
        out[MIRROR_KEY] = "%d failed attempts: %s" % (retry.budget, retry.last_error)
    return out


def describe(ctx):
    """Per binding, for the status file: what it waits for, what it holds, what is missing."""
    facts, config = ctx.facts, ctx.config
    out = []
    for index, binding in enumerate(config.bindings):
        bridge = desired.bridge_of(facts, index)
        exists = bool(bridge) and bridge in facts.links
        holds, missing = [], []
        for iface in binding.addresses:
            entry = "%s on %s" % (iface, bridge or "?")
            (holds if exists and (bridge, interface_text(iface)) in facts.addresses else missing).append(entry)
        for ifname, mirror in desired.wanted_mirrors(config, ctx.mgmt_bridge):
            if mirror.ip in [i.ip for i in binding.addresses] and ifname in facts.links:
                entry = "%s on %s (mirror)" % (mirror, ifname)
                (holds if (ifname, interface_text(mirror)) in facts.addresses else missing).append(entry)
        routes, gateways = [], []
        for family in (4, 6):
            for cand_index, gateway in config.route_candidates(family):
                if cand_index != index:
                    continue
                route = (family, str(gateway), bridge)
                chosen = desired.chosen_route(config, facts, family)
                carries = chosen is not None and chosen[0] == index
                state = ("present" if route in facts.routes else "missing") if carries else (
                    "standby" if exists else "no bridge")
                routes.append({"family": family, "gateway": str(gateway), "state": state})
                if carries and state == "missing":
                    missing.append("default via %s dev %s" % (gateway, bridge))
                elif carries:
                    holds.append("default via %s dev %s" % (gateway, bridge))
                if exists:
                    gateways.append({"family": family, "gateway": str(gateway),
                                     "verdict": facts.gateway_verdicts.get(route, "unprobed")})
        if not bridge:
            waits = "XAPI to resolve network '%s'" % binding.network
        elif not exists:
            waits = "bridge %s (a running VM of %s)" % (bridge, ", ".join(binding.vms))
        elif missing:
            failing = [k for k in (bind_key(binding), route_key(binding)) if ctx.retries[k].failures]
            waits = "its retry (%s)" % ", ".join(failing) if failing else "the next event"
        else:
            waits = ""
        out.append({"network": binding.network, "bridge": bridge, "bridge_exists": exists,
                    "waits_for": waits, "holds": holds, "missing": missing, "routes": routes,
                    "gateways": gateways})
    return out
