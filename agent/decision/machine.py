"""The state machine, declared once as data: states, triggers, the transition table, guards.

Everything that shows the machine -- docs/diagrams/, `agent status`, the trace, the tests --
derives from the tables in this module. It performs no I/O and does not import
``transitions`` at module level (``agent status`` must stay cheap); ``build_machine`` does.

Triggers are past-tense facts. Three kinds:
  progress  -- the current state's work is done (``addresses_bound``);
  drift     -- a later state lost something an earlier state provides (``address_lost``);
             the loop derives these from the facts after every event, earliest first;
  failure   -- a step spent its retry budget (``budget_spent``).
Within one trigger, rows are tried in order and the first whose guards hold wins.
"""

STATES = (
    ("BOOTING", "connecting to XAPI, resolving labels, mirroring the management address"),
    ("MAINTENANCE", "host disabled and policy allows a fix: host.enable, then start the uplink VM"),
    ("WAITING_VM", "waiting for an uplink VM to run and its bridge to exist in the kernel"),
    ("BINDING", "adding the configured addresses and their management mirror, verified"),
    ("ROUTED", "default routes installed; waiting for the gateway to answer"),
    ("SR_PROBING", "probing storage, plugging this host's detached PBDs, then autostart"),
    ("HEALTHY", "desired state holds; watching for drift"),
    ("DEGRADED", "a step spent its retry budget or the config cannot be satisfied; retrying slowly"),
)

STATE_NAMES = tuple(name for name, _ in STATES)
INITIAL = "BOOTING"

_AFTER_WAITING = ("BINDING", "ROUTED", "SR_PROBING", "HEALTHY", "DEGRADED")

# Each row: trigger, source(s), destination, and optional guards (all must hold) / unless
# guards (none may hold). The order of rows within a trigger is the order they are tried.
TRANSITIONS = (
    # progress
    {"trigger": "xapi_answered", "source": "BOOTING", "dest": "DEGRADED", "conditions": "has_missing_labels"},
    {"trigger": "xapi_answered", "source": "BOOTING", "dest": "MAINTENANCE", "conditions": "needs_host_fix"},
    {"trigger": "xapi_answered", "source": "BOOTING", "dest": "WAITING_VM", "unless": "uplink_present"},
    {"trigger": "xapi_answered", "source": "BOOTING", "dest": "BINDING"},
    {"trigger": "maintenance_ended", "source": "MAINTENANCE", "dest": "WAITING_VM", "unless": "uplink_present"},
    {"trigger": "maintenance_ended", "source": "MAINTENANCE", "dest": "BINDING"},
    {"trigger": "bridge_appeared", "source": "WAITING_VM", "dest": "BINDING"},
    {"trigger": "addresses_bound", "source": "BINDING", "dest": "ROUTED"},
    {"trigger": "gateway_answered", "source": "ROUTED", "dest": "SR_PROBING", "conditions": "has_storage_work"},
    {"trigger": "gateway_answered", "source": "ROUTED", "dest": "HEALTHY"},
    {"trigger": "srs_attached", "source": "SR_PROBING", "dest": "HEALTHY"},
    {"trigger": "recovered", "source": "DEGRADED", "dest": "BOOTING", "unless": "has_xapi_world"},
    {"trigger": "recovered", "source": "DEGRADED", "dest": "MAINTENANCE", "conditions": "needs_host_fix"},
    {"trigger": "recovered", "source": "DEGRADED", "dest": "WAITING_VM", "unless": "uplink_present"},
    {"trigger": "recovered", "source": "DEGRADED", "dest": "BINDING"},
    # drift: back to the earliest state that repairs it
    {"trigger": "host_disabled", "source": ("WAITING_VM",) + _AFTER_WAITING, "dest": "MAINTENANCE"},
    {"trigger": "uplink_lost", "source": _AFTER_WAITING, "dest": "WAITING_VM"},
    {"trigger": "address_lost", "source": ("ROUTED", "SR_PROBING", "HEALTHY", "DEGRADED"), "dest": "BINDING"},
    {"trigger": "route_lost", "source": ("SR_PROBING", "HEALTHY", "DEGRADED"), "dest": "ROUTED"},
    {"trigger": "pbd_detached", "source": "HEALTHY", "dest": "SR_PROBING"},
    {"trigger": "config_reloaded", "source": STATE_NAMES, "dest": "BOOTING"},
    # failure
    {"trigger": "budget_spent",
     "source": ("BOOTING", "MAINTENANCE", "WAITING_VM", "BINDING", "ROUTED", "SR_PROBING"),
     "dest": "DEGRADED"},
)

PROGRESS_TRIGGERS = ("xapi_answered", "maintenance_ended", "bridge_appeared", "addresses_bound",
                     "gateway_answered", "srs_attached", "recovered")
# Checked after every event in this order; the first that applies to the current state fires.
DRIFT_TRIGGERS = ("host_disabled", "uplink_lost", "address_lost", "route_lost", "pbd_detached")
FAILURE_TRIGGERS = ("budget_spent",)
CONTROL_TRIGGERS = ("config_reloaded",)
TRIGGERS = PROGRESS_TRIGGERS + DRIFT_TRIGGERS + FAILURE_TRIGGERS + CONTROL_TRIGGERS

GUARDS = {
    "has_missing_labels": "a label in the config resolves to no XAPI object",
    "needs_host_fix": "host disabled and [maintenance] enable_host allows host.enable now",
    "uplink_present": "every binding's bridge exists in the kernel",
    "has_storage_work": "a configured SR is detached here, or autostart is still due",
    "has_xapi_world": "XAPI has answered at least once since the last (re)load",
}


def _as_tuple(value):
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def rows():
    """The table with sources, conditions and unless normalised to tuples."""
    out = []
    for row in TRANSITIONS:
        out.append({
            "trigger": row["trigger"],
            "source": _as_tuple(row["source"]),
            "dest": row["dest"],
            "conditions": _as_tuple(row.get("conditions")),
            "unless": _as_tuple(row.get("unless")),
        })
    return out


_ALLOWED = {}  # (state, trigger) -> rows: the table is constant, the decision loop asks often


def allowed(state, trigger):
    """The rows of ``trigger`` that may fire from ``state``, in the order they are tried."""
    key = (state, trigger)
    found = _ALLOWED.get(key)
    if found is None:
        found = _ALLOWED[key] = tuple(r for r in rows() if r["trigger"] == trigger and state in r["source"])
    return list(found)


def destinations(state, trigger):
    """The states ``trigger`` can lead to from ``state``."""
    return [r["dest"] for r in allowed(state, trigger)]


def build_machine(model):
    """Attach a ``transitions`` Machine for the table to ``model`` (which provides the guards).

    The model gets ``state`` and one method per trigger. Only our own code fires triggers,
    after checking the table, so a trigger the table forbids raises MachineError: it is a bug.
    """
    from transitions import Machine  # deferred: `agent status` never imports transitions

    table = []
    for r in rows():
        entry = {"trigger": r["trigger"], "source": list(r["source"]), "dest": r["dest"]}
        if r["conditions"]:
            entry["conditions"] = list(r["conditions"])
        if r["unless"]:
            entry["unless"] = list(r["unless"])
        table.append(entry)
    return Machine(model=model, states=list(STATE_NAMES), transitions=table, initial=INITIAL,
                   auto_transitions=False, ignore_invalid_triggers=False, queued=False)
