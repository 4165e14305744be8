"""Strings from outside (XAPI labels, error parameters, device_config, files) made safe to show.

One place for the two rules of docs/hostile.md: a string is data, so control and format
characters (newline, ESC, NUL, bidi overrides, zero-width joiners, line and paragraph
separators) are escaped as ``\\xNN`` / ``\\uNNNN`` and long strings are shortened; and a
credential never leaves the process, so the value of any key that names one (password,
secret, CHAP, key material, token) is replaced by ``REDACTED``. The sinks apply them: the
trace writer and reader, the status writer and renderer, the log formatter and what is
published to XAPI. Python 3.6 compatible; imports nothing heavy (`agent status` uses it).
"""

import re
import unicodedata

LIMIT = 300           # characters of one string in a log line, status or trace field
REDACTED = "REDACTED"

# Key names that carry a credential (case-insensitive, anywhere in the name): device_config
# keys of the sm drivers (password, chappassword, incoming_chappassword, cifspassword,
# password_secret, ...), plus the usual names of key material.
_SECRET_KEY = re.compile(r"pass|secret|chap|token|credential|private|psk|"
                         r"(^|[_.-])key($|[_.-])|keyfile|passphrase|auth", re.IGNORECASE)
_SECRET_HINT = re.compile(r"pass|secret|chap|token|credential|private|psk|key|auth", re.IGNORECASE)
# A secret written as key=value or 'key': 'value' inside a string (a repr, an error text).
_SECRET_IN_TEXT = re.compile(
    r"""(?P<key>(?P<q1>['"]?)(?P<name>[A-Za-z0-9_.-]+)(?P=q1))(?P<sep>\s*[:=]\s*)"""
    r"""(?P<value>'[^']*'|"[^"]*"|[^\s,;{}\[\]()'"]*)""")


def is_secret_key(key):
    """True when a map key names a credential (``chappassword``, ``password_secret``, ...)."""
    return isinstance(key, str) and bool(_SECRET_KEY.search(key))


def _escape_char(ch):
    code = ord(ch)
    if code < 0x100:
        return "\\x%02x" % code
    return "\\u%04x" % code if code < 0x10000 else "\\U%08x" % code


def _unsafe(ch):
    if ch == "\\":
        return False
    category = unicodedata.category(ch)
    # Cc: C0/C1 controls (newline, ESC); Cf: format (bidi overrides, zero-width); Zl/Zp:
    # line and paragraph separators; Cs: lone surrogates (not encodable); Co/Cn: unassigned.
    return category in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def scrub(text):
    """``text`` with the value of every credential-named ``key=value`` / ``'key': 'value'``
    replaced (the key names of is_secret_key)."""
    if not _SECRET_HINT.search(text):
        return text
    return _SECRET_IN_TEXT.sub(lambda m: "%s%s%s" % (m.group("key"), m.group("sep"), _quoted(
        m.group("value"))) if is_secret_key(m.group("name")) else m.group(0), text)


def _quoted(value):
    quote = value[:1] if value[:1] in ("'", '"') else ""
    return quote + REDACTED + quote


def clean(value, limit=LIMIT):
    """One safe printable line: control/format characters escaped, secrets redacted, at most
    ``limit`` characters (the rest counted: ``...(+N chars)``)."""
    if not isinstance(value, str):
        value = str(value)
    cut = 0
    if limit and len(value) > limit * 4:  # escaping can only grow it: do not escape megabytes
        cut, value = len(value) - limit * 4, value[:limit * 4]
    # str.isprintable (C) is False for every character _unsafe names (and for spaces other
    # than " "): the common, clean string costs one call; only the others are walked
    if not value.isprintable() and any(_unsafe(ch) for ch in value):
        value = "".join(_escape_char(ch) if _unsafe(ch) else ch for ch in value)
    value = scrub(value)
    if limit and len(value) > limit:
        cut += len(value) - (limit - 20)
        value = value[:limit - 20]
    return value + ("...(+%d chars)" % cut if cut else "")


def redact(mapping):
    """A copy of a map with every credential-named key's value replaced (for describe())."""
    if not isinstance(mapping, dict):
        return mapping
    return dict((k, REDACTED if is_secret_key(k) else v) for k, v in mapping.items())


def clean_tree(value, limit=LIMIT, depth=0):
    """A JSON-ready value with every string cleaned and every credential-named key redacted
    (the trace and status writers; the readers run it over whatever a file holds)."""
    if depth > 20:
        return "..."
    if type(value) is str:  # the hot path: most strings are short, printable, secret-free
        if len(value) <= limit and value.isprintable() and not _SECRET_HINT.search(value):
            return value
        return clean(value, limit)
    if isinstance(value, dict):
        return dict((clean(str(k), 80), REDACTED if is_secret_key(k) else
                     clean_tree(v, limit, depth + 1)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [clean_tree(v, limit, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clean(repr(value), limit)
