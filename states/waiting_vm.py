"""WAITING_VM: wait for an uplink VM to run and its network's bridge to exist in the kernel.

The bridge (xapiN) of a PIF-less network exists only while one of its VIFs is plugged
(xapi-facts §6), so the kernel's RTM_NEWLINK -- not XAPI's power_state -- says when binding
can start. When this run re-enabled the host (MAINTENANCE), the uplink VMs are started here,
first of all VMs, with backoff on failure -- once per boot: after every binding's bridge has
existed (``uplinks_seen``), an uplink VM that halts was stopped by someone, and stays stopped.
"""

from agent import desired
from agent import events as ev
from agent.world import StartVm
from states.binding import TIMER as BIND_TIMER
from states.routed import ROUTE_TIMER

NAME = "WAITING_VM"
WAITS_FOR = "the bridge of every binding's network to exist in the kernel"
REASONS = ()


def work(ctx, event):
    """Leave when every binding's bridge exists; start the uplink VM after a host fix."""
    facts = ctx.facts
    facts.gateway_ok = False  # a new bridge means a new firewall boot: ask the gateway again
    # Backoffs of BINDING and ROUTED concern a bridge that is gone (a read that caught it half
    # deleted fails with "no such interface"): the next bridge is bound at once. Their retry
    # counts stay, so a bridge that keeps vanishing mid-bind still spends the budget.
    ctx.timers.cancel(BIND_TIMER)
    ctx.timers.cancel(ROUTE_TIMER)
    reply(ctx, event)
    if facts.world is not None and not desired.missing_bridges(ctx.config, facts):
        return "bridge_appeared"
    if owes_uplinks(ctx):
        start_uplinks(ctx)
    return None


def reply(ctx, event):
    """Record how an uplink VM.start went, with backoff on failure (also after WAITING_VM was
    left: the bridge usually appears before VM.start returns)."""
    if not (isinstance(event, ev.ActionDone) and isinstance(event.action, StartVm)):
        return
    key = "vm:" + event.action.name_label
    if event.ok:
        ctx.retries[key].succeeded()
        ctx.effect("VM.start %s" % event.action.name_label, "ok")
    else:
        delay = ctx.retries[key].failed(" ".join(event.error))
        ctx.effect("VM.start %s" % event.action.name_label, "failed: %s" % " ".join(event.error),
                   ok=False, retry_in=round(delay, 3))
        ctx.arm("retry:" + key, delay)


def owes_uplinks(ctx):
    """True while the agent must start the uplink VMs: it re-enabled the locked-out host, whose
    own autostart therefore did not run, and they have not come up since in this boot."""
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
            ctx.request(StartVm(vm.ref, vm.name_label))


def blockers(ctx):
    """Which bindings still miss their bridge, and the state of their VMs."""
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
