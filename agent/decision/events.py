"""Typed events: what a source saw, put on the one queue that the decision thread consumes.

Sources (the XAPI watcher, the netlink watcher, the prober, the XAPI action worker, timers,
signals) only ever construct one of these and call ``post(event)``. Events are hints: the
decision thread folds them into its facts and re-checks the world through the ports.
"""

import attr

from agent.report import text


def redact(value):
    """repr-like text of ``value`` with every credential-named map entry (device_config's
    password, chappassword, ...) replaced by REDACTED (agent/report/text.py); for describe()."""
    if isinstance(value, dict):
        return "{%s}" % ", ".join("%r: %s" % (k, "'%s'" % text.REDACTED if text.is_secret_key(k)
                                               else redact(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value):
        return "{%s}" % ", ".join("%s: %s" % (k, text.REDACTED if text.is_secret_key(k)
                                              else redact(v)) for k, v in value)  # frozen map
    if isinstance(value, (list, tuple)) and not attr.has(type(value)):
        inner = ", ".join(redact(v) for v in value)
        return "[%s]" % inner if isinstance(value, list) else "(%s)" % inner
    if attr.has(type(value)):
        return "%s(%s)" % (type(value).__name__, ", ".join(
            "%s=%s" % (f.name, redact(getattr(value, f.name))) for f in attr.fields(type(value))))
    return value if isinstance(value, str) else repr(value)


def _kind(name):
    """Class decorator: name the event kind (the ``cause`` written to the trace)."""
    def wrap(cls):
        cls.kind = name
        return cls
    return wrap


@attr.s(frozen=True, slots=True)
class Event(object):
    """Base class; ``kind`` names the event in logs and in the trace."""

    kind = "event"

    def describe(self):
        """One short line for the trace and the journal: names and values, no Python reprs."""
        fields = attr.asdict(self, recurse=False)
        parts = ["%s=%s" % (k, show(v)) for k, v in sorted(fields.items())
                 if v not in (None, "", (), {})]
        return " ".join([self.kind] + parts)


# --- how values read in a describe() line ------------------------------------------------------

def xapi_error(error):
    """An XAPI ErrorDescription as one line: the code, then its non-empty parameters."""
    fields = [str(f).strip() for f in error if str(f).strip()]
    if not fields:
        return "no error text"
    return fields[0] + (": " + " ".join(fields[1:]) if len(fields) > 1 else "")


def _error_fields(error):
    """ActionDone.error without XAPI's empty parameters (they only made gaps in messages)."""
    return tuple(str(f) for f in error if str(f).strip())


_ACTIONS = {
    "enable_host": lambda a: "host.enable",
    "start_vm": lambda a: "VM.start %s" % (a.name_label or a.vm_ref),
    "plug_pbd": lambda a: "PBD.plug of SR %s" % (a.sr_uuid or a.pbd_ref),
    "list_autostart": lambda a: "listing the auto-power-on VMs",
    "publish_state": lambda a: "publishing the state to the host's other_config",
    "raise_message": lambda a: "message.create %s" % a.name,
}


def show(value):
    """A value as people read it: views and actions by name and state, sequences joined."""
    kind = getattr(value, "kind", None)
    if kind in _ACTIONS:
        return _ACTIONS[kind](value)
    name = type(value).__name__
    if name == "HostView":
        return "host %s (%s)" % (value.name_label or value.uuid or value.ref,
                                 "enabled" if value.enabled else "disabled")
    if name == "VmView":
        return "VM %s (%s)" % (value.name_label or value.uuid or value.ref, value.power_state)
    if name == "PbdView":
        return "PBD of SR %s (%s)" % (value.sr_uuid, "attached" if value.attached else "detached")
    if name == "KernelView":
        return "%d links, %d addresses, %d default routes" % (
            len(value.links), len(value.addresses), len(value.routes))
    if isinstance(value, Event):
        return value.describe()
    if isinstance(value, dict) or (isinstance(value, (list, tuple)) and value and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value)):
        return redact(value)  # a map (device_config, say): credential-named values redacted
    if isinstance(value, (tuple, list, frozenset, set)):
        return ", ".join(show(v) for v in value if v not in (None, ""))
    return str(value)


# --- XAPI side -------------------------------------------------------------------------------

@_kind("xapi_connected")
@attr.s(frozen=True, slots=True)
class XapiConnected(Event):
    """XAPI answered after (re)connecting; ``world`` is a full re-read (an XapiWorld)."""

    world = attr.ib()

    def describe(self):
        w = self.world
        bridges = ",".join(b.bridge or "?" for b in w.bindings)
        running = ",".join(v.name_label for v in w.vms if v.is_running) or "none"
        text = "xapi_connected host_enabled=%s bridges=%s running=%s" % (w.host.enabled, bridges, running)
        return text + (" missing=%s" % ";".join(w.missing) if w.missing else "")


@_kind("xapi_lost")
@attr.s(frozen=True, slots=True)
class XapiLost(Event):
    """The XAPI connection failed (refused, missing socket, timeout, SESSION_INVALID loop)."""

    error = attr.ib(default="")

    def describe(self):
        return "xapi_lost: %s" % (self.error or "no error text")


@_kind("host_changed")
@attr.s(frozen=True, slots=True)
class HostChanged(Event):
    """This host's record changed: ``host`` is a HostView."""

    host = attr.ib()

    def describe(self):
        return "host_changed: %s" % show(self.host)


@_kind("vm_changed")
@attr.s(frozen=True, slots=True)
class VmChanged(Event):
    """A watched VM changed (or was deleted when ``vm.power_state == 'Deleted'``): ``vm`` is a VmView."""

    vm = attr.ib()

    def describe(self):
        return "vm_changed: %s" % show(self.vm)


@_kind("pbd_changed")
@attr.s(frozen=True, slots=True)
class PbdChanged(Event):
    """A watched PBD of this host changed: ``pbd`` is a PbdView."""

    pbd = attr.ib()

    def describe(self):
        return "pbd_changed: %s" % show(self.pbd)


@_kind("action_done")
@attr.s(frozen=True, slots=True)
class ActionDone(Event):
    """An XAPI action requested by the machine finished.

    ``action`` is the request (an action from agent.decision.world), ``ok`` whether it succeeded,
    ``error`` the XAPI ErrorDescription list (or a transport error text as a one-element list)
    when it did not, ``value`` what the call returned (e.g. the VmViews of ListAutostart).
    """

    action = attr.ib()
    ok = attr.ib()
    error = attr.ib(default=(), converter=_error_fields)
    value = attr.ib(default=None)

    def describe(self):
        outcome = "ok" if self.ok else "failed: %s" % xapi_error(self.error)
        return "action_done: %s %s" % (show(self.action), outcome)


# --- kernel side -----------------------------------------------------------------------------

@_kind("kernel_resynced")
@attr.s(frozen=True, slots=True)
class KernelResynced(Event):
    """A full read of links, addresses and default routes (after subscribing or an overflow)."""

    view = attr.ib()  # a KernelView


@_kind("kernel_notified")
@attr.s(frozen=True, slots=True)
class KernelNotified(Event):
    """The netlink watcher drained ``count`` datagrams of notifications: the kernel changed.

    A hint only, carrying nothing: the decision thread re-reads the kernel when it takes the
    hint (core.Agent), so it always decides on a read made after its own last change, and a
    burst that arrives while it works costs one read, not one per batch.
    """

    count = attr.ib(default=1)

    def describe(self):
        return "kernel_notified (%d datagrams)" % self.count


@_kind("kernel_changed")
@attr.s(frozen=True, slots=True)
class KernelChanged(Event):
    """A re-read of the kernel after notifications: what the decision thread makes of a
    KernelNotified (core.Agent; FSM tests also post it directly with a chosen view).

    ``view`` is the full KernelView (the truth the facts take over: an add and a delete
    inside one batch cancel out in any diff, yet the agent may believe the first); ``changes``
    the typed deltas against the previous picture (LinkAppeared, AddressRemoved, ...), for
    the trace.
    """

    view = attr.ib()
    changes = attr.ib(default=(), converter=tuple)

    def describe(self):
        if not self.changes:
            return "kernel_changed (re-read, no visible delta)"
        text = "; ".join(c.describe() for c in self.changes[:6])
        more = len(self.changes) - 6
        return "kernel_changed: " + text + (" (+%d more)" % more if more > 0 else "")

    def merge(self, newer):
        """The newer view with both sets of changes (bounded): coalescing a burst."""
        return KernelChanged(newer.view, (self.changes + newer.changes)[-64:])


@_kind("neighbour_changed")
@attr.s(frozen=True, slots=True)
class NeighbourChanged(Event):
    """The kernel's neighbour entry for ``address`` on interface ``index`` became valid (it
    has a link-layer address: reachable, stale, ...) or stopped being so (incomplete, failed,
    deleted). A hint from the netlink watcher: when a gateway's entry becomes valid, the
    gateway answers ARP/ND, so the decision thread probes at once (core.Agent)."""

    address = attr.ib()
    index = attr.ib(default=0)
    valid = attr.ib(default=True)


@_kind("carrier_up")
@attr.s(frozen=True, slots=True)
class CarrierUp(Event):
    """Interface ``ifname`` got carrier (the firewall's end of its VIF came up, so the bridge
    forwards): a hint from the netlink watcher that a gateway behind it may now resolve."""

    ifname = attr.ib()
    index = attr.ib(default=0)


@_kind("link_appeared")
@attr.s(frozen=True, slots=True)
class LinkAppeared(Event):
    """A network interface (e.g. the ``xapiN`` bridge) now exists."""

    ifname = attr.ib()


@_kind("link_gone")
@attr.s(frozen=True, slots=True)
class LinkGone(Event):
    """A network interface was removed."""

    ifname = attr.ib()


@_kind("address_added")
@attr.s(frozen=True, slots=True)
class AddressAdded(Event):
    """An address appeared on an interface; ``address`` is ``"192.0.2.2/24"`` style text."""

    ifname = attr.ib()
    address = attr.ib()


@_kind("address_removed")
@attr.s(frozen=True, slots=True)
class AddressRemoved(Event):
    """An address disappeared from an interface."""

    ifname = attr.ib()
    address = attr.ib()


@_kind("route_added")
@attr.s(frozen=True, slots=True)
class RouteAdded(Event):
    """A default route appeared (main table); ``family`` is 4 or 6."""

    family = attr.ib()
    gateway = attr.ib()
    ifname = attr.ib()


@_kind("route_removed")
@attr.s(frozen=True, slots=True)
class RouteRemoved(Event):
    """A default route disappeared (main table)."""

    family = attr.ib()
    gateway = attr.ib()
    ifname = attr.ib()


# --- probes, timers, control -----------------------------------------------------------------

@_kind("probe_done")
@attr.s(frozen=True, slots=True)
class ProbeDone(Event):
    """One round of probes finished: ``key`` says what it was for, ``results`` maps target -> bool;
    ``refused`` names the silent TCP targets whose host answered with a reset (it is up, the
    service on that port is not: an nfsd still starting)."""

    key = attr.ib()
    results = attr.ib(converter=lambda r: tuple(sorted(dict(r).items())))
    refused = attr.ib(default=(), converter=lambda r: tuple(sorted(r)))

    def answered(self):
        """The targets that answered."""
        return [t for t, ok in self.results if ok]

    def refusing(self):
        """True when nothing answered and every target was refused: storage's host is up, its
        service not yet (agent/decision/schedule.py probes it faster for a while)."""
        return bool(self.results) and set(self.refused) == set(t for t, _ok in self.results)

    def describe(self):
        said = ", ".join("%s %s" % (t, "answered" if ok else "refused" if t in self.refused
                                    else "silent") for t, ok in self.results)
        return "probe_done %s: %s" % (self.key, said or "no targets")


@_kind("timer_fired")
@attr.s(frozen=True, slots=True)
class TimerFired(Event):
    """A deadline armed by the machine has passed; ``name`` is the timer's name."""

    name = attr.ib()


@_kind("reload_requested")
@attr.s(frozen=True, slots=True)
class ReloadRequested(Event):
    """SIGHUP: re-read the configuration file."""


@_kind("stop_requested")
@attr.s(frozen=True, slots=True)
class StopRequested(Event):
    """SIGTERM/SIGINT: stop deciding; leave networking exactly as it is."""

    signal = attr.ib(default="")
