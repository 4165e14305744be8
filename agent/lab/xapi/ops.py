"""The XAPI operations with behaviour: host enable/disable, VM power, PBD plug, message.create.

Error shapes and semantics are xapi's (xapi_host.ml, xapi_vm_lifecycle.ml, xapi_pbd.ml): ``VM.start`` checks the power
state first (``VM_BAD_POWER_STATE [vm, "halted", actual]``), then placement: a disabled host or
an unplugged SR of one of the VM's disks leaves no host, ``NO_HOSTS_AVAILABLE`` (``VM.start_on``
names the reason: ``HOST_DISABLED [host]`` / ``VM_REQUIRES_SR [vm, sr]``); it returns only after
the VM runs *and* its ``start_delay`` seconds have passed.
"""

import time
import xmlrpc.client

from . import localdb
from .errors import Disconnect, XapiError

# Helpers.Repeat_with_uniform_backoff.standard: max_total_wait = 2 h.
RETRY_MAX_TOTAL_WAIT = 7200.0

# The message cls enum and the table its obj_uuid must be found in.
MESSAGE_CLASSES = {"vm": ("VM", "VM"), "host": ("Host", "host"), "sr": ("SR", "SR"),
                   "pool": ("Pool", "pool"), "vdi": ("VDI", "VDI"), "vmpp": ("VMPP", None),
                   "vmss": ("VMSS", None), "pvs_proxy": ("PVS_proxy", None),
                   "certificate": ("Certificate", None)}


def _bool(value, what):
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise XapiError("INTERNAL_ERROR", "%s must be a boolean, got %r" % (what, value))


def register(registry, sim):
    """Register the operations of ``sim`` (a Simulator) in ``registry``."""
    o = _Ops(sim)
    add = registry.add
    add("host.enable", o.host_enable, 1, tasked=True)
    add("host.disable", o.host_disable, 2, optional=1, tasked=True)
    add("VM.start", o.vm_start, 3, tasked=True)
    add("VM.start_on", o.vm_start_on, 4, tasked=True)
    for name in ("clean_shutdown", "hard_shutdown"):
        add("VM." + name, o.vm_shutdown, 1, tasked=True)
    for name in ("clean_reboot", "hard_reboot"):
        add("VM." + name, o.vm_reboot, 1, tasked=True)
    add("VM.destroy", o.vm_destroy, 1, tasked=True)
    add("PBD.plug", o.pbd_plug, 1, tasked=True)
    add("PBD.unplug", o.pbd_unplug, 1, tasked=True)
    add("message.create", o.message_create, 5)
    add("message.get_all", lambda ctx, s: list(o.messages()), 0)
    add("message.get_all_records", lambda ctx, s: o.messages(), 0)
    add("message.get_record", o.message_get_record, 1)


class _Ops(object):
    def __init__(self, sim):
        self.sim = sim
        self.db = sim.db

    # --- host ------------------------------------------------------------------------------

    def host_enable(self, ctx, session, host):
        """host.enable: xapi_host.ml ``enable`` after ``assert_safe_to_reenable``."""
        if self.db.get("host", host, "enabled"):
            return ""   # already enabled: no-op
        # Xapi_host.assert_safe_to_reenable, in its order: start-up complete, no pending
        # mandatory guidance (Repository_helpers.assert_no_host_pending_mandatory_guidance),
        # not disabled until reboot, and with HA on no unplugged PBD whose SR a protected VM
        # uses (Xapi_pbd.abort_if_storage_attached_to_protected_vms).
        if self.sim.booting:
            raise XapiError("HOST_STILL_BOOTING")
        if self.db.get("host", host, "pending_guidances"):
            raise XapiError("HOST_PENDING_MANDATORY_GUIDANCE_NOT_EMPTY", host)
        if self.sim.local_db.get(localdb.HOST_DISABLED_UNTIL_REBOOT) == "true":
            raise XapiError("HOST_DISABLED_UNTIL_REBOOT", host)
        sr = self.sim.ha_blocking_sr(host)
        if sr:
            raise XapiError("HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", sr)
        self.sim.user_requested_host_disable = False
        self.sim.put_local_db(localdb.HOST_AUTO_ENABLE, "true")
        self.db.update("host", host, enabled=True)
        return ""

    def host_disable(self, ctx, session, host, auto_enable=True):
        """host.disable(host[, auto_enable]) as xapi_host.ml ``disable``: the disable itself
        lives in xapi's memory (user_requested_host_disable, forgotten by a restart); only
        auto_enable=false persists, in Localdb."""
        auto_enable = _bool(auto_enable, "auto_enable")
        if not self.db.get("host", host, "enabled"):
            return ""   # already disabled: no-op, nothing persisted (xapi_host.ml disable)
        self.db.update("host", host, enabled=False)
        self.sim.user_requested_host_disable = True
        if not auto_enable:
            self.sim.put_local_db(localdb.HOST_AUTO_ENABLE, "false")
        return ""

    # --- VM --------------------------------------------------------------------------------

    def _unplugged_srs(self, vm, host):
        """SR refs holding the VM's disks whose PBD on ``host`` is not attached."""
        missing = []
        for vbd in self.db.get("VM", vm, "VBDs"):
            vdi = self.db.get("VBD", vbd, "VDI")
            if not self.db.exists("VDI", vdi):
                continue
            sr = self.db.get("VDI", vdi, "SR")
            pbds = self.db.find("PBD", SR=sr, host=host)
            if not any(self.db.get("PBD", pbd, "currently_attached") for pbd in pbds):
                missing.append(sr)
        return missing

    def _start(self, ctx, vm, paused, host):
        self.db.record("VM", vm)   # HANDLE_INVALID ["VM", ref] first
        this_host = self.sim.index.host

        def check(record):
            if record["is_a_template"]:
                raise XapiError("VM_IS_TEMPLATE", vm, "start")
            if record["power_state"] != "Halted":
                raise XapiError("VM_BAD_POWER_STATE", vm, "halted",
                                record["power_state"].lower())
            target = host or this_host
            if not self.db.get("host", target, "enabled"):
                if host:
                    raise XapiError("HOST_DISABLED", host)
                raise XapiError("NO_HOSTS_AVAILABLE")
            missing = self._unplugged_srs(vm, target)
            if missing:
                if host:
                    raise XapiError("VM_REQUIRES_SR", vm, missing[0])
                raise XapiError("NO_HOSTS_AVAILABLE")
        power = self.sim.power
        task = ctx.task or self.db.new_ref()
        self._mark_vm(vm, task, "start", check)
        try:
            power.note(vm, "start_requested")
            seconds = float(self.sim.settings["vm_start_seconds"])
            if seconds > 0:
                # The domain build by xenopsd takes time; the VM stays Halted meanwhile.
                self.sim.wait_or_disconnect(seconds)
            with power.lock:
                check(self.db.record("VM", vm))
                power.start(vm, paused=paused)
            delay = int(self.db.get("VM", vm, "start_delay"))
            if delay > 0:
                # Xapi_vm_helpers.start_delay: VM.start returns start_delay s after the VM runs.
                self.sim.wait_or_disconnect(delay)
            power.note(vm, "start_returned")
        finally:
            with power.lock:
                if self.db.exists("VM", vm):
                    self.db.mutate("VM", vm, lambda rec: rec["current_operations"].pop(task, None))
        return ""

    def _mark_vm(self, vm, task, op, check):
        """Xapi_vm_helpers.with_vm_operation: take the VM's operation lock for ``task``.

        Under Helpers.retry_with_global_lock: Xapi_vm_lifecycle.check_operation_error checks
        the power state first (VM_BAD_POWER_STATE), then other operations in progress
        (OTHER_OPERATION_IN_PROGRESS ["VM", ref, op, task]); that second error is *not*
        returned: retry waits (policy ``standard``: 1-20 s back-off, woken early by
        Early_wakeup.broadcast when the other operation ends, up to 2 h) and checks again, so
        a start that meets another client's start waits for it and then fails with
        VM_BAD_POWER_STATE. The waiting task is cancellable (TASK_CANCELLED [task]).
        """
        power, tasks = self.sim.power, self.sim.tasks
        tasks.set_cancellable(task)
        deadline = time.monotonic() + RETRY_MAX_TOTAL_WAIT
        while True:
            if tasks.is_cancelling(task):
                raise XapiError("TASK_CANCELLED", task)
            with power.lock:
                record = self.db.record("VM", vm)
                busy = None
                if record["power_state"] == "Halted" and not record["is_a_template"]:
                    busy = next(iter(record["current_operations"].items()), None)
                if busy is None:
                    check(record)
                    self.db.mutate("VM", vm, lambda rec: rec["current_operations"].__setitem__(
                        task, op))
                    return
            if time.monotonic() >= deadline:
                raise XapiError("OTHER_OPERATION_IN_PROGRESS", "VM", vm, busy[1], busy[0])
            if self.sim.outage:
                raise Disconnect()
            with self.db.lock:
                self.db.changed.wait(0.2)   # the other operation's unmark wakes us

    def vm_start(self, ctx, session, vm, start_paused, force):
        """VM.start(vm, start_paused, force)."""
        return self._start(ctx, vm, _bool(start_paused, "start_paused"), None)

    def vm_start_on(self, ctx, session, vm, host, start_paused, force):
        """VM.start_on(vm, host, start_paused, force)."""
        self.db.record("host", host)
        return self._start(ctx, vm, _bool(start_paused, "start_paused"), host)

    def _require_running(self, vm):
        def check(record):
            if record["power_state"] not in ("Running", "Paused"):
                raise XapiError("VM_BAD_POWER_STATE", vm, "running",
                                record["power_state"].lower())
            if record["is_control_domain"]:
                raise XapiError("OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0")
        return check

    def vm_shutdown(self, ctx, session, vm):
        """VM.clean_shutdown / VM.hard_shutdown."""
        self.sim.power.stop(vm, check=self._require_running(vm))
        return ""

    def vm_reboot(self, ctx, session, vm):
        """VM.clean_reboot / VM.hard_reboot: a new domain, hence a new domid."""
        with self.sim.power.lock:
            self._require_running(vm)(self.db.record("VM", vm))
            self.sim.power.reboot(vm)
        return ""

    def vm_destroy(self, ctx, session, vm):
        """VM.destroy of a halted VM: its row, VIFs and VBDs go (event.from sends del)."""
        with self.sim.power.lock:
            record = self.db.record("VM", vm)
            if record["power_state"] != "Halted":
                raise XapiError("VM_BAD_POWER_STATE", vm, "halted", record["power_state"].lower())
            for vif in record["VIFs"]:
                network = self.db.get("VIF", vif, "network")
                self.db.mutate("network", network, lambda rec, v=vif: rec["VIFs"].remove(v))
                self.db.delete("VIF", vif)
            for vbd in record["VBDs"]:
                vdi = self.db.get("VBD", vbd, "VDI")
                if self.db.exists("VDI", vdi):
                    self.db.mutate("VDI", vdi, lambda rec, v=vbd: rec["VBDs"].remove(v))
                self.db.delete("VBD", vbd)
            self.db.delete("VM", vm)
            self.sim.forget_vm(vm)
        return ""

    # --- PBD -------------------------------------------------------------------------------

    def pbd_plug(self, ctx, session, pbd):
        """PBD.plug as xapi and SM do it (see plug.py); allowed on a disabled host."""
        return self.sim.plugger.plug(pbd, ctx.task)

    def pbd_unplug(self, ctx, session, pbd):
        """PBD.unplug: detach (no check of VDIs in use)."""
        self.db.update("PBD", pbd, currently_attached=False)
        return ""

    # --- message ---------------------------------------------------------------------------

    def message_create(self, ctx, session, name, priority, cls, obj_uuid, body):
        """message.create(name, priority, cls, obj_uuid, body) -> message ref."""
        entry = MESSAGE_CLASSES.get(str(cls).lower())   # enum params are case-insensitive
        if entry is None:
            raise XapiError("INVALID_VALUE", cls)
        try:
            priority = int(priority)
        except (TypeError, ValueError):
            raise XapiError("INVALID_VALUE", priority)
        canonical, table = entry
        if table is not None and not self.db.find(table, uuid=obj_uuid):
            raise XapiError("UUID_INVALID", canonical, obj_uuid)
        stamp = xmlrpc.client.DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime()))
        return self.db.add_message(name=name, priority=priority, cls=canonical,
                                   obj_uuid=obj_uuid, timestamp=stamp, body=body)

    def messages(self):
        """{ref: record} of every message."""
        with self.db.lock:
            return dict((ref, dict(rec)) for ref, (_, rec) in self.db.messages.items())

    def message_get_record(self, ctx, session, ref):
        """message.get_record(self); HANDLE_INVALID ["message", ref] if unknown."""
        with self.db.lock:
            if ref not in self.db.messages:
                raise XapiError("HANDLE_INVALID", "message", ref)
            return dict(self.db.messages[ref][1])
