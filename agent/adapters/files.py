"""Report adapter: the status file (atomic) and the trace (JSON lines), on the local disk.

Both are written through agent/report/safefile.py (no link followed, random O_EXCL temp names, fixed
modes). A status write that fails (/run full or read-only) is not dropped: ``failing`` makes
the service wake every STATUS_RETRY seconds to try again, the journal says so once per streak
and again when it works; ``updated`` lets `agent status` tell a stale file from a live one.
"""

import glob
import os
import time

from agent.report import status as status_file
from agent.report import text
from agent.ports import Report
from agent.report.trace import TraceFile

STATUS_RETRY = 5.0


class FileReport(Report):
    """Writes transitions and effects to the trace, and status snapshots to the status file."""

    def __init__(self, status_path, trace_path, trace_max_bytes, log):
        self.status_path = status_path
        self.trace = TraceFile(trace_path, trace_max_bytes)
        self.log = log
        self._last = None
        self._written_at = None
        self.failures = 0          # status writes failed in a row (0: the file is current)
        self._trace_failing = False
        self.replaced = []         # the last default routes a replace removed (README)
        self._cleaned = {}         # id(transition record) -> (record, its cleaned copy)
        self._remove_stale_temps()

    @property
    def failing(self):
        """True while the status file could not be written: retry every STATUS_RETRY s."""
        return self.failures > 0

    def _remove_stale_temps(self):
        """Remove the temp files (``<status>.<pid>[.<random>].tmp``) of agents killed
        mid-write: each SIGKILL at that instant left one in /run, and nothing else ever
        removes them. Only names of that form whose pid is dead are touched."""
        for path in glob.glob(glob.escape(self.status_path) + ".*.tmp"):
            middle = path[len(self.status_path) + 1:-len(".tmp")]
            pid = middle.split(".", 1)[0]
            if middle.count(".") > 1 or not pid.isdigit() or int(pid) == os.getpid() \
                    or status_file.pid_alive(int(pid)):
                continue
            try:
                os.remove(path)  # removes a link itself, never its target
            except OSError:
                pass  # gone already, or not ours to remove: harmless either way

    def transition(self, record):
        entry = dict(record)
        entry["type"] = "transition"
        for effect in entry.get("effects") or ():
            self._note_replaced(effect, entry.get("time"))
        self._append(entry)

    def effect(self, record):
        entry = dict(record)
        entry["type"] = "effect"
        self._note_replaced(entry, entry.get("time"))
        self._append(entry)

    def _note_replaced(self, effect, when):
        result = str(effect.get("result", ""))
        if "(it replaced " in result:
            self.replaced.append({"time": when, "route": str(effect.get("what", "")),
                                  "replaced": result.split("(it replaced ", 1)[1].rstrip(")")})
            del self.replaced[:-5]
            self.log.warning("%s replaced %s (same metric: the kernel keeps one), keeping ours",
                             self.replaced[-1]["route"], self.replaced[-1]["replaced"])

    def status(self, snapshot):
        """Rewrite the status file when something other than the retry countdowns changed,
        after a failed write, and at least every status.HEARTBEAT seconds."""
        key = dict(snapshot)
        key.pop("next_retry", None)
        key["replaced_routes"] = list(self.replaced)
        now = time.monotonic()
        if key == self._last and self._written_at is not None \
                and now - self._written_at < status_file.HEARTBEAT:
            return
        data = dict(snapshot)
        data["updated"] = round(time.time(), 3)
        data["heartbeat"] = status_file.HEARTBEAT
        if self.replaced:
            data["replaced_routes"] = list(self.replaced)
        try:
            status_file.write_atomic(self.status_path, self._clean(data), cleaned=True)
        except OSError as e:
            self.failures += 1
            if self.failures == 1:
                self.log.warning("cannot write status file %s: %s, retrying every %.0f s",
                                 self.status_path, e, STATUS_RETRY)
            return
        if self.failures:
            self.log.info("status file %s written again after %d failed attempts",
                          self.status_path, self.failures)
        self.failures = 0
        self._last = key
        self._written_at = now

    def _clean(self, data):
        """text.clean_tree of a snapshot; a finished transition record (the same dict in every
        snapshot while it is among the last 50) is cleaned once, not at every write."""
        history = data.pop("transitions", None)
        out = text.clean_tree(data)
        if isinstance(history, list):
            memo = {}
            for record in history:
                hit = self._cleaned.get(id(record))
                if hit is None or hit[0] is not record:
                    hit = (record, text.clean_tree(record))
                memo[id(record)] = hit
            self._cleaned = memo
            out["transitions"] = [memo[id(r)][1] for r in history]
        return out

    def _append(self, entry):
        try:
            self.trace.append(entry)
        except OSError as e:
            if not self._trace_failing:
                self.log.warning("cannot append to trace %s: %s, dropping records until it "
                                 "works again", self.trace.path, e)
            self._trace_failing = True
        else:
            if self._trace_failing:
                self.log.info("trace %s written again", self.trace.path)
            self._trace_failing = False
