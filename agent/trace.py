"""The transition journal: JSON lines, size-bounded (one rotated .1 file), read by `agent trace`."""

import json
import os
import time

DEFAULT_PATH = "/var/log/sspn-agent/trace.jsonl"


class TraceFile(object):
    """Appends one JSON object per line; rotates to ``path + ".1"`` past ``max_bytes``."""

    def __init__(self, path, max_bytes=1048576):
        self.path = path
        self.max_bytes = int(max_bytes)
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, 0o750)
        self._end_torn_line()

    def _end_torn_line(self):
        """An agent killed mid-write left a line without its newline: end it, so that the
        first record of this run is not glued to it (read() skips the torn line alone)."""
        try:
            with open(self.path, "rb+") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        except OSError:
            pass  # no file yet

    def append(self, record):
        """Write one record (a dict) as a line; rotate first when the file is full."""
        line = json.dumps(record, sort_keys=True) + "\n"
        try:
            if os.path.getsize(self.path) + len(line) > self.max_bytes:
                os.rename(self.path, self.path + ".1")
        except OSError:
            pass
        # os.open/os.write: no buffered file object per record (this runs between repairs)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            data = line.encode("utf-8")
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)


def read(path=DEFAULT_PATH, last=None):
    """Records from the rotated file then the current one; the last ``last`` if given."""
    records = []
    for p in (path + ".1", path):
        try:
            with open(p) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        try:
                            records.append(json.loads(line))
                        except ValueError:
                            continue  # a torn last line after a crash: skip it
        except OSError:
            continue
    return records[-last:] if last else records


def render(record):
    """One human line per record."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("time", 0)))
    if record.get("type") == "effect":
        return "%s   [%s] %s: %s" % (stamp, record.get("state", "?"), record.get("what"), record.get("result"))
    effects = "; ".join("%s: %s" % (e["what"], e["result"]) for e in record.get("effects", []))
    return "%s %s -> %s on %s (cause: %s)%s" % (stamp, record.get("from"), record.get("to"),
                                                record.get("trigger"), record.get("cause"),
                                                " | " + effects if effects else "")
