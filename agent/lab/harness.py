"""The simulated host of the tests and benches: the lab's host of agent.toml.example, with waits.

``Host`` is agent/lab/simhost.py's ``SimulatedHost`` (the XAPI simulator, the dom0/fw/lan
namespaces, the real agent as its own process in dom0) in a fresh run directory, as a context
manager that always cleans up. Its agent.toml is the lab's default plan (agent/lab/rehearsal.py
``default_plan``: the config of agent.toml.example), written as the lab writes it; starting the
firewall VM "pfsense" makes its bridge and VIF in dom0. Tests and benches wait on the agent's
status file and read its trace through it. Needs root.
"""

import json
import os
import shutil
import time

import attr

from agent.lab.simhost import SimulatedHost, private_dir

FIREWALL = "pfsense"
NFS_SERVER = "198.51.100.10"


class Host(SimulatedHost):
    """The simulated host of one test or bench run; a context manager that always cleans up."""

    def __init__(self, probe=True, config_text=None, fast=True, scenario=None, extra_config="",
                 bridge=None, bring_up=True):
        """``probe``: the config's ``[route] probe``; ``fast``: the lab's timings (0.5 s probes,
        2 s backoff cap), False: the defaults. ``config_text``: the agent.toml to run instead
        of the lab's (its socket and files must be this host's); ``extra_config``: TOML appended
        to it (more [[binding]]s, say). ``scenario``: the simulator's host (default:
        agent/lab/hosts/default.toml). ``bridge``: "linux" or "ovs" (default ``$SSPN_BRIDGE``,
        else Linux bridges). ``bring_up`` False: a started firewall's new bridge stays down
        (with its VIF as port) until the test calls ``topology.bridge_up``, as if xcp-networkd
        were slow."""
        workdir = private_dir("sspnlab")
        try:
            SimulatedHost.__init__(self, workdir, scenario=scenario, bridge=bridge)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        self.probe, self.fast, self.bring_up = probe, fast, bring_up
        self.config_text = config_text
        self.extra_config = extra_config
        self.started = time.time()
        self.marks = []  # (wall time, what the test or bench did)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self.close()

    def mark(self, what):
        """Record an action of the caller's own for the timeline."""
        self.marks.append((time.time(), what))

    def start(self):
        """Namespaces, storage ports and simulator; the agent is started by ``start_agent``."""
        from agent.lab.netns import sim_hook
        self.create_network()
        self.start_simulator(sim_hook(self.topology, vm_names=[FIREWALL], up=self.bring_up))

    def ping(self, address):
        """One real ICMP echo from dom0 (through the firewall namespace for the storage LAN)."""
        return self.topology.ping("dom0", address)

    @property
    def config_path(self):
        return os.path.join(self.dir, "agent.toml")

    def write_config(self):
        """The run's agent.toml and the inventory beside it, as the lab writes them for its
        default plan (with ``probe`` and ``fast``); ``config_text`` instead, if given; then
        ``extra_config``. Returns its path."""
        from agent import config as cfgmod
        from agent.lab import rehearsal
        plan = rehearsal.default_plan()
        config = attr.evolve(plan.config, route=attr.evolve(plan.config.route, probe=self.probe),
                             timing=plan.config.timing if self.fast else cfgmod.TimingConfig())
        rehearsal.write_config(attr.evolve(plan, config=config), self.dir, self.sim)
        with open(self.config_path, "a" if self.config_text is None else "w") as f:
            f.write((self.config_text or "") + self.extra_config)
        return self.config_path

    def start_agent(self, append=False):
        """`python -m agent run` inside dom0 with ``write_config``'s agent.toml, logging to
        agent.log in the run directory (``append``: after the previous agent's log)."""
        self.write_config()
        SimulatedHost.start_agent(self, self.config_path, append)
        self.mark("agent started (ip netns exec dom0 agent run)")
        return self.agent

    def status(self):
        """The agent's status file, or {}."""
        try:
            with open(os.path.join(self.dir, "status.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def trace(self):
        """The agent's trace records."""
        from agent.report import trace
        return trace.read(os.path.join(self.dir, "trace.jsonl"))

    def wait_state(self, state, deadline=30.0, after=None):
        """Wait until the status file shows ``state`` (entered after wall time ``after``)."""
        return self.wait(lambda st: st.get("state") == state and (after is None or st.get("since", 0) >= after),
                         "the agent to reach %s" % state, deadline)

    def wait(self, predicate, what, deadline=30.0):
        """Poll the status file (20 ms) until ``predicate(status)`` holds, or fail after ``deadline``."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            st = self.status()
            if st and predicate(st):
                return st
            if not self.agent_alive():
                raise RuntimeError("the agent exited (status %s); see %s/agent.log"
                                   % (self.agent.returncode, self.dir))
            time.sleep(0.02)  # bounded by the deadline above: the status file has no wake-up
        raise RuntimeError("timed out after %.0f s waiting for %s (it is in %s)"
                           % (deadline, what, self.status().get("state", "?")))

    def close(self):
        """Stop everything, remove the namespaces and the run directory; raise the first
        failure of a step once every step was tried."""
        try:
            errors = SimulatedHost.close(self)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise errors[0]
