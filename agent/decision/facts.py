"""Facts: the decision thread's picture of the world, folded from events, and the predicates on it.

Owned by the decision thread alone, so plain mutable attributes suffice. Events are hints:
every state step verifies through the ports before it relies on a fact for an effect.
"""

import functools
import ipaddress

import attr

from agent.decision.world import KernelView


class Facts(object):
    """What the agent has observed; ``apply`` folds one event in."""

    def __init__(self):
        self.world = None          # XapiWorld of the last (re)connect
        self.xapi_up = False
        self.xapi_error = ""
        self.host = None           # HostView
        self.vms = {}              # ref -> VmView (uplink VMs)
        self.pbds = {}             # sr uuid -> PbdView (this host)
        self.bridges = ()          # bridge name per binding ("" when unresolved)
        self.missing = ()          # unresolved labels
        self.links = set()
        self.addresses = set()     # (ifname, "addr/prefix")
        self.routes = set()        # (family, gateway text, ifname)
        self.kernel_seen = False
        self._own_writes = {}   # ("address", (ifname, text)) / ("route", route) -> monotonic time
        self.pending_probes = set()
        self.pending_actions = set()
        self.probe_results = {}    # key -> ProbeDone
        self.gateway_verdicts = {}  # (family, gateway text, bridge) -> answered/failing/silent
        self.routes_held = {}      # family -> the default route the agent last ensured
        self.host_fixed = False    # this run called host.enable successfully
        self.host_enable_sent = False  # this run asked for host.enable (persisted before the call)
        self.xapi_starting = False  # host.enable said HOST_STILL_BOOTING (see MAINTENANCE)
        self.enable_refused = ""   # why XAPI refuses host.enable (MAINTENANCE.REFUSALS), until enabled
        self.vm_waits = {}         # vm ref -> why its VM.start waits on another client's
        self.autostart_done = False
        self.uplinks_seen = False  # every binding's bridge has existed in this boot (see WAITING_VM)
        self.autostart_queue = None  # list of groups (lists of VmView) while autostart runs

    # --- folding events ---------------------------------------------------------------------

    def apply(self, event):
        """Fold one event into the facts (no I/O, no decisions)."""
        handler = getattr(self, "_on_" + event.kind, None)
        if handler is not None:
            handler(event)

    def _on_xapi_connected(self, e):
        world = e.world
        self.world = world
        self.xapi_up = True
        self.xapi_error = ""
        self.host = world.host
        if world.host.enabled:
            self.enable_refused = ""
        self.vms = dict((vm.ref, vm) for vm in world.vms)
        self.pbds = dict((p.sr_uuid, p) for p in world.pbds)
        self.bridges = tuple(b.bridge for b in world.bindings)
        self.missing = tuple(world.missing)

    def _on_xapi_lost(self, e):
        self.xapi_up = False
        self.xapi_error = e.error

    def _on_host_changed(self, e):
        self.host = e.host
        if e.host.enabled:
            self.enable_refused = ""

    def _on_vm_changed(self, e):
        if e.vm.power_state == "Deleted":
            self.vms.pop(e.vm.ref, None)
        else:
            self.vms[e.vm.ref] = e.vm

    def _on_pbd_changed(self, e):
        self.pbds[e.pbd.sr_uuid] = e.pbd

    def _on_kernel_resynced(self, e):
        self.set_kernel(e.view)

    def _on_kernel_changed(self, e):
        self.set_kernel(e.view)

    def _on_link_appeared(self, e):
        self.links.add(e.ifname)

    def _on_link_gone(self, e):
        self.links.discard(e.ifname)
        self.addresses = set(a for a in self.addresses if a[0] != e.ifname)
        self.routes = set(r for r in self.routes if r[2] != e.ifname)

    def _on_address_added(self, e):
        self.addresses.add((e.ifname, e.address))

    def _on_address_removed(self, e):
        self.addresses.discard((e.ifname, e.address))

    def _on_route_added(self, e):
        self.routes.add((e.family, e.gateway, e.ifname))

    def _on_route_removed(self, e):
        self.routes.discard((e.family, e.gateway, e.ifname))

    def _on_probe_done(self, e):
        self.pending_probes.discard(e.key)
        self.probe_results[e.key] = e

    def _on_action_done(self, e):
        self.pending_actions.discard(e.action)
        if e.ok and e.action.kind == "enable_host":
            self.host_fixed = True  # whichever state sees it: WAITING_VM then starts the uplink VM
            if self.host is not None:
                # host.enable returned: enabled now, before the HostChanged event arrives
                # (without this MAINTENANCE asked again on every reply: 44 calls for 1, agent lab)
                self.host = attr.evolve(self.host, enabled=True)
        if e.ok and e.action.kind == "start_vm" and e.action.vm_ref in self.vms:
            # VM.start returned: running now, before the VmChanged event arrives (without this
            # WAITING_VM started the firewall again: VM_BAD_POWER_STATE, tests/faults/test_sigkill.py)
            self.vms[e.action.vm_ref] = attr.evolve(self.vms[e.action.vm_ref], power_state="Running")

    def set_kernel(self, view):
        """Replace the kernel picture with a full read (a KernelView).

        Except for the agent's own changes made after the read began (``view.read_at``): the
        watcher reads, the agent adds an address, then handles the older read -- without this
        its own address looked lost (28 needless address_lost/route_lost transitions in 100
        firewall reboots, tests/faults/test_kernel_faults.py). The change's own netlink
        notification brings a newer read, which is authoritative again.
        """
        self.links = set(view.links)
        self.addresses = set(view.addresses)
        self.routes = set(view.routes)
        self.kernel_seen = True
        began = view.read_at
        for fact, written in list(self._own_writes.items()):
            if began is None or written <= began:
                del self._own_writes[fact]   # the read saw the kernel after the change
            elif fact[0] == "address":
                self.addresses.add(fact[1])
            else:
                self.routes.add(fact[1])

    def wrote_address(self, ifname, text, at):
        """The agent ensured address ``text`` on ``ifname`` (read back) at monotonic time ``at``."""
        self.addresses.add((ifname, text))
        self._own_writes[("address", (ifname, text))] = at

    def wrote_route(self, route, at):
        """The agent ensured default route ``route`` (family, gateway, ifname) at time ``at``."""
        self.routes.add(route)
        self._own_writes[("route", route)] = at

    def kernel_view(self):
        """The kernel picture as a KernelView."""
        return KernelView(self.links, self.addresses, self.routes)

    # --- derived facts ------------------------------------------------------------------------

    def uplink_running(self):
        """Names of the uplink VMs XAPI reports Running."""
        return sorted(vm.name_label for vm in self.vms.values() if vm.is_running)


@functools.lru_cache(maxsize=256)
def interface_text(interface):
    """Normalised "addr/prefix" text, as the kernel view stores it."""
    return str(ipaddress.ip_interface(interface))


@functools.lru_cache(maxsize=256)
def mirror_of(interface):
    """The /32 or /128 mirror of a binding address."""
    iface = ipaddress.ip_interface(interface)
    return ipaddress.ip_interface("%s/%d" % (iface.ip, iface.max_prefixlen))
