"""The config values (frozen attrs classes), ConfigError, and the schema of agent.toml."""

import ipaddress
import re

import attr

from agent.config.readfile import read_config_bytes

from agent.config.messages import _reason

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
    ``probe_mode`` "tcp" the service ports are probed (``probe_ports``, else agent/decision/sm_targets.py),
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
    metrics = attr.ib(default="")  # Prometheus text file (agent/report/metrics.py); empty: off


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
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # Linux IFNAMSIZ is 16 with the NUL
