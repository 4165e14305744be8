"""VM power transitions: domids, resident_on, VIF/VBD attachment, power hooks and a timeline.

The order follows xapi: the network bridge and the backend devices exist before xapi writes
``power_state = Running`` (xapi_xenops.ml ``with_networks_attached_for_vm``), so hooks run after
the domid is chosen and *before* the new state is committed; watchers of event.from therefore
never see Running before the lab has made the bridge and ``vif<domid>.<devid>``.
"""

import threading

from . import build
from .errors import XapiError
from .schema import NULL_REF


class Power(object):
    """Starts and stops VMs in the database, serialised by one lock."""

    def __init__(self, db, index, clock):
        self.db = db
        self.index = index
        self.clock = clock
        self.lock = threading.RLock()
        self.hooks = []
        self.timeline = []          # {"t", "vm", "event"} dicts, oldest first
        self._next_domid = 1        # Xen never reuses a domid during a boot; dom0 is 0
        self.settings = {}          # the simulator's settings (bridge_after_halted, ...)

    def note(self, vm_ref, what):
        """Append a timeline entry stamped with the simulator clock."""
        entry = {"t": self.clock(), "vm": self.db.get("VM", vm_ref, "name_label"), "event": what}
        with self.lock:
            self.timeline.append(entry)
        return entry

    def bridges(self, vm_ref):
        """Bridge names of the VM's VIFs, in VIF device order."""
        vifs = [self.db.record("VIF", ref) for ref in self.db.get("VM", vm_ref, "VIFs")]
        vifs.sort(key=lambda vif: int(vif["device"]))
        return [self.db.get("network", vif["network"], "bridge") for vif in vifs]

    def _call_hooks(self, vm_ref, record, domid, old_state, new_state):
        bridges = self.bridges(vm_ref)
        for hook in list(self.hooks):
            hook(record["name_label"], record, domid, bridges, old_state, new_state)

    def _attach_devices(self, vm_ref, attached):
        for cls, field in (("VIF", "VIFs"), ("VBD", "VBDs")):
            for ref in self.db.get("VM", vm_ref, field):
                self.db.update(cls, ref, currently_attached=attached)

    def start(self, vm_ref, paused=False, check=None):
        """Boot a halted VM: new domid, hooks, then commit Running (or Paused).

        ``check(record)`` runs under the power lock first and may raise XapiError. A hook that
        raises leaves the VM halted and surfaces as INTERNAL_ERROR.
        """
        with self.lock:
            record = self.db.record("VM", vm_ref)
            if check is not None:
                check(record)
            old_state = record["power_state"]
            domid = self._next_domid
            self._next_domid += 1
            new_state = "Paused" if paused else "Running"
            record.update(power_state=new_state, domid=str(domid), resident_on=self.index.host,
                          allowed_operations=list(build.VM_ALLOWED_RUNNING))
            try:
                self._call_hooks(vm_ref, record, domid, old_state, new_state)
            except Exception as exc:
                raise XapiError("INTERNAL_ERROR", "power hook failed starting %s: %s"
                                % (record["name_label"], exc))
            self._attach_devices(vm_ref, True)
            self.db.update("VM", vm_ref, power_state=new_state, domid=domid,
                           resident_on=self.index.host,
                           allowed_operations=build.VM_ALLOWED_RUNNING)
            self.db.mutate("host", self.index.host,
                           lambda rec: rec["resident_VMs"].append(vm_ref))
            return self.note(vm_ref, "running")

    def stop(self, vm_ref, check=None):
        """Halt a running VM: hooks with its old domid, then commit Halted, domid -1.

        The hooks' errors are re-raised after the VM is recorded as halted (the domain is gone
        either way).
        """
        with self.lock:
            record = self.db.record("VM", vm_ref)
            if check is not None:
                check(record)
            old_state = record["power_state"]
            domid = int(record["domid"])
            record.update(power_state="Halted", domid="-1", resident_on=NULL_REF,
                          allowed_operations=list(build.VM_ALLOWED_HALTED))
            failure = None
            later = float(self.settings.get("bridge_after_halted", 0.0))
            if later <= 0:
                try:
                    self._call_hooks(vm_ref, record, domid, old_state, "Halted")
                except Exception as exc:
                    failure = exc
            self._attach_devices(vm_ref, False)
            self.db.update("VM", vm_ref, power_state="Halted", domid=-1, resident_on=NULL_REF,
                           allowed_operations=build.VM_ALLOWED_HALTED)
            self.db.mutate("host", self.index.host, lambda rec: rec["resident_VMs"].remove(vm_ref)
                           if vm_ref in rec["resident_VMs"] else None)
            self.note(vm_ref, "halted")
            if later > 0:
                # xapi_xenops.ml: the Halted power state is written from xenopsd's event, and
                # detach_for_vm / deregister_vif (which destroy the bridge) may run after it.
                self._hooks_later(later, vm_ref, dict(record), domid, old_state)
            if failure is not None:
                raise XapiError("INTERNAL_ERROR", "power hook failed stopping %s: %s"
                                % (record["name_label"], failure))

    def _hooks_later(self, seconds, vm_ref, record, domid, old_state):
        bridges = self.bridges(vm_ref)

        def run():
            with self.lock:
                for hook in list(self.hooks):
                    try:
                        hook(record["name_label"], record, domid, bridges, old_state, "Halted")
                    except Exception:   # the VM is halted either way; nobody to tell
                        pass
                self.note(vm_ref, "bridge_released")
        timer = threading.Timer(seconds, run)
        timer.daemon = True
        timer.start()

    def reboot(self, vm_ref):
        """Reboot: Xen destroys the domain and builds a new one with a new domid.

        By default as a stop then a start (the bridge goes and comes back). With the setting
        ``reboot_keeps_bridge`` the VM stays Running with a new domid and the hooks see one
        Running -> Running call: xenopsd's reboot keeps the VIFs registered, so
        ``deregister_vif`` (xapi_xenops.ml) never removes the bridge; only ``vif<domid>.<n>``
        changes (not verified on a host).
        """
        with self.lock:
            if not self.settings.get("reboot_keeps_bridge"):
                self.stop(vm_ref)
                self.start(vm_ref)
                return
            record = self.db.record("VM", vm_ref)
            domid = self._next_domid
            self._next_domid += 1
            record.update(domid=str(domid))
            self._call_hooks(vm_ref, record, domid, "Running", "Running")
            self.db.update("VM", vm_ref, domid=domid)
            self.note(vm_ref, "rebooted")
