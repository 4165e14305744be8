"""One simulated host on the real kernel: the XAPI simulator, the namespaces, the agent process.

``SimulatedHost`` is the one builder of it, for the lab (agent/lab/envs.py ``NetnsEnv``) and for
the tests and benches (agent/lab/harness.py ``Host``). In a run directory whose path has no
``_`` (XenAPI maps it to ``/`` in a socket path, docs/xapi-behaviour.md §1) it holds:

- the simulator (agent/lab/xapi), serving on the Unix socket ``<dir>/xapi``, with the caller's
  VM power hook (agent/lab/netns.py ``sim_hook``: starting a firewall VM makes its bridge and
  VIF in dom0) and SM's reachability check for PBD.plug: TCP to the storage service ports from
  dom0 (agent/lab/xapi/sm.py ``TcpProbe``);
- the dom0/fw/lan namespaces (agent/lab/netns.py ``Topology``, Linux or Open vSwitch bridges)
  and the storage server's service ports in lan (agent/lab/storage.py);
- the agent as its own process inside dom0, ``ip netns exec <dom0> python -m agent run
  --config <file>`` (the service's code path), logging to ``<dir>/agent.log``; stopped with
  SIGTERM, as systemd does.

Its callers write the agent.toml and the inventory beside it with agent/lab/rehearsal.py
``write_config``. Needs root. Python 3.6 compatible.
"""

import os
import signal
import subprocess
import sys
import tempfile

STOP_TIMEOUT = 10.0   # seconds for the agent to exit after SIGTERM, before SIGKILL
SM_CONNECT_TIMEOUT = 1.0   # PBD.plug's connect timeout (SM's is 5 s): keeps runs short


def private_dir(prefix):
    """A fresh temporary directory whose path contains no ``_``."""
    path = tempfile.mkdtemp(prefix=prefix)
    if "_" in path:
        clean = path.replace("_", "x")
        os.rename(path, clean)
        path = clean
    return path


def _child_env():
    """The environment for a child interpreter: this package's root first on PYTHONPATH (from a
    zipapp, that is the only way a child finds the bundled agent, icmplib, pyroute2, ...), and
    no systemd variables (the agent must not notify the caller's own service manager)."""
    drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    env = dict((k, v) for k, v in os.environ.items() if k not in drop)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


class SimulatedHost(object):
    """The simulator, the namespaces and the agent process of one run in ``workdir``.

    ``scenario``: the simulator's host (default agent/lab/hosts/default.toml); ``seed``: its
    random generator's; ``bridge``: "linux" or "ovs" (default ``$SSPN_BRIDGE``, else Linux).
    Nothing runs until ``create_network`` and ``start_simulator``; ``close`` removes it all.
    """

    def __init__(self, workdir, scenario=None, seed=None, bridge=None):
        from agent.lab.netns import Topology
        from agent.lab.xapi import Simulator
        self.dir = workdir
        self.sim = Simulator(os.path.join(workdir, "xapi"), scenario=scenario, seed=seed)
        self.topology = Topology(bridge=bridge, workdir=workdir)
        self.storage = None   # the storage server's service ports (agent/lab/storage.py)
        self.agent = None     # the agent's process (subprocess.Popen)
        # how the agent is run, before "run --config FILE": this checkout's package; a bench
        # sets [python, "sspn-agent.pyz"] to run the bundle, as dom0 does
        self.agent_argv = [sys.executable, "-m", "agent"]
        self.log_path = os.path.join(workdir, "agent.log")

    def create_network(self, storage_delay=0.0):
        """The namespaces, and the storage service ports in lan, up ``storage_delay`` seconds
        from now (a NAS whose nfsd starts after its network). Raises netns.TopologyError."""
        from agent.lab.storage import StorageServices
        self.topology.create()
        self.storage = StorageServices(self.topology.ns("lan"))
        self.storage.start(storage_delay)

    def start_simulator(self, vm_hook):
        """Serve XAPI: ``vm_hook`` on every VM power change, PBD.plug asking what SM asks."""
        from agent.lab.xapi.sm import TcpProbe
        self.sim.add_vm_power_hook(vm_hook)
        self.sim.storage_probe = TcpProbe(netns=self.topology.ns("dom0"), timeout=SM_CONNECT_TIMEOUT)
        self.sim.start()

    def start_agent(self, config_path, append=False):
        """`python -m agent run --config config_path` (``agent_argv``) as its own process inside
        dom0, its output to agent.log (``append``: after the previous agent's, as for a restart)."""
        with open(self.log_path, "ab" if append else "wb") as log:
            self.agent = subprocess.Popen(
                ["ip", "netns", "exec", self.topology.ns("dom0")] + self.agent_argv
                + ["run", "--config", config_path], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.dir, env=_child_env())
        return self.agent

    def agent_alive(self):
        """True until the agent process has exited (and before it was started)."""
        return self.agent is None or self.agent.poll() is None

    def stop_agent(self):
        """SIGTERM, as systemd does, then SIGKILL after STOP_TIMEOUT; the exit status (None
        when no agent was started)."""
        if self.agent is None or self.agent.poll() is not None:
            return None if self.agent is None else self.agent.returncode
        self.agent.send_signal(signal.SIGTERM)
        try:
            return self.agent.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            return self.agent.wait()

    def close(self):
        """Stop the agent, the simulator, the storage ports; remove the namespaces: each step
        even if another failed. Returns the exceptions of the steps that failed."""
        errors = []
        for step in (self.stop_agent, self.sim.stop,
                     lambda: self.storage is not None and self.storage.stop(),
                     self.topology.cleanup):
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        return errors
