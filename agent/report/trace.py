"""The transition journal: JSON lines, size-bounded (one rotated .1 file), read by `agent trace`.

Written by the root daemon through agent/report/safefile.py (never through a link, mode 0640
whatever the umask) with every string cleaned (agent/report/text.py: control and format characters
escaped, long strings shortened, credentials redacted). Read back by `agent trace`, which
survives any content: a non-JSON line, a JSON value that is not a record, a huge file
(``-n`` reads from the end, a bounded amount).
"""

import json
import os
import time

from agent.report import safefile, text

DEFAULT_PATH = "/var/log/sspn-agent/trace.jsonl"
MODE = 0o640
DIR_MODE = 0o750
READ_LIMIT = 8 << 20       # `agent trace` without -n reads at most this much of each file
TAIL_BYTES = 4096          # per asked record, when reading from the end (`-n`)


class TraceFile(object):
    """Appends one JSON object per line; rotates to ``path + ".1"`` past ``max_bytes``."""

    def __init__(self, path, max_bytes=1048576):
        self.path = path
        self.max_bytes = int(max_bytes)
        safefile.ensure_dir(os.path.dirname(path), DIR_MODE)
        self._end_torn_line()

    def _end_torn_line(self):
        """An agent killed mid-write left a line without its newline: end it, so that the
        first record of this run is not glued to it (read() skips the torn line alone)."""
        try:
            fd = safefile.open_append(self.path, MODE, create=False)
        except OSError:
            return  # no file yet, or not one we may write (a link, say): append() says so in the journal
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                safefile.write_all(fd, b"\n")
        except OSError:
            pass
        finally:
            os.close(fd)

    def append(self, record):
        """Write one record (a dict, cleaned) as a line; rotate first when the file is full."""
        line = json.dumps(text.clean_tree(record), sort_keys=True) + "\n"
        try:
            if os.lstat(self.path).st_size + len(line) > self.max_bytes:
                os.rename(self.path, self.path + ".1")  # rename never follows a link
        except OSError:
            pass
        # os.open/os.write: no buffered file object per record (this runs between repairs)
        fd = safefile.open_append(self.path, MODE)
        try:
            safefile.write_all(fd, line.encode("utf-8"))
        finally:
            os.close(fd)


def _records(data):
    out = []
    for line in data.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            continue  # a torn last line after a crash, or not ours: skip it
        if isinstance(record, dict):
            out.append(record)
    return out


def _read_file(path, last):
    """(records of one file, whether its start was read): all of it (bounded), or for
    ``last`` from its end, reading more (doubling) until there are enough."""
    if not last:
        data, cut = safefile.read_bounded(path, READ_LIMIT)
        return _records(data), True
    want = TAIL_BYTES * last
    while True:
        want = min(want, READ_LIMIT)
        data, size = safefile.read_tail(path, want)
        whole = size <= len(data)
        if not whole:
            data = data[data.find(b"\n") + 1:]  # the first line is cut in the middle
        found = _records(data)
        if whole or len(found) >= last or want >= READ_LIMIT:
            return found, whole
        want *= 2


def read(path=DEFAULT_PATH, last=None):
    """Records (dicts) from the rotated file then the current one; the last ``last`` if given.
    Lines that are not JSON objects are skipped."""
    records = []
    for p in (path, path + ".1"):  # newest first, so that -n stops early
        try:
            found, whole = _read_file(p, last)
        except OSError:
            continue
        records = found + records
        if last and (len(records) >= last or not whole):
            break  # enough, or a gap would open between the two files
    return records[-last:] if last else records


def _s(value, limit=text.LIMIT):
    return text.clean(value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                      if isinstance(value, (dict, list)) else str(value), limit)


def render(record):
    """One human line per record (any dict: odd fields are shown escaped, never raise)."""
    try:
        when = float(record.get("time", 0))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    except (TypeError, ValueError, OverflowError, OSError):
        stamp = "????-??-?? ??:??:??"
    if record.get("type") == "effect":
        return "%s   [%s] %s: %s" % (stamp, _s(record.get("state", "?")), _s(record.get("what")),
                                     _s(record.get("result")))
    effects = record.get("effects")
    effects = effects if isinstance(effects, list) else []
    effects = "; ".join("%s: %s" % (_s(e.get("what")), _s(e.get("result"))) if isinstance(e, dict)
                        else _s(e) for e in effects[:50])
    return "%s %s -> %s on %s (cause: %s)%s" % (stamp, _s(record.get("from")), _s(record.get("to")),
                                                _s(record.get("trigger")), _s(record.get("cause")),
                                                " | " + effects if effects else "")
