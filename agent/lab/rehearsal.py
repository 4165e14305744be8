"""The simulated host a rehearsal builds and the Lab that drives one run of `agent lab`.

A ``HostPlan`` says which simulated host the lab builds and which agent config it runs: the
default plan is the host of agent.toml.example (agent/lab/hosts/default.toml); ``plan_for``
derives one from an operator's own agent.toml. A ``Lab`` is one run (simulator, kernel side,
agent): scenarios (agent/lab/scenarios.py) inject faults through it and wait on the agent's
status file and trace with deadlines. Python 3.6 compatible.
"""

import collections
import ipaddress
import os
import threading
import time

import attr

from agent import config as cfgmod
from agent.report import status as statusmod
from agent.report import trace as tracemod
from agent.lab import netns, timeline
from agent.lab.xapi import load_scenario
from agent.lab.xapi.scenario import parse_scenario

# Short timings so each scenario takes seconds: they only shorten waits, not what is decided.
LAB_TIMING = cfgmod.TimingConfig(event_timeout=5.0, probe_interval=0.5, probe_timeout=0.3,
                                 backoff_base=0.2, backoff_cap=2.0, retry_budget=5)
TOOLSTACK_DOWN = 2.0       # seconds XAPI stays away in toolstack-restart
SILENT_PROBES = 3          # unanswered storage probes before late-storage brings storage back
POLL = 0.02                # between reads of the status file inside a deadline-bounded wait
MGMT_LABEL = "Pool-wide network associated with eth0"
LAN4_IP = netns.LAN4.split("/")[0]
LAN6_IP = netns.LAN6.split("/")[0]
# Addresses the lab's own wiring uses (agent/lab/netns.py): an operator's subnets must avoid them.
RESERVED = (ipaddress.ip_network(netns.MGMT_ADDRESS, strict=False),
            ipaddress.ip_network(netns.FW_LAN4, strict=False),
            ipaddress.ip_network(netns.FW_LAN6, strict=False))


class PlanError(ValueError):
    """An operator config the lab cannot rehearse; the message says why and what to change."""


class LabFailure(Exception):
    """The scenario did not reach what it waited for; the message says what and where to look."""


@attr.s(frozen=True)
class HostPlan(object):
    """The simulated host and the config the agent runs against it.

    ``config``: the agent config (its xapi/files/management sections are replaced per run);
    ``scenario``: the simulator's Scenario; ``uplinks``: VMs the lab starts in a cold boot;
    ``fw_addresses``: {network label: [firewall-side interfaces on that bridge]};
    ``storage``: storage server addresses the lan namespace answers for; ``ping_target``: what
    the final ping through the firewall aims at; ``autostart``: the order autostart must follow.
    """

    config = attr.ib()
    scenario = attr.ib()
    uplinks = attr.ib(converter=tuple)
    fw_addresses = attr.ib()
    storage = attr.ib(converter=tuple)
    ping_target = attr.ib()
    autostart = attr.ib(converter=tuple)
    source = attr.ib(default="agent.toml.example")
    # Realism settings (namespaces only): seconds from the firewall's VIF up to its addresses,
    # and from the storage network answering to its service answering (PBD.plug succeeding).
    fw_answer_delay = attr.ib(default=0.0)
    storage_service_delay = attr.ib(default=0.0)


def _fw_addresses(config):
    """The firewall's interfaces on each binding's bridge: every gateway in the subnet that holds
    it, and in every other binding subnet a host address of its own (a firewall has one on
    each internal network, so replies to dom0 route back even behind a link-local gateway)."""
    gateways = [gw for _family, gw in config.gateways()]
    taken = set(iface.ip for _index, iface in config.addresses())
    out = collections.OrderedDict()
    for index, binding in enumerate(config.bindings):
        mine = out.setdefault(binding.network, [])
        for iface in binding.addresses:
            net = iface.network
            inside = [gw for gw in gateways if gw.version == iface.version and gw in net]
            hosts = [ip for ip in (net.network_address + 1, net.network_address + 2)
                     if ip in net and ip not in taken and ip != net.broadcast_address]
            if inside or hosts:
                mine.append("%s/%d" % ((inside or hosts)[0], net.prefixlen))
        mine.extend("%s/64" % gw for gw in gateways if gw.version == 6 and gw.is_link_local
                    and config.binding_for_gateway(gw) == index)
    return out


def _storage_targets(config, scenario):
    """Every address the agent will probe for the configured SRs (probe list or PBD server)."""
    targets = []
    for sr in config.srs:
        spec = scenario.sr_by_ref(sr.uuid)
        servers = [str(t) for t in sr.probe]
        if not servers and spec is not None:
            server = dict(spec.device_config).get("server", "")
            servers = [server] if server else []
        targets.extend(t for t in servers if t not in targets)
    return targets


def _autostart_order(scenario, uplinks):
    """Uplinks first (the host fix starts them), then auto-power-on VMs by ascending order."""
    rest = [vm for vm in scenario.vms if vm.auto_poweron and vm.name_label not in uplinks
            and not vm.is_a_template and not vm.snapshot_of and vm.power_state == "Halted"]
    rest.sort(key=lambda vm: (int(vm.order), vm.name_label))
    return list(uplinks) + [vm.name_label for vm in rest]


def _uplinks(config):
    out = []
    for binding in config.bindings:
        if binding.vms and binding.vms[0] not in out:
            out.append(binding.vms[0])
    return out


def _ping_target(config, storage):
    if storage:
        return storage[0]
    families = set(family for family, _gw in config.gateways())
    return LAN4_IP if 4 in families or not families else LAN6_IP


def default_plan():
    """The host of agent.toml.example: pfsense on "sspn", an NFS SR, web and db to autostart."""
    config = cfgmod.default_config()
    scenario = load_scenario(None)
    uplinks = _uplinks(config)
    storage = _storage_targets(config, scenario)
    return HostPlan(config=attr.evolve(config, timing=LAB_TIMING), scenario=scenario,
                    uplinks=uplinks, fw_addresses=_fw_addresses(config), storage=storage,
                    ping_target=_ping_target(config, storage),
                    autostart=_autostart_order(scenario, uplinks))


def _check_rehearsable(config):
    """Refuse what the lab's wiring cannot show faithfully, naming the key and the way out."""
    if not config.bindings:
        raise PlanError("the config has no [[binding]]; there is nothing to rehearse")
    for i, binding in enumerate(config.bindings):
        if binding.network == MGMT_LABEL:
            raise PlanError("binding[%d].network %r is the lab's management network name; the lab "
                            "cannot rehearse it" % (i, binding.network))
        for iface in binding.addresses:
            for net in RESERVED:
                if iface.version == net.version and iface.network.overlaps(net):
                    raise PlanError(
                        "binding[%d] address %s overlaps %s, which the lab uses for its own "
                        "wiring (management bridge, firewall-to-storage link); the lab cannot "
                        "rehearse this subnet" % (i, iface, net))
    for i, sr in enumerate(config.srs):
        for target in sr.probe:
            for index, iface in config.addresses():
                if iface.version == target.version and target in iface.network:
                    raise PlanError(
                        "sr[%d].probe %s lies inside binding[%d]'s subnet %s; the lab's storage "
                        "server sits behind the firewall, so it cannot rehearse storage on the "
                        "firewall's own subnet" % (i, target, index, iface.network))
            if any(target == ipaddress.ip_interface(a).ip for a in
                   (netns.MGMT_ADDRESS, netns.FW_LAN4, netns.FW_LAN6)):
                raise PlanError("sr[%d].probe %s is an address of the lab's own wiring; the lab "
                                "cannot rehearse it" % (i, target))


def plan_for(config, source):
    """A simulated host matching an operator's config: its labels, SR uuids and addresses.

    Networks and uplink VMs carry the config's labels; each SR is an NFS SR, detached at
    start, whose device_config server is its first probe target (else the lab's storage
    server); the firewall takes the config's gateways, the lan namespace its storage targets.
    Raises PlanError for what the lab cannot rehearse (see ``agent lab --help``).
    """
    _check_rehearsable(config)
    networks = [{"name_label": MGMT_LABEL, "bridge": netns.MGMT_BRIDGE,
                 "pif": {"device": "eth0", "management": True, "ip_configuration_mode": "Static",
                         "ip": netns.MGMT_ADDRESS.split("/")[0], "netmask": "255.255.255.0"}}]
    vms = collections.OrderedDict()
    for binding in config.bindings:
        if all(n["name_label"] != binding.network for n in networks):
            networks.append({"name_label": binding.network})
        for name in binding.vms:
            nets = vms.setdefault(name, [])
            if binding.network not in nets:
                nets.append(binding.network)
    srs = []
    for sr in config.srs:
        server = str(sr.probe[0]) if sr.probe else LAN4_IP
        srs.append({"name_label": "rehearsal SR %s" % sr.uuid[:8], "uuid": sr.uuid, "type": "nfs",
                    "attached": False, "device_config": {"server": server,
                                                         "serverpath": "/export"}})
    data = {"pool": {"name_label": "rehearsal", "auto_poweron": True},
            "host": {"name_label": "xcp-rehearsal", "hostname": "xcp-rehearsal",
                     "address": netns.MGMT_ADDRESS.split("/")[0]},
            "network": networks, "sr": srs}
    uplinks = _uplinks(config)
    data["vm"] = [{"name_label": name, "auto_poweron": name in uplinks, "networks": nets}
                  for name, nets in vms.items()]  # standby members (CARP) stay halted
    scenario = parse_scenario(data, "rehearsal of %s" % source)
    storage = _storage_targets(config, scenario)
    return HostPlan(config=config, scenario=scenario, uplinks=uplinks,
                    fw_addresses=_fw_addresses(config), storage=storage,
                    ping_target=_ping_target(config, storage),
                    autostart=_autostart_order(scenario, uplinks), source=source)


def write_config(plan, workdir, sim):
    """The run's agent.toml (the plan's bindings, route, SRs, maintenance, timing; the lab's
    socket, local.db, files and management bridge) and an inventory beside it; returns the
    Config exactly as `agent run` will load it."""
    inventory = os.path.join(workdir, "xensource-inventory")
    with open(inventory, "w") as f:
        f.write("MANAGEMENT_INTERFACE='%s'\nINSTALLATION_UUID='%s'\n"
                % (netns.MGMT_BRIDGE, sim.state()["host"]["uuid"]))
    config = attr.evolve(
        plan.config, xapi=cfgmod.XapiConfig(socket=sim.socket_path, local_db=sim.local_db_path),
        management=attr.evolve(plan.config.management, bridge=netns.MGMT_BRIDGE,
                               inventory=inventory),
        files=cfgmod.FilesConfig(status=os.path.join(workdir, "status.json"),
                                 trace=os.path.join(workdir, "trace.jsonl")))
    path = os.path.join(workdir, "agent.toml")
    with open(path, "w") as f:
        f.write("# agent lab: rehearsal of %s on the XAPI simulator\n" % plan.source)
        f.write(cfgmod.render_config(config))
    return cfgmod.load_config(path)


# --- what a scenario drives ----------------------------------------------------------------------


class Lab(object):
    """A scenario's handle on one run: the simulator, the environment (kernel side and agent),
    injected actions recorded for the timeline, and waits with deadlines on the agent's files."""

    def __init__(self, plan, origin, timeout):
        self.plan, self.origin, self.timeout = plan, origin, timeout
        self.env = self.sim = self.config = None
        self.events = []
        self._lock = threading.Lock()
        self.fault_at, self.fault_label = None, None
        self.healthy_time = None
        self.notes = {}
        self.calls = []         # (wall time, method, succeeded) of COUNTED_CALLS, as XAPI saw them
        self._acting = None     # the thread running a lab action, if any

    @staticmethod
    def now():
        """The wall clock, as the trace uses it."""
        return time.time()

    def record(self, what, when=None, source=timeline.LAB, **extra):
        """Add an entry of the lab's own (or of the simulator's) to the timeline."""
        with self._lock:
            self.events.append(timeline.lab_event(self.now() if when is None else when, what,
                                                  source, **extra))

    def act(self, what, fn=None, fault=None):
        """Record an injected action, then do it; ``fault`` names what time-to-HEALTHY counts from."""
        when = self.now()
        self.record(what, when)
        if fault:
            self.fault_at, self.fault_label = when, fault
        if fn is not None:
            self._acting = threading.current_thread()
            try:
                fn()
            finally:
                self._acting = None
        return when

    def acting(self):
        """True on the thread of a running lab action (the simulator's hooks run on it when the
        lab calls sim.* itself, on a server thread when the agent calls XAPI)."""
        return self._acting is threading.current_thread()

    def xapi_call(self, when, method, ok):
        """The simulator received ``method`` at ``when`` (see envs.COUNTED_CALLS)."""
        with self._lock:
            self.calls.append((when, method, ok))

    def note(self, key, value):
        """Add a scenario-specific item to the summary."""
        self.notes[key] = value

    def fail(self, message):
        """End the scenario as failed."""
        raise LabFailure(message)

    def start_agent(self):
        """Start the agent: time-to-HEALTHY counts from here unless a later fault says otherwise."""
        self.act("start the agent: %s" % self.env.agent_command, self.env.start_agent,
                 fault="agent start")

    def start_uplinks(self):
        """Start the halted uplink VMs from outside XAPI's checks, as xapi-autostart-vms does at
        boot (it starts only halted VMs: one the simulator's own autostart started is left)."""
        for vm in self.plan.uplinks:
            if self.sim.state()["vms"].get(vm, {}).get("power_state") == "Running":
                continue
            self.act("start VM %s, as xapi-autostart-vms would" % vm,
                     lambda vm=vm: self.sim.vm_start(vm))

    def status(self):
        """The agent's status file (None until it exists)."""
        return statusmod.read(self.config.files.status)

    def entries(self):
        """The merged timeline so far."""
        with self._lock:
            events = list(self.events)
        return timeline.merge(tracemod.read(self.config.files.trace), events, self.origin)

    def wait_for(self, predicate, what):
        """The predicate's first truthy value; LabFailure at the deadline or if the agent exits."""
        deadline = time.monotonic() + self.timeout
        while True:
            value = predicate()
            if value:
                return value
            if not self.env.agent_alive():
                self.fail("the agent exited while the lab waited for %s; see %s"
                          % (what, self.env.log_path))
            if time.monotonic() > deadline:
                self.fail("%s did not happen within %.0f s; %s" % (what, self.timeout, self._where()))
            time.sleep(POLL)  # bounded by the deadline above: the status file has no wake-up

    def _where(self):
        s = self.status() or {}
        parts = ["the agent is in %s" % s.get("state", "no state yet (no status file)")]
        parts += ["reason %s: %s" % kv for kv in sorted(s.get("reasons", {}).items())]
        parts += ["waiting: %s" % b for b in s.get("blockers", [])]
        return "; ".join(parts) + "; agent log: %s" % self.env.log_path

    def wait_status(self, predicate, what):
        """Wait until the status file satisfies ``predicate``; return it."""
        return self.wait_for(lambda: (lambda s: s if s and predicate(s) else None)(self.status()),
                             what)

    def wait_entries(self, predicate, what):
        """Wait until the merged timeline satisfies ``predicate``."""
        return self.wait_for(lambda: predicate(self.entries()), what)

    def wait_healthy(self, since, kernel=False):
        """Wait for a transition into HEALTHY at or after ``since`` while the status says HEALTHY
        (with ``kernel``: and the kernel holds every configured address and route); its time."""
        def healthy():
            s = self.status()
            if not s or s.get("state") != "HEALTHY":
                return None
            when = timeline.healthy_at(self.entries(), since)
            if when is None or (kernel and self.env.kernel_missing()):
                return None
            return when
        self.healthy_time = self.wait_for(healthy, "HEALTHY (after %s)" % (self.fault_label or "the start"))
        return self.healthy_time
