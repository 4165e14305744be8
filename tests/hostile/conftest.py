"""Helpers of the hostile suite (docs/hostile.md): run `agent` as a subprocess, bounded."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOUND = 30.0  # bounds a hang only; no test asserts a duration


def run_agent(*args, **kw):
    """(exit status, stdout, stderr) of `python -m agent ARGS` from the checkout; a hang
    past BOUND fails the test instead of blocking it."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("JOURNAL_STREAM", None)
    try:
        done = subprocess.run([sys.executable, "-m", "agent"] + list(args), cwd=kw.get("cwd", ROOT),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              timeout=kw.get("timeout", BOUND))
    except subprocess.TimeoutExpired:
        pytest.fail("`agent %s` did not finish (it blocked)" % " ".join(args))
    return (done.returncode, done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"))


def one_clean_line(text):
    """True when ``text`` is one line with no traceback."""
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) == 1 and "Traceback" not in text


def read(path, binary=False):
    """The content of ``path`` (closed at once)."""
    with open(path, "rb" if binary else "r") as f:
        return f.read()
