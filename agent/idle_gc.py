"""Cycle collection between events, not in the middle of a repair.

CPython collects cycles whenever allocations cross a threshold, in whichever thread happens
to allocate. In `agent run` on Python 3.6 (bench/kernel_latency.py, 300 repairs) that meant
67 generation-0 collections (0.17 ms on average), 6 of generation 1 (about 1 ms) and one
full collection of 9.6 ms: each lands inside a repair when it strikes. The service turns
automatic collection off and runs the very same collections itself whenever the decision
queue is drained (Service._after), so memory stays bounded as before.
"""

import gc


class IdleCollector(object):
    """Owns the collector while the service runs; ``collect()`` is called when idle."""

    def __init__(self):
        self._was_enabled = False

    def start(self):
        """Stop automatic collection (remembering whether it was on)."""
        self._was_enabled = gc.isenabled()
        gc.disable()

    def collect(self):
        """Run the collection CPython would have run by now, if any; return its generation.

        Same rule as the automatic one: nothing until generation 0 passes its threshold,
        then the oldest generation whose count passed its own.
        """
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if counts[0] <= thresholds[0]:
            return None
        generation = 0
        for older in (1, 2):
            if counts[older] > thresholds[older]:
                generation = older
        gc.collect(generation)
        return generation

    def stop(self):
        """Give collection back as it was before ``start``."""
        if self._was_enabled:
            gc.enable()
