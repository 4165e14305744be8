"""Messages people read: describe() texts, XAPI errors, warnings, and repeats summarised."""

import logging
import os
import re
import sys

from agent.decision import events as ev
from agent.report import repeats
from agent.decision.world import EnableHost, PbdView, PlugPbd, StartVm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from memworld import SR, MemWorld  # noqa: E402

REPR = re.compile(r"\w+View\(|OpaqueRef|\(\'|\bok=(True|False)|=\(\)")


def test_causes_name_things_without_python_reprs():
    """Actions, views, probe rounds and XAPI errors read as names and values."""
    plug = ev.ActionDone(PlugPbd("OpaqueRef:pbd-1", SR), False,
                         ("SR_BACKEND_FAILURE_108", "", "Unable to detect an NFS service.", ""))
    assert plug.describe() == ("action_done: PBD.plug of SR %s failed: SR_BACKEND_FAILURE_108: "
                               "Unable to detect an NFS service." % SR)
    assert plug.error == ("SR_BACKEND_FAILURE_108", "Unable to detect an NFS service.")
    assert ev.ActionDone(StartVm("OpaqueRef:v", "pfsense"), True).describe() == \
        "action_done: VM.start pfsense ok"
    assert ev.ActionDone(EnableHost("OpaqueRef:h"), False, ["HOST_STILL_BOOTING"]).describe() == \
        "action_done: host.enable failed: HOST_STILL_BOOTING"
    assert ev.PbdChanged(PbdView("OpaqueRef:p", SR, attached=True)).describe() == \
        "pbd_changed: PBD of SR %s (attached)" % SR
    assert ev.ProbeDone("gateway", {"192.0.2.1": True, "2001:db8:1::1": False}).describe() == \
        "probe_done gateway: 192.0.2.1 answered, 2001:db8:1::1 silent"
    for event in (plug, ev.XapiLost("connection refused"), ev.TimerFired("retry:sr"),
                  ev.AddressRemoved("xapi1", "192.0.2.2/24")):
        assert not REPR.search(event.describe()), event.describe()


def test_a_run_with_failures_writes_no_reprs_and_every_warning_says_what_next(caplog):
    """A whole (in-memory) run with failing plugs: causes without reprs, XAPI errors without
    empty fields, each warning ending in what happens next."""
    caplog.set_level(logging.INFO, logger="sspn-agent")
    w = MemWorld()
    w.xapi.plug_failures[SR] = 8
    w.settle_until("HEALTHY")
    for t in w.report.transitions:
        assert not REPR.search(t["cause"]), t["cause"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    for text in warnings:
        assert "  " not in text and " ." not in text, text
        if "->" not in text:  # transitions into DEGRADED name their cause instead
            assert "retrying in" in text, text


# --- repeats ----------------------------------------------------------------------------------

def _fail(what="probe sr:x (198.51.100.10)", result="no answer"):
    return {"what": what, "result": result, "ok": False}


def test_a_repeating_failure_is_logged_once_then_summarised_at_growing_intervals():
    """First failure logged and traced; the next ones traced up to the budget, not logged; then
    summaries at 60 s, 120 s, 240 s ... later; the recovery logged once."""
    r = repeats.Repeats(probe_interval=5.0, trace_first=3)
    logged, traced = [], []
    now = 1.7e9
    for _ in range(200):  # a probe round every 5 s: 1000 s
        record, line = r.note(_fail(), now)
        traced += [record] if record else []
        logged += [line] if line else []
        now += 5.0
    assert logged[0] == (logging.WARNING, "probe sr:x (198.51.100.10): no answer, retrying in 5.0 s")
    summaries = [text for _level, text in logged[1:]]
    assert len(summaries) == 4, summaries  # at 60, 180, 420 and 900 s
    assert "still failing (no answer): 13 tries since" in summaries[0], summaries[0]
    assert all("retrying in 5.0 s" in s for s in summaries)
    assert len(traced) == 3 + len(summaries)
    record, line = r.note({"what": "probe sr:x (198.51.100.10)", "result": "answered", "ok": True}, now)
    assert record["ok"] and record["result"] == "answered" and record["recovered_after"] == 200
    assert line[0] == logging.INFO and "after 200 failed tries" in line[1]
    assert r.note({"what": "probe sr:x (198.51.100.10)", "result": "answered", "ok": True}, now) \
        == (None, None)  # an unchanged probe success is not repeated


def test_summaries_settle_at_one_an_hour():
    """However long it fails, at most one summary an hour once the interval has grown."""
    r = repeats.Repeats(trace_first=5)
    now, lines = 0.0, 0
    for _ in range(86400 // 60):  # one failure a minute for a day (the backoff cap)
        lines += 1 if r.note(_fail("PBD.plug sr:x", "failed: SR_BACKEND_FAILURE_108"), now)[1] else 0
        now += 60.0
    assert lines <= 1 + 6 + 24, lines


def test_storage_down_for_a_day_stays_small_and_keeps_its_transitions(caplog):
    """A simulated day of unreachable storage: tens of journal lines, not thousands, and the
    transition into DEGRADED is still in the trace (bench/outage_volume.py measures the week)."""
    caplog.set_level(logging.INFO, logger="sspn-agent")
    w = MemWorld(storage_up=False, start=False)
    w.boot()
    w.settle(max_time=86400.0, max_rounds=10 ** 6)
    assert w.agent.state == "DEGRADED"
    assert len(caplog.records) < 100, len(caplog.records)
    assert len(w.report.effects) < 100, len(w.report.effects)
    assert [t for t in w.report.transitions if t["to"] == "DEGRADED"]
