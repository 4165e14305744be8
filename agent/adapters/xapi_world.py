"""Read the XAPI world the config names, and turn event.from records into view-change events.

``read_world`` is the full resync run after every (re)connect and by ``agent check``: it
resolves this host, the pool, each binding's network and uplink VMs by name_label, each
configured SR and this host's PBD of it, then takes one empty-token ``event.from`` over exactly
those objects. That dump is the snapshot the views are built from *and* the token the watcher
continues from, so no change between reading and subscribing is lost (docs/xapi-behaviour.md §3).

``Watched.translate`` turns one event record into HostChanged / VmChanged / PbdChanged, or says
that a resync is needed (a watched object deleted, a VM or network renamed away from its label,
the pool master changed). Subscriptions are object-scoped (``vm/<ref>``), never ``*``, so
unrelated VMs cost nothing (docs/performance.md).

Only calls through an ``XapiConnection`` (agent/adapters/xapi_transport.py); no XenAPI import.
Python 3.6 compatible.
"""

import logging
import os
import re
import xml.etree.ElementTree as ElementTree

from agent.decision.events import HostChanged, PbdChanged, VmChanged
from agent.decision.world import BindingView, HostView, PbdView, VmView, XapiWorld

log = logging.getLogger(__name__)

NULL_REF = "OpaqueRef:NULL"
LOCAL_DB = "/var/lib/xcp/local.db"

# label -> uuid of the VM first resolved for it, per pool, for the agent process's life: a
# second VM that takes an uplink's label later must not win (docs/hostile.md, identity).
_PINS = {}
_UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# The halted, startable VMs in xapi's get_all_records_where grammar (docs/xapi-behaviour.md §9); values are
# compared as DB strings ("false", "Halted"). xapi-autostart-vms selects the same set (docs/xapi-behaviour.md §6).
AUTOSTART_WHERE = ('field "power_state"="Halted" and field "is_a_template"="false" and '
                   'field "is_a_snapshot"="false" and field "is_control_domain"="false"')


class ResyncNeeded(Exception):
    """The watched set no longer matches XAPI (or XAPI sent something unusable): read it all again.

    ``events`` are still to be posted before the resync (e.g. the VmChanged of a deleted VM).
    """

    def __init__(self, reason, events=()):
        Exception.__init__(self, reason)
        self.events = list(events)


# --- small record helpers ----------------------------------------------------------------------

def _bool(value):
    """XAPI bools arrive as Python bools; tolerate the DB string form too."""
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _int(value, default=0):
    """XAPI ints arrive as decimal strings (docs/xapi-behaviour.md §1); a bad value counts as ``default``."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _map(value):
    return dict(value) if isinstance(value, dict) else {}


def read_auto_enable(path=LOCAL_DB):
    """False when xapi's Localdb says host_auto_enable=false; a missing file means True.

    Localdb is a Hashtbl_xml file, ``<config><row key=".." value=".."/></config>``
    (xen-api ocaml/xapi/hashtbl_xml.ml); ``host.disable(host, false)`` writes
    ``host_auto_enable=false`` there and ``host.enable`` resets it (docs/xapi-behaviour.md §5).
    """
    if not path or not os.path.exists(path):
        return True
    try:  # bounded and never blocking (a FIFO there must not hang the resync)
        from agent.config import ConfigError, read_config_bytes
        root = ElementTree.fromstring(read_config_bytes(path, what="xapi's local.db"))
    except ConfigError as exc:
        log.warning("cannot read %s (%s), assuming host_auto_enable=true", path, exc.message)
        return True
    except (OSError, ElementTree.ParseError) as exc:
        log.warning("cannot read %s (%s), assuming host_auto_enable=true", path, exc)
        return True
    for row in root.iter("row"):
        if row.get("key") == "host_auto_enable":
            return (row.get("value") or "true").strip().lower() != "false"
    return True


def host_view(ref, record, auto_enable, is_master):
    """A HostView from a host record."""
    return HostView(ref=ref, uuid=record.get("uuid", ""), name_label=record.get("name_label", ""),
                    enabled=_bool(record.get("enabled", True)), auto_enable=auto_enable,
                    other_config=_map(record.get("other_config")), is_master=is_master)


def vm_view(ref, record, network_refs=(), sr_uuids=()):
    """A VmView from a VM record (order and start_delay as ints)."""
    other = _map(record.get("other_config"))
    return VmView(ref=ref, name_label=record.get("name_label", ""),
                  power_state=record.get("power_state", "Halted"), uuid=record.get("uuid", ""),
                  auto_poweron=other.get("auto_poweron") == "true",
                  order=_int(record.get("order")), start_delay=_int(record.get("start_delay")),
                  sr_uuids=sr_uuids, network_refs=network_refs)


def _is_real_vm(record):
    """Not a template, snapshot or dom0: snapshots carry their VM's name_label too."""
    return not (_bool(record.get("is_a_template")) or _bool(record.get("is_a_snapshot"))
                or _bool(record.get("is_control_domain")))


def _renamed(label, record):
    """True when the VM watched for config entry ``label`` no longer matches it (an entry
    that is a uuid matches whatever the VM is called)."""
    if _UUID_TEXT.match(label):
        return record.get("uuid", label) != label
    return record.get("name_label") != label


def _plural(count, word):
    return "%d %s%s" % (count, word, "" if count == 1 else "s")


# --- the resync ----------------------------------------------------------------------------------

class Watched(object):
    """What the watcher follows after a resync: refs by role, last views, and the event token."""

    def __init__(self, local_db_path=LOCAL_DB):
        self.local_db_path = local_db_path
        self.host_ref = None
        self.pool_ref = None
        self.master_ref = None
        self.pool_auto_poweron = False
        self.vm_labels = {}         # vm ref -> the binding label it was resolved from
        self.network_labels = {}    # network ref -> binding label
        self.network_bridges = {}   # network ref -> bridge
        self.sr_uuids = {}          # sr ref -> configured uuid
        self.srs = {}               # sr uuid -> (type, shared)
        self.my_pbds = {}           # pbd ref -> sr uuid (this host's PBDs)
        self.master_pbds = {}       # pbd ref -> sr uuid (the master's, when this host is a member)
        self.master_attached = {}   # sr uuid -> bool
        self.vif_networks = {}      # vif ref -> network ref
        self.vm_disks = {}          # vm ref -> (its VBD refs, the SR uuids they sit on)
        self.sr_uuid_cache = {}     # sr ref -> uuid (for VDI -> SR lookups)
        self.host = None
        self.vms = {}               # ref -> VmView (last posted)
        self.pbds = {}              # ref -> PbdView (last posted)
        self.world = None
        self.token = ""

    def subscriptions(self):
        """The object-scoped event.from classes ("host/<ref>", ...), never "*"."""
        subs = ["host/" + self.host_ref, "pool/" + self.pool_ref]
        subs += ["vm/" + r for r in sorted(self.vm_labels)]
        subs += ["pbd/" + r for r in sorted(self.my_pbds)]
        subs += ["pbd/" + r for r in sorted(self.master_pbds)]
        subs += ["sr/" + r for r in sorted(self.sr_uuids)]
        subs += ["network/" + r for r in sorted(self.network_labels)]
        return subs

    # --- views --------------------------------------------------------------------------------

    def _host_view(self, record):
        return host_view(self.host_ref, record, read_auto_enable(self.local_db_path),
                         self.master_ref == self.host_ref)

    def _vm_view(self, conn, ref, record):
        vbds = tuple(record.get("VBDs") or ())
        disks = self.vm_disks.get(ref)
        if disks is None or disks[0] != vbds:  # look the SRs up again only when VBDs changed
            disks = (vbds, vm_sr_uuids(conn, record, self.sr_uuid_cache))
            self.vm_disks[ref] = disks
        return vm_view(ref, record, network_refs=self._vif_networks(conn, record),
                       sr_uuids=disks[1])

    def _vif_networks(self, conn, record):
        """Networks of the VM's VIFs (cached per VIF; a VIF gone meanwhile is skipped)."""
        networks = []
        for vif in record.get("VIFs") or ():
            network = self.vif_networks.get(vif)
            if network is None:
                try:
                    network = conn.call("VIF.get_network", vif)
                except Exception as exc:  # HANDLE_INVALID: the VIF was destroyed meanwhile
                    if getattr(exc, "details", None) is None:
                        raise
                    continue
                self.vif_networks[vif] = network
            if network not in networks:
                networks.append(network)
        return tuple(networks)

    def _pbd_view(self, ref, record):
        sr_uuid = self.my_pbds[ref]
        sr_type, shared = self.srs.get(sr_uuid, ("", True))
        master_attached = None if self.master_ref == self.host_ref \
            else self.master_attached.get(sr_uuid)
        return PbdView(ref=ref, sr_uuid=sr_uuid,
                       attached=_bool(record.get("currently_attached")),
                       device_config=_map(record.get("device_config")),
                       sr_type=sr_type, shared=shared, master_attached=master_attached)

    # --- resolving ------------------------------------------------------------------------------

    def resolve(self, conn, config, missing):
        """Resolve labels and uuids to refs; what cannot be resolved goes to ``missing``."""
        pools = conn.call("pool.get_all")
        if not pools:
            raise ResyncNeeded("XAPI lists no pool")
        self.pool_ref = pools[0]
        # The session is passed twice: session.get_this_host(session, self=session) (docs/xapi-behaviour.md §9).
        self.host_ref = conn.call("session.get_this_host", conn.session.handle)
        self.master_ref = conn.call("pool.get_master", self.pool_ref)
        bindings = []
        for binding in config.bindings:
            bindings.append(self._resolve_binding(conn, binding, missing))
        for sr in config.srs:
            self._resolve_sr(conn, sr.uuid, missing)
        return bindings

    def _resolve_binding(self, conn, binding, missing):
        network_refs = conn.call("network.get_by_name_label", binding.network)
        network = None
        if len(network_refs) == 1:
            network = network_refs[0]
            self.network_labels[network] = binding.network
        elif not network_refs:
            missing.append("network '%s'" % binding.network)
        else:
            missing.append("network '%s' (%s carry this label)"
                           % (binding.network, _plural(len(network_refs), "network")))
        vm_refs = []
        for label in binding.vms:
            ref, label = self._resolve_vm(conn, label, network, missing)
            if ref is not None:
                vm_refs.append(ref)
                self.vm_labels[ref] = label
        return binding.network, network, vm_refs

    def _resolve_vm(self, conn, label, network, missing):
        """(ref, label to watch) of an uplink VM, or (None, label) with the reason in
        ``missing``. A uuid in the config names the VM itself. A label resolves to the one
        real VM carrying it; when several do, the one pinned earlier (the first resolved in
        this process), else the only one with a VIF on the binding's network, is kept and the
        others are reported in the journal: a VM renamed to the firewall's label later does
        not take its place."""
        if _UUID_TEXT.match(label):
            try:
                ref = conn.call("VM.get_by_uuid", label)
                record = conn.call("VM.get_record", ref)
            except Exception as exc:
                if (getattr(exc, "details", None) or [""])[0] in ("UUID_INVALID", "HANDLE_INVALID"):
                    missing.append("vm %s" % label)
                    return None, label
                raise
            if not _is_real_vm(record):
                missing.append("vm %s (a template, snapshot or dom0, not a VM)" % label)
                return None, label
            return ref, label  # watched by uuid: a rename is not a change of identity
        candidates = {}
        for ref in conn.call("VM.get_by_name_label", label):
            record = conn.call("VM.get_record", ref)
            if _is_real_vm(record):
                candidates[ref] = record
        pin_key = (self.pool_ref, label)
        pinned = _PINS.get(pin_key)
        chosen = None
        if len(candidates) == 1:
            chosen = next(iter(candidates))
            if pinned and candidates[chosen].get("uuid") != pinned:
                log.warning("the VM labelled '%s' is now %s (it was %s, which no longer carries "
                            "the label); following the label", label,
                            candidates[chosen].get("uuid"), pinned)
        elif candidates:
            by_pin = [r for r, rec in candidates.items() if pinned and rec.get("uuid") == pinned]
            on_net = [r for r, rec in candidates.items()
                      if network and network in self._vif_networks(conn, rec)]
            chosen = by_pin[0] if by_pin else (on_net[0] if len(on_net) == 1 else None)
            if chosen is None:
                missing.append("vm '%s' (%s carry this label; name one by uuid in the config)"
                               % (label, _plural(len(candidates), "VM")))
                return None, label
            others = sorted(str(rec.get("uuid", r)) for r, rec in candidates.items() if r != chosen)
            log.warning("%s carry the label '%s': keeping VM %s (%s), ignoring %s; rename the "
                        "other VM or name the uplink by uuid in the config",
                        _plural(len(candidates), "VM"), label, candidates[chosen].get("uuid"),
                        "pinned since it was first resolved" if by_pin else
                        "the only one on the binding's network", ", ".join(others))
        if chosen is None:
            missing.append("vm '%s'" % label)
            return None, label
        _PINS[pin_key] = candidates[chosen].get("uuid", "")
        return chosen, label

    def _resolve_sr(self, conn, uuid, missing):
        try:
            sr_ref = conn.call("SR.get_by_uuid", uuid)
        except Exception as exc:
            if (getattr(exc, "details", None) or [""])[0] == "UUID_INVALID":
                missing.append("sr %s" % uuid)
                return
            raise
        self.sr_uuids[sr_ref] = uuid
        mine = None
        for pbd in conn.call("SR.get_PBDs", sr_ref):
            host = conn.call("PBD.get_host", pbd)
            if host == self.host_ref:
                mine = pbd
                self.my_pbds[pbd] = uuid
            elif host == self.master_ref:
                self.master_pbds[pbd] = uuid
        if mine is None:
            missing.append("sr %s (no PBD on this host)" % uuid)

    # --- the dump -------------------------------------------------------------------------------

    def load_dump(self, conn, result, bindings, missing):
        """Build the views and the XapiWorld from the empty-token event.from dump."""
        records = {}
        for event in events_of(result):
            records[(event["class"], event["ref"])] = event.get("snapshot")
        self.token = result["token"]

        def record(cls, ref):
            snap = records.get((cls, ref))
            if not isinstance(snap, dict):
                raise ResyncNeeded("%s %s vanished while resyncing" % (cls, ref))
            return snap

        pool = record("pool", self.pool_ref)
        self.pool_auto_poweron = _map(pool.get("other_config")).get("auto_poweron") == "true"
        if pool.get("master", self.master_ref) != self.master_ref:
            raise ResyncNeeded("the pool master changed while resyncing")
        self.host = self._host_view(record("host", self.host_ref))
        for ref in self.network_labels:
            net = record("network", ref)
            if net.get("name_label") != self.network_labels[ref]:
                raise ResyncNeeded("network %s was renamed while resyncing" % ref)
            self.network_bridges[ref] = net.get("bridge", "")
        for ref, label in self.vm_labels.items():
            snap = record("vm", ref)
            if _renamed(label, snap):
                raise ResyncNeeded("VM %s was renamed while resyncing" % ref)
            self.vms[ref] = self._vm_view(conn, ref, snap)
        for sr_ref, uuid in self.sr_uuids.items():
            snap = record("sr", sr_ref)
            self.srs[uuid] = (snap.get("type", ""), _bool(snap.get("shared", True)))
        for ref, uuid in self.master_pbds.items():
            self.master_attached[uuid] = _bool(record("pbd", ref).get("currently_attached"))
        for ref in self.my_pbds:
            self.pbds[ref] = self._pbd_view(ref, record("pbd", ref))

        binding_views = []
        for label, network, vm_refs in bindings:
            bridge = self.network_bridges.get(network, "") if network else ""
            binding_views.append(BindingView(network=label, bridge=bridge, vm_refs=vm_refs))
        vm_order = []
        for _, _, vm_refs in bindings:
            vm_order += [r for r in vm_refs if r not in vm_order]
        pbd_order = sorted(self.pbds.values(), key=lambda p: p.sr_uuid)
        self.world = XapiWorld(host=self.host, bindings=binding_views,
                               vms=[self.vms[r] for r in vm_order], pbds=pbd_order,
                               missing=missing, pool_auto_poweron=self.pool_auto_poweron)
        return self.world

    # --- following --------------------------------------------------------------------------------

    def translate(self, conn, event):
        """Events to post for one event.from record; ResyncNeeded when the set must be re-read."""
        cls, op, ref = event["class"], event["operation"], event["ref"]
        snap = event.get("snapshot")
        if op == "del":
            if cls == "vm" and ref in self.vm_labels:
                gone = VmView(ref=ref, name_label=self.vm_labels[ref], power_state="Deleted")
                raise ResyncNeeded("VM %s was deleted" % ref, [VmChanged(gone)])
            if self._watches(cls, ref):
                raise ResyncNeeded("%s %s was deleted" % (cls, ref))
            return []
        if cls == "host" and ref == self.host_ref:
            return self._changed("host", ref, self._host_view(snap))
        if cls == "vm" and ref in self.vm_labels:
            if _renamed(self.vm_labels[ref], snap):
                raise ResyncNeeded("VM %s was renamed from '%s' to '%s'"
                                   % (ref, self.vm_labels[ref], snap.get("name_label")))
            return self._changed("vm", ref, self._vm_view(conn, ref, snap))
        if cls == "pbd" and ref in self.my_pbds:
            return self._changed("pbd", ref, self._pbd_view(ref, snap))
        if cls == "pbd" and ref in self.master_pbds:
            uuid = self.master_pbds[ref]
            self.master_attached[uuid] = _bool(snap.get("currently_attached"))
            return self._refresh_pbds(uuid)
        if cls == "sr" and ref in self.sr_uuids:
            uuid = self.sr_uuids[ref]
            seen = (snap.get("type", ""), _bool(snap.get("shared", True)))
            if self.srs.get(uuid) == seen:
                # xapi's SR.stat every 120 s and after each plug (xen-api xapi_sr.ml) only moves
                # the sizes: nothing the agent reads, so nothing to post
                return []
            self.srs[uuid] = seen
            return self._refresh_pbds(uuid)
        if cls == "network" and ref in self.network_labels:
            if snap.get("name_label") != self.network_labels[ref] \
                    or snap.get("bridge", "") != self.network_bridges.get(ref):
                raise ResyncNeeded("network %s was renamed or re-bridged" % ref)
            return []
        if cls == "pool" and ref == self.pool_ref:
            auto = _map(snap.get("other_config")).get("auto_poweron") == "true"
            if snap.get("master") != self.master_ref or auto != self.pool_auto_poweron:
                raise ResyncNeeded("the pool master or auto_poweron changed")
            return []
        return []  # an object we do not watch (should not happen with object subscriptions)

    def _watches(self, cls, ref):
        return (cls == "host" and ref == self.host_ref) \
            or (cls == "pool" and ref == self.pool_ref) \
            or (cls == "pbd" and (ref in self.my_pbds or ref in self.master_pbds)) \
            or (cls == "sr" and ref in self.sr_uuids) \
            or (cls == "network" and ref in self.network_labels)

    def _refresh_pbds(self, sr_uuid):
        out = []
        for ref, view in list(self.pbds.items()):
            if view.sr_uuid == sr_uuid:
                sr_type, shared = self.srs.get(sr_uuid, ("", True))
                master_attached = None if self.master_ref == self.host_ref \
                    else self.master_attached.get(sr_uuid)
                new = PbdView(ref=ref, sr_uuid=sr_uuid, attached=view.attached,
                              device_config=dict(view.device_config), sr_type=sr_type,
                              shared=shared, master_attached=master_attached)
                out += self._changed("pbd", ref, new)
        return out

    def _changed(self, kind, ref, view):
        """Post only views that differ from the last one posted (XAPI sends many no-op mods)."""
        if kind == "host":
            if view == self.host:
                return []
            self.host = view
            return [HostChanged(view)]
        if kind == "vm":
            if view == self.vms.get(ref):
                return []
            self.vms[ref] = view
            return [VmChanged(view)]
        # Always post a PBD's view: event.from coalesces a plug and an unplug between two polls
        # into one mod equal to the last view posted, while the agent has already taken the
        # plug's success into its facts (measured: bench/storage_latency.py never saw the
        # unplug). PBD events are few; the agent decides on the view, not on the change.
        self.pbds[ref] = view
        return [PbdChanged(view)]


class GarbageReply(ResyncNeeded):
    """event.from answered something that is not an event.from result (docs/xapi-behaviour.md §3)."""


def events_of(result):
    """Validate an event.from result and return its events; raises GarbageReply."""
    if not isinstance(result, dict):
        raise GarbageReply("event.from returned a %s, not a struct" % type(result).__name__)
    events, token = result.get("events"), result.get("token")
    if not isinstance(events, list) or not isinstance(token, str):
        raise GarbageReply("event.from returned a struct without events/token")
    for event in events:
        if not isinstance(event, dict) or not all(isinstance(event.get(k), str)
                                                  for k in ("class", "operation", "ref")):
            raise GarbageReply("event.from returned a malformed event")
        if event["operation"] not in ("add", "mod", "del"):
            raise GarbageReply("event.from returned operation %r" % event["operation"][:20])
        if event["operation"] != "del" and not isinstance(event.get("snapshot"), dict):
            raise GarbageReply("event.from returned %s %s without a snapshot"
                               % (event["operation"], event["class"]))
        event["class"] = event["class"].lower()
    return events


def read_world(conn, config, local_db_path=LOCAL_DB):
    """Full resync: resolve, then dump the watched objects; a Watched with world and token."""
    watched = Watched(local_db_path)
    missing = []
    bindings = watched.resolve(conn, config, missing)
    result = conn.call("event.from", watched.subscriptions(), "", 0.0)
    watched.load_dump(conn, result, bindings, missing)
    return watched


# --- ListAutostart -----------------------------------------------------------------------------

def list_autostart(conn):
    """Halted, startable VMs with other_config:auto_poweron "true" (the string), as VmViews.

    Sorted by (order, name) for a stable result; the machine groups them by ``order``.
    """
    records = conn.call("VM.get_all_records_where", AUTOSTART_WHERE)
    if not isinstance(records, dict):
        raise ResyncNeeded("VM.get_all_records_where returned a %s" % type(records).__name__)
    sr_cache = {}
    views = []
    for ref, record in records.items():
        if _map(record.get("other_config")).get("auto_poweron") != "true":
            continue
        views.append(vm_view(ref, record, sr_uuids=vm_sr_uuids(conn, record, sr_cache)))
    views.sort(key=lambda v: (v.order, v.name_label, v.ref))
    return tuple(views)


def vm_sr_uuids(conn, record, sr_cache):
    """UUIDs of the SRs holding the VM's disks and inserted ISOs (VBD -> VDI -> SR)."""
    uuids = []
    for vbd in record.get("VBDs") or ():
        try:
            vdi = conn.call("VBD.get_VDI", vbd)
            if not vdi or vdi == NULL_REF:  # an empty CD drive
                continue
            sr = conn.call("VDI.get_SR", vdi)
            if sr not in sr_cache:
                sr_cache[sr] = conn.call("SR.get_uuid", sr)
        except Exception as exc:  # HANDLE_INVALID: a VBD/VDI destroyed while we read
            if getattr(exc, "details", None) is None:
                raise
            continue
        if sr_cache[sr] not in uuids:
            uuids.append(sr_cache[sr])
    return tuple(uuids)
