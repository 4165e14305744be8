"""BOOTING: connect to XAPI and resolve the config's labels; mirror the management address early.

The XAPI adapter connects and retries with backoff by itself; this state counts its failed
attempts against the retry budget. The management mirror needs only the kernel, so it is
put in place at once: XAPI keeps generating working console links while we wait.
"""

from agent.decision import events as ev
from states import binding

NAME = "BOOTING"
WAITS_FOR = "XAPI to answer and every label in the config to resolve"
REASONS = ("xapi", "labels")


def work(ctx, event):
    """Mirror early; leave once XAPI has answered (to DEGRADED if a label is missing)."""
    binding.ensure_mirrors(ctx)
    facts = ctx.facts
    if facts.world is not None and facts.xapi_up:
        ctx.retries["xapi"].succeeded()
        ctx.clear_reason("xapi")
        labels = [m for m in facts.missing if not m.startswith("sr ")]  # SRs: SR_PROBING's
        if labels:
            ctx.set_reason("labels", "not found in XAPI: " + ", ".join(labels))
        else:
            ctx.clear_reason("labels")
        return "xapi_answered"
    if isinstance(event, ev.XapiLost):
        retry = ctx.retries["xapi"]
        retry.failed(event.error)
        if retry.spent:
            ctx.set_reason("xapi", "XAPI unreachable after %d attempts: %s" % (retry.failures, event.error))
            return "budget_spent"
    return None


def blockers(ctx):
    """Why XAPI has not answered yet, or which labels are missing."""
    facts = ctx.facts
    if facts.world is None or not facts.xapi_up:
        return ["XAPI not answering" + (": " + facts.xapi_error if facts.xapi_error else "")]
    return ["not found in XAPI: %s" % m for m in facts.missing]
