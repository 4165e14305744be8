"""The transition table itself: every (state, trigger) cell, and the machine built from it."""

import pytest

from agent.decision import machine as m
from agent.decision.events import TimerFired
from agent.decision.core import MachineBug
from memworld import MemWorld

# The expected table, written out by hand as the spec of docs/machine.md: (state, trigger) -> dests.
EXPECTED = {
    ("BOOTING", "xapi_answered"): ["DEGRADED", "MAINTENANCE", "WAITING_VM", "BINDING"],
    ("BOOTING", "budget_spent"): ["DEGRADED"],
    ("MAINTENANCE", "maintenance_ended"): ["WAITING_VM", "BINDING"],
    ("MAINTENANCE", "budget_spent"): ["DEGRADED"],
    ("WAITING_VM", "bridge_appeared"): ["BINDING"],
    ("WAITING_VM", "host_disabled"): ["MAINTENANCE"],
    ("WAITING_VM", "budget_spent"): ["DEGRADED"],
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
    """Each (state, trigger) cell allows exactly the destinations docs/machine.md names, in order."""
    assert m.destinations(state, trigger) == EXPECTED.get((state, trigger), [])


def test_every_state_is_reachable_and_left():
    """No state is a dead end or unreachable: each has a way in and a way out."""
    rows = m.rows()
    for state in m.STATE_NAMES:
        assert any(state in r["source"] for r in rows), state
        assert state == m.INITIAL or any(r["dest"] == state for r in rows), state


def test_guards_named_in_the_table_exist():
    """Every guard the table uses is declared and implemented."""
    from agent.decision import guards
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
    code = ("import sys, agent.decision.machine, agent.report.status, agent.tools.cli;"
            "bad=[m for m in ('pyroute2','icmplib','XenAPI','transitions') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.check_output([sys.executable, "-c", code], cwd=_root()).decode().strip()
    assert out == ""


def _table_edges():
    return sorted((s, r["trigger"], r["dest"]) for r in m.rows() for s in r["source"])


def _picture_edges(names):
    from agent.tools import diagram
    out = []
    for name in names:
        for source, row in diagram.edges(name):
            sources = m.STATE_NAMES if source == diagram.ANY else (source,)
            out += [(s, row["trigger"], row["dest"]) for s in sources]
    return sorted(out)


def test_every_edge_is_in_exactly_one_picture():
    """The way up, drift and failure pictures together draw the whole table, no edge twice."""
    from agent.tools import diagram
    assert _picture_edges([p[0] for p in diagram.PICTURES]) == _table_edges()


def test_the_pictures_split_by_trigger_kind():
    """Up holds only progress edges clear of DEGRADED; failure only edges touching DEGRADED."""
    from agent.tools import diagram
    assert diagram.failure_states() == ["DEGRADED"]
    for source, row in diagram.edges("up"):
        assert row["trigger"] in m.PROGRESS_TRIGGERS and "DEGRADED" not in (source, row["dest"])
    for _source, row in diagram.edges("drift"):
        assert row["trigger"] in m.DRIFT_TRIGGERS + m.CONTROL_TRIGGERS and row["dest"] != "DEGRADED"
    for source, row in diagram.edges("failure"):
        assert "DEGRADED" in (source, row["dest"])
    triggers = set(r["trigger"] for _, r in diagram.edges("failure"))
    assert {"budget_spent", "recovered"} <= triggers


def test_the_way_up_reaches_healthy_from_the_initial_state():
    """Following only the way-up picture, HEALTHY is reachable from BOOTING."""
    from agent.tools import diagram
    seen, todo = set(), [m.INITIAL]
    while todo:
        state = todo.pop()
        seen.add(state)
        todo += [r["dest"] for s, r in diagram.edges("up") if s == state and r["dest"] not in seen]
    assert "HEALTHY" in seen


def test_a_new_row_lands_in_a_picture_without_code_changes(monkeypatch):
    """The pictures derive from the table: an added drift row is drawn on the next `agent diagram`."""
    from agent.tools import diagram
    row = {"trigger": "route_lost", "source": "ROUTED", "dest": "BINDING"}
    monkeypatch.setattr(m, "TRANSITIONS", m.TRANSITIONS + (row,))
    assert "  ROUTED --> BINDING: route_lost" in diagram.mermaid("drift").splitlines()
    assert _picture_edges([p[0] for p in diagram.PICTURES]) == _table_edges()


@pytest.mark.parametrize("name", ["machine.mmd", "up.mmd", "drift.mmd", "failure.mmd"])
def test_each_mermaid_file_declares_what_it_draws(name):
    """Every edge of each .mmd joins declared states, so code hosts render it as stateDiagram-v2."""
    from agent.tools import diagram
    text = diagram.generated()[name]
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2" and lines[1].startswith("  direction ")
    declared = set(line.split(" as ")[1] for line in lines if line.startswith("  state "))
    edges = [line for line in lines if " --> " in line and not line.startswith("  [*]")]
    assert edges
    for line in edges:
        source, rest = line.strip().split(" --> ")
        assert source in declared and rest.split(":")[0] in declared, line


def test_the_markdown_embeds_each_picture_and_the_stale_check_covers_every_file(tmp_path):
    """README.md carries the three pictures as mermaid blocks; a missing or edited file is stale."""
    from agent.tools import diagram
    page = diagram.markdown()
    for name, title, direction, _ in diagram.PICTURES:
        assert "## %s" % title in page and diagram.mermaid(name, direction).rstrip() in page
    assert page.count("```mermaid") == len(diagram.PICTURES)
    diagram.write(str(tmp_path))
    assert diagram.stale(str(tmp_path)) == []
    for name in diagram.generated():
        path = tmp_path / name
        text = path.read_text()
        path.write_text(text + "x")
        assert diagram.stale(str(tmp_path)) == [str(path)]
        path.write_text(text)


def _root():
    import os
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
