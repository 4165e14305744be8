"""MAINTENANCE: the host is disabled and policy allows a fix: host.enable, then the uplink VM.

Policy ([maintenance] enable_host): "never" never fixes; "always" fixes whenever the host is
disabled; "when-locked-out" fixes only while no uplink VM runs, and never a host disabled on
purpose (persisted auto_enable=false, or other_config:MAINTENANCE_MODE=true; docs/xapi-behaviour.md
§5). host.enable answers HOST_STILL_BOOTING until xapi's start-up completes: retried with
backoff. The uplink VM is started by WAITING_VM once the host is enabled.
"""

from agent import events as ev
from agent import guards
from agent.world import EnableHost

NAME = "MAINTENANCE"
WAITS_FOR = "host.enable to succeed (or the fix to stop applying)"
REASONS = ("host-enable",)
TIMER = "retry:host-enable"


def work(ctx, event):
    """Call host.enable (with backoff) until the host is enabled or the fix no longer applies."""
    facts = ctx.facts
    host = facts.host
    if reply(ctx, event):
        retry = ctx.retries["host-enable"]
        ctx.set_reason("host-enable", "host.enable failed %d times: %s"
                       % (retry.failures, retry.last_error))
        return "budget_spent"
    if host is not None and host.enabled:
        ctx.clear_reason("host-enable")
        return "maintenance_ended"
    if not guards.needs_host_fix(ctx.config, facts):
        return "maintenance_ended"
    if facts.xapi_up and not ctx.timers.armed(TIMER):
        ctx.request(EnableHost(host.ref))
    return None


def reply(ctx, event):
    """Record how host.enable went, with backoff on failure (also after MAINTENANCE was left:
    XAPI's event may enable the host first). True when the retry budget is spent."""
    if not (isinstance(event, ev.ActionDone) and isinstance(event.action, EnableHost)):
        return False
    retry = ctx.retries["host-enable"]
    if event.ok:
        retry.succeeded()
        ctx.clear_reason("host-enable")
        ctx.effect("host.enable", "ok")
        return False
    delay = retry.failed(" ".join(event.error))
    ctx.effect("host.enable", "failed: %s" % " ".join(event.error), ok=False,
               retry_in=round(delay, 3))
    ctx.arm(TIMER, delay)
    return retry.spent


def blockers(ctx):
    """What keeps the host disabled."""
    retry = ctx.retries["host-enable"]
    if retry.failures:
        return ["host.enable failed (%d): %s" % (retry.failures, retry.last_error)]
    if not ctx.facts.xapi_up:
        return ["XAPI not answering"]
    return ["host.enable requested"]
