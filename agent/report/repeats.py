"""Repeats summarised: a failure that keeps repeating is logged (and traced) the first time, then
as a summary at growing intervals, and its recovery once.

Without this, storage that is down for a week writes one warning and one trace record per SR
per probe round (every 5 s): about 17,000 journal lines a day, and the size-bounded trace
rotates the transition that explains DEGRADED away within hours. With it, a failing effect
costs a few dozen lines a day (docs/performance.md, "Journal and trace while storage is down").

The trace keeps every failure of a run up to ``trace_first`` tries (the retry budget: the
attempts that explain a DEGRADED), then only the summaries; the journal has the first failure,
the summaries and the recovery. Core calls ``Repeats.note(entry, now)`` for each effect
(agent/decision/core.py ``effect``); the answer says what to trace and what to log. An effect is
identified by its ``what`` ("probe sr:... (...)", "PBD.plug sr:..."): the same step on the
same target.
"""

import logging
import time

FIRST_SUMMARY = 60.0     # seconds from the first failure to the first summary
GROWTH = 2.0             # each summary interval is this times the previous one...
MAX_INTERVAL = 3600.0    # ...up to one summary an hour


class _Run(object):
    """One effect's run of failures."""

    __slots__ = ("since", "tries", "next_summary", "interval", "last")

    def __init__(self, now, result):
        self.since, self.tries, self.last = now, 1, result
        self.interval = FIRST_SUMMARY
        self.next_summary = now + FIRST_SUMMARY


def _clock(wall):
    return time.strftime("%H:%M", time.localtime(wall))


def _retry(entry, default_retry):
    delay = entry.get("retry_in", default_retry)
    return ", retrying in %.1f s" % delay if delay is not None else ""


class Repeats(object):
    """Failure runs by effect; ``note`` decides what reaches the trace and the journal."""

    def __init__(self, probe_interval=None, trace_first=5):
        self.probe_interval = probe_interval  # when a probe's next round comes (no retry_in)
        self.trace_first = trace_first
        self.runs = {}
        self._quiet_ok = {}  # probe what -> last result: an unchanged success is not repeated

    def _default_retry(self, what):
        return self.probe_interval if what.startswith("probe ") else None

    def note(self, entry, now):
        """(record for the trace or None, (level, message) for the journal or None)."""
        what, result, ok = entry["what"], entry.get("result", ""), entry.get("ok", True)
        run = self.runs.get(what)
        if ok:
            if run is None:
                if what.startswith("probe ") and self._quiet_ok.get(what) == result:
                    return None, None
                self._quiet_ok[what] = result
                return entry, None
            del self.runs[what]
            self._quiet_ok[what] = result
            text = "%s: %s after %d failed tries since %s" % (what, result, run.tries, _clock(run.since))
            record = dict(entry, recovered_after=run.tries, since=round(run.since, 3))
            return record, (logging.INFO, text)
        self._quiet_ok.pop(what, None)
        retry = _retry(entry, self._default_retry(what))
        if run is None:
            self.runs[what] = _Run(now, result)
            return entry, (logging.WARNING, "%s: %s%s" % (what, result, retry))
        run.tries += 1
        run.last = result
        if now < run.next_summary:
            return (entry if run.tries <= self.trace_first else None), None
        run.interval = min(MAX_INTERVAL, run.interval * GROWTH)
        run.next_summary = now + run.interval
        text = "%s: still failing (%s): %d tries since %s%s; next summary in %d min" % (
            what, result, run.tries, _clock(run.since), retry, int(run.interval // 60))
        record = dict(entry, result="still failing (%s): %d tries since %s" % (
            result, run.tries, _clock(run.since)), tries=run.tries, since=round(run.since, 3))
        return record, (logging.WARNING, text)
