"""Deadlines and retry budgets for the decision thread: no timer threads, no callbacks.

A timer is a named deadline; the loop waits on its queue until the earliest one and then
posts ``TimerFired(name)`` like any other event (docs/architecture.md §2: a timer expiring is an ordinary
event on the queue). Retries back off exponentially with jitter, capped, and never faster
than half the base delay, so nothing busy-loops.
"""

import heapq
import random


class Timers(object):
    """Named deadlines on a monotonic clock; re-arming a name replaces its deadline."""

    def __init__(self):
        self._deadline = {}
        self._heap = []

    def arm(self, name, at):
        """Set ``name`` to fire at monotonic time ``at``."""
        self._deadline[name] = at
        heapq.heappush(self._heap, (at, name))

    def cancel(self, name):
        """Forget ``name`` (a stale heap entry is skipped later)."""
        self._deadline.pop(name, None)

    def armed(self, name):
        """True while ``name`` has a deadline."""
        return name in self._deadline

    def deadline(self, name):
        """The deadline of ``name`` or None."""
        return self._deadline.get(name)

    def next_deadline(self):
        """The earliest live deadline, or None."""
        while self._heap:
            at, name = self._heap[0]
            if self._deadline.get(name) == at:
                return at
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now):
        """Remove and return the names whose deadline is at or before ``now``, earliest first."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            at, name = heapq.heappop(self._heap)
            if self._deadline.get(name) == at:
                del self._deadline[name]
                due.append(name)
        return due

    def pending(self):
        """{name: deadline} of every armed timer."""
        return dict(self._deadline)


class Retry(object):
    """Attempts of one step: counts failures, computes the next delay, knows its budget."""

    def __init__(self, base, cap, budget, rng=None):
        self.base = float(base)
        self.cap = float(cap)
        self.budget = int(budget)
        self.failures = 0
        self.last_error = ""
        self._rng = rng or random.Random()

    def failed(self, error=""):
        """Count a failure; return the delay before the next attempt."""
        self.failures += 1
        self.last_error = error
        return self.delay()

    def delay(self):
        """base * 2**(failures-1), capped, with jitter in [0.5, 1.0] of that value."""
        exponent = max(0, self.failures - 1)
        raw = min(self.cap, self.base * (2 ** min(exponent, 32)))
        return raw * (0.5 + 0.5 * self._rng.random())

    @property
    def spent(self):
        """True once the failures reached the budget."""
        return self.failures >= self.budget

    def succeeded(self):
        """Reset after a success."""
        self.failures = 0
        self.last_error = ""


class Retries(object):
    """A Retry per key (``bind``, ``gateway``, ``sr:<uuid>`` ...), created on first use."""

    def __init__(self, timing, rng=None):
        self._timing = timing
        self._rng = rng or random.Random()
        self._by_key = {}

    def __getitem__(self, key):
        retry = self._by_key.get(key)
        if retry is None:
            t = self._timing
            retry = Retry(t.backoff_base, t.backoff_cap, t.retry_budget, self._rng)
            self._by_key[key] = retry
        return retry

    def items(self):
        """(key, Retry) pairs with at least one failure."""
        return sorted((k, r) for k, r in self._by_key.items() if r.failures)
