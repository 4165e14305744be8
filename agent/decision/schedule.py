"""When to try again: probe rounds on a short-then-growing schedule, and the XAPI reconnect.

Probes. A target that does not answer is probed again after 0.1 s, then 0.2, 0.4, 0.8 ...
seconds (start to start), up to ``probe_interval``; a change that matters (a default route
installed, the gateway's neighbour entry resolved, storage's route back) starts the
sequence again. So the rounds right after such a change are close together, where an
answer is likely, and a target that stays silent costs no more than one round per
probe_interval. Only rounds made at the full interval count against a retry budget
(``settled``): the fast ones must not bring DEGRADED sooner than probe_interval rounds did
(docs/performance.md, "End to end").

Storage whose host is up but whose service refuses (a TCP reset: a NAS whose nfsd starts
after its network) is probed every ``REFUSED_STEP`` for ``REFUSED_WINDOW`` seconds after the
refusals began, then at its usual pace (probe_interval): the service answering is the
change, and nothing but a probe sees it. A refused connect costs microseconds on the wire; a
round costs dom0 about 4 ms of CPU on 3.6, so the window bounds it (bench/footprint.py: about
54 CPU-s an hour inside it, 21 when refused rounds went on every probe_timeout after it), and
none of the window's rounds counts against the retry budget.

Reconnect. Right after XAPI goes away (a toolstack restart takes seconds), the watcher
tries again every ``FAST_PERIOD`` for ``FAST_WINDOW`` seconds, then backs off from
backoff_base to backoff_cap with jitter like any other retry (agent/decision/timers.py). Only the
first failure of an outage, and those of the slow phase, are worth a warning.

Python 3.6 compatible; no I/O, the clock is passed in.
"""

import random
import time

from agent.decision.timers import Retry

FIRST_STEP = 0.1        # seconds from one probe round's start to the next, right after a change
GROWTH = 2.0
REFUSED_STEP = 0.25     # storage rounds while its host refuses the service's port ...
REFUSED_WINDOW = 120.0  # ... for this long after the refusals began (nfsd starting late)
FAST_PERIOD = 0.05      # reconnect attempts while XAPI has just gone away
FAST_WINDOW = 30.0      # ... for this long (xe-toolstack-restart takes about 10-20 s)
FAST_JITTER = 0.2       # +- this fraction of FAST_PERIOD, so agents on a pool do not march in step


class ProbeSchedule(object):
    """Per probe key: the delay to the next round, growing from FIRST_STEP to ``interval``."""

    def __init__(self, interval, first=FIRST_STEP, refused_window=REFUSED_WINDOW):
        self.interval = float(interval)
        self.first = min(float(first), self.interval)
        self.refused_window = float(refused_window)
        self._steps = {}          # key -> rounds since the last restart
        self._refused_since = {}  # key -> when its rounds began to be refused
        self.restarts = 0         # how many restarts (the trace and the tests read it)

    def step(self, key):
        """Start-to-start delay after the round of ``key`` that just ended; advances the key."""
        n = self._steps.get(key, 0)
        self._steps[key] = n + 1
        return self.delay_at(n)

    def delay_at(self, n):
        """The delay after the ``n``-th round (0-based) since a restart."""
        return min(self.interval, self.first * GROWTH ** min(n, 64))

    def upcoming(self, key):
        """The delay the next ``step(key)`` will give (without advancing)."""
        return self.delay_at(self._steps.get(key, 0))

    def settled(self, key):
        """True when the next ``step(key)`` gives the full interval: a failure of the round
        that just ended then counts against the retry budget (the fast ones do not)."""
        return self.delay_at(self._steps.get(key, 0)) >= self.interval

    def round_ended(self, key, refusing, now):
        """Record whether ``key``'s round that just ended was refused by every target (its
        host up, its service not): a run of refusals is timed from its first round."""
        if refusing:
            self._refused_since.setdefault(key, now)
        else:
            self._refused_since.pop(key, None)

    def refusing(self, key):
        """True when ``key``'s last round was refused by every target."""
        return key in self._refused_since

    def service_starting(self, key, now):
        """True while ``key``'s rounds are refused and the refusals began less than
        ``refused_window`` ago: the next round is due REFUSED_STEP after this one, and a
        failed round does not count against the retry budget."""
        since = self._refused_since.get(key)
        return since is not None and now - since < self.refused_window

    def restart(self, key=None):
        """A change that matters: the next rounds of ``key`` (None: every key) come fast again."""
        self.restarts += 1
        if key is None:
            self._steps.clear()
        else:
            self._steps.pop(key, None)


class ReconnectSchedule(Retry):
    """Retry for the XAPI watcher: FAST_PERIOD attempts for FAST_WINDOW seconds after the first
    failure of an outage (XAPI unreachable), then Retry's capped exponential backoff with
    jitter. About FAST_WINDOW / FAST_PERIOD = 600 connects per outage, each refused in
    microseconds: bench/footprint.py states the cost."""

    def __init__(self, base, cap, budget, rng=None, clock=time.monotonic,
                 fast_period=FAST_PERIOD, fast_window=FAST_WINDOW):
        Retry.__init__(self, base, cap, budget, rng or random.Random())
        self._clock = clock
        self.fast_period = float(fast_period)
        self.fast_window = float(fast_window)
        self._outage_since = None
        self._fast = 0            # failures counted in the fast phase
        self.loud = True          # the last failure deserves a warning

    def failed(self, error="", fast=False):
        """Count a failure; return the delay before the next attempt. Only ``fast`` failures
        (XAPI unreachable: refused, no socket, reset) are retried at FAST_PERIOD; any other
        (a garbage reply, a failing read) backs off at once, so nothing resyncs in a loop."""
        now = self._clock()
        first = self._outage_since is None
        if first:
            self._outage_since = now
        self.last_error = error
        if fast and now - self._outage_since < self.fast_window:
            self._fast += 1
            self.failures = 1     # the slow phase starts from backoff_base
            self.loud = first
            jitter = 1.0 + FAST_JITTER * (2.0 * self._rng.random() - 1.0)
            return self.fast_period * jitter
        self.failures += 1
        self.loud = True
        return self.delay()

    def succeeded(self):
        """Reset after a success: the next outage starts fast again."""
        Retry.succeeded(self)
        self._outage_since = None
        self._fast = 0
        self.loud = True
