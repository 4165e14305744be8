"""Waiting for a condition with a deadline: the only sanctioned way for a test to wait."""

import time


def wait_until(predicate, timeout=5.0, interval=0.005, message=""):
    """Call ``predicate`` until it returns a truthy value, which is returned; AssertionError on timeout.

    Tests never sleep for synchronisation nor assert durations: the deadline only bounds a
    failure. The message says what was awaited; the predicate's last exception, if any, is
    added to it.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # e.g. a read racing a change: try again until the deadline
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message or "condition not met"
            if last_error is not None:
                text = "%s (last error: %r)" % (text, last_error)
            raise AssertionError("%s within %.1f s" % (text, timeout))
        time.sleep(interval)
