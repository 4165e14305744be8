"""Logging: plain lines on a terminal; sd-daemon priority prefixes under systemd/journald.

Every message goes through agent/report/text.py before it is written: a VM label with a newline or
an ESC cannot forge journal lines or recolour a terminal, a 20,000-character label is
shortened, a credential in an error text is redacted. A traceback (exc_info) is kept as is.
"""

import logging
import os
import sys
import threading
import time

from agent.report import text

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
MESSAGE_LIMIT = 2000  # characters of one log message (each string field is also cut at text.LIMIT)
BURST, RATE = 200, 20.0  # journal lines: a burst of 200, then 20 per second (docs/hostile.md)


class RateLimit(logging.Filter):
    """A token bucket over every line: whatever the config or the world does, the agent writes
    at most BURST lines at once and RATE per second after that; what was dropped is counted
    and said in the next line that passes."""

    def __init__(self, burst=BURST, rate=RATE, clock=time.monotonic):
        logging.Filter.__init__(self)
        self.burst, self.rate, self.clock = float(burst), float(rate), clock
        self.tokens, self.stamp, self.dropped = float(burst), clock(), 0
        self.lock = threading.Lock()

    def filter(self, record):
        """True while the bucket has a token; a passing line first names what was dropped."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens < 1.0:
                self.dropped += 1
                return False
            self.tokens -= 1.0
            dropped, self.dropped = self.dropped, 0
        if dropped:
            record.msg = "(%d log lines dropped: more than %d per second) %s" % (
                dropped, self.rate, record.msg)
        return True


class SafeFormatter(logging.Formatter):
    """A Formatter whose message is one cleaned line (agent/report/text.py)."""

    def formatMessage(self, record):  # noqa: N802 -- logging's name
        """The message cleaned by agent/report/text.py, then formatted as usual."""
        record.message = text.clean(record.message, MESSAGE_LIMIT)
        return logging.Formatter.formatMessage(self, record)


class JournalFormatter(SafeFormatter):
    """Prefix each line with <N> so journald records its priority (sd-daemon(3))."""

    def format(self, record):
        """Each line of the record (a traceback has several) with its priority prefix."""
        text_ = SafeFormatter.format(self, record)
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join("<%d>%s" % (prio, line) for line in text_.splitlines())


def under_journal():
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def setup(verbose=False, stream=None):
    """Configure the root logger once for the agent process."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if under_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("transitions").setLevel(logging.WARNING)
