"""Lab scenarios: a TOML description of the pool, host, networks, SRs and VMs to simulate.

Layout (every key optional except names; see ``agent/lab/hosts/default.toml``)::

    [auth]      username, password           # checked for logins over TCP only
    [pool]      name_label, auto_poweron, ha_enabled
    [host]      name_label, hostname, address, uuid, enabled, auto_enable,
                maintenance_mode, boot_seconds, system_boot, operator_disabled,
                disabled_until_reboot, pending_guidances, pool_member, master_address,
                emergency (a pool member's emergency-mode stage, see member.py)
    [simulator] any of simulator.DEFAULT_SETTINGS (durations in seconds, switches)
    [[network]] name_label, bridge, mtu, other_config, [network.pif] (device, management,
                ip_configuration_mode, ip, netmask, gateway, mac, currently_attached)
    [[sr]]      name_label, uuid, type, shared, attached, reachable, device_config
    [[vm]]      name_label, uuid, power_state, auto_poweron, order, start_delay,
                networks (network name_labels), srs (SR name_labels or uuids), other_config,
                is_a_template, snapshot_of (name_label of the VM it is a snapshot of),
                ha_protected (ha_always_run and ha_restart_priority "restart")

``[host] enabled`` is the host's enabled field as xapi starts; start-up (``boot_seconds`` of
HOST_STILL_BOOTING, 0 = at once) then runs consider_enabling_host, which enables it unless
``auto_enable = false``, ``disabled_until_reboot`` (kept only when ``system_boot = false``, a
toolstack restart), ``pending_guidances`` or HA with an unplugged PBD forbid it.
``operator_disabled = true`` is an operator's plain ``xe host-disable`` once start-up is done
(in xapi's memory only: a toolstack restart re-enables the host).

A network without ``pif`` is internal; its bridge is named ``xapiN`` by xapi's rule
(xapi_network.ml ``choose_bridge_name``) unless ``bridge`` is given.
"""

import pkgutil

import attr

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the key and the fix."""


def _freeze_map(value):
    return tuple(sorted((str(k), str(v)) for k, v in dict(value or {}).items()))


@attr.s(frozen=True)
class PifSpec(object):
    """The physical interface that attaches a network to the host."""

    device = attr.ib(default="eth0")
    management = attr.ib(default=False)
    ip_configuration_mode = attr.ib(default="None")
    ip = attr.ib(default="")
    netmask = attr.ib(default="")
    gateway = attr.ib(default="")
    mac = attr.ib(default="")
    currently_attached = attr.ib(default=True)


@attr.s(frozen=True)
class NetworkSpec(object):
    """A network; internal (no PIF) unless ``pif`` is set."""

    name_label = attr.ib()
    bridge = attr.ib(default="")
    mtu = attr.ib(default=1500)
    other_config = attr.ib(default=(), converter=_freeze_map)
    pif = attr.ib(default=None)


@attr.s(frozen=True)
class SrSpec(object):
    """A storage repository with this host's PBD; ``reachable`` is the storage target's health."""

    name_label = attr.ib()
    uuid = attr.ib(default="")
    type = attr.ib(default="nfs")
    shared = attr.ib(default=True)
    attached = attr.ib(default=True)
    reachable = attr.ib(default=True)
    device_config = attr.ib(default=(), converter=_freeze_map)


@attr.s(frozen=True)
class VmSpec(object):
    """A guest VM with VIFs on ``networks`` and one disk on each SR of ``srs``."""

    name_label = attr.ib()
    uuid = attr.ib(default="")
    power_state = attr.ib(default="Halted")
    auto_poweron = attr.ib(default=False)
    order = attr.ib(default=0)
    start_delay = attr.ib(default=0)
    networks = attr.ib(default=(), converter=tuple)
    srs = attr.ib(default=(), converter=tuple)
    other_config = attr.ib(default=(), converter=_freeze_map)
    is_a_template = attr.ib(default=False)
    snapshot_of = attr.ib(default="")   # name_label of a VM: this is its snapshot (a template)
    ha_protected = attr.ib(default=False)


@attr.s(frozen=True)
class HostSpec(object):
    """The single host (pool master); ``boot_seconds`` > 0 starts in a boot phase."""

    name_label = attr.ib(default="xcp-lab")
    hostname = attr.ib(default="")
    address = attr.ib(default="")
    uuid = attr.ib(default="")
    enabled = attr.ib(default=True)
    auto_enable = attr.ib(default=True)
    maintenance_mode = attr.ib(default=False)
    boot_seconds = attr.ib(default=0.0)
    system_boot = attr.ib(default=True)
    operator_disabled = attr.ib(default=False)
    disabled_until_reboot = attr.ib(default=False)
    pool_member = attr.ib(default=False)   # this host is a member; a master row is made
    master_address = attr.ib(default="192.0.2.1")
    emergency = attr.ib(default="")        # a member.STAGES name: start in emergency mode
    pending_guidances = attr.ib(default=(), converter=lambda v: (v,) if isinstance(v, str)
                                else tuple(str(g) for g in v))


@attr.s(frozen=True)
class PoolSpec(object):
    """The pool; ``auto_poweron`` becomes pool other_config:auto_poweron."""

    name_label = attr.ib(default="")
    auto_poweron = attr.ib(default=True)
    ha_enabled = attr.ib(default=False)


@attr.s(frozen=True)
class Scenario(object):
    """A whole simulated installation."""

    pool = attr.ib(default=attr.Factory(PoolSpec))
    host = attr.ib(default=attr.Factory(HostSpec))
    networks = attr.ib(default=(), converter=tuple)
    srs = attr.ib(default=(), converter=tuple)
    vms = attr.ib(default=(), converter=tuple)
    username = attr.ib(default="root")
    password = attr.ib(default="")
    source = attr.ib(default="<default>")
    settings = attr.ib(default=(), converter=lambda v: tuple(sorted(dict(v).items())))

    def sr_by_ref(self, key):
        """The SrSpec whose uuid or name_label is ``key``, or None."""
        for sr in self.srs:
            if key in (sr.uuid, sr.name_label):
                return sr
        return None


_SPECS = {"pool": PoolSpec, "host": HostSpec, "network": NetworkSpec, "pif": PifSpec,
          "sr": SrSpec, "vm": VmSpec}
_POWER_STATES = ("Halted", "Running", "Paused", "Suspended")


def _build(kind, table, source, where):
    """Make a spec of ``kind`` from a TOML table, refusing unknown keys and wrong types."""
    cls = _SPECS[kind]
    if not isinstance(table, dict):
        raise ScenarioError("%s: %s must be a table" % (source, where))
    fields = attr.fields_dict(cls)
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise ScenarioError("%s: unknown key %s.%s; known keys: %s"
                                % (source, where, key, ", ".join(sorted(fields))))
        default = fields[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ScenarioError("%s: %s.%s must be true or false" % (source, where, key))
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ScenarioError("%s: %s.%s must be a number" % (source, where, key))
        values[key] = value
    missing = [name for name, f in fields.items() if f.default is attr.NOTHING and name not in values]
    if missing:
        raise ScenarioError("%s: %s needs %s" % (source, where, ", ".join(missing)))
    return cls(**values)


def parse_scenario(data, source="<scenario>"):
    """Validate a decoded TOML document into a Scenario; raises ScenarioError naming the key."""
    known = ("auth", "pool", "host", "network", "sr", "vm", "simulator")
    for key in data:
        if key not in known:
            raise ScenarioError("%s: unknown top-level key %r; known: %s"
                                % (source, key, ", ".join(known)))
    auth = data.get("auth", {})
    for key in auth:
        if key not in ("username", "password"):
            raise ScenarioError("%s: unknown key auth.%s; known keys: password, username"
                                % (source, key))
    networks = []
    for i, table in enumerate(data.get("network", [])):
        table = dict(table)
        pif = table.pop("pif", None)
        spec = _build("network", table, source, "network[%d]" % i)
        if pif is not None:
            spec = attr.evolve(spec, pif=_build("pif", pif, source, "network[%d].pif" % i))
        networks.append(spec)
    srs = [_build("sr", t, source, "sr[%d]" % i) for i, t in enumerate(data.get("sr", []))]
    vms = [_build("vm", t, source, "vm[%d]" % i) for i, t in enumerate(data.get("vm", []))]
    scenario = Scenario(
        pool=_build("pool", data.get("pool", {}), source, "pool"),
        host=_build("host", data.get("host", {}), source, "host"),
        networks=networks, srs=srs, vms=vms,
        username=str(auth.get("username", "root")), password=str(auth.get("password", "")),
        source=source, settings=_settings(data.get("simulator", {}), source))
    _check_references(scenario)
    return scenario


def _settings(table, source):
    """The [simulator] table: names and value types of simulator.DEFAULT_SETTINGS."""
    from .simulator import DEFAULT_SETTINGS
    if not isinstance(table, dict):
        raise ScenarioError("%s: simulator must be a table" % source)
    for key, value in table.items():
        if key not in DEFAULT_SETTINGS:
            raise ScenarioError("%s: unknown key simulator.%s; known keys: %s"
                                % (source, key, ", ".join(sorted(DEFAULT_SETTINGS))))
        if isinstance(DEFAULT_SETTINGS[key], bool) != isinstance(value, bool) or not isinstance(
                value, (bool, int, float)):
            raise ScenarioError("%s: simulator.%s must be %s" % (
                source, key, "true or false" if isinstance(DEFAULT_SETTINGS[key], bool)
                else "a number of seconds"))
    return table


def _check_references(scenario):
    """Names must be unique and every VM reference must resolve."""
    source = scenario.source
    for kind, items in (("network", scenario.networks), ("sr", scenario.srs), ("vm", scenario.vms)):
        labels = [item.name_label for item in items]
        for label in labels:
            if labels.count(label) > 1:
                raise ScenarioError("%s: two [[%s]] entries are named %r; name_labels must be "
                                    "unique in a scenario" % (source, kind, label))
    network_labels = set(n.name_label for n in scenario.networks)
    vm_labels = [v.name_label for v in scenario.vms]
    for vm in scenario.vms:
        if vm.snapshot_of and vm.snapshot_of not in vm_labels[:vm_labels.index(vm.name_label)]:
            raise ScenarioError("%s: vm %r is a snapshot_of %r, which must be an earlier [[vm]]"
                                % (source, vm.name_label, vm.snapshot_of))
        if (vm.is_a_template or vm.snapshot_of) and vm.power_state != "Halted":
            raise ScenarioError("%s: vm %r is a template or snapshot, so its power_state must "
                                "be Halted" % (source, vm.name_label))
        if vm.power_state not in _POWER_STATES:
            raise ScenarioError("%s: vm %r power_state %r; use one of %s"
                                % (source, vm.name_label, vm.power_state, ", ".join(_POWER_STATES)))
        for name in vm.networks:
            if name not in network_labels:
                raise ScenarioError("%s: vm %r uses network %r, which no [[network]] names"
                                    % (source, vm.name_label, name))
        for key in vm.srs:
            if scenario.sr_by_ref(key) is None:
                raise ScenarioError("%s: vm %r uses sr %r, which is no [[sr]] uuid or name_label"
                                    % (source, vm.name_label, key))


def load_scenario(path=None):
    """Read a scenario TOML file; ``None`` gives the default scenario (agent.toml.example's host)."""
    if path is None:
        raw = pkgutil.get_data("agent.lab", "hosts/default.toml")
        source = "agent/lab/hosts/default.toml"
    else:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except (IOError, OSError) as exc:
            raise ScenarioError("cannot read scenario %s: %s" % (path, exc.strerror or exc))
        source = str(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError is a ValueError
        raise ScenarioError("%s: not valid TOML: %s" % (source, exc))
    return parse_scenario(data, source)
