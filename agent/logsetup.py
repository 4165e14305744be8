"""Logging: plain lines on a terminal; sd-daemon priority prefixes under systemd/journald.

Every message goes through agent/text.py before it is written: a VM label with a newline or
an ESC cannot forge journal lines or recolour a terminal, a 20,000-character label is
shortened, a credential in an error text is redacted. A traceback (exc_info) is kept as is.
"""

import logging
import os
import sys

from agent import text

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
MESSAGE_LIMIT = 2000  # characters of one log message (each string field is also cut at text.LIMIT)


class SafeFormatter(logging.Formatter):
    """A Formatter whose message is one cleaned line (agent/text.py)."""

    def formatMessage(self, record):  # noqa: N802 -- logging's name
        record.message = text.clean(record.message, MESSAGE_LIMIT)
        return logging.Formatter.formatMessage(self, record)


class JournalFormatter(SafeFormatter):
    """Prefix each line with <N> so journald records its priority (sd-daemon(3))."""

    def format(self, record):
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("transitions").setLevel(logging.WARNING)
