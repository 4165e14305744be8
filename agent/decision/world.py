"""Read-only views of the world that events carry, and the XAPI actions the machine asks for.

Views are plain frozen values built by the adapters (from XAPI records or netlink dumps) and
by the in-memory fakes; the machine never sees an XAPI record or a netlink message itself.
"""

import attr


def _frozen_map(value):
    return tuple(sorted(dict(value or {}).items()))


# --- XAPI views ------------------------------------------------------------------------------

@attr.s(frozen=True, slots=True)
class HostView(object):
    """This host: ``enabled`` from XAPI; ``auto_enable`` False when disabled with auto_enable=false."""

    ref = attr.ib()
    uuid = attr.ib(default="")
    name_label = attr.ib(default="")
    enabled = attr.ib(default=True)
    auto_enable = attr.ib(default=True)
    other_config = attr.ib(default=(), converter=_frozen_map)
    is_master = attr.ib(default=True)

    @property
    def maintenance_mode(self):
        """XenCenter/xsconsole mark a deliberate maintenance with other_config:MAINTENANCE_MODE=true."""
        return dict(self.other_config).get("MAINTENANCE_MODE", "").lower() == "true"

    @property
    def deliberately_disabled(self):
        """Disabled on purpose: persisted auto_enable=false, or MAINTENANCE_MODE=true."""
        return (not self.enabled) and (not self.auto_enable or self.maintenance_mode)


@attr.s(frozen=True, slots=True)
class VmView(object):
    """A VM the agent watches (an uplink VM) or may start (an auto-power-on VM)."""

    ref = attr.ib()
    name_label = attr.ib(default="")
    power_state = attr.ib(default="Halted")  # Halted | Running | Paused | Suspended | Deleted
    uuid = attr.ib(default="")
    auto_poweron = attr.ib(default=False)
    order = attr.ib(default=0)
    start_delay = attr.ib(default=0)
    sr_uuids = attr.ib(default=(), converter=tuple)  # SRs holding its disks (for holding back starts)
    network_refs = attr.ib(default=(), converter=tuple)  # networks its VIFs attach to

    @property
    def is_running(self):
        return self.power_state == "Running"


@attr.s(frozen=True, slots=True)
class PbdView(object):
    """This host's PBD of a configured SR."""

    ref = attr.ib()
    sr_uuid = attr.ib()
    attached = attr.ib(default=False)
    device_config = attr.ib(default=(), converter=_frozen_map)
    sr_type = attr.ib(default="nfs")
    shared = attr.ib(default=True)
    master_attached = attr.ib(default=None)  # pool member: is the master's PBD of this SR attached?


@attr.s(frozen=True, slots=True)
class BindingView(object):
    """A binding resolved through XAPI: its network's bridge and the refs of its uplink VMs."""

    network = attr.ib()          # label from the config
    bridge = attr.ib(default="")  # e.g. "xapi1"; "" when unresolved
    vm_refs = attr.ib(default=(), converter=tuple)


@attr.s(frozen=True, slots=True)
class XapiWorld(object):
    """Everything the machine needs from XAPI, re-read in full after every (re)connect."""

    host = attr.ib()                                        # HostView
    bindings = attr.ib(default=(), converter=tuple)         # BindingView per [[binding]], same order
    vms = attr.ib(default=(), converter=tuple)              # VmView of every uplink VM
    pbds = attr.ib(default=(), converter=tuple)             # PbdView of this host, configured SRs
    missing = attr.ib(default=(), converter=tuple)          # "network 'lan'", "vm 'fw'", "sr <uuid>"
    pool_auto_poweron = attr.ib(default=False)


# --- kernel view -----------------------------------------------------------------------------

@attr.s(frozen=True, slots=True)
class KernelView(object):
    """Links, addresses ("ifname", "addr/prefix") and default routes (family, gateway, ifname).

    ``read_at``: time.monotonic() when the read began, where the reader knows it (the netlink
    reader does); a view begun before the agent's own change cannot show that change yet.
    """

    links = attr.ib(default=frozenset(), converter=frozenset)
    addresses = attr.ib(default=frozenset(), converter=frozenset)
    routes = attr.ib(default=frozenset(), converter=frozenset)
    read_at = attr.ib(default=None, eq=False, repr=False)


def diff_views(before, after):
    """Typed delta events from one KernelView to the next.

    Order matters to the machine: a vanished link first (uplink_lost is the earliest drift),
    then removed addresses (the kernel drops a v4 default route with its address, so the
    address is the cause), then removed routes, then what appeared.
    """
    from agent.decision import events as ev
    out = [ev.LinkGone(n) for n in sorted(before.links - after.links)]
    out += [ev.AddressRemoved(i, a) for i, a in sorted(before.addresses - after.addresses)]
    out += [ev.RouteRemoved(f, g, i) for f, g, i in sorted(before.routes - after.routes)]
    out += [ev.LinkAppeared(n) for n in sorted(after.links - before.links)]
    out += [ev.AddressAdded(i, a) for i, a in sorted(after.addresses - before.addresses)]
    out += [ev.RouteAdded(f, g, i) for f, g, i in sorted(after.routes - before.routes)]
    return out


# --- actions the machine asks the XAPI worker to carry out -----------------------------------

@attr.s(frozen=True, slots=True)
class EnableHost(object):
    """host.enable on this host."""

    host_ref = attr.ib()
    kind = "enable_host"


@attr.s(frozen=True, slots=True)
class StartVm(object):
    """VM.start(vm, false, false); XAPI itself waits the VM's start_delay before returning."""

    vm_ref = attr.ib()
    name_label = attr.ib(default="")
    kind = "start_vm"


@attr.s(frozen=True, slots=True)
class PlugPbd(object):
    """PBD.plug on this host's PBD of an SR."""

    pbd_ref = attr.ib()
    sr_uuid = attr.ib(default="")
    kind = "plug_pbd"


@attr.s(frozen=True, slots=True)
class ListAutostart(object):
    """Read the halted auto-power-on VMs (value: tuple of VmView) without subscribing to all VMs."""

    kind = "list_autostart"


@attr.s(frozen=True, slots=True)
class PublishState(object):
    """Write the agent's state into this host's other_config (sspn-agent-state, -since, -reason)."""

    host_ref = attr.ib()
    values = attr.ib(converter=_frozen_map)
    kind = "publish_state"


@attr.s(frozen=True, slots=True)
class RaiseMessage(object):
    """message.create on this host, so Xen Orchestra / XCP-ng Center show an alert."""

    name = attr.ib()
    body = attr.ib()
    priority = attr.ib(default=3)
    host_uuid = attr.ib(default="")
    kind = "raise_message"
