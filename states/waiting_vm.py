"""WAITING_VM: wait for an uplink VM to run and its network's bridge to exist in the kernel.

The bridge (xapiN) of a PIF-less network exists only while one of its VIFs is plugged
(docs/xapi-behaviour.md §8), so the kernel's RTM_NEWLINK -- not XAPI's power_state -- says when binding
can start. When this run re-enabled the host (MAINTENANCE), the uplink VMs are started here,
first of all VMs, with backoff on failure -- once per fix: after every binding's bridge has
existed (``uplinks_seen``), an uplink VM that halts while the host stays enabled was stopped by
someone, and stays stopped; a host disabled again and locked out (its firewall evacuated) is
fixed again and owed its uplink VMs again (MAINTENANCE resets ``uplinks_seen``). Another
client starting the VM (OTHER_OPERATION_IN_PROGRESS) is waited for, never doubled.
"""

from agent.decision import desired
from agent.decision import events as ev
from agent.decision.world import StartVm

NAME = "WAITING_VM"
WAITS_FOR = "the bridge of every binding's network to exist in the kernel"
REASONS = ("vm:*",)


def work(ctx, event):
    """Leave when every binding's bridge exists; start the uplink VM after a host fix."""
    facts = ctx.facts
    # The bindings whose bridge exists are served meanwhile (agent/decision/keeper.py); a gone bridge's
    # backoff and gateway verdicts are dropped there, per binding.
    reply(ctx, event)
    if facts.world is not None and not desired.missing_bridges(ctx.config, facts):
        return "bridge_appeared"
    if owes_uplinks(ctx):
        start_uplinks(ctx)
        if spent_uplinks(ctx):
            return "budget_spent"
    return None


def spent_uplinks(ctx):
    """Name every uplink VM whose VM.start spent its retry budget as a DEGRADED reason
    (``vm:<label>``); it keeps being asked at the capped backoff. True when there is one."""
    spent = False
    for binding in ctx.config.bindings:
        for name in binding.vms:
            retry = ctx.retries["vm:" + name]
            if retry.spent:
                spent = True
                ctx.set_reason("vm:" + name, "VM.start failed %d times: %s; asking again every "
                               "backoff_cap s" % (retry.failures, retry.last_error))
    return spent


def reply(ctx, event):
    """Record how an uplink VM.start went, with backoff on failure (also after WAITING_VM was
    left: the bridge usually appears before VM.start returns). OTHER_OPERATION_IN_PROGRESS
    means another client (xapi-autostart-vms) is starting it: wait for its power state."""
    if not (isinstance(event, ev.ActionDone) and isinstance(event.action, StartVm)):
        return
    name = event.action.name_label
    key = "vm:" + name
    if event.ok:
        ctx.retries[key].succeeded()
        ctx.clear_reason(key)
        ctx.effect("VM.start %s" % name, "ok")
        return
    error = " ".join(str(e) for e in event.error)
    if started_elsewhere(ctx, event):
        return
    if error.startswith("VM_BAD_POWER_STATE"):
        # not halted (another client started it; or suspended): no failure counted, and not
        # asked again before backoff_cap (its event says what it became)
        wait = ctx.config.timing.backoff_cap
        ctx.effect("VM.start %s" % name, "not needed: %s (not halted)" % error,
                   retry_in=round(wait, 3))
        ctx.arm("retry:" + key, wait)
        return
    delay = ctx.retries[key].failed(error)
    ctx.effect("VM.start %s" % name, "failed: %s" % error, ok=False, retry_in=round(delay, 3))
    ctx.arm("retry:" + key, delay)


def started_elsewhere(ctx, event):
    """True when a VM.start failed with OTHER_OPERATION_IN_PROGRESS: someone else is starting
    the VM (xen-api xapi_vm_lifecycle.ml: one operation at a time), so the agent never starts
    it twice; it waits for the power state and asks again only after backoff_cap seconds,
    counting nothing against the budget. Says so in the trace."""
    if not event.error or event.error[0] != "OTHER_OPERATION_IN_PROGRESS":
        return False
    name = event.action.name_label
    wait = ctx.config.timing.backoff_cap
    ctx.facts.vm_waits[event.action.vm_ref] = " ".join(str(e) for e in event.error)
    ctx.effect("VM.start %s" % name, "another client is starting it (%s; xapi-autostart-vms?): "
               "waiting for its power state, not starting it twice"
               % " ".join(str(e) for e in event.error), retry_in=round(wait, 3))
    ctx.arm("retry:vm:" + name, wait)
    return True


def owes_uplinks(ctx):
    """True while the agent must start the uplink VMs: it re-enabled the locked-out host, whose
    own autostart therefore did not run (or whose firewall was evacuated), and they have not
    come up since that fix."""
    facts = ctx.facts
    return (facts.host_fixed and not facts.uplinks_seen and ctx.config.maintenance.autostart
            and facts.xapi_up)


def start_uplinks(ctx):
    """Start one halted uplink VM per binding whose VMs are all halted (first in config order)."""
    facts = ctx.facts
    by_label = dict((vm.name_label, vm) for vm in facts.vms.values())
    by_label.update((vm.uuid, vm) for vm in facts.vms.values() if vm.uuid)  # vms may name a uuid
    for binding in ctx.config.bindings:
        vms = [by_label[name] for name in binding.vms if name in by_label]
        if not vms or any(vm.power_state in ("Running", "Paused") for vm in vms):
            continue
        vm = vms[0]
        if not ctx.timers.armed("retry:vm:" + vm.name_label):
            ctx.facts.vm_waits.pop(vm.ref, None)  # still halted after the wait: start it
            ctx.request(StartVm(vm.ref, vm.name_label))


def blockers(ctx):
    """Which bindings still miss their bridge, and the state of their VMs (the others are served)."""
    facts = ctx.facts
    running = facts.uplink_running()
    out = []
    for network, bridge in desired.missing_bridges(ctx.config, facts):
        if not bridge:
            out.append("network '%s' has no bridge yet (XAPI not read)" % network)
        else:
            out.append("bridge %s of network '%s' absent (uplink VMs running: %s)"
                       % (bridge, network, ", ".join(running) or "none"))
    if out and facts.host_fixed and facts.uplinks_seen and not running:
        out.append("uplink VMs halted after they ran in this boot: the agent starts them only "
                   "once per boot after a lock-out; start them yourself (xe vm-start)")
    host = facts.host
    if out and host is not None and not host.enabled:
        policy = ctx.config.maintenance.enable_host
        if policy == "never":
            out.append("host disabled; [maintenance] enable_host = \"never\": enable it yourself "
                       "(xe host-enable)")
        elif host.deliberately_disabled and policy == "when-locked-out":
            out.append("host disabled on purpose (auto_enable=false or MAINTENANCE_MODE=true): left "
                       "alone under enable_host = \"when-locked-out\"; xe host-enable when done")
    return out
