"""Walks decoded TOML in schema order: types, unknown keys, paths, durations."""

import math
import re

import attr

from agent.config.readfile import unsafe_directory

from agent.config.locate import locate_key
from agent.config.messages import _closest, _kind_of, _show, dotted
from agent.config.model import (BOOL, BOUNDS, INT, INTS, MAX_LABEL, MAX_SECONDS, MAX_STRING, NUM,
                                STR, STRS, ConfigError)

_HOW = {
    STR: 'write it in double quotes, e.g. %s = "text"',
    NUM: "write a number without quotes, e.g. %s = 5.0",
    INT: "write a whole number without quotes, e.g. %s = 5",
    BOOL: "write true or false without quotes, e.g. %s = true",
    STRS: 'write a list of strings, e.g. %s = ["a", "b"]',
    INTS: "write a list of whole numbers without quotes, e.g. %s = [2049]",
}
_SURROGATE = re.compile("[\ud800-\udfff]")


# --- checking ------------------------------------------------------------------------------------

def _bound(value):
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return "%d" % value
    if isinstance(value, int) and abs(value) >= 10 ** 20:
        return "a %d-digit number" % len(str(abs(value)))
    return "%g" % value if isinstance(value, float) else str(value)


class _Checker(object):
    """Walks the decoded TOML once, in schema order; the first problem raises ConfigError."""

    def __init__(self, text, path):
        self.text, self.path = text, path

    def fail(self, where, problem, needle=None):
        """Raise the ConfigError for ``where`` with its line (``needle``: the value to find)."""
        raise ConfigError(problem, key=dotted(where), path=self.path,
                          line=locate_key(self.text, where, needle))

    def table(self, data, where, keys):
        """Unknown keys are refused, with the closest known key suggested."""
        for key in data:
            if key not in keys:
                near = _closest(key, keys)
                hint = ("did you mean %s?" % near) if near else (
                    "known keys here: %s" % ", ".join(sorted(keys)))
                self.fail(where + (key,), "unknown key; %s" % hint)

    def value(self, data, where, key, kind, default):
        """The value of ``key`` checked against ``kind`` (int accepted for a number)."""
        if key not in data:
            return default
        value, at = data[key], where + (key,)
        fix = _HOW[kind] % key
        if kind == STRS:
            if not isinstance(value, list):
                self.fail(at, "expected a list of strings, got %s; %s" % (_kind_of(value), fix))
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    self.fail(at + (i,), "expected a string, got %s; %s"
                              % (_kind_of(item), _HOW[STR] % key))
                self.no_nul(at + (i,), item)
                self.short(at + (i,), item, MAX_LABEL)
            return list(value)
        if kind == INTS:
            if not isinstance(value, list):
                self.fail(at, "expected a list of integers, got %s; %s" % (_kind_of(value), fix))
            for i, item in enumerate(value):
                if not isinstance(item, int) or isinstance(item, bool):
                    self.fail(at + (i,), "expected an integer, got %s; %s" % (_kind_of(item), fix))
            return list(value)
        ok = {STR: isinstance(value, str),
              BOOL: isinstance(value, bool),
              INT: isinstance(value, int) and not isinstance(value, bool),
              NUM: isinstance(value, (int, float)) and not isinstance(value, bool)}[kind]
        if not ok:
            self.fail(at, "expected %s %s, got %s; %s"
                      % ("an" if kind == INT else "a", kind, _kind_of(value), fix))
        if kind == STR:
            self.no_nul(at, value)
            self.short(at, value, MAX_STRING)
        if kind == NUM:
            try:
                value = float(value)
            except OverflowError:  # TOML and JSON integers are unbounded
                self.fail(at, "%s is out of range; use a number of seconds" % _kind_of(value))
            if math.isnan(value):
                self.fail(at, "nan is not a number of seconds; %s" % fix)
        return value

    def no_nul(self, at, text):
        """Refuse NUL characters and lone surrogates: neither survives a path or XML-RPC."""
        if "\x00" in text:
            self.fail(at, "contains a NUL character; remove it")
        if _SURROGATE.search(text):  # parse_config(str) or a JSON "\ud800": not encodable
            self.fail(at, "contains a lone surrogate (not a Unicode character); remove it")

    def short(self, at, text, limit):
        """Refuse strings longer than ``limit`` characters."""
        if len(text) > limit:
            self.fail(at, "is %d characters long; at most %d are allowed" % (len(text), limit))

    def seconds(self, at, value):
        """Refuse durations outside (0, MAX_SECONDS] and outside the key's BOUNDS."""
        if not 0 < value <= MAX_SECONDS:
            self.fail(at, "%r seconds is out of range; use a number above 0 and at most %d"
                      % (value, MAX_SECONDS))
        self.bounded(at, value, "seconds")

    def bounded(self, at, value, unit):
        """Refuse a value outside BOUNDS[at], naming the range."""
        low, high = BOUNDS[tuple(at)]
        if not low <= value <= high:
            self.fail(at, "%s %s is out of range; use a value from %s to %s (see "
                      "agent.toml.example)" % (_bound(value), unit, _bound(low), _bound(high)))

    def capped(self, at, items, limit, what):
        """Refuse more than ``limit`` entries."""
        if len(items) > limit:
            self.fail(at, "has %d %s; at most %d are allowed" % (len(items), what, limit))

    def private_path(self, at, value):
        """Refuse a [files] path whose directory (or nearest existing parent) another user
        owns or may write to: a planted link there would steer the root daemon's writes."""
        problem = unsafe_directory(value)
        if problem:
            self.fail(at, "%s; use a directory only root can write, e.g. /run/sspn-agent"
                      % problem)

    def absolute(self, at, value, example):
        """Refuse empty and relative paths: the service's working directory is not ours."""
        if not value.strip():
            self.fail(at, "is empty; give a path, e.g. %s" % example)
        if not value.startswith("/"):
            self.fail(at, "%s is not an absolute path; write it from /, e.g. %s"
                      % (_show(value), example))

    def section(self, top, name, cls, keys):
        """One table's values merged over the class defaults."""
        data = top.get(name, {})
        if not isinstance(data, dict):
            self.fail((name,), "expected a table [%s], got %s; write the keys under a [%s] line"
                      % (name, _kind_of(data), name))
        return self.entries(data, (name,), cls, keys)

    def entries(self, data, where, cls, keys):
        """The checked values of one table, by field of ``cls`` (absent: the default)."""
        self.table(data, where, keys)
        out = {}
        for field in attr.fields(cls):
            default = field.default
            if isinstance(default, attr.Factory) or default is attr.NOTHING:
                default = None
            out[field.name] = self.value(data, where, field.name, keys[field.name], default)
        return out

    def array(self, top, name, cls, keys):
        """Each [[name]] table, checked like a section."""
        items = top.get(name, [])
        if isinstance(items, dict):
            self.fail((name,), "written as [%s]; write [[%s]] (two brackets: one per entry)"
                      % (name, name))
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            self.fail((name,), "expected [[%s]] tables, got %s; write each entry under a "
                      "[[%s]] line" % (name, _kind_of(items), name))
        return [self.entries(item, (name, i), cls, keys) for i, item in enumerate(items)]
