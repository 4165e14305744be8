"""MAINTENANCE: the host is disabled and policy allows a fix: host.enable, then the uplink VM.

Policy ([maintenance] enable_host): "never" never fixes; "always" fixes whenever the host is
disabled; "when-locked-out" fixes only while no uplink VM runs, and never a host disabled on
purpose (persisted auto_enable=false, or other_config:MAINTENANCE_MODE=true; docs/xapi-behaviour.md
§5). The uplink VM is started by WAITING_VM once the host is enabled.

host.enable is asked once. ``HOST_STILL_BOOTING`` means xapi has not finished starting: it
enables the host itself at the end of its storage initialisation (xen-api
ocaml/xapi/xapi_host_helpers.ml ``consider_enabling_host``, called from create_storage.ml), so
the agent waits for that and asks again only every backoff_cap seconds, counting nothing
against the budget. A refusal that no retry can fix (``REFUSALS``, raised by xen-api
ocaml/xapi/xapi_host.ml ``assert_safe_to_reenable``) goes to DEGRADED at once with XAPI's code,
what it means and the fix, and is asked again every backoff_cap seconds. Other failures back
off and spend the budget. See docs/xapi-fidelity.md.
"""

from agent.decision import events as ev
from agent.decision import guards
from agent.decision.world import EnableHost

NAME = "MAINTENANCE"
WAITS_FOR = "host.enable to succeed (or the fix to stop applying)"
REASONS = ("host-enable",)
TIMER = "retry:host-enable"
STILL_BOOTING = "HOST_STILL_BOOTING"

# XAPI's refusals of host.enable that retrying cannot fix: code -> (meaning, fix).
REFUSALS = {
    "HOST_DISABLED_UNTIL_REBOOT": (
        "the host was disabled until its next reboot (e.g. after a pending update)",
        "reboot the host"),
    "HOST_PENDING_MANDATORY_GUIDANCE_NOT_EMPTY": (
        "updates were applied whose mandatory guidance (a reboot or a toolstack restart) is "
        "still pending",
        "carry out the guidance: xe host-param-get uuid=<host> param-name=pending-guidances, "
        "then reboot or xe-toolstack-restart"),
    "HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED": (
        "HA is on and a VM protected by HA has a disk on an SR this host cannot see "
        "(its PBD is not plugged)",
        "plug the SR's PBD on this host (xe pbd-plug) or make the SR shared, then the agent "
        "enables the host"),
    "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED": (
        "HA is on and a VM protected by HA uses a network this host does not have",
        "give the host that network (a PIF on it), or change the VM's HA protection"),
}


def explain_refusal(error):
    """One line for a refused host.enable: code and parameters, meaning, fix; None if retryable."""
    code = error[0] if error else ""
    if code not in REFUSALS:
        return None
    meaning, fix = REFUSALS[code]
    return "XAPI refused host.enable: %s: %s; fix: %s" % (" ".join(str(e) for e in error),
                                                          meaning, fix)


def work(ctx, event):
    """Call host.enable until the host is enabled or the fix no longer applies; wait out
    xapi's own start-up; a refusal leads to DEGRADED with its explanation."""
    facts = ctx.facts
    host = facts.host
    spent = reply(ctx, event)
    if host is not None and host.enabled:
        ctx.clear_reason("host-enable")
        return "maintenance_ended"
    if not guards.host_fix_allowed(ctx.config, facts):
        facts.enable_refused = ""
        ctx.clear_reason("host-enable")
        return "maintenance_ended"
    if spent or "host-enable" in ctx.reasons or facts.enable_refused:
        # refused (REFUSALS) or the budget is spent: DEGRADED, asking again on the timer
        if facts.enable_refused:
            ctx.set_reason("host-enable", facts.enable_refused)
        if facts.xapi_up and not ctx.timers.armed(TIMER):
            ctx.request(EnableHost(host.ref))
        return "budget_spent"
    if facts.xapi_up and not ctx.timers.armed(TIMER):
        ctx.request(EnableHost(host.ref))
    return None


def reply(ctx, event):
    """Record how host.enable went (also after MAINTENANCE was left: XAPI's event may enable
    the host first). True when the host cannot be enabled now: refused, or the budget spent."""
    if not (isinstance(event, ev.ActionDone) and isinstance(event.action, EnableHost)):
        return False
    retry = ctx.retries["host-enable"]
    cap = ctx.config.timing.backoff_cap
    if event.ok:
        ctx.facts.enable_refused = ""
        retry.succeeded()
        ctx.clear_reason("host-enable")
        ctx.effect("host.enable", "ok")
        # A host locked out after its uplink VMs had run in this boot (disabled, then the
        # firewall evacuated or stopped with it): the agent owes them again (WAITING_VM).
        ctx.facts.uplinks_seen = False
        return False
    error = list(event.error)
    text = " ".join(str(e) for e in error)
    if error and error[0] == STILL_BOOTING:
        ctx.facts.xapi_starting = True
        ctx.effect("host.enable", "%s: xapi is still starting and enables the host itself when "
                   "its start-up completes; waiting for that" % STILL_BOOTING, ok=False,
                   retry_in=round(cap, 3))
        ctx.arm(TIMER, cap)
        return False
    refusal = explain_refusal(error)
    if refusal is not None:
        ctx.facts.enable_refused = refusal
        ctx.set_reason("host-enable", refusal)
        ctx.effect("host.enable", "refused: " + refusal, ok=False, retry_in=round(cap, 3))
        ctx.arm(TIMER, cap)
        return True
    delay = retry.failed(text)
    ctx.effect("host.enable", "failed: %s" % text, ok=False, retry_in=round(delay, 3))
    ctx.arm(TIMER, delay)
    if retry.spent:
        ctx.set_reason("host-enable", "host.enable failed %d times: %s"
                       % (retry.failures, retry.last_error))
        return True
    return False


def blockers(ctx):
    """What keeps the host disabled."""
    if "host-enable" in ctx.reasons:
        return [ctx.reasons["host-enable"]]
    retry = ctx.retries["host-enable"]
    if getattr(ctx.facts, "xapi_starting", False) and not retry.failures:
        return ["xapi is still starting (HOST_STILL_BOOTING): it enables the host itself when "
                "its start-up completes"]
    if retry.failures:
        return ["host.enable failed (%d): %s" % (retry.failures, retry.last_error)]
    if not ctx.facts.xapi_up:
        return ["XAPI not answering"]
    return ["host.enable requested"]
