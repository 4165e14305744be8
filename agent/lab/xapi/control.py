"""The ``sim.*`` control family: change the simulated world from tests and the lab.

Each control is a method of ``Simulator`` (this module is its mixin) and a wire method
``sim.<name>`` (also ``sim_<name>``) on the same sockets, needing no session: results come in
the usual Status/Value envelope; a caller that sends a session ref first (e.g.
``session.xenapi.sim.vm_start("web")``) has it ignored. Unknown VM or SR names fail with
``SIM_UNKNOWN_VM [name]`` (``SIM_VM_IS_TEMPLATE [name]`` for templates) /
``UUID_INVALID ["SR", uuid]``.
"""

import threading

from . import build, localdb, wire
from .errors import XapiError

# name -> (required params, optional params) of the wire form
WIRE_CONTROLS = {
    "vm_start": (1, 0), "vm_stop": (1, 0), "vm_reboot": (1, 0),
    "toolstack_restart": (1, 1), "host_disable": (0, 2), "host_enable": (0, 0),
    "boot_phase": (1, 0), "set_storage_reachable": (2, 0), "pbd_unplug": (1, 0),
    "plug_failures": (2, 0), "set_latency": (1, 0), "add_vms": (1, 0), "churn": (1, 0),
    "event_garbage": (1, 0), "invalidate_sessions": (0, 0), "state": (0, 0),
    "set_setting": (2, 0), "set_storage_state": (2, 0), "set_pending_guidances": (1, 0),
    "set_disabled_until_reboot": (1, 0), "set_ha": (1, 0), "run_autostart_vms": (0, 0),
    "operator_host_disable": (0, 0), "set_emergency": (1, 0),
}

# What sim.event_garbage makes event.from return instead of its struct, in turn.
GARBAGE = (
    "OpaqueRef:garbage",                                               # not a struct at all
    {"events": [{"class": "vm", "operation": "mod"}], "valid_ref_counts": {},
     "token": "garbage"},                                              # truncated events, bad token
    {},                                                                # no members
)


def _internal_ctx():
    from .api import Context
    return Context("unix")


def _flag(value):
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def dispatch_control(sim, name, params, ctx):
    """Run wire method ``sim.<name>``; returns the Status envelope."""
    short = name[4:]
    if short not in WIRE_CONTROLS:
        return wire.failure(["MESSAGE_METHOD_UNKNOWN", name])
    required, optional = WIRE_CONTROLS[short]
    params = list(params)
    if len(params) > required + optional and (
            params[0] is None or str(params[0]).startswith("OpaqueRef:")):
        params = params[1:]   # a XenAPI Session prepends its session ref
    if not required <= len(params) <= required + optional:
        return wire.failure(["MESSAGE_PARAMETER_COUNT_MISMATCH", name,
                             str(required + optional), str(len(params))])
    try:
        if short == "toolstack_restart":
            # Reply first, then go away, as a real restart would look from outside.
            ctx.after.append(lambda: sim.toolstack_restart(*params))
            return wire.success("")
        result = getattr(sim, short)(*params)
    except XapiError as exc:
        return wire.failure(exc.details)
    except (TypeError, ValueError) as exc:
        return wire.failure(["INVALID_VALUE", name, str(exc)])
    return wire.success("" if result is None else result)


class Controls(object):
    """Control methods mixed into Simulator (which supplies db, index, power, ...)."""

    def _vm_named(self, name):
        refs = self.db.find("VM", name_label=name, is_control_domain=False)
        if not refs:
            raise XapiError("SIM_UNKNOWN_VM", name)
        if self.db.get("VM", refs[0], "is_a_template"):
            raise XapiError("SIM_VM_IS_TEMPLATE", name)
        return refs[0]

    def _sr_uuid(self, sr_uuid):
        if sr_uuid not in self.index.pbds:
            raise XapiError("UUID_INVALID", "SR", sr_uuid)
        return sr_uuid

    def vm_start(self, name):
        """Start a VM from outside XAPI's checks (e.g. the lab boots the firewall); no-op if running."""
        ref = self._vm_named(name)
        with self.power.lock:
            if self.db.get("VM", ref, "power_state") == "Halted":
                self.power.start(ref)

    def vm_stop(self, name):
        """Stop a VM as if its guest shut down; no-op if halted."""
        ref = self._vm_named(name)
        with self.power.lock:
            if self.db.get("VM", ref, "power_state") != "Halted":
                self.power.stop(ref)

    def vm_reboot(self, name):
        """Reboot a VM (new domid); starts it if halted."""
        ref = self._vm_named(name)
        with self.power.lock:
            if self.db.get("VM", ref, "power_state") == "Halted":
                self.power.start(ref)
            else:
                self.power.reboot(ref)

    def host_disable(self, auto_enable=True, maintenance_mode=False):
        """Disable the host like host.disable(host, auto_enable) (user_requested_host_disable
        in xapi's memory); maintenance_mode also sets other_config MAINTENANCE_MODE=true, as
        xsconsole does (xsconsole plugins-base/XSFeatureHostCommon.py)."""
        host = self.index.host
        self.db.update("host", host, enabled=False)
        self.user_requested_host_disable = True
        if not _flag(auto_enable):
            self.put_local_db(localdb.HOST_AUTO_ENABLE, "false")
        if _flag(maintenance_mode):
            self.db.mutate("host", host, lambda rec: rec["other_config"].__setitem__(
                "MAINTENANCE_MODE", "true"))

    def host_enable(self):
        """Enable the host like xsconsole leaving maintenance: drop the MAINTENANCE_MODE keys,
        persist host_auto_enable=true, enabled=true (ignores the boot phase)."""
        host = self.index.host

        def drop(rec):
            for key in ("MAINTENANCE_MODE", "MAINTENANCE_MODE_EVACUATED_VMS"):
                rec["other_config"].pop(key, None)
        if set(self.db.get("host", host, "other_config")) & set(
                ("MAINTENANCE_MODE", "MAINTENANCE_MODE_EVACUATED_VMS")):
            self.db.mutate("host", host, drop)
        self.put_local_db(localdb.HOST_AUTO_ENABLE, "true")
        self.user_requested_host_disable = False
        self.db.update("host", host, enabled=True)

    def _internal_session(self):
        sessions = [ref for ref, d in self.db.sessions.items() if d.get("originator") == "sim"]
        return sessions[0] if sessions else self.db.create_session(
            uname="root", originator="sim", transport="unix", local=False)

    def boot_phase(self, seconds):
        """For ``seconds`` from now host.enable answers HOST_STILL_BOOTING (only that)."""
        self._booting_until = self.clock() + float(seconds)

    def set_storage_reachable(self, sr_uuid, reachable):
        """Make an SR's storage target (un)reachable for PBD.plug (unreachable = "down": SM's
        connect times out after plug_connect_timeout, then 108); clears set_storage_state."""
        uuid = self._sr_uuid(sr_uuid)
        self.index.reachable[uuid] = _flag(reachable)
        self.index.storage_state.pop(uuid, None)

    def set_storage_state(self, sr_uuid, state):
        """What SM meets at this SR's target: one of sm.OUTCOMES ("up", "down", "refused",
        "unresolvable", "stalled", "no-rpcbind"), or "" to go back to reachable/storage_probe."""
        from . import sm
        uuid = self._sr_uuid(sr_uuid)
        if state and state not in sm.OUTCOMES:
            raise XapiError("INVALID_VALUE", "state", state, "known: " + ", ".join(sm.OUTCOMES))
        if state:
            self.index.storage_state[uuid] = state
        else:
            self.index.storage_state.pop(uuid, None)

    def set_pending_guidances(self, guidances):
        """Set host.pending_guidances (mandatory guidance after an update, e.g. reboot_host)."""
        self.db.update("host", self.index.host, pending_guidances=list(guidances))

    def set_disabled_until_reboot(self, flag):
        """Write Localdb host_disabled_until_reboot (xapi sets it during an HA shutdown)."""
        self.put_local_db(localdb.HOST_DISABLED_UNTIL_REBOOT, "true" if _flag(flag) else "false")

    def set_ha(self, enabled):
        """Turn pool.ha_enabled on or off (HA armed; protected VMs come from the scenario)."""
        self.db.update("pool", self.index.pool, ha_enabled=_flag(enabled))

    def operator_host_disable(self):
        """An operator's plain `xe host-disable` (host.disable(host), auto_enable left true)."""
        reply = self.api.call("host.disable", (self._internal_session(), self.index.host),
                              _internal_ctx())
        if reply.get("Status") != "Success":
            raise XapiError(*reply["ErrorDescription"])

    def pbd_unplug(self, sr_uuid):
        """Detach this host's PBD of the SR (as if storage was lost)."""
        self.db.update("PBD", self.index.pbds[self._sr_uuid(sr_uuid)], currently_attached=False)

    def plug_failures(self, sr_uuid, n):
        """The next ``n`` PBD.plug of this SR fail with SR_BACKEND_FAILURE_108 even if reachable."""
        with self._control_lock:
            self._plug_failures[self._sr_uuid(sr_uuid)] = int(n)

    def set_latency(self, seconds):
        """Every later non-sim call waits ``seconds`` before it is handled."""
        self.latency = float(seconds)

    def add_vms(self, n):
        """Create ``n`` halted VMs unrelated to the scenario (no VIFs, no disks); returns names."""
        names = []
        for _ in range(int(n)):
            name = "filler-%d" % (len(self.index.extra_vms) + 1)
            self.index.extra_vms.append(build.create_vm(self.db, self.index, name, self.rng))
            names.append(name)
        return names

    def churn(self, n):
        """Make ``n`` changes to the unrelated VMs: other_config writes and power flips.

        Power flips write the DB directly (no hooks, no timeline): these VMs have no VIFs.
        """
        if not self.index.extra_vms:
            self.add_vms(10)
        vms = self.index.extra_vms
        for i in range(int(n)):
            vm = vms[i % len(vms)]
            if i % 2 == 0:
                self.db.mutate("VM", vm, lambda rec, i=i: rec["other_config"].__setitem__(
                    "churn", str(i)))
            elif self.db.get("VM", vm, "power_state") == "Halted":
                self.db.update("VM", vm, power_state="Running", resident_on=self.index.host)
            else:
                self.db.update("VM", vm, power_state="Halted", resident_on="OpaqueRef:NULL")

    def event_garbage(self, n):
        """The next ``n`` event.from replies carry a malformed value (see GARBAGE)."""
        with self._control_lock:
            self._garbage_left = int(n)

    def take_event_garbage(self):
        """The malformed value for this event.from reply, or None (used by the API)."""
        with self._control_lock:
            if self._garbage_left <= 0:
                return None
            self._garbage_left -= 1
            self._garbage_sent += 1
            return GARBAGE[(self._garbage_sent - 1) % len(GARBAGE)]

    def invalidate_sessions(self):
        """End every session (like session GC); blocked event.from calls get SESSION_INVALID."""
        self.db.destroy_all_sessions()

    def toolstack_restart(self, seconds, boot_seconds=0.0):
        """Simulate ``xe-toolstack-restart``: down for ``seconds``, then a start-up phase.

        While down the listeners are closed but the socket file stays (ConnectionRefusedError,
        xapi.ml ``listen_unix_socket``); every session is gone (a blocked event.from or a VM.start waiting
        its start_delay loses its connection, no reply); the DB and
        its generation are kept. Xapi_fuse marks the host disabled on the way down; on the way
        up (after ``boot_seconds`` of HOST_STILL_BOOTING) consider_enabling_host re-enables it
        unless Localdb says host_auto_enable=false or host_disabled_until_reboot (docs/xapi-behaviour.md §5).
        """
        with self._control_lock:
            for timer in (self._restart_timer, self._boot_timer):
                if timer is not None:
                    timer.cancel()
            self._boot_timer = None
            # Order matters: listeners first, so a client whose call is cut (or whose session
            # is refused) and who retries at once finds the socket refusing connections.
            self.frontend.stop()
            self._outage.set()   # first: a blocked event.from then drops without a reply
            self.db.destroy_all_sessions()
            self.db.update("host", self.index.host, enabled=False)
            self._booting_until = float("inf")
            timer = threading.Timer(float(seconds), self._come_back, args=(float(boot_seconds),))
            timer.daemon = True
            self._restart_timer = timer
            timer.start()

    def _come_back(self, boot_seconds):
        with self._control_lock:
            if self._stopped:
                return   # stop() won the race against this timer: stay down
            self._restart_timer = None
            self._outage.clear()
            self._start_boot(boot_seconds)
            self.frontend.start()

    def state(self):
        """A summary of the simulated world (plain values, also sent over the wire)."""
        db, index = self.db, self.index
        host = db.record("host", index.host)
        vms = {}
        for name, ref in sorted(index.vms.items()):
            rec = db.record("VM", ref)
            vms[name] = {"ref": ref, "uuid": rec["uuid"], "power_state": rec["power_state"],
                         "domid": int(rec["domid"]), "bridges": self.power.bridges(ref),
                         "srs": list(index.vm_srs.get(ref, [])),
                         "other_config": rec["other_config"]}
        with self._control_lock:
            failures = dict(self._plug_failures)
        srs = {}
        for uuid, pbd in sorted(index.pbds.items()):
            srs[uuid] = {"ref": index.srs[uuid], "pbd": pbd,
                         "attached": db.get("PBD", pbd, "currently_attached"),
                         "reachable": index.reachable[uuid],
                         "storage_state": index.storage_state.get(uuid, ""),
                         "plugs_in_flight": self.plugger.in_flight[uuid],
                         "current_operations": db.get("SR", index.srs[uuid],
                                                      "current_operations"),
                         "plug_failures": failures.get(uuid, 0)}
        networks = dict((name, {"ref": ref, "bridge": db.get("network", ref, "bridge")})
                        for name, ref in index.networks.items())
        with db.lock:
            messages = [dict((k, rec[k]) for k in ("name", "priority", "cls", "obj_uuid", "body"))
                        for _, rec in db.messages.values()]
            sessions = len(db.sessions)
            waiting = self.api.waiting
        with self.power.lock:
            timeline = [dict(entry) for entry in self.power.timeline]
        return {
            "up": self.frontend.up, "booting": self.booting, "clock": self.clock(),
            "generation": db.generation, "token": db.token(), "sessions": sessions,
            "event_waiters": waiting, "connections": self.frontend.accepted,
            "latency": self.latency, "settings": dict(self.settings),
            "startup_complete": self.startup_complete,
            "emergency": list(self.emergency_error or []),
            "autostart_runs": self.autostart_runs,
            "host": {"ref": index.host, "uuid": host["uuid"], "enabled": host["enabled"],
                     "auto_enable": self.local_db.get(localdb.HOST_AUTO_ENABLE) != "false",
                     "maintenance_mode":
                         host["other_config"].get("MAINTENANCE_MODE", "") == "true",
                     "user_requested_disable": self.user_requested_host_disable,
                     "pending_guidances": host["pending_guidances"],
                     "other_config": host["other_config"]},
            "pool_auto_poweron": db.get("pool", index.pool, "other_config").get(
                "auto_poweron") == "true",
            "vms": vms, "extra_vms": len(index.extra_vms), "srs": srs, "networks": networks,
            "messages": messages, "timeline": timeline, "local_db": dict(self.local_db),
            "local_db_path": self.local_db_path, "socket": self.socket_path, "port": self.port,
        }
