"""Finds the line of a key in TOML text, and turns TOML syntax errors into ConfigError."""

import json
import re

from agent.config.model import ConfigError

# --- locating a key's line in the text (best effort) --------------------------------------------

_KEYPART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = r"%s(?:\s*\.\s*%s)*" % (_KEYPART, _KEYPART)
_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*(%s)\s*\]\]" % _DOTTED)
_TABLE_HEADER = re.compile(r"^\s*\[\s*(%s)\s*\]" % _DOTTED)
_KEY_LINE = re.compile(r"^\s*(%s)\s*=" % _DOTTED)


def _unquote(part):
    if part[:1] == '"':
        try:
            return json.loads(part)  # TOML basic-string escapes are JSON's, bar \UXXXXXXXX
        except ValueError:
            return part[1:-1]
    return part[1:-1] if part[:1] == "'" else part


def _split_key(text):
    return tuple(_unquote(p) for p in re.findall(_KEYPART, text))


def scan_keys(text):
    """Yield (line number, key path, is header) for every table header and key line."""
    table, counts, in_multiline = (), {}, None
    for number, line in enumerate(text.split("\n"), 1):  # tomli counts "\n" only
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        match = _ARRAY_HEADER.match(line)
        if match:
            name = _split_key(match.group(1))
            counts[name] = counts.get(name, -1) + 1
            table = name + (counts[name],)
            yield number, table, True
            continue
        match = _TABLE_HEADER.match(line)
        if match:
            table = _split_key(match.group(1))
            yield number, table, True
            continue
        match = _KEY_LINE.match(line)
        if match:
            yield number, table + _split_key(match.group(1)), False
            rest = line[match.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote


def locate_key(text, path, needle=None):
    """1-based line of the key at ``path`` (or of its nearest enclosing table), or None."""
    try:
        path = tuple(path)
        best, best_len = None, 0
        for number, found, _ in scan_keys(text):
            if len(found) > best_len and path[:len(found)] == found:
                best, best_len = number, len(found)
        if best is not None and needle and best_len < len(path):
            lines = text.split("\n")
            for offset, line in enumerate(lines[best - 1:best + 200]):
                if offset and (_ARRAY_HEADER.match(line) or _TABLE_HEADER.match(line)):
                    break
                if '"%s"' % needle in line or "'%s'" % needle in line:
                    return best + offset
        return best
    except Exception:  # a best-effort hint must never hide the real error
        return None


def _duplicate_key_line(text):
    seen = set()  # key lines only: a header is the normal prefix of its keys
    for number, found, is_header in scan_keys(text):
        if any(found[:n] in seen for n in range(1, len(found) + 1)) or (
                not is_header and any(k[:len(found)] == found for k in seen)):
            return number
        if not is_header:
            seen.add(found)
    return None


_SYNTAX_HINTS = (
    ("overwrite", "this key is set twice; keep one"),
    ("twice", "this table is declared twice; merge them ([[binding]] and [[sr]] may repeat)"),
    ("Unterminated string", "close the string with the same quote it opened with"),
    ("Unclosed array", "close the list with ]"),
    ("Unclosed inline table", "close the inline table with } on the same line"),
    ("date", 'dates are not used here; quote text values, e.g. key = "text"'),
    ("Invalid value", 'a value is missing or malformed; text needs double quotes, '
                      'e.g. key = "text"'),
    ("Invalid statement", "each line is key = value, [table], [[binding]] or a # comment"),
    ("Expected newline", 'put one key = value per line, and text (addresses too) in double '
                         'quotes, e.g. key = "192.0.2.1"'),
    ("invalid character", "remove the control character (use \\t, \\n escapes in strings)"),
)


def toml_syntax_error(exc, text, path):
    """ConfigError for a TOMLDecodeError: its line (tomli: "(at line N, column M)") and a fix."""
    message = str(exc.args[0] if exc.args else exc)
    line = None
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
    if match:
        line = int(match.group(1))
        message = "%s (column %s)" % (message[:match.start()], match.group(2))
    elif message.endswith("(at end of document)"):
        message = message[:-len("(at end of document)")].rstrip()
        line = _duplicate_key_line(text) if "overwrite" in message else None
        if line is None:
            line = len(text.rstrip("\n").split("\n"))
            message += " (at the end of the file)"
    hint = next((h for word, h in _SYNTAX_HINTS if word in message),
                "fix the TOML syntax (compare with agent.toml.example)")
    return ConfigError("TOML syntax: %s; %s" % (message, hint), line=line, path=path)
