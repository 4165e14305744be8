"""A whole in-memory world around a real Agent: the machine, real tables, fake ports.

For FSM unit and property tests only; integration tests use the simulator and namespaces.
"""

import random

from agent import config as cfgmod
from agent.adapters.memory import ManualClock, MemoryNet, MemoryProber, MemoryReport, MemoryXapi
from agent.decision.core import Agent
from agent.decision.keeper import RECHECK_TIMER
from agent.decision.events import KernelResynced

_PERIODIC = {"reconcile", RECHECK_TIMER}  # timers that fire forever in a quiet world
SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
MGMT = "xenbr0"
BRIDGE = "xapi1"
FOREIGN = ("xenbr0", "203.0.113.5/24")
FOREIGN_ON_BRIDGE = "198.18.0.9/24"

BASE = """
[[binding]]
network = "sspn"
vms = ["pfsense"]
addresses = ["192.0.2.2/24", "2001:db8:1::2/64"]

[route]
gateway4 = "192.0.2.1"
gateway6 = "2001:db8:1::1"

[management]
bridge = "xenbr0"

[[sr]]
uuid = "%s"

[maintenance]
enable_host = "%s"

[timing]
probe_interval = 5.0
backoff_base = 1.0
backoff_cap = 30.0
retry_budget = 3
"""


def make_config(policy="when-locked-out", extra=""):
    """The standard test config (the example's shape), with a maintenance policy."""
    return cfgmod.parse_config(BASE % (SR, policy) + extra)


BRIDGE_B = "xapi2"
# A second network with its own CARP pair and both families; the first gets a second VM too.
SECOND = """
[[binding]]
network = "sspn-b"
vms = ["fwb1", "fwb2"]
addresses = ["100.64.0.2/24", "2001:db8:2::2/64"]
gateway4 = "100.64.0.1"
gateway6 = "2001:db8:2::1"
"""


def make_two(policy="when-locked-out", prefer=None, extra=""):
    """Two bindings, two VMs each, both families, both able to carry each default route."""
    text = (BASE % (SR, policy)).replace('vms = ["pfsense"]', 'vms = ["pfsense", "pfsense2"]')
    if prefer is not None:
        text = text.replace("[route]\n", "[route]\nprefer = %s\n" % cfgmod.toml_value(prefer), 1)
    return cfgmod.parse_config(text + SECOND + extra)


class MemWorld(object):
    """A host: kernel, XAPI, storage and clock in memory, with the real Agent deciding."""

    def __init__(self, config=None, seed=0, vm_running=True, host_enabled=True, storage_up=True,
                 start=True):
        self.config = config or make_config()
        self.clock = ManualClock()
        self.report = MemoryReport()
        self.net = MemoryNet()
        self.xapi = MemoryXapi(self.config, self.net)
        self.prober = MemoryProber()
        self.agent = Agent(self.config, self.net, self.xapi, self.prober, self.clock, self.report,
                           mgmt_bridge=MGMT, rng=random.Random(seed))
        post = self.agent.post
        self.net.post = self.xapi.post = self.prober.post = post
        self.net.add_link(MGMT)
        self.net.add_address(*FOREIGN)
        self.xapi.networks["sspn"] = BRIDGE
        self.xapi.add_vm("pfsense", bridge=BRIDGE, auto_poweron=True)
        for index, binding in enumerate(self.config.bindings):
            # more bindings (TWO): network n+1 on xapi<n+1>, each with its VMs (a CARP pair)
            bridge = self.xapi.networks.setdefault(binding.network, "xapi%d" % (index + 1))
            for vm in binding.vms:
                if vm not in self.xapi.vms:
                    self.xapi.add_vm(vm, bridge=bridge)
        self.xapi.add_vm("web", auto_poweron=True, order=2, sr_uuids=(SR,))
        self.xapi.add_vm("db", auto_poweron=True, order=10, sr_uuids=(SR,))
        self.xapi.add_vm("scratch", auto_poweron=False)
        self.xapi.pbd_attached[SR] = False
        if storage_up:
            self.xapi.storage_up.add(SR)
            self.prober.reachable.add("198.51.100.10")
        self.prober.reachable.update(["192.0.2.1", "2001:db8:1::1"])
        self.prober.reachable.update(str(gw) for _f, gw in self.config.gateways())
        self.xapi.host = self.xapi.host.__class__(self.xapi.host.ref, enabled=host_enabled)
        if vm_running:
            self.xapi.set_power("pfsense", "Running")
            for binding in self.config.bindings[1:]:
                self.xapi.set_power(binding.vms[0], "Running")
        if start:
            self.boot()

    def boot(self):
        """The agent starts: the watcher's first full read, then XAPI's resync."""
        self.agent.post(KernelResynced(self.net.read_view()))
        self.agent.start()
        self.xapi.start(self.agent.post)

    def settle(self, max_time=3600.0, max_rounds=10000):
        """Handle events; when quiet, jump the clock to the next deadline; stop when nothing is left
        or ``max_time`` seconds of simulated time have passed."""
        end = self.clock.now + max_time
        for _ in range(max_rounds):
            self.agent.run_pending()
            deadline = self.agent.timers.next_deadline()
            if deadline is None or deadline > end or set(self.agent.timers.pending()) <= _PERIODIC:
                return self.agent.state  # only the periodic re-read and recheck are left: quiet
            self.clock.now = max(self.clock.now, deadline)
        raise AssertionError("did not settle in %d rounds (state %s)" % (max_rounds, self.agent.state))

    def settle_until(self, state, max_time=3600.0):
        """Settle and check that the machine is in ``state``."""
        got = self.settle(max_time)
        assert got == state, "expected %s, got %s; reasons %s" % (state, got, self.agent.reasons)
        return got
