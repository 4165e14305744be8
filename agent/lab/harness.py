"""The simulated host of the tests and benches: the lab's host of agent.toml.example, with waits.

``Host`` is agent/lab/simhost.py's ``SimulatedHost`` (the XAPI simulator, the dom0/fw/lan
namespaces, the real agent as its own process in dom0) in a fresh run directory, as a context
manager that always cleans up. Its agent.toml is ``CONFIG`` (the host of agent.toml.example);
starting the firewall VM "pfsense" makes its bridge and VIF in dom0. Tests and benches wait on the agent's
status file and read its trace through it. Needs root.
"""

import json
import os
import shutil
import time

from agent.lab.simhost import SimulatedHost, private_dir

FIREWALL = "pfsense"
NFS_SERVER = "198.51.100.10"

CONFIG = """\
# Written by the lab for one rehearsal.
[xapi]
socket = "{socket}"
local_db = "{local_db}"

[[binding]]
network = "sspn"
vms = ["{firewall}"]
addresses = ["192.0.2.2/24", "2001:db8:1::2/64"]

[route]
gateway4 = "192.0.2.1"
gateway6 = "2001:db8:1::1"
probe = {probe}

[management]
bridge = "xenbr0"
inventory = "{dir}/xensource-inventory"

[[sr]]
uuid = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"

[maintenance]
enable_host = "when-locked-out"
autostart = true

{timing}
[files]
status = "{dir}/status.json"
trace = "{dir}/trace.jsonl"
"""


FAST_TIMING = """[timing]
event_timeout = 5.0
probe_interval = 0.5
probe_timeout = 0.3
backoff_base = 0.2
backoff_cap = 2.0
retry_budget = 5
"""


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
        with open(os.path.join(self.dir, "xensource-inventory"), "w") as f:
            f.write("MANAGEMENT_INTERFACE='xenbr0'\n")

    def ping(self, address):
        """One real ICMP echo from dom0 (through the firewall namespace for the storage LAN)."""
        return self.topology.ping("dom0", address)

    @property
    def config_path(self):
        return os.path.join(self.dir, "agent.toml")

    def write_config(self):
        """The agent.toml of the run (or the operator's, with the lab's socket and files)."""
        text = self.config_text or CONFIG.format(socket=self.sim.socket_path, local_db=self.sim.local_db_path,
                                                 firewall=FIREWALL, probe=str(self.probe).lower(),
                                                 dir=self.dir, timing=FAST_TIMING if self.fast else "")
        text += self.extra_config
        with open(self.config_path, "w") as f:
            f.write(text)
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
