"""How values, keys and OS errors are shown in one-line config messages."""

import difflib
import json
import re

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dotted(path):
    """("binding", 1, "addresses", 0) -> "binding[1].addresses[0]"."""
    out = ""
    for part in path:
        if not isinstance(part, int) and not _BARE_KEY.match(part):
            part = json.dumps(part, ensure_ascii=True)  # keeps odd keys on one printable line
        out += "[%d]" % part if isinstance(part, int) else ("." if out else "") + part
    return out


def _show(value):
    """A value as the user wrote it, on one line and short."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind_of(value):
    if isinstance(value, bool):
        return "a boolean (%s)" % ("true" if value else "false")
    if isinstance(value, str):
        return "a string (%s)" % _show(value)
    if isinstance(value, int):
        return "an integer (%d)" % value if abs(value) < 10 ** 20 else "an integer"
    if isinstance(value, float):
        return "a number (%r)" % value
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return "a date/time (%s)" % value


def _reason(exc):
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _closest(word, choices):
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return match[0] if match else None
