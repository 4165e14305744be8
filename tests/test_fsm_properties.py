"""Hypothesis stateful tests: random fault sequences against the real machine definition.

The machine under test is the real Agent with the real table, states and guards; only the
ports are in memory. Invariants (docs/machine.md §6): every transition is a row of the table and
names its cause; nothing outside the config is ever removed; host.enable is never called
against policy; retries never busy-loop; and once the world is quiet and healthy, the
machine ends in HEALTHY with everything in place. The world has two bindings (two networks,
two firewall VMs each, both families, each able to carry both default routes): once the world
is quiet, a binding whose bridge exists holds all its addresses, its mirrors and the default
routes it should carry, whatever the other binding does.
"""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agent.decision import events as ev
from agent.decision import machine as m
from agent.decision import desired
from agent.decision.schedule import FIRST_STEP
from agent.decision.world import EnableHost
from memworld import BRIDGE, BRIDGE_B, FOREIGN, FOREIGN_ON_BRIDGE, MGMT, SR, MemWorld, make_two

POLICIES = ("when-locked-out", "always", "never")
WANTED = [(BRIDGE, "192.0.2.2/24"), (BRIDGE, "2001:db8:1::2/64"),
          (MGMT, "192.0.2.2/32"), (MGMT, "2001:db8:1::2/128"),
          (BRIDGE_B, "100.64.0.2/24"), (BRIDGE_B, "2001:db8:2::2/64"),
          (MGMT, "100.64.0.2/32"), (MGMT, "2001:db8:2::2/128")]
FIREWALLS = ("pfsense", "pfsense2", "fwb1", "fwb2")
GATEWAYS = ("192.0.2.1", "2001:db8:1::1", "100.64.0.1", "2001:db8:2::1")
ROWS = set((s, r["trigger"], r["dest"]) for r in m.rows() for s in r["source"])


class AgentInAHostileWorld(RuleBasedStateMachine):
    """Drives a MemWorld with random faults; the Agent decides."""

    @initialize(policy=st.sampled_from(POLICIES), vm_running=st.booleans(),
                host_enabled=st.booleans(), storage_up=st.booleans(), seed=st.integers(0, 2 ** 16))
    def boot(self, policy, vm_running, host_enabled, storage_up, seed):
        self.policy = policy
        self.world = MemWorld(config=make_two(policy), seed=seed, vm_running=vm_running,
                              host_enabled=host_enabled, storage_up=storage_up, start=False)
        self.delays = []
        agent = self.world.agent
        arm = agent.arm

        def recording_arm(name, delay):
            self.delays.append((name, delay, agent.schedule.restarts))
            arm(name, delay)
        agent.arm = recording_arm
        self.enables = []
        request = agent.request

        def recording_request(action):
            # judged on what the agent knew when it decided: the world may have moved since
            if isinstance(action, EnableHost):
                host = agent.facts.host
                self.enables.append((host.deliberately_disabled, tuple(agent.facts.uplink_running())))
            return request(action)
        agent.request = recording_request
        self.world.boot()
        self.world.agent.run_pending()

    # --- the world misbehaves ------------------------------------------------------------------

    @rule(name=st.sampled_from(FIREWALLS))
    def firewall_stops(self, name):
        self.world.xapi.set_power(name, "Halted")

    @rule(name=st.sampled_from(FIREWALLS))
    def firewall_starts(self, name):
        if self.world.xapi.vms[name].power_state != "Running":
            self.world.xapi.set_power(name, "Running")

    @rule(which=st.sampled_from(WANTED))
    def someone_removes_an_address(self, which):
        self.world.net.remove_address(*which)

    @rule(family=st.sampled_from([4, 6]))
    def someone_removes_the_default_route(self, family):
        for route in list(self.world.net.routes):
            if route[0] == family:
                self.world.net.remove_route(*route)

    @rule(which=st.sampled_from(WANTED))
    def a_change_cancels_out_inside_one_netlink_batch(self, which):
        # the watcher re-reads after a batch: a removal it never saw as a delta
        net = self.world.net
        post, net.post = net.post, (lambda e: None)
        net.remove_address(*which)
        net.post = post
        post(ev.KernelChanged(net.read_view(), ()))

    @rule(bridge=st.sampled_from([BRIDGE, BRIDGE_B]))
    def networkd_flushes_the_bridge(self, bridge):
        self.world.net.flush(bridge)

    @rule()
    def a_foreign_address_appears_on_the_bridge(self):
        if BRIDGE in self.world.net.links:
            self.world.net.add_address(BRIDGE, FOREIGN_ON_BRIDGE)

    @rule()
    def pbd_detaches(self):
        self.world.xapi.set_pbd(SR, False)

    @rule(up=st.booleans())
    def storage_flaps(self, up):
        target = "198.51.100.10"
        if up:
            self.world.xapi.storage_up.add(SR)
            self.world.prober.reachable.add(target)
        else:
            self.world.xapi.storage_up.discard(SR)
            self.world.prober.reachable.discard(target)

    @rule(n=st.integers(1, 6))
    def plug_fails_n_times(self, n):
        self.world.xapi.plug_failures[SR] = n

    @rule(n=st.integers(1, 4))
    def kernel_refuses_n_requests(self, n):
        self.world.net.fail_next = n

    @rule()
    def toolstack_restarts(self):
        self.world.xapi.restart()

    @rule(up=st.booleans())
    def xapi_goes(self, up):
        self.world.xapi.up = up
        self.world.xapi.connect()

    @rule(deliberate=st.booleans())
    def host_gets_disabled(self, deliberate):
        self.world.xapi.set_host(enabled=False, auto_enable=not deliberate)

    @rule(which=st.sets(st.sampled_from(GATEWAYS), min_size=1))
    def gateways_go_silent(self, which):
        self.world.prober.reachable.difference_update(which)

    @rule(which=st.sampled_from(GATEWAYS))
    def a_gateway_answers_again(self, which):
        self.world.prober.reachable.add(which)

    @rule(gateway=st.sampled_from(["192.0.2.1", "2001:db8:1::1", "192.0.2.77"]), valid=st.booleans())
    def the_kernel_hints_at_a_neighbour(self, gateway, valid):
        # the netlink watcher's hint; it may come at any time, for a gateway or not
        self.world.agent.post(ev.NeighbourChanged(gateway, 7, valid))

    @rule(booting=st.booleans())
    def xapi_boot_phase(self, booting):
        self.world.xapi.booting = booting

    @rule(seconds=st.floats(0.0, 120.0))
    def time_passes(self, seconds):
        self.world.settle(max_time=seconds)

    @rule()
    def events_are_handled(self):
        self.world.agent.run_pending()

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def only_table_transitions_each_with_a_cause(self):
        for t in self.world.report.transitions:
            assert (t["from"], t["trigger"], t["to"]) in ROWS, t
            assert t["cause"], t

    @invariant()
    def nothing_outside_the_config_is_removed(self):
        # no rule removes the foreign management address, so only the agent could
        assert FOREIGN in self.world.net.addresses
        replaced = [c for c in self.world.net.calls if c[0] == "ensure_default_route"]
        assert all(c[1] in GATEWAYS for c in replaced)

    @invariant()
    def host_enable_only_when_policy_allows(self):
        for deliberate, running in self.enables:
            assert self.policy != "never"
            if self.policy == "when-locked-out":
                assert not deliberate and not running, (deliberate, running)

    @invariant()
    def retries_never_busy_loop(self):
        floor = 0.5 * self.world.config.timing.backoff_base
        for name, delay, _restarts in self.delays:
            if not name.startswith("probe:"):
                assert delay >= floor, (name, delay)

    @invariant()
    def probes_come_fast_only_right_after_a_change(self):
        # Probe rounds follow agent/decision/schedule.py: never closer than FIRST_STEP, and between
        # two restarts of the schedule (a route installed, a gateway resolved) at most the
        # few fast steps below the retry floor; after them, rounds back off like retries.
        sched = self.world.agent.schedule
        floor = 0.5 * self.world.config.timing.backoff_base
        fast_steps = sum(1 for n in range(64) if sched.delay_at(n) < floor)
        fast = {}
        for name, delay, restarts in self.delays:
            if name.startswith("probe:") and delay < floor:
                assert delay >= FIRST_STEP - 1e-9, (name, delay)
                fast[(name, restarts)] = fast.get((name, restarts), 0) + 1
        for key, count in fast.items():
            assert count <= fast_steps, (key, count, fast_steps)

    def teardown(self):
        """Quiet, each binding whose bridge exists holds its part, whatever the other does; a
        quiet, healthy world then always ends in HEALTHY with everything in place."""
        w = self.world
        w.net.fail_next = 0
        w.settle(max_time=3600)   # an hour: every backoff (cap 30 s) has run out many times
        self.bindings_with_a_bridge_hold_their_part()
        w.xapi.up = True
        w.xapi.booting = False
        w.xapi.plug_failures.clear()
        w.xapi.storage_up.add(SR)
        w.prober.reachable.update(("198.51.100.10",) + GATEWAYS)
        w.net.fail_next = 0
        if not w.xapi.host.enabled:
            w.xapi.set_host(enabled=True, auto_enable=True)
        for name in ("pfsense", "fwb1"):
            if w.xapi.vms[name].power_state != "Running":
                w.xapi.set_power(name, "Running")
        w.xapi.connect()
        w.settle_until("HEALTHY", max_time=24 * 3600)
        for entry in WANTED:
            assert entry in w.net.addresses, entry
        assert (4, "192.0.2.1", BRIDGE) in w.net.routes and (6, "2001:db8:1::1", BRIDGE) in w.net.routes
        assert w.xapi.pbd_attached[SR]
        assert FOREIGN in w.net.addresses


    def bindings_with_a_bridge_hold_their_part(self):
        """The new invariant: checked on a quiet world, in whatever host state."""
        w = self.world
        facts, config = w.agent.facts, w.config
        for ifname, iface in desired.wanted_mirrors(config, MGMT):
            assert (ifname, str(iface)) in w.net.addresses, (ifname, iface, w.agent.state)
        for index, binding in enumerate(config.bindings):
            bridge = desired.bridge_of(facts, index)
            if not bridge or bridge not in w.net.links:
                continue
            for iface in binding.addresses:
                assert (bridge, str(iface)) in w.net.addresses, (bridge, iface, w.agent.state)
        for family, gateway, bridge in desired.wanted_routes(config, facts):
            assert (family, str(gateway), bridge) in w.net.routes, (family, gateway, w.agent.state)


AgentInAHostileWorld.TestCase.settings = settings(
    stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestAgentInAHostileWorld = AgentInAHostileWorld.TestCase
