"""HEALTHY: the desired state holds; watch for drift and re-read the kernel on a slow timer.

Drift is detected by the loop after every event (address lost -> BINDING, route lost ->
ROUTED, PBD detached -> SR_PROBING, uplink gone -> WAITING_VM, host disabled -> MAINTENANCE).
Netlink events are hints that can be lost (overflow, silent kernel drops), so a slow
reconcile timer re-reads the kernel once a minute: one read, about 0.4 ms with 44 links on
the raw netlink path (every 2 s, through pyroute2, it cost 28 CPU-seconds an hour:
bench/footprint.py).
"""

NAME = "HEALTHY"
WAITS_FOR = "nothing: watching for drift"
RECONCILE = "reconcile"
RECONCILE_INTERVAL = 60.0


def work(ctx, event):
    """Keep the slow reconcile timer armed (the loop re-reads the kernel when it fires, before
    looking for drift: core.Agent.handle)."""
    if not ctx.timers.armed(RECONCILE):
        ctx.arm(RECONCILE, RECONCILE_INTERVAL)
    return None


def blockers(ctx):
    """Nothing blocks HEALTHY."""
    return []
