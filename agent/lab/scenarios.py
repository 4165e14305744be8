"""What `agent lab` rehearses: the simulated host (a plan) and the scenarios driven against it.

A ``HostPlan`` says which simulated host the lab builds and which agent config it runs: the
default plan is the host of agent.toml.example (agent/lab/hosts/default.toml); ``plan_for``
derives one from an operator's own agent.toml. Each scenario is a function of a ``Lab`` (one
run: simulator, kernel side, agent) that injects faults through ``sim.*`` and the network and
waits on the agent's status file and trace with deadlines. Python 3.6 compatible.
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
        """Start the uplink VMs from outside XAPI's checks, as xapi-autostart-vms does at boot."""
        for vm in self.plan.uplinks:
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


# --- the scenarios -----------------------------------------------------------------------------

def cold_boot(lab):
    """The firewall VM is halted when the agent starts; the lab starts it late, as
    xapi-autostart-vms would; the agent binds, routes, plugs the SRs and autostarts the rest."""
    lab.start_agent()
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM",
                    "the agent waiting for the firewall VM (WAITING_VM)")
    lab.start_uplinks()
    lab.wait_healthy(lab.fault_at)


def firewall_reboot(lab):
    """From HEALTHY, the firewall VM reboots (new domid, bridge and VIF re-created): HEALTHY again."""
    cold_boot(lab)
    vm = lab.plan.uplinks[0]
    t = lab.act("reboot VM %s: Xen gives it a new domid; its bridge and VIF are destroyed and "
                "re-created" % vm, lambda: lab.sim.vm_reboot(vm), fault="the reboot")
    lab.wait_healthy(t)


def toolstack_restart(lab):
    """From HEALTHY, xe-toolstack-restart: XAPI away for 2 s, sessions gone; the agent reconnects
    and stays HEALTHY without repeating any effect."""
    cold_boot(lab)
    t = lab.act("xe-toolstack-restart: XAPI down for %.0f s (sessions gone, host disabled by "
                "Xapi_fuse, re-enabled on start-up)" % TOOLSTACK_DOWN,
                lambda: lab.sim.toolstack_restart(TOOLSTACK_DOWN), fault="the restart")
    lab.wait_status(lambda s: not s["xapi"]["connected"], "the agent noticing that XAPI is gone")
    back = lab.wait_for(lambda: lab.sim.is_up and lab.now(), "XAPI listening again")
    lab.record("XAPI is back (listening, host enabled: %s)" % lab.sim.state()["host"]["enabled"],
               when=back, source=timeline.SIM)
    lab.wait_status(lambda s: s["xapi"]["connected"] and s.get("state") == "HEALTHY",
                    "the agent reconnected to XAPI and HEALTHY")
    lab.healthy_time = lab.now()
    repeated = timeline.repeated_effects(lab.entries(), t)
    lab.note("repeated_effects", repeated)
    if repeated:
        lab.fail("the agent repeated effects after the toolstack restart: %s" % "; ".join(repeated))


def late_storage(lab):
    """The storage server is off the network at boot; the agent probes until it answers and then
    plugs the SR within one probe interval, then autostarts."""
    lab.act("storage server %s off the network" % ", ".join(lab.plan.storage or ["-"]),
            lab.env.storage_down)
    lab.start_agent()
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM",
                    "the agent waiting for the firewall VM (WAITING_VM)")
    lab.start_uplinks()
    lab.wait_entries(lambda entries: sum(
        1 for _t, what, result, _ok in timeline.effects(entries)
        if what.startswith("probe sr:") and result == "no answer") >= SILENT_PROBES,
        "%d unanswered storage probes" % SILENT_PROBES)
    t = lab.act("storage server back on the network", lab.env.storage_up, fault="storage back")
    lab.wait_healthy(t)
    plugged = timeline.first_effect(lab.entries(), r"^PBD\.plug ", t)
    if plugged is not None:
        lab.note("storage_back_to_plugged", round(plugged - t, 3))
        lab.note("storage_back_to_plugged_note", " (probe interval %.1f s, probe timeout %.1f s)"
                 % (lab.config.timing.probe_interval, lab.config.timing.probe_timeout))


def maintenance_lockout(lab):
    """The host came up disabled (auto_enable left true) with the firewall halted: the agent
    enables the host, starts the firewall, binds, plugs, then autostarts in order."""
    lab.act("host disabled (host.disable with auto_enable left true); firewall VM halted",
            lambda: lab.sim.host_disable())
    lab.start_agent()
    lab.wait_healthy(lab.fault_at)
    entries = lab.entries()
    enabled = [when for when, method, ok in lab.calls if method == "host.enable" and ok]
    booted = [e["time"] for e in entries if e.get("vm_started") and not e.get("by_lab")]
    if not enabled:
        lab.fail("the agent never enabled the host")
    if not booted or booted[0] < enabled[0]:
        lab.fail("a VM was started before the agent called host.enable")
    started = timeline.vms_started(entries)
    if started != list(lab.plan.autostart):
        lab.fail("VMs started in the order %s, expected %s" % (", ".join(started) or "none",
                                                                ", ".join(lab.plan.autostart)))
    if not lab.sim.state()["host"]["enabled"]:
        lab.fail("the simulated host is still disabled")


def flush(lab):
    """From HEALTHY, networkd-style: every address of the management bridge and of the uplink
    bridge and the default routes are flushed; the agent restores what its config names."""
    cold_boot(lab)
    t = lab.act("networkd-style flush: every address of %s and %s, the default routes; networkd "
                "re-adds only its own %s" % (netns.MGMT_BRIDGE, ", ".join(lab.env.bridges()),
                                             netns.MGMT_ADDRESS),
                lab.env.flush, fault="the flush")
    lab.wait_healthy(t, kernel=True)


# --- several networks, CARP pairs: each binding is served on its own (docs/bindings.md) ---------

SEVERAL = """
[[binding]]
network = "sspn"
vms = ["pfsense", "pfsense-carp"]
addresses = ["192.0.2.2/24", "2001:db8:1::2/64"]

[[binding]]
network = "sspn-b"
vms = ["opnsense"]
addresses = ["100.64.0.2/24", "2001:db8:3::2/64"]
gateway4 = "100.64.0.1"
gateway6 = "2001:db8:3::1"

[route]
gateway4 = "192.0.2.1"
gateway6 = "2001:db8:1::1"

[[sr]]
uuid = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
"""


def several_plan():
    """A host with two internal networks: "sspn" with a CARP pair (pfsense, pfsense-carp) and
    "sspn-b" with opnsense, each able to carry both default routes ("sspn" preferred)."""
    config = cfgmod.parse_config(SEVERAL, "two networks (built in)")
    plan = plan_for(attr.evolve(config, timing=LAB_TIMING), "two networks (built in)")
    return plan


def plan_for_scenario(name, plan):
    """The plan a scenario runs on: one that needs several networks or VMs gets several_plan()
    unless the given plan (an operator's config) can run it."""
    if name in SEVERAL_SCENARIOS and name not in applicable(plan.config):
        return several_plan()
    return plan


def applicable(config):
    """The several-networks scenarios ``config`` itself can run (`agent lab --config`)."""
    out = []
    if any(len(b.vms) > 1 for b in config.bindings):
        out.append("carp-failover")
    if len(config.bindings) > 1:
        out.extend(("one-firewall-down", "firewall-stops-later"))
        if all(len(config.route_candidates(f)) > 1 for f in (4, 6) if config.route_candidates(f)) \
                and any(config.route_candidates(f) for f in (4, 6)):
            out.append("route-failover")
    if config.route.probe and config.route_candidates(4) and config.route_candidates(6):
        out.append("silent-gateway6")
    return out


def _binding_status(lab, network):
    return next((b for b in (lab.status() or {}).get("bindings", []) if b["network"] == network), None)


def _serves(lab, network):
    """True when the status shows ``network`` holding everything and the kernel agrees."""
    b = _binding_status(lab, network)
    return bool(b and b["bridge_exists"] and not b["missing"])


def _start_all(lab):
    """Start every VM the config names (standby members of a CARP pair too)."""
    for binding in lab.config.bindings:
        for vm in binding.vms:
            if lab.sim.state()["vms"].get(vm, {}).get("power_state") != "Running":
                lab.act("start VM %s" % vm, lambda vm=vm: lab.sim.vm_start(vm))


def carp_failover(lab):
    """A CARP pair on one network: with both VMs running, each is stopped in turn; the bridge
    stays, and the binding's addresses and routes stay, with either VM down."""
    lab.start_agent()
    _start_all(lab)
    lab.wait_healthy(lab.fault_at, kernel=True)
    first = lab.config.bindings[[len(b.vms) for b in lab.config.bindings].index(
        max(len(b.vms) for b in lab.config.bindings))]
    for down, up in ((first.vms[0], first.vms[1]), (first.vms[1], first.vms[0])):
        if lab.sim.state()["vms"][up]["power_state"] != "Running":
            lab.act("start VM %s" % up, lambda: lab.sim.vm_start(up))
        t = lab.act("stop VM %s (its CARP peer %s keeps the gateway)" % (down, up),
                    lambda: lab.sim.vm_stop(down), fault="%s stopped" % down)
        lab.wait_status(lambda s: s.get("state") == "HEALTHY" and _serves(lab, first.network)
                        and not lab.env.kernel_missing(), "HEALTHY with %s down" % down)
        lab.healthy_time = lab.now()
        lab.note("carp_%s_down" % down, round(lab.healthy_time - t, 3))


def one_firewall_down(lab):
    """Two networks, only the first one's firewall runs: the host waits (WAITING_VM) for the
    other, and meanwhile the first binding holds its addresses, mirrors and default routes."""
    lab.start_agent()
    first = lab.config.bindings[0]
    lab.act("start VM %s only" % first.vms[0], lambda: lab.sim.vm_start(first.vms[0]),
            fault="first firewall started")
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM" and _serves(lab, first.network)
                    and any(r["state"] == "present" for r in _binding_status(lab, first.network)["routes"]),
                    "%s served while the other firewall is halted" % first.network)
    lab.note("served_while_waiting", round(lab.now() - lab.fault_at, 3))
    t = lab.act("start the other firewalls", lambda: [lab.sim.vm_start(b.vms[0])
                                                     for b in lab.config.bindings[1:]])
    lab.wait_healthy(t, kernel=True)


def firewall_stops_later(lab):
    """From HEALTHY, the second network's firewall stops (WAITING_VM); then someone deletes the
    first binding's address and a management mirror: both come back without that firewall."""
    lab.start_agent()
    lab.act("start the firewalls", lambda: [lab.sim.vm_start(b.vms[0]) for b in lab.config.bindings])
    lab.wait_healthy(lab.fault_at)
    first, second = lab.config.bindings[0], lab.config.bindings[1]
    lab.act("stop VM %s" % second.vms[0], lambda: lab.sim.vm_stop(second.vms[0]),
            fault="second firewall stopped")
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM", "WAITING_VM")
    address = first.addresses[0]
    bridge = lab.env.bridge_of[first.network]
    mirror = "%s/%d" % (address.ip, address.max_prefixlen)
    t = lab.act("delete %s from %s and %s from %s" % (address, bridge, mirror, netns.MGMT_BRIDGE),
                lambda: lab.env.delete_addresses([(bridge, str(address)),
                                                  (netns.MGMT_BRIDGE, mirror)]), fault="the deletes")
    lab.wait_for(lambda: not [m for m in lab.env.kernel_missing() if first.network and bridge in m
                              or mirror in m], "%s and its mirror back" % address)
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM" and _serves(lab, first.network),
                    "the first binding served again in WAITING_VM")
    lab.note("repaired_in_waiting_vm", round(lab.now() - t, 3))
    lab.act("start VM %s again" % second.vms[0], lambda: lab.sim.vm_start(second.vms[0]))
    lab.wait_healthy(lab.fault_at, kernel=True)


def _default_routes(lab):
    """{family: (gateway, ifname)} of dom0's default routes now."""
    _addresses, routes = lab.env.kernel_state()
    return dict((family, (gateway, ifname)) for family, gateway, ifname in routes)


def route_failover(lab):
    """Both networks' firewalls run; the preferred network's firewalls stop: both default routes
    move to the other network (traced with the route they replaced); they start: back again."""
    lab.start_agent()
    lab.act("start the firewalls", lambda: [lab.sim.vm_start(b.vms[0]) for b in lab.config.bindings])
    lab.wait_healthy(lab.fault_at, kernel=True)
    family = 4 if lab.config.route_candidates(4) else 6
    order = [i for i, _gw in lab.config.route_candidates(family)]
    first, second = lab.config.bindings[order[0]], lab.config.bindings[order[1]]
    home = dict((f, (str(gw), lab.env.bridge_of[lab.config.bindings[i].network]))
                for f in (4, 6) for i, gw in lab.config.route_candidates(f)[:1])
    away = dict((f, (str(gw), lab.env.bridge_of[lab.config.bindings[i].network]))
                for f in (4, 6) for i, gw in lab.config.route_candidates(f)[1:2])
    lab.wait_for(lambda: _default_routes(lab) == home, "default routes via %s" % first.network)
    t = lab.act("stop every VM of %s" % first.network,
                lambda: [lab.sim.vm_stop(vm) for vm in first.vms], fault="failover")
    lab.wait_for(lambda: _default_routes(lab) == away, "default routes via %s" % second.network)
    lab.note("failover", round(lab.now() - t, 3))
    t = lab.act("start VM %s again" % first.vms[0], lambda: lab.sim.vm_start(first.vms[0]),
                fault="return")
    lab.wait_for(lambda: _default_routes(lab) == home, "default routes back via %s" % first.network)
    lab.note("return", round(lab.now() - t, 3))
    lab.wait_healthy(t, kernel=True)


def silent_gateway6(lab):
    """The firewalls answer ICMP on their IPv4 gateways only (the IPv6 gateway addresses are
    gone): each gateway is probed on its own, the host goes on over IPv4, and every IPv6 gateway
    is named silent (status, XAPI's sspn-agent-reason); the trace never says it answered."""
    lab.act("start the firewalls", lambda: [lab.sim.vm_start(b.vms[0]) for b in lab.config.bindings])
    gone = [(lab.env.bridge_of[lab.config.bindings[i].network], "%s/64" % gw)
            for i, gw in lab.config.route_candidates(6)]
    lab.act("remove the IPv6 gateway addresses %s from the firewalls" % ", ".join(g for _b, g in gone),
            lambda: lab.env.silence_gateways(gone))
    lab.start_agent()
    lab.wait_status(lambda s: s.get("state") == "HEALTHY" and "gateway6" in s.get("problems", {}),
                    "HEALTHY over IPv4 with gateway6 named silent")
    lab.healthy_time = lab.now()
    for _t, what, result, _ok in timeline.effects(lab.entries()):
        if what.startswith("probe gateway6") and result == "answered":
            lab.fail("the trace says %s answered" % what)


SEVERAL_SCENARIOS = ("carp-failover", "one-firewall-down", "firewall-stops-later", "route-failover",
                     "silent-gateway6")
# --- xen-api as it is (docs/xapi-fidelity.md, "Agent-side behaviours") -------------------------

NFS_LATE = 30.0        # seconds the NAS's nfsd starts after its network (nfs-late)
STALL = 6.0            # seconds a stalled NFS mount holds PBD.plug (slow-plug; SM: 90 s and more)


def _effects_since(lab, since, prefix):
    return [(t, what, result) for t, what, result, _ok in timeline.effects(lab.entries(), since)
            if what.startswith(prefix)]


def self_enable(lab):
    """The host comes up disabled while xapi is still starting (HOST_STILL_BOOTING): the agent
    asks host.enable once, waits for xapi to enable the host itself, asking again at most every
    backoff_cap; xapi-autostart-vms then starts the firewall."""
    booting = 3 * lab.config.timing.backoff_cap
    lab.act("xapi starting: down 0.5 s, then HOST_STILL_BOOTING for %.0f s (the host disabled "
            "by Xapi_fuse until xapi enables it)" % booting,
            lambda: lab.sim.toolstack_restart(0.5, boot_seconds=booting))
    lab.start_agent()
    lab.wait_for(lambda: lab.sim.is_up and lab.sim.state()["host"]["enabled"],
                 "xapi enabling the host itself")
    asked = [ok for _w, method, ok in lab.calls if method == "host.enable"]
    lab.note("host_enable_calls", len(asked))
    if len(asked) > 1 + int(booting / lab.config.timing.backoff_cap) or any(asked):
        lab.fail("host.enable asked %d times (%d accepted) in %.0f s of HOST_STILL_BOOTING"
                 % (len(asked), sum(asked), booting))
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM", "the agent waiting for the firewall")
    lab.start_uplinks()
    lab.wait_healthy(lab.fault_at)


def enable_refused(lab):
    """host.enable refused (HOST_DISABLED_UNTIL_REBOOT) with the firewall halted: DEGRADED with
    XAPI's code and the fix at once; once the cause is gone the agent's next ask (backoff_cap
    later) enables the host and it starts the firewall."""
    lab.act("host disabled until reboot; firewall VM halted",
            lambda: (lab.sim.host_disable(), lab.sim.set_disabled_until_reboot(True)))
    lab.start_agent()
    s = lab.wait_status(lambda s: "HOST_DISABLED_UNTIL_REBOOT" in s.get("reasons", {}).get(
        "host-enable", ""), "DEGRADED naming HOST_DISABLED_UNTIL_REBOOT")
    if s["state"] != "DEGRADED" or "fix:" not in s["reasons"]["host-enable"]:
        lab.fail("refused host.enable: state %s, reason %s" % (s["state"], s["reasons"]))
    t = lab.act("the cause is gone (the host counts as rebooted)",
                lambda: lab.sim.set_disabled_until_reboot(False), fault="cause gone")
    lab.wait_healthy(t)


def evacuated(lab):
    """From HEALTHY a plain `xe host-disable` (left alone: the firewall runs), then the firewall
    halts (evacuated): the host is locked out, the agent enables it and starts the firewall."""
    cold_boot(lab)
    lab.act("xe host-disable (plain, auto_enable left true)", lab.sim.operator_host_disable)
    fw = lab.plan.uplinks[0]
    t = lab.act("VM %s halted (evacuated from the disabled host)" % fw,
                lambda: lab.sim.vm_stop(fw), fault="the evacuation")
    lab.wait_healthy(t)
    if not lab.sim.state()["host"]["enabled"]:
        lab.fail("the host is still disabled")
    if fw not in timeline.vms_started(lab.entries()):
        lab.fail("the agent did not start %s again" % fw)


def autostart_race(lab):
    """xapi-autostart-vms runs while the agent autostarts (VM.start takes 1 s): nothing is started
    twice. A VM.start meeting the other's start waits inside xapi, then answers
    VM_BAD_POWER_STATE ("not needed"); OTHER_OPERATION_IN_PROGRESS, should xapi give up waiting,
    is waited for too (the timeline counts such waits)."""
    lab.sim.set_setting("vm_start_seconds", 1.0)
    lab.start_agent()
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM", "the agent waiting for the firewall")
    lab.start_uplinks()
    lab.wait_status(lambda s: s.get("state") == "SR_PROBING" or s.get("state") == "HEALTHY",
                    "the agent at its autostart")
    racer = threading.Thread(target=lambda: lab.act("xapi-autostart-vms runs",
                                                    lab.sim.run_autostart_vms))
    racer.daemon = True
    racer.start()
    lab.wait_healthy(lab.fault_at)
    racer.join(lab.timeout)
    started = timeline.vms_started(lab.entries()) + timeline.vms_started(lab.entries(), by_lab=True)
    twice = sorted(set(v for v in started if started.count(v) > 1))
    if twice:
        lab.fail("started twice: %s" % ", ".join(twice))
    lab.note("waited_for_other_client", len([1 for _t, _w, r in _effects_since(lab, None, "VM.start")
                                             if "another client" in r]))


def slow_plug(lab):
    """From HEALTHY the SR is lost and its NFS mount stalls (PBD.plug held STALL s, then 73);
    meanwhile the host is disabled and the firewall evacuated: host.enable and the firewall's
    VM.start are not held up behind the plug."""
    cold_boot(lab)
    sr = lab.config.srs[0].uuid
    lab.sim.set_setting("plug_stall_seconds", STALL)
    lab.act("the SR's NFS mount stalls; the PBD is detached",
            lambda: (lab.sim.set_storage_state(sr, "stalled"), lab.sim.pbd_unplug(sr)))
    lab.wait_for(lambda: lab.sim.plugger.in_flight[sr] >= 1, "the agent's PBD.plug under way")
    lab.act("xe host-disable", lab.sim.operator_host_disable)
    fw = lab.plan.uplinks[0]
    t = lab.act("VM %s halted" % fw, lambda: lab.sim.vm_stop(fw), fault="the evacuation")
    lab.wait_for(lambda: lab.sim.state()["vms"][fw]["power_state"] == "Running",
                 "the agent starting %s again" % fw)
    if not lab.sim.plugger.in_flight[sr]:
        lab.fail("the firewall came back only after the stalled plug ended")
    lab.note("firewall_back_during_plug", round(lab.now() - t, 3))
    lab.act("the NFS mount works again", lambda: lab.sim.set_storage_state(sr, ""))
    lab.wait_healthy(t)


def nfs_late(lab):
    """The NAS answers ping at once but its nfsd starts NFS_LATE s later: the agent probes the
    service port and plugs within one probe interval of the nfsd coming up, not before."""
    storage = getattr(lab.env, "storage", None)
    if storage is None:  # the in-memory kernel has no listeners: the TCP probe is not rehearsed
        cold_boot(lab)
        return
    sr = lab.config.srs[0].uuid
    lab.act("the NAS's nfsd is down (its network answers ping)", storage.stop)
    cold_boot_until_probing(lab)
    lab.act("nfsd starts in %.0f s" % NFS_LATE, lambda: storage.start(NFS_LATE))
    timeout, lab.timeout = lab.timeout, lab.timeout + NFS_LATE
    try:
        lab.wait_for(lambda: storage.up, "the nfsd coming up")
    finally:
        lab.timeout = timeout
    up = storage.up_at
    early = lab.sim.plugger.started[sr]
    lab.record("nfsd listening on 2049/111", when=up, source=timeline.SIM)
    if early:
        lab.fail("PBD.plug ran %d times before the nfsd listened" % early)
    if not lab.env.ping(lab.plan.storage[0] if lab.plan.storage else LAN4_IP)["ok"]:
        lab.fail("the NAS did not answer ping while its nfsd was down")
    lab.fault_at, lab.fault_label = up, "nfsd up"
    lab.wait_healthy(up)
    plugged = timeline.first_effect(lab.entries(), r"^PBD\.plug ", up)
    if plugged is not None:
        lab.note("nfsd_up_to_plugged", round(plugged - up, 3))


def cold_boot_until_probing(lab):
    """cold_boot up to the storage probes (the storage service does not answer yet)."""
    lab.start_agent()
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM", "the agent waiting for the firewall")
    lab.start_uplinks()
    lab.wait_entries(lambda entries: any(
        what.startswith("probe sr:") and result == "no answer"
        for _t, what, result, _ok in timeline.effects(entries)), "an unanswered storage probe")


def member_emergency(lab):
    """A pool member whose master is unreachable (xapi in emergency mode): the agent says so in
    its status, keeps the management mirror, does not spin; once the master answers, HEALTHY."""
    lab.act("pool member in emergency mode (HOST_HAS_NO_MANAGEMENT_IP)",
            lambda: lab.sim.set_emergency("no-management-ip"))
    lab.start_agent()
    lab.wait_status(lambda s: "emergency mode" in " ".join(s.get("reasons", {}).values()) or
                    "emergency mode" in " ".join(s.get("blockers", [])),
                    "the status naming emergency mode")
    t = lab.act("the master answers: emergency mode ends", lambda: lab.sim.set_emergency(""),
                fault="master back")
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM", "the agent waiting for the firewall")
    lab.start_uplinks()
    lab.wait_healthy(t)


SCENARIOS = collections.OrderedDict((
    ("cold-boot", cold_boot),
    ("firewall-reboot", firewall_reboot),
    ("toolstack-restart", toolstack_restart),
    ("late-storage", late_storage),
    ("maintenance-lockout", maintenance_lockout),
    ("flush", flush),
    ("carp-failover", carp_failover),
    ("one-firewall-down", one_firewall_down),
    ("firewall-stops-later", firewall_stops_later),
    ("route-failover", route_failover),
    ("silent-gateway6", silent_gateway6),
    ("self-enable", self_enable),
    ("enable-refused", enable_refused),
    ("evacuated", evacuated),
    ("autostart-race", autostart_race),
    ("slow-plug", slow_plug),
    ("nfs-late", nfs_late),
    ("member-emergency", member_emergency),
))


def describe(name):
    """A scenario's docstring, on one line."""
    return " ".join(SCENARIOS[name].__doc__.split())
