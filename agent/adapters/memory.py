"""In-memory adapters: a kernel model, a tiny XAPI, a prober, a manual clock, a recording report.

They serve the FSM unit and property tests and the lab when root or ``ip netns`` is missing
(clearly marked as such). They model the behaviour the agent must cope with -- the kernel
silently dropping a v4 default route with its address, a bridge existing only while the
uplink VM runs, host.enable refusing while XAPI boots -- and they never stand in for the
real XAPI or the real kernel in an integration test.
"""

import ipaddress

import attr

from agent.decision import events as ev
from agent.ports import UNSENT, Clock, Net, NetError, Prober, Report, Xapi
from agent.decision.world import BindingView, HostView, KernelView, PbdView, VmView, XapiWorld, diff_views


class ManualClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start=1000.0, wall_offset=1.7e9):
        self.now = float(start)
        self.offset = wall_offset

    def monotonic(self):
        return self.now

    def wall(self):
        return self.offset + self.now

    def advance(self, seconds):
        """Move time forward."""
        self.now += float(seconds)


class MemoryNet(Net):
    """The kernel's links, addresses and default routes, posting watcher-style delta events."""

    def __init__(self, post=None):
        self.post = post or (lambda e: None)
        self.links = set()
        self.addresses = set()   # (ifname, "addr/prefix")
        self.routes = set()      # (family, gateway text, ifname)
        self.calls = []          # what the agent asked for
        self.fail_next = 0       # make the next N agent requests fail (EPERM-like)

    # --- the port ----------------------------------------------------------------------------

    def link_exists(self, ifname):
        return ifname in self.links

    def ensure_address(self, ifname, interface):
        iface = ipaddress.ip_interface(interface)
        self.calls.append(("ensure_address", ifname, str(iface)))
        self._maybe_fail("add %s on %s" % (iface, ifname))
        if ifname not in self.links:
            raise NetError("cannot add %s: interface %s does not exist" % (iface, ifname), 19)
        entry = (ifname, str(iface))
        if entry in self.addresses:
            return "present"
        self._change(lambda: self.addresses.add(entry))
        return "added"

    def ensure_default_route(self, gateway, ifname):
        gw = ipaddress.ip_address(gateway)
        self.calls.append(("ensure_default_route", str(gw), ifname))
        self._maybe_fail("default via %s dev %s" % (gw, ifname))
        if ifname not in self.links:
            raise NetError("cannot route via %s: interface %s does not exist" % (gw, ifname), 19)
        if not (gw.version == 6 and gw.is_link_local) and not self._on_link(gw, ifname):
            raise NetError("gateway %s is not on-link on %s (Network is unreachable)" % (gw, ifname), 101)
        entry = (gw.version, str(gw), ifname)
        if entry in self.routes:
            return "present"
        mine = [r for r in self.routes if r[0] == gw.version]

        def replace():
            for r in mine:
                self.routes.discard(r)
            self.routes.add(entry)
        self._change(replace)
        return "replaced"

    def read_view(self):
        return KernelView(self.links, self.addresses, self.routes)

    # --- the world (tests, the lab) ------------------------------------------------------------

    def add_link(self, ifname):
        """An interface appears (a bridge created by XAPI)."""
        self._change(lambda: self.links.add(ifname))

    def remove_link(self, ifname):
        """An interface disappears with its addresses and routes."""
        def remove():
            self.links.discard(ifname)
            self.addresses = set(a for a in self.addresses if a[0] != ifname)
            self.routes = set(r for r in self.routes if r[2] != ifname)
        self._change(remove)

    def add_address(self, ifname, text):
        """Someone else adds an address (a foreign one, for example)."""
        self._change(lambda: self.addresses.add((ifname, str(ipaddress.ip_interface(text)))))

    def remove_address(self, ifname, text):
        """Someone else removes an address; a v4 default route through it goes silently."""
        iface = ipaddress.ip_interface(text)

        def remove():
            self.addresses.discard((ifname, str(iface)))
            if iface.version == 4:
                self.routes = set(r for r in self.routes
                                  if not (r[2] == ifname and r[0] == 4 and not self._on_link(
                                      ipaddress.ip_address(r[1]), ifname)))
        self._change(remove)

    def remove_route(self, family, gateway, ifname):
        """Someone else deletes a default route."""
        self._change(lambda: self.routes.discard((family, str(gateway), ifname)))

    def flush(self, ifname):
        """networkd-style: every address of the interface goes (and routes through it)."""
        for _i, text in sorted(a for a in self.addresses if a[0] == ifname):
            self.remove_address(ifname, text)

    def _on_link(self, gw, ifname):
        return any(i == ifname and gw in ipaddress.ip_interface(t).network
                   for i, t in self.addresses if ipaddress.ip_interface(t).version == gw.version)

    def _maybe_fail(self, what):
        if self.fail_next > 0:
            self.fail_next -= 1
            raise NetError("%s: Operation not permitted" % what, 1)

    def _change(self, mutate):
        """Apply a change and post what the real watcher posts: a hint (the agent re-reads)."""
        before = self.read_view()
        mutate()
        if diff_views(before, self.read_view()):
            self.post(ev.KernelNotified())


@attr.s
class MemVm(object):
    """A VM of the in-memory XAPI."""

    name = attr.ib()
    power_state = attr.ib(default="Halted")
    uplink_bridge = attr.ib(default="")   # bridge its VIF plugs into ("" if none)
    auto_poweron = attr.ib(default=False)
    order = attr.ib(default=0)
    sr_uuids = attr.ib(default=())

    @property
    def ref(self):
        return "OpaqueRef:vm-" + self.name


class MemoryXapi(Xapi):
    """A tiny XAPI: one host, VMs, PBDs; answers actions with ActionDone on the queue."""

    def __init__(self, config, net, post=None):
        self.config = config
        self.net = net
        self.post = post or (lambda e: None)
        self.up = True
        self.booting = False           # host.enable answers HOST_STILL_BOOTING
        self.host = HostView("OpaqueRef:host", uuid="host-uuid", name_label="xcp-mem")
        self.pool_auto_poweron = True
        self.vms = {}
        self.networks = {}             # label -> bridge
        self.pbd_attached = {}         # sr uuid -> bool
        self.storage_up = set()        # sr uuids whose target answers
        self.plug_failures = {}        # sr uuid -> n
        self.calls = []                # (action, host enabled, deliberately disabled, uplinks running)
        self.reply_first = False       # a call's reply arrives before the events it caused (as
                                       # with xapi: event.from and netlink come later)
        self.started = False
        self.enable_refusal = None     # host.enable fails with this ErrorDescription (a list)
        self.user_disabled = False     # a plain host.disable in this xapi process (in memory only)
        self.starting_elsewhere = set()  # VM names another client is starting right now
        self.lost_error = "connection refused"  # what XapiLost says while down
        self.unplug_after_plug = set()  # sr uuids unplugged right after their next plug
        self.reply_lost_after_plug = set()  # sr uuids whose next plug attaches, but whose reply
                                            # is lost (the connection cut by a toolstack restart)

    # --- world setup -------------------------------------------------------------------------

    def add_vm(self, name, bridge="", **kw):
        """Declare a VM; ``bridge`` is the internal network bridge its VIF uses."""
        self.vms[name] = MemVm(name, uplink_bridge=bridge, **kw)

    def world(self):
        """The XapiWorld the real adapter would read."""
        bindings, vms, missing = [], [], []
        for b in self.config.bindings:
            bridge = self.networks.get(b.network, "")
            if not bridge:
                missing.append("network '%s'" % b.network)
            refs = []
            for name in b.vms:
                vm = self.vms.get(name)
                if vm is None:
                    missing.append("vm '%s'" % name)
                    continue
                refs.append(vm.ref)
                vms.append(self.vm_view(vm))
            bindings.append(BindingView(b.network, bridge, refs))
        pbds = [self.pbd_view(sr.uuid) for sr in self.config.srs if sr.uuid in self.pbd_attached]
        missing += ["sr %s" % sr.uuid for sr in self.config.srs if sr.uuid not in self.pbd_attached]
        return XapiWorld(self.host, bindings, vms, pbds, missing, self.pool_auto_poweron)

    def vm_view(self, vm):
        return VmView(vm.ref, vm.name, vm.power_state, auto_poweron=vm.auto_poweron,
                      order=vm.order, sr_uuids=vm.sr_uuids)

    def pbd_view(self, uuid):
        return PbdView("OpaqueRef:pbd-" + uuid, uuid, attached=self.pbd_attached[uuid],
                       device_config={"server": "198.51.100.10"})

    # --- the port ----------------------------------------------------------------------------

    def start(self, post):
        self.post = post
        self.started = True
        self.connect()

    def connect(self):
        """Post the resync a (re)connect produces, or XapiLost when down."""
        if self.up:
            self.post(ev.XapiConnected(self.world()))
        else:
            self.post(ev.XapiLost(self.lost_error))

    def request(self, action):
        self.calls.append((action, self.host.enabled, self.host.deliberately_disabled,
                           tuple(sorted(vm.name for vm in self.vms.values()
                                        if vm.uplink_bridge and vm.power_state == "Running"))))
        if not self.up:
            self.post(ev.ActionDone(action, False, ["%s: connection refused" % UNSENT]))
            return
        handler = getattr(self, "_do_" + action.kind)
        post, net_post, caused = self.post, self.net.post, []
        if self.reply_first:
            self.post = self.net.post = caused.append
        try:
            ok, error, value = handler(action)
        finally:
            self.post, self.net.post = post, net_post
        self.post(ev.ActionDone(action, ok, error, value))
        for event in caused:
            self.post(event)

    def stop(self):
        self.started = False

    def _do_enable_host(self, action):
        if self.booting:
            return False, ["HOST_STILL_BOOTING"], None
        if self.enable_refusal:
            return False, list(self.enable_refusal), None
        self.set_host(enabled=True)
        return True, (), ""

    def _do_start_vm(self, action):
        vm = next((v for v in self.vms.values() if v.ref == action.vm_ref), None)
        if vm is None:
            return False, ["HANDLE_INVALID", "VM", action.vm_ref], None
        if vm.name in self.starting_elsewhere:
            return False, ["OTHER_OPERATION_IN_PROGRESS", "VM", vm.ref, "start",
                           "OpaqueRef:task-elsewhere"], None
        if vm.power_state == "Running":
            return False, ["VM_BAD_POWER_STATE", vm.ref, "halted", "running"], None
        if not self.host.enabled:
            return False, ["NO_HOSTS_AVAILABLE"], None
        self.set_power(vm.name, "Running")
        return True, (), ""

    def _do_plug_pbd(self, action):
        uuid = action.sr_uuid
        if self.pbd_attached.get(uuid):
            return True, (), ""
        if self.plug_failures.get(uuid, 0) > 0 or uuid not in self.storage_up:
            self.plug_failures[uuid] = max(0, self.plug_failures.get(uuid, 0) - 1)
            return False, ["SR_BACKEND_FAILURE_108", "", "Unable to detect an NFS service on this target.", ""], None
        self.set_pbd(uuid, True)
        if uuid in self.unplug_after_plug:   # someone unplugs it before the reply is sent
            self.unplug_after_plug.discard(uuid)
            self.set_pbd(uuid, False)
        if uuid in self.reply_lost_after_plug:
            self.reply_lost_after_plug.discard(uuid)
            return False, ["connection closed by xapi"], None
        return True, (), self.pbd_attached[uuid]

    def _do_list_autostart(self, action):
        return True, (), tuple(self.vm_view(v) for v in self.vms.values()
                               if v.auto_poweron and v.power_state == "Halted")

    def _do_publish_state(self, action):
        return True, (), ""

    def _do_raise_message(self, action):
        return True, (), "OpaqueRef:message"

    # --- world changes (tests, the lab) -------------------------------------------------------

    def set_power(self, name, state):
        """A VM changes power state; its bridge exists exactly while it runs."""
        vm = self.vms[name]
        vm.power_state = state
        if vm.uplink_bridge:
            others = [v for v in self.vms.values()
                      if v.uplink_bridge == vm.uplink_bridge and v.power_state == "Running"]
            if state == "Running" and vm.uplink_bridge not in self.net.links:
                self.net.add_link(vm.uplink_bridge)
            elif state != "Running" and not others:
                self.net.remove_link(vm.uplink_bridge)
        watched = any(name in b.vms for b in self.config.bindings)
        if self.up and watched:   # the real adapter subscribes to the uplink VMs only
            self.post(ev.VmChanged(self.vm_view(vm)))

    def set_host(self, **changes):
        """Change the host record (enabled, auto_enable, other_config)."""
        self.host = attr.evolve(self.host, **changes)
        if self.up:
            self.post(ev.HostChanged(self.host))

    def set_pbd(self, uuid, attached):
        """Attach or detach this host's PBD of an SR."""
        self.pbd_attached[uuid] = attached
        if self.up:
            self.post(ev.PbdChanged(self.pbd_view(uuid)))

    def finish_boot(self):
        """xapi's start-up completes: it enables the host itself unless told not to (xen-api
        xapi_host_helpers.ml consider_enabling_host), and HOST_STILL_BOOTING ends."""
        self.booting = False
        if not self.host.enabled and self.host.auto_enable and not self.user_disabled \
                and not self.enable_refusal:
            self.set_host(enabled=True)

    def finish_start_elsewhere(self, name):
        """Another client's VM.start (xapi-autostart-vms) of ``name`` completes."""
        self.starting_elsewhere.discard(name)
        self.set_power(name, "Running")

    def restart(self):
        """A toolstack restart: the connection drops, then a full resync."""
        self.post(ev.XapiLost("connection refused"))
        self.connect()


class MemoryProber(Prober):
    """Answers from a set of reachable hosts, at once; a ``host:port`` target answers when its
    host is reachable and the port is not in ``services_down`` (a NAS whose nfsd is not up)."""

    def __init__(self, post=None):
        self.post = post or (lambda e: None)
        self.reachable = set()
        self.services_down = set()   # "host:port" texts that refuse while the host answers
        self.rounds = []

    def answers(self, target):
        """True when ``target`` would answer now."""
        from agent.decision.sm_targets import split_target
        host, port = split_target(target)
        if port is not None and target in self.services_down:
            return False
        return target in self.reachable or host in self.reachable

    def probe(self, key, targets, timeout):
        self.rounds.append((key, tuple(targets)))
        from agent.decision.sm_targets import split_target
        refused = [t for t in targets if t in self.services_down
                   and (t in self.reachable or split_target(t)[0] in self.reachable)]
        self.post(ev.ProbeDone(key, dict((t, self.answers(t)) for t in targets), refused))


class MemoryReport(Report):
    """Keeps every transition, effect and status snapshot."""

    def __init__(self):
        self.transitions = []
        self.effects = []
        self.statuses = []

    def transition(self, record):
        self.transitions.append(record)

    def effect(self, record):
        self.effects.append(record)

    def status(self, snapshot):
        self.statuses.append(snapshot)


