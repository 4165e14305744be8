"""One module per state: what entering it does (``work``), what it waits for, what blocks it.

Every module has ``NAME``, ``WAITS_FOR`` (one line for docs and status), ``work(ctx, event)``
-- idempotent effects through the ports, returning the trigger to fire or None -- and
``blockers(ctx)``, the list of what still keeps the machine in that state.
"""

from states import (booting, maintenance, waiting_vm, binding, routed, sr_probing, healthy,
                    degraded)

MODULES = dict((m.NAME, m) for m in (booting, maintenance, waiting_vm, binding, routed,
                                      sr_probing, healthy, degraded))


def module(state):
    """The module of a state name."""
    return MODULES[state]
