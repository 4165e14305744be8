"""SR_PROBING: probe storage, plug this host's detached PBDs as soon as their target answers,
then start the held-back auto-power-on VMs in ascending ``order`` groups.

All SRs are probed concurrently every probe_interval (the predecessor pinged serially, 5 s
per miss; SkyDubh/vif-ip-binder). Only this host's PBD of a configured SR is plugged. A failed plug
backs off exponentially with jitter; after the retry budget the machine enters DEGRADED with
reason sr:<uuid> while probes continue. Autostart runs once per host boot: VM.start already
waits the VM's start_delay (docs/xapi-behaviour.md §6), so no second delay is added here.
"""

import attr

from agent.decision import desired
from agent.decision import events as ev
from agent.ports import UNSENT
from agent.decision.world import ListAutostart, PlugPbd, StartVm
from states import waiting_vm

NAME = "SR_PROBING"
WAITS_FOR = "every configured SR plugged on this host, then the autostart VMs started"
REASONS = ("sr:*", "autostart")


def _key(sr):
    return "sr:" + sr.uuid


def handle_event(ctx, event):
    """Fold a probe answer, or (``reply``) an XAPI result, into the SR and autostart bookkeeping."""
    facts = ctx.facts
    by_key = dict((_key(sr), sr) for sr in ctx.config.srs)
    if isinstance(event, ev.ProbeDone) and event.key in by_key:
        sr = by_key[event.key]
        pbd = facts.pbds.get(sr.uuid)
        targets = ", ".join(t for t, _ok in event.results)
        if event.answered() and not facts.xapi_up:
            # Storage is back but XAPI is not: no plug to fail against the SR's budget. Ask
            # again at the usual pace: XAPI's return drops this timer, so the round that
            # leads to the plug starts then (agent/decision/probing.py ``_xapi_back``); every
            # probe_timeout it cost 14.7 CPU-s an hour on 3.6 (docs/performance.md).
            ctx.effect("probe %s (%s)" % (event.key, targets), "answered; XAPI unreachable, plug waits")
            ctx.arm("probe:" + event.key, ctx.config.timing.probe_interval)
        elif event.answered():
            ctx.effect("probe %s (%s)" % (event.key, targets), "answered")
            if pbd is not None and not pbd.attached:
                ctx.request(PlugPbd(pbd.ref, sr.uuid))
        else:
            counts = ctx.probe_counts(event.key)  # the fast rounds after a change do not count
            delay = ctx.next_probe_in(event.key)
            if event.refusing():  # a round that ends at once: its next comes after ``delay``
                ctx.effect("probe %s (%s)" % (event.key, targets), "refused: host up, service not",
                           ok=False, retry_in=round(delay, 3))
            else:                 # a silent one waits for its answer until the next is due
                ctx.effect("probe %s (%s)" % (event.key, targets), "no answer", ok=False)
            if counts:
                ctx.retries[event.key].failed("storage target %s not answering" % targets)
            ctx.arm("probe:" + event.key, delay)
    else:
        reply(ctx, event)


def reply(ctx, event):
    """Fold a plug/list/start result into the SR and autostart bookkeeping (also after
    SR_PROBING was left, e.g. for an address lost while a PBD.plug was under way)."""
    facts = ctx.facts
    if isinstance(event, ev.ActionDone) and isinstance(event.action, PlugPbd):
        key = "sr:" + event.action.sr_uuid
        pbd = facts.pbds.get(event.action.sr_uuid)
        if event.ok and event.value is False:
            # plugged, then detached again before the reply (read by the adapter after the
            # plug): the PbdChanged saying so came first; probe again
            ctx.effect("PBD.plug %s" % key, "ok, but detached again since")
            ctx.arm("probe:" + key, ctx.next_probe_in(key))
        elif event.ok:
            if pbd is not None:
                facts.pbds[pbd.sr_uuid] = attr.evolve(pbd, attached=True)
            ctx.retries[key].succeeded()
            ctx.clear_reason(key)
            ctx.effect("PBD.plug %s" % key, "ok")
        elif event.error and str(event.error[0]).startswith(UNSENT):
            # Never reached XAPI (the adapter knew it was down): not the SR's failure.
            ctx.effect("PBD.plug %s" % key, "not sent: %s" % " ".join(event.error), ok=False)
            ctx.arm("probe:" + key, ctx.next_probe_in(key))
        elif pbd is not None and pbd.attached:
            # The reply was lost (a toolstack restart cut the connection after SM attached the
            # SR) but xapi's event already said attached: nothing failed that a retry would fix.
            ctx.retries[key].succeeded()
            ctx.clear_reason(key)
            ctx.effect("PBD.plug %s" % key, "attached; its reply was lost (%s)" % " ".join(event.error))
        else:
            error = " ".join(event.error)
            delay = ctx.retries[key].failed(error)
            ctx.effect("PBD.plug %s" % key, "failed: %s" % error, ok=False, retry_in=round(delay, 3))
            ctx.arm("probe:" + key, delay)
    elif isinstance(event, ev.ActionDone) and isinstance(event.action, ListAutostart):
        if event.ok:
            facts.autostart_queue = plan_autostart(event.value or ())
            ctx.retries["autostart"].succeeded()
            ctx.clear_reason("autostart")
            ctx.effect("list auto-power-on VMs", "%d to start" % sum(len(g) for g in facts.autostart_queue))
        else:
            # Never silent: a record XAPI sends that the client cannot parse failed this
            # forever, with no trace; now it is an effect and spends the budget (DEGRADED).
            error = " ".join(str(e) for e in event.error) or "no reason given"
            delay = ctx.retries["autostart"].failed(error)
            ctx.effect("list auto-power-on VMs", "failed: %s" % error, ok=False, retry_in=round(delay, 3))
            ctx.arm("retry:autostart", delay)
    elif isinstance(event, ev.ActionDone) and isinstance(event.action, StartVm):
        name = event.action.name_label
        if event.ok:
            ctx.effect("VM.start %s" % name, "ok")
            _drop_started(facts, event.action.vm_ref)
        elif waiting_vm.started_elsewhere(ctx, event):
            # xapi-autostart-vms is starting it: its group stays until the wait is over, then
            # the list is read again (a VM that runs by then is no longer listed)
            facts.autostart_queue = None
            ctx.arm("retry:autostart", ctx.config.timing.backoff_cap)
        else:
            error = " ".join(str(e) for e in event.error)
            if error.startswith("VM_BAD_POWER_STATE"):
                # already running (another client started it): nothing to do, no failure
                ctx.effect("VM.start %s" % name, "not needed: %s (started by another client)" % error)
                _drop_started(facts, event.action.vm_ref)
                return
            retry = ctx.retries["vm:" + name]
            delay = retry.failed(error)
            if retry.spent:
                ctx.effect("VM.start %s" % name, "failed: %s; giving up" % error, ok=False)
                _drop_started(facts, event.action.vm_ref)
            else:
                ctx.effect("VM.start %s" % name, "failed: %s" % error, ok=False, retry_in=round(delay, 3))
                ctx.arm("retry:vm:" + name, delay)


def plan_autostart(vms):
    """Groups of VmView by ascending integer order (XAPI sends ints as strings; "10" > "2")."""
    groups = {}
    for vm in vms:
        if vm.auto_poweron and vm.power_state == "Halted":
            groups.setdefault(int(vm.order), []).append(vm)
    return [sorted(groups[k], key=lambda v: v.name_label) for k in sorted(groups)]


def _drop_started(facts, vm_ref):
    if facts.autostart_queue:
        facts.autostart_queue[0] = [v for v in facts.autostart_queue[0] if v.ref != vm_ref]
        while facts.autostart_queue and not facts.autostart_queue[0]:
            facts.autostart_queue.pop(0)


def held_back(ctx, vm):
    """The configured SRs of ``vm`` that are not plugged here yet."""
    return [u for u in vm.sr_uuids if u in ctx.facts.pbds and not ctx.facts.pbds[u].attached]


def run_autostart(ctx):
    """Advance the autostart: list once, then start the first group's VMs. True when done."""
    facts = ctx.facts
    if not desired.autostart_due(ctx.config, facts):
        return True
    if not facts.xapi_up:
        return False
    if facts.autostart_queue is None:
        if not ctx.timers.armed("retry:autostart"):
            ctx.request(ListAutostart())
        return False
    if not facts.autostart_queue:
        facts.autostart_done = True
        facts.autostart_queue = None
        ctx.effect("autostart", "done")
        return True
    for vm in facts.autostart_queue[0]:
        if not held_back(ctx, vm) and not ctx.timers.armed("retry:vm:" + vm.name_label):
            ctx.request(StartVm(vm.ref, vm.name_label))
    return False


def work(ctx, event):
    """Probe detached SRs, plug them, run autostart; srs_attached when all is done."""
    handle_event(ctx, event)
    detached = desired.detached_srs(ctx.config, ctx.facts)
    for sr in detached:
        key = _key(sr)
        pbd = ctx.facts.pbds[sr.uuid]
        if ctx.timers.armed("probe:" + key) or PlugPbd(pbd.ref, sr.uuid) in ctx.facts.pending_actions:
            continue
        targets = desired.storage_targets(sr, pbd)
        if targets:
            ctx.probe(key, targets)
        elif ctx.facts.xapi_up:
            ctx.request(PlugPbd(pbd.ref, sr.uuid))
    spent = [sr for sr in detached if ctx.retries[_key(sr)].spent]
    for sr in spent:
        retry = ctx.retries[_key(sr)]
        ctx.set_reason(_key(sr), "not plugged after %d attempts: %s" % (retry.failures, retry.last_error))
    unknown = desired.unknown_srs(ctx.config, ctx.facts)
    for sr, what in unknown:
        ctx.set_reason(_key(sr), unknown_text(what))
    unknown_srs = [u for u, _w in unknown]
    for sr in ctx.config.srs:
        if sr in unknown_srs or sr in detached:
            continue
        # plugged (by this agent, by xapi at start-up, or by a plug whose reply timed out),
        # or resolved since (a corrected uuid): that step has succeeded
        if sr.uuid in ctx.facts.pbds:
            ctx.retries[_key(sr)].succeeded()
        ctx.clear_reason(_key(sr))
    done = run_autostart(ctx)
    listing = ctx.retries["autostart"]
    if listing.spent and not done:
        ctx.set_reason("autostart", "cannot list the auto-power-on VMs after %d attempts: %s"
                       % (listing.failures, listing.last_error))
        spent = spent or [None]
    if spent or unknown:
        return "budget_spent"
    if not detached and done:
        return "srs_attached"
    return None


def unknown_text(what):
    """The DEGRADED reason of a configured SR XAPI does not know on this host."""
    if "no PBD" in what:
        return ("%s: XAPI has this SR but no PBD of it on this host; fix: create and plug one "
                "(xe pbd-create host-uuid=... sr-uuid=... device-config:...) or drop the [[sr]]"
                % what)
    return ("%s: XAPI knows no SR with this uuid; fix: correct [[sr]] uuid in agent.toml "
            "(xe sr-list params=uuid,name-label), then systemctl kill -s HUP sspn-agent" % what)


def blockers(ctx):
    """Detached SRs with their last error, pool-master hints, and pending autostart groups."""
    facts = ctx.facts
    out = [unknown_text(what) for _sr, what in desired.unknown_srs(ctx.config, facts)]
    for sr in desired.detached_srs(ctx.config, facts):
        pbd = facts.pbds[sr.uuid]
        retry = ctx.retries[_key(sr)]
        line = "sr:%s detached (targets: %s)" % (sr.uuid, ", ".join(desired.storage_targets(sr, pbd)) or "none")
        if retry.failures:
            line += "; %d failed attempts, last: %s" % (retry.failures, retry.last_error)
        out.append(line)
        if pbd.shared and pbd.master_attached is False:
            out.append("sr:%s: the pool master's PBD is detached too; shared SRs plug on members "
                       "only after the master" % sr.uuid)
    if facts.autostart_queue:
        for vm in facts.autostart_queue[0]:
            held = held_back(ctx, vm)
            out.append("autostart %s (order %s)%s" % (vm.name_label, vm.order,
                                                       " held back by sr:" + ",".join(held) if held else ""))
    return out
