"""The transition table itself: every (state, trigger) cell, and the machine built from it."""

import pytest

from agent import machine as m
from agent.events import TimerFired
from agent.core import MachineBug
from memworld import MemWorld

# The expected table, written out by hand as the spec of DESIGN §4: (state, trigger) -> dests.
EXPECTED = {
    ("BOOTING", "xapi_answered"): ["DEGRADED", "MAINTENANCE", "WAITING_VM", "BINDING"],
    ("BOOTING", "budget_spent"): ["DEGRADED"],
    ("MAINTENANCE", "maintenance_ended"): ["WAITING_VM", "BINDING"],
    ("MAINTENANCE", "budget_spent"): ["DEGRADED"],
    ("WAITING_VM", "bridge_appeared"): ["BINDING"],
    ("WAITING_VM", "host_disabled"): ["MAINTENANCE"],
    ("BINDING", "addresses_bound"): ["ROUTED"],
    ("BINDING", "host_disabled"): ["MAINTENANCE"],
    ("BINDING", "uplink_lost"): ["WAITING_VM"],
    ("BINDING", "budget_spent"): ["DEGRADED"],
    ("ROUTED", "gateway_answered"): ["SR_PROBING", "HEALTHY"],
    ("ROUTED", "host_disabled"): ["MAINTENANCE"],
    ("ROUTED", "uplink_lost"): ["WAITING_VM"],
    ("ROUTED", "address_lost"): ["BINDING"],
    ("ROUTED", "budget_spent"): ["DEGRADED"],
    ("SR_PROBING", "srs_attached"): ["HEALTHY"],
    ("SR_PROBING", "host_disabled"): ["MAINTENANCE"],
    ("SR_PROBING", "uplink_lost"): ["WAITING_VM"],
    ("SR_PROBING", "address_lost"): ["BINDING"],
    ("SR_PROBING", "route_lost"): ["ROUTED"],
    ("SR_PROBING", "budget_spent"): ["DEGRADED"],
    ("HEALTHY", "host_disabled"): ["MAINTENANCE"],
    ("HEALTHY", "uplink_lost"): ["WAITING_VM"],
    ("HEALTHY", "address_lost"): ["BINDING"],
    ("HEALTHY", "route_lost"): ["ROUTED"],
    ("HEALTHY", "pbd_detached"): ["SR_PROBING"],
    ("DEGRADED", "recovered"): ["BOOTING", "MAINTENANCE", "WAITING_VM", "BINDING"],
    ("DEGRADED", "host_disabled"): ["MAINTENANCE"],
    ("DEGRADED", "uplink_lost"): ["WAITING_VM"],
    ("DEGRADED", "address_lost"): ["BINDING"],
    ("DEGRADED", "route_lost"): ["ROUTED"],
}
for _s in m.STATE_NAMES:
    EXPECTED[(_s, "config_reloaded")] = ["BOOTING"]

CELLS = [(s, t) for s in m.STATE_NAMES for t in m.TRIGGERS]


@pytest.mark.parametrize("state,trigger", CELLS)
def test_every_cell_matches_the_spec(state, trigger):
    """Each (state, trigger) cell allows exactly the destinations DESIGN §4 names, in order."""
    assert m.destinations(state, trigger) == EXPECTED.get((state, trigger), [])


def test_every_state_is_reachable_and_left():
    """No state is a dead end or unreachable: each has a way in and a way out."""
    rows = m.rows()
    for state in m.STATE_NAMES:
        assert any(state in r["source"] for r in rows), state
        assert state == m.INITIAL or any(r["dest"] == state for r in rows), state


def test_guards_named_in_the_table_exist():
    """Every guard the table uses is declared and implemented."""
    from agent import guards
    used = set(g for r in m.rows() for g in r["conditions"] + r["unless"])
    assert used == set(m.GUARDS)
    for name in used:
        assert callable(getattr(guards, name))


def test_a_forbidden_trigger_from_our_code_is_a_bug():
    """Firing a trigger the table forbids raises MachineBug instead of being ignored."""
    world = MemWorld()
    world.settle_until("HEALTHY")
    with pytest.raises(MachineBug):
        world.agent._fire("bridge_appeared", TimerFired("test"))


@pytest.mark.parametrize("state", m.STATE_NAMES)
def test_each_state_module_exists_with_its_contract(state):
    """states/<name>.py declares NAME, WAITS_FOR, work() and blockers()."""
    import states
    mod = states.module(state)
    assert mod.NAME == state and mod.WAITS_FOR
    assert callable(mod.work) and callable(mod.blockers)


def test_agent_is_importable_without_io_libraries():
    """The machine module imports no I/O library (transitions only when a machine is built)."""
    import subprocess
    import sys
    code = ("import sys, agent.machine, agent.status, agent.cli;"
            "bad=[m for m in ('pyroute2','icmplib','XenAPI','transitions') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.check_output([sys.executable, "-c", code], cwd=_root()).decode().strip()
    assert out == ""


def _root():
    import os
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
