"""Probe rounds as the decision thread runs them: when a round starts, how long it waits,
when the next is due, which failures count, and the kernel hints that start the rounds fast
again (a default route installed, a gateway's neighbour entry resolved, a carrier back).

A mixin of ``agent.decision.core.Agent`` (the attributes it uses -- config, facts, clock,
timers, schedule, prober, net, log, probe_started -- are the agent's). The schedule itself is
agent/decision/schedule.py; the reasons are in docs/performance.md, "End to end".
Python 3.6 compatible.
"""

from agent.decision import desired
from agent.decision import events as ev
from agent.decision import keeper
from agent.decision.schedule import REFUSED_STEP


class Probing(object):
    """The probe half of the decision thread."""

    def probe(self, key, targets):
        """Start a probe round for ``key`` unless one is running."""
        if key in self.facts.pending_probes:
            return False
        self.facts.pending_probes.add(key)
        self.probe_started[key] = self.clock.monotonic()
        timeout = self.config.timing.probe_timeout
        if key.startswith("sr:"):
            # Storage: wait for an answer until the next round is due, so one echo is always
            # on its way, as the predecessor's 5 s echo was: a router that holds it while it
            # resolves storage that is coming back (ARP) delivers the answer the moment it is
            # back. No extra packet; a gateway gets no such wait (a hint starts its next round).
            timeout = max(timeout, self.schedule.upcoming(key))
        self.prober.probe(key, list(targets), timeout)
        return True

    def next_probe_in(self, key):
        """Seconds until the next round of ``key``, start to start, on the short-then-growing
        schedule of agent/decision/schedule.py (0.1, 0.2, 0.4 ... probe_interval after a change)."""
        started = self.probe_started.get(key, self.clock.monotonic())
        elapsed = self.clock.monotonic() - started
        step = self.schedule.step(key)
        if key.startswith("sr:"):
            # Storage: keep a probe waiting where storage comes back. A router that gives up
            # resolving it answers "host unreachable": after its ARP timeout (3 s on Linux),
            # at once while its entry is marked failed, or when someone flushes that entry --
            # the moment storage is back. An answer that took the network REFUSED_STEP or more
            # starts the next round now (the router is resolving again by then); one that came
            # at once (our own kernel, a failed entry) waits out probe_timeout from the
            # round's start, so a path that fails at once costs one round per probe_timeout.
            # A service whose host refuses it: every REFUSED_STEP while it may be starting,
            # then the schedule's own pace (the host is known up; nothing is held anywhere).
            if self.schedule.refusing(key):
                if self.schedule.service_starting(key, self.clock.monotonic()):
                    step = min(step, REFUSED_STEP)
            else:
                floor = REFUSED_STEP if elapsed >= REFUSED_STEP else self.config.timing.probe_timeout
                step = min(step, floor)
        return max(0.0, step - elapsed)

    def probe_counts(self, key):
        """True when a failed round of ``key`` counts against its retry budget: only rounds
        at the full probe_interval do, so the fast ones never bring DEGRADED sooner."""
        return (self.schedule.settled(key)
                and not self.schedule.service_starting(key, self.clock.monotonic()))

    def route_writing(self, bridge):
        """A default route via ``bridge`` is about to be installed: probes start fast again,
        and the kernel will resolve the gateway's link-layer address quickly (Net.resolve_fast,
        where the port has it). Before the route, not after: the first packet routed through
        it arms the neighbour's retransmit timer with the value in force at that moment."""
        self.schedule.restart()
        resolve_fast = getattr(self.net, "resolve_fast", None)
        if resolve_fast is not None:
            try:
                resolve_fast(bridge)
            except Exception as e:  # a speed-up only: never a reason to fail the route
                self.log.warning("faster neighbour resolution on %s not set: %s; "
                                 "continuing with the kernel's default", bridge, e)

    def _probe_hint(self, event):
        """A change that matters for probes (a default route appeared, a gateway's neighbour
        entry became valid): restart the schedule and drop the armed probe timers, so the
        state's work probes at once."""
        if isinstance(event, ev.KernelChanged):
            if not any(isinstance(c, ev.RouteAdded) for c in event.changes):
                return
        elif isinstance(event, ev.CarrierUp):
            if not self._carrier_up(event.ifname):
                return
        elif event.address.split("%")[0] not in self._gateway_texts():
            return
        elif not event.valid:
            # an answered gateway's link-layer address is gone (resolution failed, or the
            # entry was flushed): ask it again now rather than at the next recheck
            if any(v == "answered" and t[1] == event.address.split("%")[0]
                   for t, v in self.facts.gateway_verdicts.items()):
                keeper.recheck(self)
            return
        self.schedule.restart()
        for name in list(self.timers.pending()):
            if name.startswith("probe:"):
                self.timers.cancel(name)

    def _xapi_back(self):
        """XAPI answers again: storage rounds waiting for their next turn start now, so storage
        that answered while XAPI was away is plugged at once, not a probe_interval later."""
        for name in list(self.timers.pending()):
            if name.startswith("probe:sr:"):
                self.timers.cancel(name)

    def _carrier_up(self, ifname):
        """The uplink ``ifname`` got carrier: forget its gateways' neighbour entries (the kernel
        would solicit again only at an entry's next retransmit, its first solicit having gone
        out on a bridge without carrier; and the kernel does not say when it flushes the
        entries of a bridge that goes), so the next packet solicits at once. Costs one ARP/ND
        exchange when an entry was valid. True when ``ifname`` carries a wanted route."""
        forget = getattr(self.net, "forget_neighbour", None)
        hit = False
        for _family, gateway, bridge in desired.wanted_routes(self.config, self.facts):
            if bridge != ifname:
                continue
            hit = True
            if forget is None:
                continue
            try:
                forget(gateway, bridge)
            except Exception as e:  # a speed-up only
                self.log.warning("forgetting the neighbour entry of %s on %s failed: %s; the kernel "
                                 "solicits again on its own", gateway, bridge, e)
        if hit and forget is not None and keeper.PROBE_KEY in self.facts.pending_probes:
            # The echoes of the round under way waited in the entries just forgotten: they are
            # gone, so that round would only time out. Let the keeper start a new one now (a
            # late result of the old round is folded like any other).
            self.facts.pending_probes.discard(keeper.PROBE_KEY)
        return hit

    def _gateway_texts(self):
        """The configured gateways as text (what a neighbour hint names)."""
        return set(str(gw) for _family, gw in self.config.gateways())
