"""Writes TOML: strings, values and a whole agent.toml for a Config."""

from agent.config.model import _SECTIONS


# --- writing TOML (import-legacy, the lab) -------------------------------------------------------

def toml_string(text):
    """A TOML basic string for ``text`` (escapes quotes, backslashes and control characters)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7f:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"%s"' % "".join(out)


def toml_value(value):
    """TOML text of a str, bool, int, float, address or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(toml_value(v) for v in value)
    if value is None:
        return '""'
    return toml_string(str(value))


def render_config(config, comments=None):
    """agent.toml text that parse_config reads back to ``config``; ``comments``: section -> lines."""
    comments = comments or {}
    out = []
    for name, _, is_array, keys in _SECTIONS:
        value = getattr(config, {"binding": "bindings", "sr": "srs"}.get(name, name))
        for item in (value if is_array else [value]):
            out.append("")
            out.extend("# " + line for line in comments.get(name, ()))
            out.append(("[[%s]]" if is_array else "[%s]") % name)
            for key in keys:
                out.append("%s = %s" % (key, toml_value(getattr(item, key))))
    return "\n".join(out).lstrip("\n") + "\n"
