"""The status snapshot of a running agent: state, why, what blocks it, bindings, routes, SRs."""

import os

from agent import __version__

from agent.decision import desired, keeper
from agent.decision import machine as m
from agent.decision.facts import interface_text
from agent.report.status import boot_id

import states

_MEANING = dict(m.STATES)


def build(agent):
    """A JSON-ready dict for the status file (no time-varying field but ``next_retry``)."""
    facts, config = agent.facts, agent.config
    now = agent.clock.monotonic()
    addresses = [{"ifname": i, "address": str(a), "present": (i, interface_text(a)) in facts.addresses}
                 for i, a in desired.wanted_addresses(config, facts, agent.mgmt_bridge)]
    routes = [{"family": f, "gateway": str(g), "ifname": b, "present": (f, str(g), b) in facts.routes}
              for f, g, b in desired.wanted_routes(config, facts)]
    srs = []
    for sr in config.srs:
        pbd = facts.pbds.get(sr.uuid)
        retry = agent.retries["sr:" + sr.uuid]
        state = "unknown" if pbd is None else ("plugged" if pbd.attached else "detached")
        note = retry.last_error if retry.failures else ""
        if pbd is not None and not pbd.attached and pbd.shared and pbd.master_attached is False:
            note = (note + "; " if note else "") + "the pool master's PBD is detached too"
        srs.append({"uuid": sr.uuid, "state": state, "attempts": retry.failures, "note": note})
    return {
        "version": __version__,
        "pid": os.getpid(),
        "boot_id": boot_id(),
        "state": agent.state,
        "meaning": _MEANING[agent.state],
        "since": round(agent.since, 3),
        "reasons": dict(agent.reasons),
        "blockers": states.module(agent.state).blockers(agent),
        "xapi": {"connected": facts.xapi_up, "error": facts.xapi_error},
        "host": {"enabled": facts.host.enabled if facts.host else None,
                 "fixed_by_agent": facts.host_fixed, "enable_sent": facts.host_enable_sent},
        "bridges": list(facts.bridges),
        "management_bridge": agent.mgmt_bridge,
        "addresses": addresses,
        "routes": routes,
        "bindings": keeper.describe(agent),
        "problems": keeper.problems(agent),
        "srs": srs,
        "autostart_done": facts.autostart_done,
        "uplinks_seen": facts.uplinks_seen,
        "next_retry": dict((k, round(max(0.0, v - now), 1)) for k, v in agent.timers.pending().items()),
        "counts": dict(agent.counts),
        "transitions": list(agent.history),
    }
