"""xapi's start-up: HOST_STILL_BOOTING, consider_enabling_host, init complete, xapi-autostart-vms.

Follows xen-api v26.1.4:

- ``ocaml/xapi/xapi.ml`` start-up steps: "initialising storage" plugs the host's PBDs and then
  runs ``Create_storage`` -> ``Xapi_host_helpers.consider_enabling_host``, which ends with
  ``signal_startup_complete`` (until then ``assert_startup_complete`` makes host.enable answer
  ``HOST_STILL_BOOTING []``). Later steps wait for the management interface (an IP *and* a
  physical bridge port with carrier, ``xapi_mgmt_iface.ml`` ``wait_for_ip``) before "writing
  init complete"; a management bridge whose NIC went to a firewall VM never gets there.
- ``Xapi_host_helpers.consider_enabling_host_nolock``: the host enables itself unless the user
  disabled it in this xapi process (``user_requested_host_disable``, set by host.disable, kept
  in memory only), HA is armed and a PBD is unplugged, there is pending mandatory guidance,
  ``host_auto_enable=false`` in Localdb, or (not on a system boot) ``host_disabled_until_reboot``.
  On a system boot it clears ``host_disabled_until_reboot`` first.
- ``scripts/xapi-wait-init-complete`` gives up after 300 s; ``xapi-domains.service`` (After=
  xapi-init-complete.target; a oneshot of the system boot, not re-run by a toolstack restart)
  then runs ``scripts/xapi-autostart-vms``: if the pool has
  ``other_config:auto_poweron=true`` it runs ``xe vm-start other-config:auto_poweron=true
  power-state=halted is-a-template=false is-a-snapshot=false --multiple``: one
  ``Async.VM.start`` after another, each waited for (``cli_operations.ml`` ``vm_start`` via
  ``do_vm_op`` / ``waiter``), in database order (``order`` is not looked at), errors ignored.
- ``xapi_sr.ml`` ``physical_utilisation_thread``: every 120 s each locally plugged SR's sizes
  are refreshed from ``SR.stat`` (a ``mod`` event).
"""

import threading

from . import localdb
from .errors import XapiError


class Startup(object):
    """Start-up behaviour mixed into Simulator."""

    def _init_startup(self):
        spec = self.scenario.host
        self.startup_complete = False
        self.user_requested_host_disable = False   # xapi_host_helpers.ml, process memory
        self.on_system_boot = bool(spec.system_boot)  # Xapi_globs.on_system_boot
        self.autostart_runs = 0                     # completed xapi-autostart-vms runs
        self._startup_timers = []
        self._first_boot = True

    @property
    def booting(self):
        """Whether xapi is still starting up (host.enable answers HOST_STILL_BOOTING)."""
        return not self.startup_complete or self.clock() < self._booting_until

    def _later(self, seconds, fn):
        timer = threading.Timer(max(0.0, float(seconds)), fn)
        timer.daemon = True
        self._startup_timers = [t for t in self._startup_timers if t.is_alive()] + [timer]
        timer.start()
        return timer

    def _stop_startup_timers(self):
        for timer in self._startup_timers:
            timer.cancel()
        self._startup_timers = []

    def _start_boot(self, seconds, first=False):
        """xapi (re)starts: HOST_STILL_BOOTING for ``seconds``, then consider_enabling_host."""
        self._stop_startup_timers()
        self.startup_complete = False
        self._booting_until = 0.0
        if not first:
            # A new xapi process: its memory (a user's host.disable) is gone, and a toolstack
            # restart is not a system boot.
            self.user_requested_host_disable = False
            self.on_system_boot = False
        self._first_boot = first
        # xapi-domains.service is a oneshot (RemainAfterExit) of the system boot: a toolstack
        # restart does not run xapi-autostart-vms again.
        self._autostart_due = bool(first and self.on_system_boot and
                                   self.settings["autostart_vms"])
        self.begin_empty_db_window()
        if self._autostart_due and not self.settings["init_completes"]:
            self._later(self.settings["init_wait_seconds"], self._autostart_in_thread)
        if seconds <= 0:
            self._finish_startup()
            return
        timer = threading.Timer(seconds, lambda: self._end_boot(timer))
        timer.daemon = True
        self._boot_timer = timer
        timer.start()

    def _end_boot(self, timer):
        with self._control_lock:
            if self._stopped or self._boot_timer is not timer:
                return   # stopped, or a restart replaced this boot phase meanwhile
            self._boot_timer = None
            self._finish_startup()

    def _finish_startup(self):
        if self.settings["startup_plugs"]:
            self._plug_all()
        self._consider_enabling_host()
        if self._first_boot and self.scenario.host.operator_disabled:
            # The scenario's operator ran a plain `xe host-disable` once start-up had completed:
            # xapi keeps that in memory only (a toolstack restart forgets it).
            self.db.update("host", self.index.host, enabled=False)
            self.user_requested_host_disable = True
        if self._autostart_due and self.settings["init_completes"]:
            self._autostart_in_thread()
        interval = float(self.settings["sr_stat_interval"])
        if interval > 0:
            self._later(interval, self._periodic_sr_stat)

    def _plug_all(self):
        """Create_storage: plug every unattached PBD of this host, errors only logged."""
        for pbd in self.db.get("host", self.index.host, "PBDs"):
            try:
                self.plugger.plug(pbd, "")
            except Exception:   # xapi logs and carries on
                pass

    def ha_blocking_sr(self, host):
        """An SR ref whose unplugged PBD a protected VM needs while HA is on, else ""."""
        pool = self.index.pool
        if not self.db.get("pool", pool, "ha_enabled") or self.db.get(
                "pool", pool, "ha_allow_overcommit"):
            return ""
        for pbd in self.db.get("host", host, "PBDs"):
            if self.db.get("PBD", pbd, "currently_attached"):
                continue
            sr = self.db.get("PBD", pbd, "SR")
            vdis = set(self.db.get("SR", sr, "VDIs"))
            for rec in self.db.records("VM").values():
                # Helpers.is_xha_protected_r: ha_always_run && ha_restart_priority = "restart"
                if not (rec["ha_always_run"] and rec["ha_restart_priority"] == "restart"):
                    continue
                if any(self.db.get("VBD", vbd, "VDI") in vdis for vbd in rec["VBDs"]):
                    return sr
        return ""

    def _consider_enabling_host(self):
        """Xapi_host_helpers.consider_enabling_host_nolock, then signal_startup_complete."""
        host = self.index.host
        ha_armed = bool(self.db.get("pool", self.index.pool, "ha_enabled"))
        all_pbds_ok = all(self.db.get("PBD", pbd, "currently_attached")
                          for pbd in self.db.get("host", host, "PBDs"))
        guidance = self.db.get("host", host, "pending_guidances")
        auto_enable = self.local_db.get(localdb.HOST_AUTO_ENABLE, "true") != "false"
        if not self.user_requested_host_disable and (not ha_armed or all_pbds_ok):
            if self.on_system_boot:
                if not guidance:
                    self.put_local_db(localdb.HOST_DISABLED_UNTIL_REBOOT, "false")
                    if auto_enable:
                        self.db.update("host", host, enabled=True)
            elif self.local_db.get(localdb.HOST_DISABLED_UNTIL_REBOOT) == "true":
                pass   # "system not just rebooted but host_disabled_until_reboot still set"
            elif not guidance and auto_enable:
                self.db.update("host", host, enabled=True)
        self.on_system_boot = False
        self.startup_complete = True

    def begin_empty_db_window(self):
        """xapi.ml: on a master the Unix socket listens ("Listening unix socket") before the
        database is loaded; for ``empty_db_seconds`` calls see empty tables (exact answers of
        a real host in that window are not verified)."""
        self._empty_db_until = self.clock() + float(self.settings["empty_db_seconds"])

    def empty_db_answer(self, name, params):
        """None outside the window; else (value,) for a read of an empty table, or raises
        HANDLE_INVALID / UUID_INVALID for a call naming an object."""
        if self.clock() >= getattr(self, "_empty_db_until", 0.0):
            return None
        cls, _, message = name.partition(".")
        if cls in ("session", "event", "sim") or not message:
            return None
        if message == "get_all" or message == "get_by_name_label":
            return ([],)
        if message in ("get_all_records", "get_all_records_where"):
            return ({},)
        if message == "get_by_uuid":
            raise XapiError("UUID_INVALID", cls, params[1] if len(params) > 1 else "")
        raise XapiError("HANDLE_INVALID", cls, params[1] if len(params) > 1 else "")

    # --- xapi-autostart-vms ----------------------------------------------------------------

    def _autostart_in_thread(self):
        thread = threading.Thread(target=self.run_autostart_vms, name="xapi-autostart-vms")
        thread.daemon = True
        thread.start()
        return thread

    def run_autostart_vms(self):
        """scripts/xapi-autostart-vms: start the pool's auto_poweron VMs, one at a time."""
        pool_config = self.db.get("pool", self.index.pool, "other_config")
        if pool_config.get("auto_poweron") != "true":
            self.autostart_runs += 1
            return []
        chosen = [ref for ref, rec in self.db.records("VM").items()
                  if rec["other_config"].get("auto_poweron") == "true"
                  and rec["power_state"] == "Halted" and not rec["is_a_template"]
                  and not rec["is_a_snapshot"] and not rec["is_control_domain"]]
        chosen.sort(key=lambda ref: self.db.refs("VM").index(ref))
        session = self.db.create_session(uname="root", originator="xapi-autostart-vms",
                                         transport="unix", local=False)
        outcomes = []
        try:
            for vm in chosen:
                if self._stopped:
                    break
                self.power.note(vm, "autostart_start")
                reply = self.api.call("Async.VM.start", (session, vm, False, False),
                                      _internal_context())
                if reply.get("Status") != "Success":
                    outcomes.append((vm, reply.get("ErrorDescription")))
                    continue
                task = reply["Value"]
                outcomes.append((vm, self._wait_task(task)))
                if self.db.exists("task", task):
                    self.tasks.destroy(task)
        finally:
            self.db.destroy_session(session)
            self.autostart_runs += 1
        return outcomes

    def _wait_task(self, task):
        """The xe CLI's waiter: block until the task leaves pending; its status or error."""
        with self.db.lock:
            while self.db.exists("task", task) and not self._stopped:
                record = self.db.record("task", task)
                if record["status"] != "pending":
                    return record["error_info"] or record["status"]
                self.db.changed.wait(0.5)
        return "gone"

    # --- periodic SR.stat ------------------------------------------------------------------

    def sr_stat(self, sr):
        """SR.stat: SM reports the SR's sizes; xapi writes them (the SR gets a mod event)."""
        if not self.db.exists("SR", sr):
            return
        used = int(self.db.get("SR", sr, "physical_utilisation"))
        # The figures move a little, as a live SR's do; the write is what makes the event.
        self.db.update("SR", sr, physical_utilisation=used + 4096)

    def _periodic_sr_stat(self):
        if self._stopped or not self.frontend.up:
            return
        for sr in self.db.refs("SR"):
            pbds = [p for p in self.db.get("SR", sr, "PBDs")
                    if self.db.get("PBD", p, "currently_attached")]
            if pbds:
                self.sr_stat(sr)
        interval = float(self.settings["sr_stat_interval"])
        if interval > 0:
            self._later(interval, self._periodic_sr_stat)


def _internal_context():
    from .api import Context
    return Context("unix")
