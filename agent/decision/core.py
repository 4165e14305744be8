"""The decision thread: one queue, one machine, run to completion, one place that changes state.

``Agent.handle(event)`` folds the event into the facts, fires the earliest drift trigger that
applies (events are hints, the facts decide), else lets the current state's work make
progress; every resulting transition runs the new state's work at once. Timers are deadlines
turned into TimerFired events by the loop. Effects go through the ports only.
"""

import logging
import queue
import random
import threading
import time

from agent.decision import events as ev
from agent.decision import guards
from agent.decision import keeper
from agent.decision import machine as m
from agent.report import notify
from agent.decision.facts import Facts
from agent.report.repeats import Repeats
from agent.decision.probing import Probing
from agent.decision.schedule import ProbeSchedule
from agent.decision.timers import Retries, Timers
from agent.decision.world import PublishState, diff_views

import states

log = logging.getLogger("sspn-agent")
logging.getLogger("transitions").setLevel(logging.WARNING)  # one INFO line per transition is ours

MESSAGE_INTERVAL = 3600.0  # at most one DEGRADED alert per hour in XAPI (Xen Orchestra, XCP-ng Center)
KERNEL_REREAD = "reconcile:kernel"  # a "reconcile" timer: handle() re-reads when it fires
_KERNEL_BURST = (ev.KernelChanged, ev.KernelNotified)
_NO_STATE = ("publish_state", "raise_message")  # asked by the core: traced here when they fail
MAX_CHAIN = 16          # transitions one event may cause; more means the table loops: a bug
TRANSITIONS_KEPT = 50   # in the status file


class MachineBug(RuntimeError):
    """Our own code asked for a transition the table forbids, or the table loops."""


class _Model(object):
    """The ``transitions`` model: holds ``state``; its guards read the agent's facts."""

    def __init__(self, agent):
        self._agent = agent

    def _guard(name):  # noqa: N805 -- builds methods at class creation
        def check(self):
            a = self._agent
            return getattr(guards, name)(a.config, a.facts)
        check.__name__ = name
        check.__doc__ = m.GUARDS[name]
        return check

    has_missing_labels = _guard("has_missing_labels")
    needs_host_fix = _guard("needs_host_fix")
    uplink_present = _guard("uplink_present")
    has_storage_work = _guard("has_storage_work")
    has_xapi_world = _guard("has_xapi_world")
    del _guard


class Agent(Probing):
    """The machine with its facts, timers, retries and ports; ``handle`` is its only entry."""

    def __init__(self, config, net, xapi, prober, clock, report, mgmt_bridge="",
                 rng=None, log_=None):
        self.config = config
        self.net = net
        self.xapi = xapi
        self.prober = prober
        self.clock = clock
        self.report = report
        self.mgmt_bridge = mgmt_bridge
        self.log = log_ or log
        self.rng = rng or random.Random()
        self.queue = queue.Queue()
        self.facts = Facts()
        self.timers = Timers()
        self.retries = Retries(config.timing, self.rng)
        self.schedule = ProbeSchedule(config.timing.probe_interval)
        self.reasons = {}
        self.probe_started = {}
        self.degraded_from = None
        self.since = clock.wall()
        self.history = []
        self.counts = {}
        self._effects = None
        self._asked_in = {}        # pending action -> the state that requested it
        self._last_message = None
        self._alerted = None       # the DEGRADED message's reasons, until the recovery is raised
        self.repeats = Repeats(config.timing.probe_interval, config.timing.retry_budget)
        self._publish_due = False
        self._problems = {}
        self.reload_config = None  # set by the service: returns a new Config or None
        self.persist = None        # set by the service: writes the status file at once
        self._model = _Model(self)
        m.build_machine(self._model)
        self.stopped = False

    # --- the machine -------------------------------------------------------------------------

    @property
    def state(self):
        """The current state's name."""
        return self._model.state

    def post(self, event):
        """Queue an event (thread-safe; every source calls this)."""
        self.queue.put(event)

    def post_from_signal(self, event):
        """Queue an event from a signal handler. The handler runs on the decision thread
        between two bytecodes, perhaps while that thread holds the queue's lock (inside a
        get): post() would wait for that lock forever and SIGTERM would hang the agent. So the
        lock is only taken when free; else a short-lived thread posts the event, once the
        lock is released."""
        q = self.queue
        if not q.mutex.acquire(False):
            poster = threading.Thread(target=self.post, args=(event,), name="signal-post")
            poster.daemon = True
            poster.start()
            return
        try:
            q._put(event)
            q.unfinished_tasks += 1
            q.not_empty.notify()
        finally:
            q.mutex.release()

    def start(self):
        """Run BOOTING's work once, before any event (the early management mirror)."""
        self._settle(states.module(self.state).work(self, None), _Start())

    def handle(self, event):
        """Fold one event in, then fire what follows from it (drift first, else progress)."""
        if isinstance(event, ev.StopRequested):
            self.stopped = True
            return
        if isinstance(event, ev.ReloadRequested):
            self._reload(event)
            return
        if isinstance(event, ev.KernelNotified):
            event = self._read_kernel(event)
            if event is None:
                return
        if isinstance(event, (ev.NeighbourChanged, ev.KernelChanged, ev.CarrierUp)):
            self._probe_hint(event)
        elif isinstance(event, ev.ProbeDone):
            self.schedule.round_ended(event.key, event.refusing(), self.clock.monotonic())
        self.facts.apply(event)
        keeper.fold(self, event)
        late = isinstance(event, ev.ActionDone) and self._late_reply(event)
        if isinstance(event, ev.ActionDone) and not event.ok and event.action.kind in _NO_STATE:
            self.effect(event.action.kind, "failed: %s" % " ".join(map(str, event.error)), ok=False)
        if isinstance(event, ev.XapiConnected):
            self._publish_due = True
            self._xapi_back()
        if isinstance(event, ev.TimerFired) and event.name.startswith("reconcile"):
            self.reread_kernel()
        trigger = self._drift()
        if trigger is None:
            # a late reply was the asking state's business, not this one's
            trigger = states.module(self.state).work(self, None if late else event)
        self._settle(trigger, event)
        # each binding is served on its own, whatever the host's state (docs/bindings.md)
        self._keep()

    def _keep(self):
        """Run the per-binding keeper; publish again when a binding's problems changed. Its
        effects reach the trace after the kernel work, as a transition's do: a trace write
        between an address and its route would delay the route."""
        pending = self._effects = []
        try:
            keeper.keep(self)
        finally:
            self._effects = None
            for entry in pending:
                entry["time"] = round(self.clock.wall(), 3)
                entry["state"] = self.state
                self.report.effect(entry)
        problems = keeper.problems(self)
        if problems != self._problems:
            self._problems = problems
            self._publish_due = True

    def _late_reply(self, event):
        """Hand a reply to the state that asked, when that is not the one working now: its
        ``reply`` records it and keeps its retries right (the firewall's bridge, say, often
        appears before VM.start returns). True when the reply went there (or nowhere)."""
        asked_in = self._asked_in.pop(event.action, None)
        if asked_in is None or asked_in == self._working():
            return False
        reply = getattr(states.module(asked_in), "reply", None)
        if reply is not None:
            reply(self, event)
        return True

    def _working(self):
        """The state whose work runs now: DEGRADED runs the work of the state that failed."""
        if self.state == "DEGRADED":
            return self.degraded_from or "BOOTING"
        return self.state

    def _reload(self, event):
        """SIGHUP: take the new config from ``reload_config()`` (None keeps the old one)."""
        new = self.reload_config() if self.reload_config else None
        if new is None:
            return
        self.config = new
        self.retries = Retries(new.timing, self.rng)
        self.schedule = ProbeSchedule(new.timing.probe_interval)
        self.reasons.clear()
        self.facts.world = None
        self.facts.missing = ()
        self._settle("config_reloaded", event)
        self._keep()

    def _drift(self):
        if self.facts.world is None:
            # XAPI has not resolved the labels yet: no bridge is known, so no drift either
            # (BOOTING's own work keeps the management mirror). Without this a lost mirror took
            # a DEGRADED-from-BOOTING agent to BINDING, dropping its `xapi` reason.
            return None
        for trigger in m.DRIFT_TRIGGERS:
            if self.state == "DEGRADED" and self.degraded_from in m.destinations(self.state, trigger):
                # DEGRADED runs that state's work already: going there would only drop the
                # reason (a binding that cannot bind went DEGRADED -> BINDING and stayed there)
                continue
            if m.allowed(self.state, trigger) and guards.drift(trigger, self.config, self.facts,
                                                                  self.mgmt_bridge):
                return trigger
        return None

    def _settle(self, trigger, cause):
        chain = 0
        while trigger is not None:
            chain += 1
            if chain > MAX_CHAIN:
                raise MachineBug("more than %d transitions for one event (%s): the table loops"
                                 % (MAX_CHAIN, cause.describe()))
            trigger = self._fire(trigger, cause)
            nxt = self._drift()
            trigger = nxt if nxt is not None else trigger

    def _fire(self, trigger, cause):
        """The one place that changes state; returns the trigger the new state's work asks for."""
        source = self.state
        if not m.allowed(source, trigger):
            raise MachineBug("%s is not allowed from %s (cause: %s)" % (trigger, source, cause.describe()))
        if trigger == "budget_spent":
            self.degraded_from = source
        if not getattr(self._model, trigger)():
            raise MachineBug("no row of %s from %s had its guards hold" % (trigger, source))
        dest = self.state
        now = self.clock.wall()
        self.since = now
        self.counts[dest] = self.counts.get(dest, 0) + 1
        if dest != "DEGRADED":
            # Reasons describe DEGRADED only; a failing step sets its reason again at once,
            # since its retry count survives (no stale reason can pin the machine).
            self.degraded_from = None
            self.reasons.clear()
        record = {"time": round(now, 3), "from": source, "to": dest, "trigger": trigger,
                  "cause": cause.describe(), "effects": []}
        self._effects = record["effects"]
        if dest == "DEGRADED":
            timing = self.config.timing
            self.log.warning("%s -> %s on %s (cause: %s); %s's step keeps retrying, at most %.0f s "
                             "apart (agent status names the reasons)", source, dest, trigger,
                             record["cause"], self.degraded_from or source,
                             max(timing.backoff_cap, timing.probe_interval))
        else:
            self.log.info("%s -> %s on %s (cause: %s)", source, dest, trigger, record["cause"])
        try:
            nxt = states.module(dest).work(self, None)
        finally:
            self._effects = None
        record["reasons"] = sorted(self.reasons)
        self._publish_due = True
        if self.state in ("DEGRADED", "HEALTHY"):
            self.alert()
        self.history.append(record)
        del self.history[:-TRANSITIONS_KEPT]
        self.report.transition(record)
        return nxt

    # --- visible through XAPI ------------------------------------------------------------------

    def idle(self):
        """The queue is drained: publish the state to XAPI once for the whole burst."""
        if self._publish_due:
            self.publish()

    def publish(self):
        """Put state, since and reason in this host's other_config (xe host-param-get, XO)."""
        host = self.facts.host
        if host is None or not self.facts.xapi_up:
            return
        self._publish_due = False
        reasons = keeper.problems(self)
        reasons.update(self.reasons)
        reason = "; ".join("%s: %s" % kv for kv in sorted(reasons.items()))
        self.request(PublishState(host.ref, {
            "sspn-agent-state": self.state,
            "sspn-agent-since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
            "sspn-agent-reason": reason[:500]}))

    def alert(self):
        """One XAPI message on entering DEGRADED, at most once per MESSAGE_INTERVAL; one
        SSPN_AGENT_RECOVERED on reaching HEALTHY after it (agent/report/notify.py words both)."""
        host = self.facts.host
        now = self.clock.monotonic()
        if host is None or not self.facts.xapi_up:
            return
        if self.state == "HEALTHY":
            if self._alerted is not None:
                self.request(notify.recovered_message(host, self._alerted))
                self._alerted = None
            return
        if self._last_message is not None and now - self._last_message < MESSAGE_INTERVAL:
            return
        self._last_message = now
        self._alerted = "; ".join("%s: %s" % kv for kv in sorted(self.reasons.items()))
        self.request(notify.degraded_message(host, self._alerted))

    # --- what states call --------------------------------------------------------------------

    def effect(self, what, result, ok=True, **detail):
        """Record an effect and its result: in the current transition, else on its own."""
        entry = {"what": what, "result": result, "ok": ok}
        entry.update(detail)
        record, line = self.repeats.note(entry, self.clock.wall())  # repeats summarised: agent/report/repeats.py
        if self._effects is not None:
            self._effects.append(entry)
        elif record is not None:
            record["time"] = round(self.clock.wall(), 3)
            record["state"] = self.state
            self.report.effect(record)
        if line is not None:
            self.log.log(*line)

    def arm(self, name, delay):
        """Arm the timer ``name`` ``delay`` seconds from now (never less than 1 ms)."""
        self.timers.arm(name, self.clock.monotonic() + max(0.001, float(delay)))

    def request(self, action):
        """Ask the XAPI worker for ``action`` unless the same request is still pending."""
        if action in self.facts.pending_actions:
            return False
        self.facts.pending_actions.add(action)
        self._asked_in[action] = self._working()
        if action.kind == "enable_host" and not self.facts.host_enable_sent:
            # The agent now owes the host its uplink VMs: on disk before XAPI acts, so that a
            # successor after a crash in between still starts them (tests/faults/test_sigkill.py).
            self.facts.host_enable_sent = True
            if self.persist is not None:
                self.persist()
        self.xapi.request(action)
        return True

    def set_reason(self, key, text):
        """Add or update a DEGRADED reason."""
        self.reasons[key] = text

    def clear_reason(self, key):
        """Drop a DEGRADED reason."""
        self.reasons.pop(key, None)

    def clear_reasons(self):
        """Drop every DEGRADED reason (the failed step made progress)."""
        self.reasons.clear()

    def link_exists(self, ifname):
        """From the kernel facts once the watcher has read them, else by asking the kernel."""
        if self.facts.kernel_seen:
            return ifname in self.facts.links
        return self.net.link_exists(ifname)

    def reread_kernel(self):
        """Replace the kernel facts with a fresh read (events can be lost or silent)."""
        view = self._fresh_view("on the reconcile timer")
        if view is not None:
            self.facts.set_kernel(view)

    def _read_kernel(self, hint):
        """The KernelChanged a netlink hint stands for: read the kernel now, on this thread,
        and name the differences from what the facts held; None when the read failed."""
        view = self._fresh_view("after " + hint.describe())
        return None if view is None else ev.KernelChanged(view, diff_views(self.facts.kernel_view(), view))

    def _fresh_view(self, why):
        """net.read_view(), or None after a failure: the ``reconcile:kernel`` timer then reads
        again, since no other event might ever ask (a failed read must not stop the loop)."""
        try:
            return self.net.read_view()
        except Exception as e:
            delay = self.config.timing.backoff_base
            self.log.warning("kernel re-read %s failed: %s; reading again in %.1f s", why, e, delay)
            self.arm(KERNEL_REREAD, delay)
            return None

    # --- the loop ----------------------------------------------------------------------------

    def due_timers(self):
        """Post TimerFired for every timer whose deadline has passed; return their names."""
        names = self.timers.pop_due(self.clock.monotonic())
        for name in names:
            self.post(ev.TimerFired(name))
        return names

    def wait_seconds(self, ceiling=None):
        """How long the loop may block on the queue before the next deadline."""
        deadline = self.timers.next_deadline()
        if deadline is None:
            return ceiling
        left = max(0.0, deadline - self.clock.monotonic())
        return left if ceiling is None else min(left, ceiling)

    def _coalesce(self, event):
        """Fold a run of queued kernel events into one (a netlink burst is decided once): views
        merge into the newest, and a hint among them stands for all, since the read it
        leads to comes after every one of them.

        Returns the event to handle now; a non-kernel event met on the way is handled first
        in order, so nothing is reordered or lost.
        """
        while isinstance(event, _KERNEL_BURST):
            try:
                newer = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(newer, ev.KernelNotified):
                count = newer.count + getattr(event, "count", 0)
                event = ev.KernelNotified(count)
            elif isinstance(newer, ev.KernelChanged) and isinstance(event, ev.KernelChanged):
                event = event.merge(newer)
            elif isinstance(newer, ev.KernelChanged):
                pass  # the read the pending hint leads to is newer than this view
            else:
                self.handle(event)
                event = newer
        return event

    def run_pending(self, limit=100000):
        """Handle every queued event (and due timer) without blocking; return how many."""
        handled = 0
        while handled < limit:
            self.due_timers()
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                self.idle()
                if self.queue.empty():
                    return handled
                continue
            self.handle(self._coalesce(event))
            handled += 1
        return handled

    def run(self, after=None, tick=None):
        """The service loop: block until an event or a deadline, handle, repeat until stopped.

        ``after(drained)`` runs after every wake-up (status file, watchdog) with ``drained``
        True when the queue is empty; ``tick`` caps the wait so a watchdog can be petted even
        when nothing happens. Both run on this thread: a stuck loop stops the watchdog.
        """
        self.start()
        while not self.stopped:
            self.due_timers()
            try:
                event = self.queue.get(timeout=self.wait_seconds(tick() if callable(tick) else tick))
            except queue.Empty:
                event = None
            if event is not None:
                self.handle(self._coalesce(event))
            if self.queue.empty():
                self.idle()
            if after:
                after(self.queue.empty())


class _Start(ev.Event):
    """The cause recorded for work done at start-up, before any event."""

    kind = "agent_started"

    def describe(self):
        return "agent_started"
