"""Report adapter: the status file (atomic) and the trace (JSON lines), on the local disk."""

import glob
import os

from agent import status as status_file
from agent.ports import Report
from agent.trace import TraceFile


class FileReport(Report):
    """Writes transitions and effects to the trace, and status snapshots to the status file."""

    def __init__(self, status_path, trace_path, trace_max_bytes, log):
        self.status_path = status_path
        self.trace = TraceFile(trace_path, trace_max_bytes)
        self.log = log
        self._last = None
        self._remove_stale_temps()

    def _remove_stale_temps(self):
        """Remove the temp files (``<status>.<pid>.tmp``) of agents killed mid-write: each
        SIGKILL at that instant left one in /run, and nothing else ever removes them."""
        for path in glob.glob(glob.escape(self.status_path) + ".*.tmp"):
            pid = path[len(self.status_path) + 1:-len(".tmp")]
            if not pid.isdigit() or int(pid) == os.getpid() or status_file.pid_alive(int(pid)):
                continue
            try:
                os.remove(path)
            except OSError:
                pass  # gone already, or not ours to remove: harmless either way

    def transition(self, record):
        entry = dict(record)
        entry["type"] = "transition"
        self._append(entry)

    def effect(self, record):
        entry = dict(record)
        entry["type"] = "effect"
        self._append(entry)

    def status(self, snapshot):
        """Rewrite the status file when something other than the retry countdowns changed."""
        key = dict(snapshot)
        key.pop("next_retry", None)
        if key == self._last:
            return
        try:
            status_file.write_atomic(self.status_path, snapshot)
            self._last = key
        except OSError as e:
            self.log.warning("cannot write status file %s: %s, retrying on the next change",
                             self.status_path, e)

    def _append(self, entry):
        try:
            self.trace.append(entry)
        except OSError as e:
            self.log.warning("cannot append to trace %s: %s, ignoring", self.trace.path, e)
