"""Reads agent.toml into frozen config values; a bad file gets one ConfigError naming key and line.

The schema is agent.toml.example: every key there, with the defaults below.
``parse_config`` / ``load_config`` never raise anything but ConfigError, whatever the input
(fuzzed in tests/test_config.py); the CLI prints ``str(error)`` and exits with EX_CONFIG.
Runs on Python 3.6 (attrs 22.2, tomli 1.2.3).
"""

import difflib
import ipaddress
import json
import math
import os
import re
import stat
from urllib.parse import urlsplit

import attr

from agent.configfile import MAX_CONFIG_BYTES, read_config_bytes, unsafe_directory  # noqa: F401

try:
    import tomllib
except ImportError:  # Python < 3.11 (dom0: 3.6 with tomli 1.2.3)
    import tomli as tomllib

EX_CONFIG = 78  # sysexits.h EX_CONFIG
ENABLE_HOST_CHOICES = ("when-locked-out", "always", "never")
PROBE_MODES = ("tcp", "icmp")
MAX_SECONDS = 86400.0  # longer waits are typos, and huge ones overflow threading timeouts
MIN_TRACE_BYTES = 4096
MAX_TRACE_BYTES = 1 << 30
# [min, max] of every duration (seconds) and count: below the minimum the agent would spin or
# flood the journal, above the maximum it would never retry (docs/hostile.md, the example).
BOUNDS = {
    ("xapi", "call_timeout"): (0.1, 3600.0),
    ("timing", "event_timeout"): (0.5, 3600.0),
    ("timing", "probe_interval"): (0.5, 3600.0),
    ("timing", "probe_timeout"): (0.05, 60.0),
    ("timing", "backoff_base"): (0.05, 3600.0),
    ("timing", "backoff_cap"): (0.2, MAX_SECONDS),
    ("timing", "retry_budget"): (1, 1000000),  # a test rig may want "never DEGRADED"
    ("files", "trace_max_bytes"): (MIN_TRACE_BYTES, MAX_TRACE_BYTES),
}
# Caps of the lists and strings; duplicates are refused everywhere.
MAX_BINDINGS, MAX_VMS, MAX_ADDRESSES, MAX_SRS, MAX_PROBES = 8, 8, 16, 32, 8
MAX_STRING = 4096           # paths and urls (PATH_MAX)
MAX_LABEL = 255             # a name_label the agent looks up


class ConfigError(Exception):
    """A config problem: ``message`` says what is wrong and how to fix it; ``key`` is dotted."""

    def __init__(self, message, key=None, line=None, path=None):
        message = " ".join(str(message).splitlines())
        Exception.__init__(self, message)
        self.message = message
        self.key = key
        self.line = line
        self.path = path

    def __str__(self):
        parts = [self.path] if self.path else []
        if self.line is not None:
            parts.append("line %d" % self.line)
        if self.key:
            parts.append(self.key)
        parts.append(self.message)
        return ": ".join(parts)


# --- the values ---------------------------------------------------------------------------------

def _tuple_of(convert):
    def _convert(values):
        return tuple(v if not isinstance(v, str) else convert(v) for v in values)
    return _convert


def _optional_ip(value):
    if value is None or value == "":
        return None
    return ipaddress.ip_address(value) if isinstance(value, str) else value


@attr.s(frozen=True, slots=True)
class XapiConfig(object):
    """How to reach XAPI: the local Unix socket (url empty, no credentials) or a remote url."""

    url = attr.ib(default="")
    socket = attr.ib(default="/var/lib/xcp/xapi")
    username = attr.ib(default="root")
    password_file = attr.ib(default="")
    call_timeout = attr.ib(default=10.0)
    # xapi keeps "disabled with auto_enable=false" in its Localdb, not in the API (docs/xapi-behaviour.md §5)
    local_db = attr.ib(default="/var/lib/xcp/local.db")

    @property
    def is_local(self):
        """True when the agent talks to the pre-authenticated local socket (docs/xapi-behaviour.md §2)."""
        return not self.url

    def read_password(self):
        """The password from ``password_file`` (one line); never logged, never stored on self."""
        try:
            raw = read_config_bytes(self.password_file, 4096)  # a FIFO cannot hang the read
            secret = raw.decode("utf-8").rstrip("\r\n")
        except ConfigError as exc:
            raise ConfigError("cannot read the password file %s (%s); create it holding the "
                              "password (a regular file, at most 4096 bytes) and run chmod 600 %s"
                              % (self.password_file, exc.message, self.password_file),
                              key="xapi.password_file") from None
        except (OSError, ValueError) as exc:
            raise ConfigError("cannot read the password file %s (%s); create it holding the "
                              "password and run chmod 600 %s"
                              % (self.password_file, _reason(exc), self.password_file),
                              key="xapi.password_file") from None
        if not secret:
            raise ConfigError("the password file %s is empty; write the password into it"
                              % self.password_file, key="xapi.password_file")
        return secret


@attr.s(frozen=True, slots=True)
class Binding(object):
    """An internal network shared with uplink VMs, and the addresses dom0 takes on its bridge."""

    network = attr.ib()
    vms = attr.ib(converter=lambda vms: (vms,) if isinstance(vms, str) else tuple(vms))
    addresses = attr.ib(converter=_tuple_of(ipaddress.ip_interface))
    # this network's own default gateways (None: none); [route] gateway4/6 still work
    gateway4 = attr.ib(default=None, converter=_optional_ip)
    gateway6 = attr.ib(default=None, converter=_optional_ip)


@attr.s(frozen=True, slots=True)
class RouteConfig(object):
    """Default gateways (None: leave that family's default route alone); probe them or not."""

    gateway4 = attr.ib(default=None, converter=_optional_ip)
    gateway6 = attr.ib(default=None, converter=_optional_ip)
    probe = attr.ib(default=True)
    # network labels, most preferred first, for a default route two bindings can carry
    # (unlisted bindings follow in file order)
    prefer = attr.ib(default=(), converter=tuple)


@attr.s(frozen=True, slots=True)
class ManagementConfig(object):
    """Management bridge ("" = MANAGEMENT_INTERFACE of the inventory) and the /32 /128 mirror."""

    bridge = attr.ib(default="")
    inventory = attr.ib(default="/etc/xensource-inventory")
    mirror = attr.ib(default=True)


@attr.s(frozen=True, slots=True)
class SrConfig(object):
    """A network SR to re-plug; ``probe`` empty means the PBD's device_config server; in
    ``probe_mode`` "tcp" the service ports are probed (``probe_ports``, else agent/sm_targets.py),
    in "icmp" the hosts are pinged."""

    uuid = attr.ib(converter=lambda u: u.lower())
    probe = attr.ib(default=(), converter=_tuple_of(ipaddress.ip_address))
    probe_mode = attr.ib(default="tcp")
    probe_ports = attr.ib(default=(), converter=tuple)


@attr.s(frozen=True, slots=True)
class MaintenanceConfig(object):
    """Policy for a host that booted disabled, and for auto-power-on VMs."""

    enable_host = attr.ib(default="when-locked-out")
    autostart = attr.ib(default=True)
    require_pool_auto_poweron = attr.ib(default=True)


@attr.s(frozen=True, slots=True)
class TimingConfig(object):
    """Seconds for event.from, probes and backoff; failed attempts before DEGRADED."""

    event_timeout = attr.ib(default=30.0)
    probe_interval = attr.ib(default=5.0)
    probe_timeout = attr.ib(default=1.0)
    backoff_base = attr.ib(default=1.0)
    backoff_cap = attr.ib(default=60.0)
    retry_budget = attr.ib(default=5)


@attr.s(frozen=True, slots=True)
class FilesConfig(object):
    """Where the status file and the transition trace live."""

    status = attr.ib(default="/run/sspn-agent/status.json")
    trace = attr.ib(default="/var/log/sspn-agent/trace.jsonl")
    trace_max_bytes = attr.ib(default=1048576)
    metrics = attr.ib(default="")  # Prometheus text file (agent/metrics.py); empty: off


@attr.s(frozen=True, slots=True)
class Config(object):
    """The whole validated agent.toml; ``path`` is the file it came from."""

    xapi = attr.ib(factory=XapiConfig)
    bindings = attr.ib(default=(), converter=tuple)
    route = attr.ib(factory=RouteConfig)
    management = attr.ib(factory=ManagementConfig)
    srs = attr.ib(default=(), converter=tuple)
    maintenance = attr.ib(factory=MaintenanceConfig)
    timing = attr.ib(factory=TimingConfig)
    files = attr.ib(factory=FilesConfig)
    path = attr.ib(default="<default>")

    def addresses(self):
        """[(binding index, interface)] for every binding address, in file order."""
        return [(i, iface) for i, b in enumerate(self.bindings) for iface in b.addresses]

    def mirror_addresses(self):
        """The /32 and /128 copies of every binding address (installed when management.mirror)."""
        return [ipaddress.ip_interface("%s/%d" % (iface.ip, iface.max_prefixlen))
                for _, iface in self.addresses()]

    def gateways(self):
        """[(4 or 6, address)] for the configured default gateways ([route] and per binding)."""
        out = [(gw.version, gw) for gw in (self.route.gateway4, self.route.gateway6)
               if gw is not None]
        for b in self.bindings:
            out.extend((gw.version, gw) for gw in (b.gateway4, b.gateway6)
                       if gw is not None and (gw.version, gw) not in out)
        return out

    def binding_for_gateway(self, gateway):
        """Index of the binding whose subnet holds ``gateway`` (link-local v6: first v6 binding)."""
        gateway = ipaddress.ip_address(str(gateway))
        link_local = gateway.version == 6 and gateway.is_link_local
        for index, iface in self.addresses():
            if iface.version != gateway.version:
                continue
            if link_local or gateway in iface.network:
                return index
        return None

    def route_candidates(self, family):
        """[(binding index, gateway)] that can carry the default route of ``family`` (4 or 6),
        most preferred first: [route] prefer, then file order. [route] gatewayN belongs to the
        binding whose subnet holds it, unless that binding names its own."""
        own = {}
        for index, binding in enumerate(self.bindings):
            gateway = binding.gateway4 if family == 4 else binding.gateway6
            if gateway is not None:
                own[index] = gateway
        shared = self.route.gateway4 if family == 4 else self.route.gateway6
        if shared is not None:
            index = self.binding_for_gateway(shared)
            if index is not None and index not in own:
                own[index] = shared
        rank = dict((label, n) for n, label in enumerate(self.route.prefer))
        order = sorted(own, key=lambda i: (rank.get(self.bindings[i].network, len(rank)), i))
        return [(i, own[i]) for i in order]


# --- schema: the keys of agent.toml.example -----------------------------------------------------

STR, NUM, INT, BOOL, STRS = "string", "number", "integer", "boolean", "list of strings"
INTS = "list of integers"

_SECTIONS = (  # (name, class, is array of tables, {key: kind}) in the order they are checked
    ("xapi", XapiConfig, False, {"url": STR, "socket": STR, "username": STR,
                                 "password_file": STR, "call_timeout": NUM, "local_db": STR}),
    ("binding", Binding, True, {"network": STR, "vms": STRS, "addresses": STRS,
                                "gateway4": STR, "gateway6": STR}),
    ("route", RouteConfig, False, {"gateway4": STR, "gateway6": STR, "probe": BOOL,
                                   "prefer": STRS}),
    ("management", ManagementConfig, False, {"bridge": STR, "inventory": STR, "mirror": BOOL}),
    ("sr", SrConfig, True, {"uuid": STR, "probe": STRS, "probe_mode": STR, "probe_ports": INTS}),
    ("maintenance", MaintenanceConfig, False, {"enable_host": STR, "autostart": BOOL,
                                               "require_pool_auto_poweron": BOOL}),
    ("timing", TimingConfig, False, {"event_timeout": NUM, "probe_interval": NUM,
                                     "probe_timeout": NUM, "backoff_base": NUM,
                                     "backoff_cap": NUM, "retry_budget": INT}),
    ("files", FilesConfig, False, {"status": STR, "trace": STR, "trace_max_bytes": INT,
                                   "metrics": STR}),
)
SCHEMA = dict((name, keys) for name, _, _, keys in _SECTIONS)
ARRAY_SECTIONS = ("binding", "sr")

_HOW = {
    STR: 'write it in double quotes, e.g. %s = "text"',
    NUM: "write a number without quotes, e.g. %s = 5.0",
    INT: "write a whole number without quotes, e.g. %s = 5",
    BOOL: "write true or false without quotes, e.g. %s = true",
    STRS: 'write a list of strings, e.g. %s = ["a", "b"]',
    INTS: "write a list of whole numbers without quotes, e.g. %s = [2049]",
}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_SURROGATE = re.compile("[\ud800-\udfff]")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # Linux IFNAMSIZ is 16 with the NUL


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


def parse_ip(text, what="address"):
    """ipaddress.ip_address / ip_interface of ``text`` with the same verdict on 3.6 and 3.11."""
    if "%" in text:  # scope ids parse on 3.9+ only; the agent names the bridge itself
        raise ValueError("has a scope id (%); leave it out, the agent routes via the bridge")
    head = text.split("/", 1)[0]
    if ":" not in head and any(len(p) > 1 and p.startswith("0") for p in head.split(".")):
        # 3.6 accepts some leading zeros, 3.9.5+ none (CVE-2021-29921): refuse them everywhere
        raise ValueError("has a leading zero in an octet")
    parse = ipaddress.ip_interface if what == "interface" else ipaddress.ip_address
    try:
        return parse(text)
    except ValueError:
        raise ValueError("is not an IP %s" % ("address with a prefix" if what == "interface"
                                              else "address")) from None


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


def _check_xapi(ck, raw):
    at = ("xapi",)
    if raw["url"]:
        try:
            parts = urlsplit(raw["url"])
            good = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            good = False
        if not good:
            ck.fail(at + ("url",), "%s is not an http:// or https:// URL; write e.g. "
                    'url = "https://192.0.2.10/", or leave it empty for the local socket'
                    % _show(raw["url"]))
        if not raw["username"]:
            ck.fail(at + ("username",), 'is empty but a remote url needs a login; set '
                    'username = "root"')
        if not raw["password_file"]:
            ck.fail(at + ("password_file",), "is empty but url is set and a remote XAPI needs a "
                    'password; set password_file = "/etc/sspn-agent/xapi.password" (chmod 600 '
                    'it), or set url = "" to use the local socket')
        _check_password_file(ck, raw["password_file"])
    else:
        ck.absolute(at + ("socket",), raw["socket"], "/var/lib/xcp/xapi")
        if raw["password_file"]:
            ck.fail(at + ("password_file",), "is set without url: the local socket is "
                    "pre-authenticated for root and needs no password; remove password_file "
                    "(and shred the file)")
    ck.seconds(at + ("call_timeout",), raw["call_timeout"])
    ck.absolute(at + ("local_db",), raw["local_db"], "/var/lib/xcp/local.db")
    return XapiConfig(**raw)


def _check_password_file(ck, name):
    at = ("xapi", "password_file")
    ck.absolute(at, name, "/etc/sspn-agent/xapi.password")
    try:
        info = os.stat(name)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            ck.fail(at, "%s does not exist; create it holding the password and run chmod 600 %s"
                    % (name, name))
        ck.fail(at, "cannot read %s (%s); fix its path or permissions" % (name, _reason(exc)))
    except ValueError as exc:
        ck.fail(at, "cannot read %s (%s); fix its path" % (_show(name), exc))
    if not stat.S_ISREG(info.st_mode):
        ck.fail(at, "%s is not a regular file; point it at the file holding the password" % name)
    if info.st_mode & 0o077:
        ck.fail(at, "%s is readable or writable by group or others (mode %04o); run chmod 600 %s"
                % (name, stat.S_IMODE(info.st_mode), name))


def _check_bindings(ck, raws):
    if not raws:
        ck.fail(("binding",), "no [[binding]]; add one: [[binding]] network = \"sspn\" "
                'vms = ["pfsense"] addresses = ["192.0.2.2/24"]')
    ck.capped(("binding",), raws, MAX_BINDINGS, "[[binding]] tables")
    bindings, seen_ip, seen_net = [], {}, {}
    for i, raw in enumerate(raws):
        at = ("binding", i)
        for key in ("network", "vms", "addresses"):
            if raw[key] is None:
                example = {"network": '"sspn"', "vms": '["pfsense"]',
                           "addresses": '["192.0.2.2/24"]'}[key]
                ck.fail(at + (key,), "missing; add %s = %s to this [[binding]]" % (key, example))
        if not raw["network"].strip():
            ck.fail(at + ("network",), "is empty; give the name_label of the internal network")
        if raw["network"] in seen_net:
            ck.fail(at + ("network",), "%s is already bound by binding[%d]; put all its addresses"
                    " in one [[binding]]" % (_show(raw["network"]), seen_net[raw["network"]]))
        seen_net[raw["network"]] = i
        if not raw["vms"]:
            ck.fail(at + ("vms",), 'is empty; list the uplink VM name_labels, e.g. vms = '
                    '["pfsense"]')
        ck.capped(at + ("vms",), raw["vms"], MAX_VMS, "VMs")
        ck.capped(at + ("addresses",), raw["addresses"] or (), MAX_ADDRESSES, "addresses")
        ck.short(at + ("network",), raw["network"], MAX_LABEL)
        for j, vm in enumerate(raw["vms"]):
            if _UUID.match(vm.strip().lower()):
                vm = raw["vms"][j] = vm.strip().lower()  # a uuid pins that VM, whatever its label
            if not vm.strip():
                ck.fail(at + ("vms", j), "is empty; give the name_label of a VM", needle=vm)
            if raw["vms"].index(vm) != j:
                ck.fail(at + ("vms", j), "%s is listed twice; remove one" % _show(vm), needle=vm)
        if not raw["addresses"]:
            ck.fail(at + ("addresses",), 'is empty; give dom0 an address with its prefix, e.g. '
                    'addresses = ["192.0.2.2/24"]')
        ifaces = [_check_address(ck, at + ("addresses", j), text)
                  for j, text in enumerate(raw["addresses"])]
        for j, iface in enumerate(ifaces):
            where = at + ("addresses", j)
            if iface.ip in seen_ip:
                ck.fail(where, "%s is listed twice (also %s); remove one"
                        % (iface.ip, dotted(seen_ip[iface.ip])), needle=raw["addresses"][j])
            seen_ip[iface.ip] = where
            for other in bindings:
                clash = next((o for o in other.addresses if o.version == iface.version
                              and o.network.overlaps(iface.network)), None)
                if clash is not None:
                    ck.fail(where, "%s overlaps %s of network %s; each binding needs its own "
                            "subnet" % (iface, clash, _show(other.network)),
                            needle=raw["addresses"][j])
        binding = Binding(raw["network"], raw["vms"], ifaces)
        gateways = dict((key, _check_gateway(ck, key, raw.get(key), int(key[-1]), [binding],
                                             at=at + (key,)))
                        for key in ("gateway4", "gateway6"))
        bindings.append(attr.evolve(binding, **gateways))
    return bindings


def _check_address(ck, at, text):
    example = "192.0.2.2/24" if ":" not in text else "2001:db8:1::2/64"
    try:
        iface = parse_ip(text, "interface")
    except ValueError as exc:
        ck.fail(at, "%s %s; write it like %s" % (_show(text), exc, example), needle=text)
    ip, full = iface.ip, iface.max_prefixlen
    if "/" not in text or iface.network.prefixlen == full:
        ck.fail(at, "%s has no subnet: dom0 needs the prefix of the firewall's subnet to reach "
                "the gateway; write it like %s" % (_show(text), example), needle=text)
    if iface.network.prefixlen == 0:
        ck.fail(at, "%s has prefix /0, which would send all traffic to the bridge; use the "
                "subnet's prefix, e.g. %s" % (_show(text), example), needle=text)
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        ck.fail(at, "%s is not a unicast host address; use dom0's address on the firewall "
                "subnet, e.g. %s" % (_show(text), example), needle=text)
    if ip.version == 4 and iface.network.prefixlen < 31 and ip in (
            iface.network.network_address, iface.network.broadcast_address):
        ck.fail(at, "%s is the network or broadcast address of %s; pick a host address in it"
                % (ip, iface.network), needle=text)
    return iface


def _check_gateway(ck, key, text, family, bindings, at=None):
    at = at or ("route", key)
    if not text:
        return None
    try:
        gw = parse_ip(text)
    except ValueError as exc:
        ck.fail(at, "%s %s; write it like %s" % (_show(text), exc,
                                                 "192.0.2.1" if family == 4 else "2001:db8:1::1"))
    if gw.version != family:
        ck.fail(at, "%s is an IPv%d address; put it in gateway%d" % (gw, gw.version, gw.version))
    own = [iface for b in bindings for iface in b.addresses if iface.version == family]
    which = "every binding's" if at[0] == "route" else "this binding's"
    if not own:
        ck.fail(at, "%s an IPv%d address, so dom0 cannot reach %s; add an IPv%d address to %s, "
                "or remove %s" % ("no [[binding]] has" if at[0] == "route" else
                                  "this [[binding]] has no", family, gw, family,
                                  "a binding" if at[0] == "route" else "it", key))
    if gw.is_unspecified or gw.is_multicast or gw.is_loopback:
        ck.fail(at, "%s is not a unicast address; give the firewall's address" % gw)
    if any(gw == iface.ip for iface in own):
        ck.fail(at, "%s is dom0's own address; give the firewall's address on that subnet" % gw)
    if family == 6 and gw.is_link_local:
        return gw  # fe80::/10 is on every v6 link; binding_for_gateway picks the first v6 one
    holders = [iface for iface in own if gw in iface.network]
    if not holders:
        ck.fail(at, "%s is outside %s subnet (%s); use the firewall's address in "
                "one of them, or fix the address prefix" % (gw, which, ", ".join(
                    sorted(set(str(i.network) for i in own)))))
    net = holders[0].network
    if family == 4 and net.prefixlen < 31 and gw in (net.network_address, net.broadcast_address):
        ck.fail(at, "%s is the network or broadcast address of %s; give the firewall's address"
                % (gw, net))
    return gw


def _check_prefer(ck, labels, bindings):
    networks = [b.network for b in bindings]
    for j, label in enumerate(labels or ()):
        if label not in networks:
            near = _closest(label, networks)
            ck.fail(("route", "prefer", j), "%s is not the network of any [[binding]]; %s" % (
                _show(label), "did you mean %s?" % _show(near) if near else
                "list binding networks, e.g. prefer = [%s]" % ", ".join(_show(n) for n in networks)),
                needle=label)
        if list(labels).index(label) != j:
            ck.fail(("route", "prefer", j), "%s is listed twice; remove one" % _show(label),
                    needle=label)
    return tuple(labels or ())


def _check_shared_gateways(ck, route, bindings):
    """[route] gatewayN and the binding that holds it must not name two gateways."""
    probe = Config(bindings=bindings)
    for key in ("gateway4", "gateway6"):
        shared = getattr(route, key)
        index = probe.binding_for_gateway(shared) if shared is not None else None
        own = getattr(bindings[index], key) if index is not None else None
        if own is not None and own != shared:
            ck.fail(("route", key), "%s and binding[%d].%s (%s) both name network %s's gateway; "
                    "keep one of them" % (shared, index, key, own, _show(bindings[index].network)))


def _check_srs(ck, raws):
    ck.capped(("sr",), raws, MAX_SRS, "[[sr]] tables")
    srs, seen = [], {}
    for i, raw in enumerate(raws):
        at = ("sr", i)
        if raw["uuid"] is None:
            ck.fail(at + ("uuid",), 'missing; add uuid = "..." (xe sr-list name-label=... '
                    'params=uuid)')
        uuid = raw["uuid"].strip().lower()
        if not _UUID.match(uuid):
            ck.fail(at + ("uuid",), "%s is not an SR uuid; copy it from xe sr-list params=uuid "
                    "(8-4-4-4-12 hex digits)" % _show(raw["uuid"]))
        if uuid in seen:
            ck.fail(at + ("uuid",), "%s is listed twice (also sr[%d]); keep one [[sr]] per SR"
                    % (uuid, seen[uuid]))
        seen[uuid] = i
        probes = []
        ck.capped(at + ("probe",), raw["probe"] or (), MAX_PROBES, "addresses")
        for j, text in enumerate(raw["probe"] or ()):
            try:
                target = parse_ip(text)
            except ValueError as exc:
                ck.fail(at + ("probe", j), "%s %s; give the storage server's IP address, e.g. "
                        '"198.51.100.5"' % (_show(text), exc), needle=text)
            if target.is_unspecified or target.is_multicast:
                ck.fail(at + ("probe", j), "%s cannot answer a ping; give the storage server's "
                        "address" % target, needle=text)
            if target in probes:
                ck.fail(at + ("probe", j), "%s is listed twice; remove one" % target, needle=text)
            probes.append(target)
        mode = raw["probe_mode"]
        if mode not in PROBE_MODES:
            near = _closest(mode, PROBE_MODES)
            ck.fail(at + ("probe_mode",), '%s is not "tcp" (connect to the storage service\'s '
                    'port, as SM does) or "icmp" (ping); %s' % (
                        _show(mode), 'did you mean "%s"?' % near if near else "pick one"))
        ports = list(raw["probe_ports"] or ())
        for j, port in enumerate(ports):
            if not 1 <= port <= 65535:
                ck.fail(at + ("probe_ports", j), "%d is not a TCP port; use 1-65535, e.g. 2049 "
                        "(NFS), 445 (SMB), 3260 (iSCSI)" % port)
        if ports and mode == "icmp":
            ck.fail(at + ("probe_ports",), 'ports are not pinged; remove probe_ports or set '
                    'probe_mode = "tcp"')
        srs.append(SrConfig(uuid, probes, mode, ports))
    return srs


def _check_timing(ck, raw):
    at = ("timing",)
    for key in ("event_timeout", "probe_interval", "probe_timeout", "backoff_base",
                "backoff_cap"):
        ck.seconds(at + (key,), raw[key])
    if raw["backoff_cap"] < raw["backoff_base"]:
        ck.fail(at + ("backoff_cap",), "%r is below backoff_base (%r); make backoff_cap at least "
                "backoff_base" % (raw["backoff_cap"], raw["backoff_base"]))
    if raw["retry_budget"] < 1:
        ck.fail(at + ("retry_budget",), "%d is below 1; allow at least one attempt, e.g. "
                "retry_budget = 5" % raw["retry_budget"])
    ck.bounded(at + ("retry_budget",), raw["retry_budget"], "attempts")
    return TimingConfig(**raw)


def _check(top, ck):
    known = [name for name, _, _, _ in _SECTIONS]
    for key in top:
        if key not in known:
            near = _closest(key, known + ["bindings", "srs"])
            near = {"bindings": "binding", "srs": "sr"}.get(near, near)
            ck.fail((key,), "unknown section; %s" % (
                "did you mean [%s]?" % near if near else "known: " + ", ".join(known)))
    raw = {}
    for name, cls, is_array, keys in _SECTIONS:
        raw[name] = (ck.array if is_array else ck.section)(top, name, cls, keys)
    xapi = _check_xapi(ck, raw["xapi"])
    bindings = _check_bindings(ck, raw["binding"])
    route = RouteConfig(_check_gateway(ck, "gateway4", raw["route"]["gateway4"], 4, bindings),
                        _check_gateway(ck, "gateway6", raw["route"]["gateway6"], 6, bindings),
                        raw["route"]["probe"], _check_prefer(ck, raw["route"]["prefer"], bindings))
    _check_shared_gateways(ck, route, bindings)
    mgmt = raw["management"]
    if mgmt["bridge"] and (not _IFNAME.match(mgmt["bridge"]) or mgmt["bridge"] in (".", "..")):
        ck.fail(("management", "bridge"), "%s is not a bridge name (1-15 letters, digits, '.', "
                "'-', '_'); use e.g. \"xenbr0\", or leave it empty for MANAGEMENT_INTERFACE"
                % _show(mgmt["bridge"]))
    ck.absolute(("management", "inventory"), mgmt["inventory"], "/etc/xensource-inventory")
    srs = _check_srs(ck, raw["sr"])
    maint = raw["maintenance"]
    if maint["enable_host"] not in ENABLE_HOST_CHOICES:
        near = _closest(maint["enable_host"], ENABLE_HOST_CHOICES)
        ck.fail(("maintenance", "enable_host"), "%s is not one of %s; %s" % (
            _show(maint["enable_host"]), ", ".join('"%s"' % c for c in ENABLE_HOST_CHOICES),
            'did you mean "%s"?' % near if near else "pick one"))
    files = raw["files"]
    ck.absolute(("files", "status"), files["status"], "/run/sspn-agent/status.json")
    ck.absolute(("files", "trace"), files["trace"], "/var/log/sspn-agent/trace.jsonl")
    if files["trace_max_bytes"] < MIN_TRACE_BYTES:
        ck.fail(("files", "trace_max_bytes"), "%d is too small; use at least %d (e.g. 1048576)"
                % (files["trace_max_bytes"], MIN_TRACE_BYTES))
    ck.bounded(("files", "trace_max_bytes"), files["trace_max_bytes"], "bytes")
    if os.path.abspath(files["status"]) == os.path.abspath(files["trace"]):
        ck.fail(("files", "trace"), "is the status file too; give each its own path")
    ck.private_path(("files", "status"), files["status"])
    ck.private_path(("files", "trace"), files["trace"])
    if files["metrics"]:
        ck.absolute(("files", "metrics"), files["metrics"],
                    "/var/lib/node_exporter/textfile_collector/sspn_agent.prom")
        ck.private_path(("files", "metrics"), files["metrics"])
    return Config(xapi=xapi, bindings=bindings, route=route, management=ManagementConfig(**mgmt),
                  srs=srs, maintenance=MaintenanceConfig(**maint), timing=_check_timing(ck, raw[
                      "timing"]), files=FilesConfig(**files), path=ck.path)


# --- entry points --------------------------------------------------------------------------------

def decode_text(data, path):
    """UTF-8 text of ``data`` without a BOM; ConfigError with the line of the first bad byte."""
    if isinstance(data, str):
        return data[1:] if data.startswith("\ufeff") else data
    if not isinstance(data, (bytes, bytearray)):
        raise ConfigError("expected text, got %s" % type(data).__name__, path=path)
    try:
        return decode_text(bytes(data).decode("utf-8"), path)
    except UnicodeDecodeError as exc:
        head = bytes(data)[:exc.start]
        line = head.count(b"\n") + 1
        column = exc.start - (head.rfind(b"\n") + 1) + 1
        raise ConfigError("the file is not UTF-8 (byte 0x%02x at column %d); save it as UTF-8"
                          % (bytearray(data)[exc.start], column), line=line, path=path) from None


def parse_config(text, path="<string>"):
    """A validated Config from TOML ``text`` (str or bytes); ConfigError for anything wrong."""
    try:
        text = decode_text(text, path)
        try:
            top = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise toml_syntax_error(exc, text, path) from None
        except RecursionError:
            raise ConfigError("TOML syntax: lists or tables nest too deeply; flatten them",
                              path=path) from None
        return _check(top, _Checker(text, path))
    except ConfigError:
        raise
    except Exception as exc:  # the contract: nothing but ConfigError escapes (fuzzed)
        raise ConfigError("internal error while checking the file (%s: %s); please report it "
                          "with the file" % (type(exc).__name__, exc), path=path) from exc


def load_config(path):
    """parse_config of the file at ``path``; a missing, unreadable, irregular or too large
    file is a ConfigError (read_config_bytes)."""
    return parse_config(read_config_bytes(path), str(path))


def default_config():
    """The Config of agent.toml.example: defaults plus its sample binding, gateways and SR."""
    return Config(
        bindings=[Binding("sspn", ["pfsense"], ["192.0.2.2/24", "2001:db8:1::2/64"])],
        route=RouteConfig("192.0.2.1", "2001:db8:1::1"),
        srs=[SrConfig("5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01")])


def read_inventory(path="/etc/xensource-inventory"):
    """The KEY='value' lines of /etc/xensource-inventory as a dict (docs/xapi-behaviour.md §11)."""
    try:  # bounded, never blocking: SIGHUP reads it on the decision thread
        text = read_config_bytes(path, what="the inventory").decode("utf-8", "replace")
    except ConfigError as exc:
        raise ConfigError("cannot read %s (%s); fix management.inventory or set "
                          "management.bridge" % (path, exc.message),
                          key="management.inventory") from None
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # inventory.ml writes %s='%s'; the parser strips the quotes
        out[key.strip()] = value
    return out


def management_bridge(config):
    """management.bridge, else MANAGEMENT_INTERFACE of the inventory; ConfigError if neither."""
    if config.management.bridge:
        return config.management.bridge
    inventory = config.management.inventory
    bridge = read_inventory(inventory).get("MANAGEMENT_INTERFACE", "")
    if not bridge:
        raise ConfigError("is empty and %s has no MANAGEMENT_INTERFACE (management is disabled "
                          'on this host); set management.bridge = "xenbr0" (the bridge XAPI '
                          "uses) or management.mirror = false" % inventory,
                          key="management.bridge", path=config.path)
    if not _IFNAME.match(bridge):
        raise ConfigError("MANAGEMENT_INTERFACE in %s is %s, not a bridge name; set "
                          "management.bridge" % (inventory, _show(bridge)),
                          key="management.bridge", path=config.path)
    return bridge


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
