"""xen-api as it is (docs/xapi-fidelity.md, "Agent-side behaviours"): start-up and host
enable, xapi-autostart-vms, slow and failing plugs, a late nfsd, a pool member in emergency mode."""

import threading

from agent.lab import timeline
from agent.lab.rehearsal import LAN4_IP
from agent.lab.scenarios_basic import cold_boot


NFS_LATE = 30.0        # seconds the NAS's nfsd starts after its network (nfs-late)
STALL = 6.0            # seconds a stalled NFS mount holds PBD.plug (slow-plug; SM: 90 s and more)


def _effects_since(lab, since, prefix):
    return [(t, what, result) for t, what, result, _ok in timeline.effects(lab.entries(), since)
            if what.startswith(prefix)]


def self_enable(lab):
    """The host comes up disabled while xapi is still starting (HOST_STILL_BOOTING): the agent
    asks host.enable once, waits for xapi to enable the host itself, asking again at most every
    backoff_cap; xapi-autostart-vms then starts the firewall."""
    booting = 3 * lab.config.timing.backoff_cap
    lab.act("xapi starting: down 0.5 s, then HOST_STILL_BOOTING for %.0f s (the host disabled "
            "by Xapi_fuse until xapi enables it)" % booting,
            lambda: lab.sim.toolstack_restart(0.5, boot_seconds=booting))
    lab.start_agent()
    lab.wait_for(lambda: lab.sim.is_up and lab.sim.state()["host"]["enabled"],
                 "xapi enabling the host itself")
    asked = [ok for _w, method, ok in lab.calls if method == "host.enable"]
    lab.note("host_enable_calls", len(asked))
    refused = [ok for ok in asked if not ok]
    if len(refused) > 1 + int(booting / lab.config.timing.backoff_cap):
        lab.fail("host.enable asked %d times in %.0f s of HOST_STILL_BOOTING" % (len(refused), booting))
    # past MAINTENANCE: WAITING_VM, or further when xapi-autostart-vms already started the firewall
    lab.wait_status(lambda s: s.get("state") not in (None, "BOOTING", "MAINTENANCE"),
                    "the agent past MAINTENANCE")
    lab.start_uplinks()
    lab.wait_healthy(lab.fault_at)


def enable_refused(lab):
    """host.enable refused (HOST_DISABLED_UNTIL_REBOOT) with the firewall halted: DEGRADED with
    XAPI's code and the fix at once; once the cause is gone the agent's next ask (backoff_cap
    later) enables the host and it starts the firewall."""
    lab.act("host disabled until reboot; firewall VM halted",
            lambda: (lab.sim.host_disable(), lab.sim.set_disabled_until_reboot(True)))
    lab.start_agent()
    s = lab.wait_status(lambda s: "HOST_DISABLED_UNTIL_REBOOT" in s.get("reasons", {}).get(
        "host-enable", ""), "DEGRADED naming HOST_DISABLED_UNTIL_REBOOT")
    if s["state"] != "DEGRADED" or "fix:" not in s["reasons"]["host-enable"]:
        lab.fail("refused host.enable: state %s, reason %s" % (s["state"], s["reasons"]))
    t = lab.act("the cause is gone (the host counts as rebooted)",
                lambda: lab.sim.set_disabled_until_reboot(False), fault="cause gone")
    lab.wait_healthy(t)


def evacuated(lab):
    """From HEALTHY a plain `xe host-disable` (left alone: the firewall runs), then the firewall
    halts (evacuated): the host is locked out, the agent enables it and starts the firewall."""
    cold_boot(lab)
    lab.act("xe host-disable (plain, auto_enable left true)", lab.sim.operator_host_disable)
    fw = lab.plan.uplinks[0]
    t = lab.act("VM %s halted (evacuated from the disabled host)" % fw,
                lambda: lab.sim.vm_stop(fw), fault="the evacuation")
    lab.wait_healthy(t)
    if not lab.sim.state()["host"]["enabled"]:
        lab.fail("the host is still disabled")
    if fw not in timeline.vms_started(lab.entries()):
        lab.fail("the agent did not start %s again" % fw)


def autostart_race(lab):
    """xapi-autostart-vms runs while the agent autostarts (VM.start takes 1 s): nothing is started
    twice. A VM.start meeting the other's start waits inside xapi, then answers
    VM_BAD_POWER_STATE ("not needed"); OTHER_OPERATION_IN_PROGRESS, should xapi give up waiting,
    is waited for too (the timeline counts such waits)."""
    lab.sim.set_setting("vm_start_seconds", 1.0)
    lab.start_agent()
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM", "the agent waiting for the firewall")
    lab.start_uplinks()
    lab.wait_status(lambda s: s.get("state") == "SR_PROBING" or s.get("state") == "HEALTHY",
                    "the agent at its autostart")
    racer = threading.Thread(target=lambda: lab.act("xapi-autostart-vms runs",
                                                    lab.sim.run_autostart_vms))
    racer.daemon = True
    racer.start()
    lab.wait_healthy(lab.fault_at)
    racer.join(lab.timeout)
    started = timeline.vms_started(lab.entries()) + timeline.vms_started(lab.entries(), by_lab=True)
    twice = sorted(set(v for v in started if started.count(v) > 1))
    if twice:
        lab.fail("started twice: %s" % ", ".join(twice))
    lab.note("waited_for_other_client", len([1 for _t, _w, r in _effects_since(lab, None, "VM.start")
                                             if "another client" in r]))


def slow_plug(lab):
    """From HEALTHY the SR is lost and its NFS mount stalls (PBD.plug held STALL s, then 73);
    meanwhile the host is disabled and the firewall evacuated: host.enable and the firewall's
    VM.start are not held up behind the plug."""
    cold_boot(lab)
    sr = lab.config.srs[0].uuid
    lab.sim.set_setting("plug_stall_seconds", STALL)
    lab.act("the SR's NFS mount stalls; the PBD is detached",
            lambda: (lab.sim.set_storage_state(sr, "stalled"), lab.sim.pbd_unplug(sr)))
    lab.wait_for(lambda: lab.sim.plugger.in_flight[sr] >= 1, "the agent's PBD.plug under way")
    lab.act("xe host-disable", lab.sim.operator_host_disable)
    fw = lab.plan.uplinks[0]
    t = lab.act("VM %s halted" % fw, lambda: lab.sim.vm_stop(fw), fault="the evacuation")
    lab.wait_for(lambda: lab.sim.state()["vms"][fw]["power_state"] == "Running",
                 "the agent starting %s again" % fw)
    if not lab.sim.plugger.in_flight[sr]:
        lab.fail("the firewall came back only after the stalled plug ended")
    lab.note("firewall_back_during_plug", round(lab.now() - t, 3))
    lab.act("the NFS mount works again", lambda: lab.sim.set_storage_state(sr, ""))
    lab.wait_healthy(t)


def nfs_late(lab):
    """The NAS answers ping at once but its nfsd starts NFS_LATE s later: the agent probes the
    service port and plugs within one probe interval of the nfsd coming up, not before."""
    storage = getattr(lab.env, "storage", None)
    if storage is None:  # the in-memory kernel has no listeners: the TCP probe is not rehearsed
        cold_boot(lab)
        return
    sr = lab.config.srs[0].uuid
    lab.act("the NAS's nfsd is down (its network answers ping)", storage.stop)
    cold_boot_until_probing(lab)
    lab.act("nfsd starts in %.0f s" % NFS_LATE, lambda: storage.start(NFS_LATE))
    timeout, lab.timeout = lab.timeout, lab.timeout + NFS_LATE
    try:
        lab.wait_for(lambda: storage.up, "the nfsd coming up")
    finally:
        lab.timeout = timeout
    up = storage.up_at
    early = lab.sim.plugger.started[sr]
    lab.record("nfsd listening on 2049/111", when=up, source=timeline.SIM)
    if early:
        lab.fail("PBD.plug ran %d times before the nfsd listened" % early)
    if not lab.env.ping(lab.plan.storage[0] if lab.plan.storage else LAN4_IP)["ok"]:
        lab.fail("the NAS did not answer ping while its nfsd was down")
    lab.fault_at, lab.fault_label = up, "nfsd up"
    lab.wait_healthy(up)
    plugged = timeline.first_effect(lab.entries(), r"^PBD\.plug ", up)
    if plugged is not None:
        lab.note("nfsd_up_to_plugged", round(plugged - up, 3))


def cold_boot_until_probing(lab):
    """cold_boot up to the storage probes (the storage service does not answer yet)."""
    lab.start_agent()
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM", "the agent waiting for the firewall")
    lab.start_uplinks()
    lab.wait_entries(lambda entries: any(
        what.startswith("probe sr:") and result == "no answer"
        for _t, what, result, _ok in timeline.effects(entries)), "an unanswered storage probe")


def member_emergency(lab):
    """A pool member whose master is unreachable (xapi in emergency mode): the agent says so in
    its status, keeps the management mirror, does not spin; once the master answers, HEALTHY."""
    lab.act("pool member in emergency mode (HOST_HAS_NO_MANAGEMENT_IP)",
            lambda: lab.sim.set_emergency("no-management-ip"))
    lab.start_agent()
    lab.wait_status(lambda s: "emergency mode" in " ".join(s.get("reasons", {}).values()) or
                    "emergency mode" in " ".join(s.get("blockers", [])),
                    "the status naming emergency mode")
    t = lab.act("the master answers: emergency mode ends", lambda: lab.sim.set_emergency(""),
                fault="master back")
    lab.wait_status(lambda s: s.get("state") == "WAITING_VM", "the agent waiting for the firewall")
    lab.start_uplinks()
    lab.wait_healthy(t)
