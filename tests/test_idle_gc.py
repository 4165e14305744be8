"""IdleCollector: automatic cycle collection off while the service runs, the same collections
run when the decision queue is drained, and the collector given back as it was."""

import gc

import pytest

from agent.idle_gc import IdleCollector


@pytest.fixture
def collector_state():
    """Restore the interpreter's collector settings after the test."""
    enabled, thresholds = gc.isenabled(), gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    (gc.enable if enabled else gc.disable)()


class Cycle(object):
    def __init__(self):
        self.me = self


def test_start_stops_automatic_collection_and_stop_gives_it_back(collector_state):
    gc.enable()
    idle = IdleCollector()
    idle.start()
    assert not gc.isenabled()
    idle.stop()
    assert gc.isenabled()


def test_stop_leaves_a_collector_that_was_off_off(collector_state):
    gc.disable()
    idle = IdleCollector()
    idle.start()
    idle.stop()
    assert not gc.isenabled()


def test_nothing_is_collected_below_the_threshold(collector_state):
    gc.set_threshold(1000000, 10, 10)
    idle = IdleCollector()
    idle.start()
    gc.collect()
    assert idle.collect() is None


def test_cycles_made_while_running_are_collected_when_idle(collector_state):
    """With automatic collection off, cycles pile up; the idle call frees them."""
    gc.set_threshold(100, 1000000, 1000000)
    idle = IdleCollector()
    idle.start()
    gc.collect()
    before = sum(1 for o in gc.get_objects() if type(o) is Cycle)
    for _ in range(500):
        Cycle()
    assert sum(1 for o in gc.get_objects() if type(o) is Cycle) == before + 500
    assert idle.collect() == 0
    assert sum(1 for o in gc.get_objects() if type(o) is Cycle) == before
    idle.stop()


def test_the_oldest_due_generation_is_collected(collector_state):
    gc.set_threshold(10, 1, 1000000)
    idle = IdleCollector()
    idle.start()
    gc.collect()
    gc.collect(0)
    gc.collect(0)            # two young collections: generation 1 is past its threshold of 1
    for _ in range(50):
        Cycle()
    assert idle.collect() == 1
    idle.stop()
