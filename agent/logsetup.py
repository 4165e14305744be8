"""Logging: plain lines on a terminal; sd-daemon priority prefixes under systemd/journald."""

import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """Prefix each line with <N> so journald records its priority (sd-daemon(3))."""

    def format(self, record):
        text = logging.Formatter.format(self, record)
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join("<%d>%s" % (prio, line) for line in text.splitlines())


def under_journal():
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def setup(verbose=False, stream=None):
    """Configure the root logger once for the agent process."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if under_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("transitions").setLevel(logging.WARNING)
