"""agent/decision/schedule.py: probe rounds short-then-growing, restarted by a change; XAPI reconnects
fast right after a loss, then backing off; and the Agent's use of both."""

import random

from agent.decision import events as ev
from agent.decision.schedule import (FAST_PERIOD, FAST_WINDOW, FIRST_STEP, REFUSED_STEP, REFUSED_WINDOW,
                                     ProbeSchedule, ReconnectSchedule)
from memworld import SR, MemWorld


def test_probe_delays_grow_from_the_first_step_to_the_interval_and_stay_there():
    s = ProbeSchedule(5.0)
    delays = [s.step("gateway") for _ in range(10)]
    assert delays[:6] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    assert delays[6:] == [5.0] * 4
    assert all(a <= b for a, b in zip(delays, delays[1:]))


def test_a_restart_makes_the_next_rounds_fast_again_for_one_key_or_all():
    s = ProbeSchedule(5.0)
    for _ in range(8):
        s.step("gateway"), s.step("sr:x")
    s.restart("gateway")
    assert s.step("gateway") == FIRST_STEP and s.step("sr:x") == 5.0
    s.restart()
    assert s.step("sr:x") == FIRST_STEP


def test_only_rounds_at_the_full_interval_count_against_a_budget():
    s = ProbeSchedule(5.0)
    counted = []
    for _ in range(9):
        counted.append(s.settled("k"))
        s.step("k")
    assert counted == [False] * 6 + [True] * 3


def test_an_interval_shorter_than_the_first_step_is_never_undercut():
    s = ProbeSchedule(0.05)
    assert [s.step("k") for _ in range(3)] == [0.05, 0.05, 0.05]
    assert s.settled("k")


class Clock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_reconnect_is_fast_for_the_window_then_backs_off_and_never_below_the_fast_period():
    clock = Clock()
    r = ReconnectSchedule(1.0, 60.0, 1 << 30, random.Random(3), clock=clock)
    delays, louds = [], []
    while clock.now < 100.0 + FAST_WINDOW + 600:
        d = r.failed("refused", fast=True)
        delays.append(d)
        louds.append(r.loud)
        clock.now += d
    fast = [d for d in delays if d < 0.5]
    assert all(0.8 * FAST_PERIOD <= d <= 1.2 * FAST_PERIOD for d in fast)
    assert len(fast) <= FAST_WINDOW / (0.8 * FAST_PERIOD) + 1
    slow = delays[len(fast):]
    assert slow and all(d >= 0.5 for d in slow) and max(slow) <= 60.0
    assert louds[0] and not any(louds[1:len(fast)]) and all(louds[len(fast):])


def test_a_success_makes_the_next_outage_fast_again():
    clock = Clock()
    r = ReconnectSchedule(1.0, 60.0, 1 << 30, random.Random(3), clock=clock)
    r.failed("x", fast=True)
    clock.now += FAST_WINDOW + 1
    assert r.failed("x", fast=True) >= 0.5
    r.succeeded()
    assert r.failed("x", fast=True) < 0.1 and r.loud


def test_failures_that_are_not_xapi_being_away_back_off_at_once():
    r = ReconnectSchedule(1.0, 60.0, 1 << 30, random.Random(3), clock=Clock())
    assert r.failed("garbage reply") >= 0.5
    assert r.failed("garbage reply") >= 1.0


def _world_waiting_for_a_silent_gateway(seconds=60.0):
    w = MemWorld(vm_running=True, start=False)
    w.prober.reachable.discard("192.0.2.1")
    w.prober.reachable.discard("2001:db8:1::1")
    w.rounds = []
    probe = w.prober.probe

    def timed(key, targets, timeout):
        # a gateway round is split per target ("gateway@<target>"): count it by its v4 part
        base, _, rest = key.partition("@")
        if rest in ("", "192.0.2.1"):
            w.rounds.append((base, w.clock.now, w.agent.state, rest))
        probe(key, targets, timeout)
    w.prober.probe = timed
    w.boot()
    w.settle(max_time=seconds)
    assert w.agent.state in ("ROUTED", "DEGRADED")
    return w


def test_a_silent_gateway_is_probed_fast_then_at_the_interval_and_only_those_rounds_count():
    w = _world_waiting_for_a_silent_gateway()
    times = [t for key, t, _state, _gen in w.rounds if key == "gateway"]
    gaps = [round(b - a, 6) for a, b in zip(times, times[1:])]
    assert gaps[:6] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    assert set(gaps[6:]) == {5.0}
    # retry_budget is 3 (tests/memworld.py): DEGRADED after the 3rd round at the full interval,
    # not after the 3rd round of all (which came 0.3 s after the route).
    entered = [t["time"] for t in w.report.transitions if t["to"] == "DEGRADED"]
    first_round = times[0]
    assert entered and entered[0] - first_round >= 6.3 + 2 * 5.0 - 1e-6


def test_the_gateway_resolving_in_the_kernel_brings_a_probe_at_once():
    w = _world_waiting_for_a_silent_gateway()
    deadline = w.agent.timers.deadline("probe:gateway")
    assert deadline is not None and deadline > w.clock.now  # waiting for the next round
    w.prober.reachable.update(["192.0.2.1", "2001:db8:1::1"])
    w.agent.post(ev.NeighbourChanged("192.0.2.1", 7, True))
    w.agent.run_pending()  # no clock advance: the hint alone brings the round
    assert w.agent.state not in ("ROUTED", "DEGRADED"), w.agent.state


def test_a_neighbour_that_is_no_gateway_or_not_valid_changes_nothing():
    w = _world_waiting_for_a_silent_gateway()
    deadline = w.agent.timers.deadline("probe:gateway")
    restarts = w.agent.schedule.restarts
    w.agent.post(ev.NeighbourChanged("192.0.2.77", 7, True))
    w.agent.post(ev.NeighbourChanged("192.0.2.1", 7, False))
    w.agent.run_pending()
    assert w.agent.timers.deadline("probe:gateway") == deadline
    assert w.agent.schedule.restarts == restarts


def test_carrier_on_the_uplink_forgets_its_gateways_entries_and_probes_at_once():
    w = _world_waiting_for_a_silent_gateway()
    forgotten = []
    w.net.forget_neighbour = lambda gw, bridge: forgotten.append((str(gw), bridge))
    w.agent.post(ev.CarrierUp("xenbr0", 2))    # not an uplink: nothing
    w.agent.run_pending()
    assert forgotten == []
    restarts = w.agent.schedule.restarts
    rounds = len(w.rounds)
    w.agent.post(ev.CarrierUp("xapi1", 7))
    w.agent.run_pending()                      # no clock advance
    assert sorted(forgotten) == [("192.0.2.1", "xapi1"), ("2001:db8:1::1", "xapi1")]
    assert w.agent.schedule.restarts == restarts + 1
    assert len(w.rounds) == rounds + 1         # a round at once


def test_a_failing_forget_is_a_warning_not_a_failure():
    w = _world_waiting_for_a_silent_gateway()

    def refuse(gw, bridge):
        raise OSError("refused")
    w.net.forget_neighbour = refuse
    w.agent.post(ev.CarrierUp("xapi1", 7))
    w.agent.run_pending()
    assert w.agent.state in ("ROUTED", "DEGRADED")


def test_storage_rounds_wait_until_the_next_round_is_due_gateway_rounds_do_not():
    w = MemWorld(vm_running=True, storage_up=False, start=False)
    timeouts = []
    probe = w.prober.probe
    w.prober.probe = lambda key, targets, timeout: (timeouts.append((key, timeout)), probe(key, targets, timeout))
    w.boot()
    w.settle(max_time=60.0)
    sr = [t for k, t in timeouts if k.startswith("sr:")]
    assert sr[0] == 1.0 and sr[-1] == 5.0      # probe_timeout while fast, then the interval
    assert set(t for k, t in timeouts if k == "gateway") == {1.0}


def test_a_storage_round_the_network_answered_late_is_followed_at_once_one_answered_at_once_not():
    """A router's "unreachable" after REFUSED_STEP or more (its ARP timeout, or its entry
    flushed as storage comes back): the next round now. One that came at once (our own
    kernel, a router's failed entry): rounds stay probe_timeout apart, start to start."""
    w = MemWorld(vm_running=True, storage_up=False, start=False)
    w.boot()
    w.settle(max_time=30.0)
    agent, key = w.agent, "sr:" + SR
    for _ in range(8):
        agent.schedule.step(key)                   # settled: 5 s steps
    agent.probe_started[key] = w.clock.now - 3.0   # a router said "unreachable" after 3 s
    assert agent.next_probe_in(key) == 0.0
    agent.probe_started[key] = w.clock.now - REFUSED_STEP   # ... or after a quarter second
    assert agent.next_probe_in(key) == 0.0
    agent.probe_started[key] = w.clock.now - 0.01  # ... or at once, its entry marked failed
    assert abs(agent.next_probe_in(key) - 0.99) < 1e-6
    agent.probe_started["gateway"] = w.clock.now - 3.0
    for _ in range(8):
        agent.schedule.step("gateway")
    assert agent.next_probe_in("gateway") == 2.0   # a gateway keeps its schedule


def test_carrier_abandons_the_gateway_round_whose_echoes_waited_in_the_forgotten_entries():
    """CarrierUp forgets the gateways' neighbour entries; the round whose echoes waited there is
    left, and a new one starts at once (each gateway still judged on its own)."""
    w = MemWorld(vm_running=True, start=False)
    held = []
    w.prober.probe = lambda key, targets, timeout: held.append((key, list(targets)))
    w.net.forget_neighbour = lambda gw, bridge: None
    w.boot()
    w.agent.run_pending()
    assert len(held) == 1 and "gateway" in w.agent.facts.pending_probes
    w.agent.post(ev.CarrierUp("xapi1", 7))
    w.agent.run_pending()
    assert len(held) == 2                                # a new round at once
    w.agent.post(ev.ProbeDone("gateway", dict((t, True) for t in held[1][1])))
    w.agent.run_pending()
    assert w.agent.state != "ROUTED"


def test_a_run_of_refusals_is_timed_from_its_first_round_and_ends_with_any_other_outcome():
    s = ProbeSchedule(5.0, refused_window=10.0)
    assert not s.service_starting("sr:x", 0.0)
    s.round_ended("sr:x", True, 100.0)
    s.round_ended("sr:x", True, 105.0)
    assert s.service_starting("sr:x", 109.9) and not s.service_starting("sr:x", 110.0)
    assert not s.service_starting("sr:y", 101.0)
    s.round_ended("sr:x", False, 111.0)
    s.round_ended("sr:x", True, 112.0)        # a new run: its own window
    assert s.service_starting("sr:x", 121.9)


NFS = ("198.51.100.10:2049", "198.51.100.10:111")


def _world_whose_storage_service_refuses(seconds):
    w = MemWorld(vm_running=True, start=False)
    w.prober.services_down.update(NFS)         # the NAS is up, its nfsd is not
    w.rounds = []
    probe = w.prober.probe

    def timed(key, targets, timeout):
        if key.startswith("sr:"):
            w.rounds.append(w.clock.now)
        probe(key, targets, timeout)
    w.prober.probe = timed
    w.boot()
    w.settle(max_time=seconds)
    return w


def test_storage_whose_service_refuses_is_probed_every_refused_step_and_no_round_counts():
    w = _world_whose_storage_service_refuses(REFUSED_WINDOW - 10.0)
    gaps = [round(b - a, 6) for a, b in zip(w.rounds, w.rounds[1:])]
    assert gaps[:2] == [0.1, 0.2] and set(gaps[2:]) == {REFUSED_STEP}
    assert w.agent.state == "SR_PROBING" and not w.agent.reasons   # budget 3, nothing spent
    assert any("refused: host up, service not" in str(e) for e in w.report.effects)
    w.prober.services_down.clear()             # nfsd answers
    answered_at = w.clock.wall()
    w.settle(max_time=5.0)
    plugged = [t for t in w.report.effects if "PBD.plug" in t["what"] and t["result"] == "ok"]
    assert plugged and plugged[0]["time"] - answered_at <= REFUSED_STEP + 1e-6


def test_after_the_window_a_refusing_service_is_probed_at_probe_interval_and_spends_the_budget():
    """After REFUSED_WINDOW the service is down, not starting: rounds at probe_interval (at
    probe_timeout they cost 21 CPU-s an hour on 3.6, bench/footprint.py)."""
    w = _world_whose_storage_service_refuses(REFUSED_WINDOW + 60.0)
    late = [round(b - a, 6) for a, b in zip(w.rounds, w.rounds[1:]) if a > 1000.0 + REFUSED_WINDOW + 1]
    assert late and set(late) == {w.config.timing.probe_interval}
    assert w.agent.state == "DEGRADED" and ("sr:" + SR) in w.agent.reasons
    entered = [t["time"] for t in w.report.transitions if t["to"] == "DEGRADED"]
    assert entered[0] - w.clock.wall() >= w.rounds[0] + REFUSED_WINDOW - w.clock.now
