"""DEGRADED: a step spent its retry budget, or the config cannot be satisfied.

The reasons form a set (keepalived-style fault flags): entered on the first, left when the
step that failed succeeds again. Meanwhile that step keeps retrying at its capped backoff
(SR probes keep their probe_interval, so storage that comes back is plugged promptly).
Kernel drift still leads back to the state that repairs it (see the transition table).
"""


NAME = "DEGRADED"
WAITS_FOR = "the failing step to succeed again (it keeps retrying at the capped backoff)"
REASONS = ()


def work(ctx, event):
    """Run the failed state's work again; ``recovered`` once it makes progress."""
    import states
    owner = states.module(ctx.degraded_from or "BOOTING")
    trigger = owner.work(ctx, event)
    if trigger is None or trigger == "budget_spent" or ctx.reasons:
        return None
    return "recovered"


def blockers(ctx):
    """The reasons, then what the failed state is still waiting for."""
    import states
    out = ["%s: %s" % (k, v) for k, v in sorted(ctx.reasons.items())]
    if ctx.degraded_from:
        out.extend(states.module(ctx.degraded_from).blockers(ctx))
    return out
