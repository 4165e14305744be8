"""The first scenarios: cold boot, firewall reboot, toolstack restart, late storage,
maintenance lock-out and a networkd flush, each a function of a Lab (agent/lab/rehearsal.py)."""

from agent.lab import netns, timeline
from agent.lab.rehearsal import SILENT_PROBES, TOOLSTACK_DOWN


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
    # HEALTHY can come from xapi's PBD event before the plug's reply: restart once every plug
    # has its answer, so what follows the restart is what the restart caused
    srs = len(lab.config.srs)
    lab.wait_entries(lambda entries: sum(
        1 for _t, what, _result, ok in timeline.effects(entries)
        if what.startswith("PBD.plug ") and ok) >= srs, "the answer to each PBD.plug")
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
