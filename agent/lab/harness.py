"""A simulated host for the lab and the benches: namespaces, the XAPI simulator, `agent run`.

``Host`` builds the dom0/fw/lan topology (agent/lab/netns.py, the same builder as the lab's;
``bridge`` or ``$SSPN_BRIDGE`` picks Linux or Open vSwitch bridges), starts the simulator on a
Unix socket whose path has no ``_`` (XenAPI maps it to ``/``, docs/xapi-behaviour.md §1), makes starting
the firewall VM create its bridge and VIF in dom0, makes storage reachability real (a ping
from dom0 to the NFS server), writes an agent.toml for the run and starts the real agent as its own
process inside dom0 -- the same code path as `agent run` on a host. Needs root.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from agent.lab.netns import Topology, sim_hook
from agent.lab.storage import StorageServices

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


def private_dir(prefix):
    """A fresh temporary directory whose path contains no ``_``."""
    path = tempfile.mkdtemp(prefix=prefix)
    if "_" in path:
        clean = path.replace("_", "x")
        os.rename(path, clean)
        path = clean
    return path


class Host(object):
    """The simulated host of one rehearsal; a context manager that always cleans up."""

    def __init__(self, probe=True, config_text=None, fast=True, scenario=None, extra_config="",
                 bridge=None, bring_up=True):
        """``fast``: rehearsal timings (0.5 s probes, 2 s backoff cap); False: the defaults.
        ``scenario``: the simulator's host (default: agent/lab/hosts/default.toml);
        ``extra_config``: TOML appended to the lab's agent.toml (more [[binding]]s, say).
        ``bridge``: "linux" or "ovs" (default ``$SSPN_BRIDGE``, else Linux bridges).
        ``bring_up`` False: a started firewall's new bridge stays down (with its VIF as port)
        until the test calls ``topology.bridge_up``, as if xcp-networkd were slow."""
        self.scenario = scenario
        self.extra_config = extra_config
        self.dir = private_dir("sspnlab")
        self.bridge, self.bring_up = bridge, bring_up
        self.probe = probe
        self.fast = fast
        self.config_text = config_text
        self.topology = None
        self.storage = None   # the storage server's service ports (agent/lab/storage.py)
        self.sim = None
        self.agent = None
        self.started = time.time()
        self.marks = []  # (wall time, what the lab did)

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
        """Record an action of the lab itself for the timeline."""
        self.marks.append((time.time(), what))

    def start(self):
        """Topology and simulator; the agent is started by ``start_agent``."""
        from agent.lab.xapi import Simulator
        self.topology = Topology(bridge=self.bridge).create()
        self.storage = StorageServices(self.topology.ns("lan"))
        self.storage.start()
        self.sim = Simulator(os.path.join(self.dir, "xapi"), scenario=self.scenario)
        self.sim.add_vm_power_hook(sim_hook(self.topology, vm_names=[FIREWALL], up=self.bring_up))
        self.sim.storage_probe = self._storage_answers
        self.sim.start()
        with open(os.path.join(self.dir, "xensource-inventory"), "w") as f:
            f.write("MANAGEMENT_INTERFACE='xenbr0'\n")

    def _storage_answers(self, device_config):
        """PBD.plug's reachability as SM checks it: TCP to the service ports, from dom0 (1 s
        connect timeout instead of SM's 5 s, to keep rehearsals short)."""
        from agent.lab.xapi.sm import TcpProbe
        return TcpProbe(netns=self.topology.ns("dom0"), timeout=1.0)(dict(device_config))

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
        """`python -m agent run` inside dom0, logging to agent.log in the run directory
        (``append``: after the log of the previous agent, as for a restart)."""
        self.write_config()
        log = open(os.path.join(self.dir, "agent.log"), "a" if append else "w")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.agent = subprocess.Popen(["ip", "netns", "exec", self.topology.ns("dom0"), sys.executable,
                                       "-m", "agent", "run", "--config", self.config_path],
                                      stdout=log, stderr=subprocess.STDOUT, env=env)
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
            if self.agent is not None and self.agent.poll() is not None:
                raise RuntimeError("the agent exited (status %s); see %s/agent.log"
                                   % (self.agent.returncode, self.dir))
            time.sleep(0.02)
        raise RuntimeError("timed out after %.0f s waiting for %s (it is in %s)"
                           % (deadline, what, self.status().get("state", "?")))

    def stop_agent(self):
        """SIGTERM, as systemd does; returns the exit status."""
        if self.agent is None or self.agent.poll() is not None:
            return None if self.agent is None else self.agent.returncode
        self.agent.terminate()
        try:
            return self.agent.wait(10)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            return self.agent.wait(5)

    def close(self):
        """Stop everything and remove the namespaces and the run directory."""
        try:
            self.stop_agent()
        finally:
            try:
                if self.sim is not None:
                    self.sim.stop()
            finally:
                if self.storage is not None:
                    self.storage.stop()
                if self.topology is not None:
                    self.topology.cleanup()
                shutil.rmtree(self.dir, ignore_errors=True)
