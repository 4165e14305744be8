"""The two kernels a rehearsal can run on; this module holds the shared part and the real one.

``NetnsEnv``: namespaces dom0/fw/lan (agent/lab/netns.py) and the real agent as its own process
inside dom0 (``ip netns exec <dom0> python -m agent run``: the service's code path). The
in-memory kernel model lives in agent/lab/memenv.py. Both run the XAPI simulator in this
process on a Unix socket in the run's directory and record into the lab's timeline.
"""

import ipaddress
import os
import signal
import sys
import time

NAMESPACES, IN_MEMORY = "real kernel in network namespaces", "[in-memory kernel model]"
WAIT_TIMEOUT = 20.0      # seconds any one wait of a scenario may take before it fails
STOP_TIMEOUT = 10.0      # for the agent to exit after SIGTERM
COUNTED_CALLS = ("host.enable", "VM.start", "PBD.plug")  # what changes the host, as XAPI saw it


# One ICMP echo with icmplib (a dependency; iputils ping is often not installed), run inside a
# namespace by a child interpreter.
_ICMP_ECHO = ("import sys, icmplib\n"
              "h = icmplib.ping(sys.argv[1], count=1, timeout=float(sys.argv[2]), privileged=True)\n"
              "sys.exit(0 if h.is_alive else 1)\n")


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be created here; the lab falls back to the in-memory kernel model."""

def _missing(config, bridge_of, addresses, routes):
    """What of the config's addresses (with mirrors) and default routes the kernel state lacks."""
    from agent.lab import netns
    want = [(bridge_of[b.network], iface) for b in config.bindings for iface in b.addresses]
    if config.management.mirror:
        want += [(netns.MGMT_BRIDGE, iface) for iface in config.mirror_addresses()]
    have = set((i, ipaddress.ip_interface(a)) for i, a in addresses)
    have_routes = set((f, ipaddress.ip_address(g), i) for f, g, i in routes)
    out = ["%s on %s" % (iface, ifname) for ifname, iface in want if (ifname, iface) not in have]
    for family in (4, 6):
        # several bindings may carry a family's default route: one of them must (the preferred
        # one whose bridge exists, see agent/decision/keeper.py)
        carriers = [(family, gateway, bridge_of[config.bindings[index].network])
                    for index, gateway in config.route_candidates(family)]
        if carriers and not any(c in have_routes for c in carriers):
            out.append("default via %s dev %s" % (carriers[0][1], carriers[0][2]))
    return out


def _child_env():
    """The environment for a child interpreter: this package's root first on PYTHONPATH (from a
    zipapp, that is the only way a child finds the bundled agent, icmplib, pyroute2, ...), and
    no systemd variables (the agent must not notify the lab's own service manager)."""
    drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    env = dict((k, v) for k, v in os.environ.items() if k not in drop)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _nothing():
    pass


def _server_of(device_config):
    """The storage server of a PBD's device_config (NFS/CIFS "server", else the host of "location")."""
    server = device_config.get("server", "")
    if not server and device_config.get("location", "").startswith("//"):
        server = device_config["location"][2:].split("/", 1)[0]
    return server

class _Env(object):
    """What both kernels share: the simulator, and a VM power hook that records into the lab."""

    kind = ""
    agent_command = ""

    def __init__(self, plan, workdir, lab):
        from agent.lab import netns
        from agent.lab.xapi import Simulator
        self.netns = netns  # loaded with the first lab, not with `agent`'s parser
        self.plan, self.workdir, self.lab = plan, workdir, lab
        self.sim = Simulator(os.path.join(workdir, "xapi"), scenario=plan.scenario, seed=0)
        networks = self.sim.state()["networks"]
        self.bridge_of = dict((label, networks[label]["bridge"]) for label in plan.fw_addresses)
        self.fw_by_bridge = dict((self.bridge_of[label], list(addrs))
                                 for label, addrs in plan.fw_addresses.items())
        self.config = None
        self.log_path = os.path.join(workdir, "agent.log")
        # every VM a binding names gets its VIF (a CARP pair's standby member too)
        self.firewalls = [vm for b in plan.config.bindings for vm in b.vms]

    def bridges(self):
        """The uplink bridges, in binding order."""
        return [self.bridge_of[b.network] for b in self.plan.config.bindings]

    def _hook(self, inner):
        """The kernel-side VM hook ``inner``, then a timeline entry for what the simulator did."""
        from agent.lab.netns import vif_name

        def hook(vm_name, record, domid, bridges, old_state, new_state):
            when = self.lab.now()  # the bridge appears during inner: bind delays count from here
            inner(vm_name, record, domid, bridges, old_state, new_state)
            mine = [b for b in bridges if b in self.fw_by_bridge] if vm_name in self.firewalls else []
            up_at = getattr(getattr(self, "topology", None), "up_at", {})
            if mine and new_state == "Running" and mine[0] in up_at:
                when = max(when, up_at[mine[0]])  # ... or from its bring-up, the end of inner
            text, extra = "VM %s %s -> %s" % (vm_name, old_state, new_state), {}
            if new_state == "Running" and old_state in ("Halted", "Suspended"):
                extra.update(vm_started=vm_name, by_lab=self.lab.acting())
            if mine and new_state == "Running":
                text += " (domid %d): bridge %s with %s made in dom0" % (domid, ", ".join(mine), ", ".join(
                    vif_name(domid, bridges.index(b)) for b in mine))
                extra["bridge_created"] = mine[0]
            elif mine and new_state == "Halted":
                text += ": its VIF and bridge %s are gone" % ", ".join(mine)
            self.lab.record(text, when=when, source="sim", **extra)
        return hook

    def _start_sim(self):
        self.sim.storage_probe = self._sm_probe()
        dispatch = self.sim.dispatch

        def counted(method, params, ctx=None):
            """Every wire call passes here (Simulator._handle): note the ones that change the host."""
            when = self.lab.now()
            answer = dispatch(method, params, ctx)
            if method in COUNTED_CALLS:
                self.lab.xapi_call(when, method, answer.get("Status") == "Success")
            return answer
        self.sim.dispatch = counted  # this run's simulator only
        self.sim.start()

    def _sm_probe(self):
        """PBD.plug's reachability from the env's storage_answers; NetnsEnv asks what SM asks."""
        return lambda dc: self.storage_answers(_server_of(dc))

    def kernel_missing(self):
        """What of the config's addresses and routes the kernel lacks right now."""
        return _missing(self.config, self.bridge_of, *self.kernel_state())

    def info(self):
        """What the JSON output says about this run's lab."""
        return {"kernel": self.kind, "workdir": self.workdir, "agent_log": self.log_path,
                "config": self.config.path if self.config else None,
                "xapi_socket": self.sim.socket_path}


class NetnsEnv(_Env):
    """The real kernel: namespaces dom0/fw/lan and the agent as its own process in dom0."""

    kind = NAMESPACES

    def __init__(self, plan, workdir, lab, bridge=None):
        """``bridge``: the bridge backend, "linux" or "ovs" (agent/lab/bridges.py)."""
        _Env.__init__(self, plan, workdir, lab)
        self.topology = self.netns.Topology(bridge=bridge)
        self.agent = None
        self.agent_command = "ip netns exec %s %s -m agent run --config agent.toml" % (
            self.topology.dom0, os.path.basename(sys.executable))

    def open(self):
        """Namespaces, the storage targets in lan, the VM hook, the simulator."""
        try:
            self.topology.create()
        except self.netns.TopologyError as exc:
            raise NetnsUnavailable(str(exc))
        self.topology.storage_targets(self.plan.storage)
        from agent.lab.storage import StorageServices
        self.storage = StorageServices(self.topology.ns("lan"))  # agent/lab/storage.py
        self.storage.start(self.plan.storage_service_delay)  # a NAS whose nfsd starts late
        self._wait_lan_v6()
        self.topology.fw_answer_delay = self.plan.fw_answer_delay
        self._service_from = time.monotonic() + self.plan.storage_service_delay
        self.sim.add_vm_power_hook(self._hook(self.netns.sim_hook(
            self.topology, vm_names=list(self.firewalls), is_internal=lambda b: b in self.fw_by_bridge,
            addresses_of=lambda b: self.fw_by_bridge.get(b, ()))))
        self._start_sim()

    def _wait_lan_v6(self):
        """With IPv6 storage, the storage LAN must answer before the rehearsal starts: on the new
        fw-lan link neighbour discovery works only after lan's link-local address passed DAD
        (about 1 s); each try is one echo with a 0.2 s timeout, up to the deadline."""
        if all(ipaddress.ip_address(t).version == 4 for t in self.plan.storage + (self.plan.ping_target,)):
            return
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not self._ping("fw", self.netns.LAN6.split("/")[0], timeout=0.2):
            if time.monotonic() > deadline:
                raise RuntimeError("the storage LAN did not answer IPv6 from %s within %.0f s"
                                   % (self.topology.fw, WAIT_TIMEOUT))

    def _ping(self, role, target, timeout=1.0):
        """True when one ICMP echo from namespace ``role`` to ``target`` is answered."""
        import subprocess
        argv = ["ip", "netns", "exec", self.topology.ns(role), sys.executable, "-c", _ICMP_ECHO,
                target, str(timeout)]
        return subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=_child_env()) == 0

    def _sm_probe(self):
        """PBD.plug's reachability as SM checks it: TCP to the service ports from dom0
        (agent/lab/xapi/sm.py; 1 s connect timeout instead of SM's 5 s)."""
        from agent.lab.xapi.sm import TcpProbe
        return TcpProbe(netns=self.topology.ns("dom0"), timeout=1.0)

    def storage_answers(self, server):
        """For the simulator's PBD.plug: does the storage server answer a ping from dom0 (and
        is its service up: ``storage_service_delay`` after its network came up)?"""
        if server and time.monotonic() < self._service_from:
            return False
        return not server or self._ping("dom0", server)

    def storage_down(self):
        """The storage server leaves the network (its link goes down)."""
        self.topology.ip("lan", "link", "set", "eth0", "down")

    def storage_up(self):
        """The storage server is back: link up; addresses and default routes as before.

        Both ends forget their failed neighbour entries, as the gratuitous ARP of a server
        coming up makes them do; otherwise the first probes after its return go unanswered.
        """
        self.topology.ip("lan", batch=[
            "link set eth0 up", "addr replace %s dev eth0" % self.netns.LAN4,
            "addr replace %s dev eth0 nodad" % self.netns.LAN6,  # v6 addresses go with the link
            "route replace default via %s" % self.netns.FW_LAN4.split("/")[0],
            "route replace default via %s" % self.netns.FW_LAN6.split("/")[0],
            "neigh flush dev eth0"])
        self._service_from = time.monotonic() + self.plan.storage_service_delay
        if self.plan.storage_service_delay > 0:  # its service restarts with it, and answers later
            self.storage.stop()
            self.storage.start(self.plan.storage_service_delay)
        self.topology.ip("fw", "neigh", "flush", "dev", "lan0")
        self.topology.storage_targets(self.plan.storage, "replace")

    def flush(self):
        """networkd-style: flush the bridges' addresses and the default routes, then networkd
        re-adds only its own management address."""
        links = self.topology.links("dom0")
        self.topology.ip("dom0", batch=["addr flush dev %s" % self.netns.MGMT_BRIDGE] + [
            "addr flush dev %s" % b for b in self.bridges() if b in links] + ["route flush default"])
        self.topology.ip("dom0", "-6", "route", "flush", "default")
        self.topology.ip("dom0", "addr", "add", self.netns.MGMT_ADDRESS, "dev", self.netns.MGMT_BRIDGE)

    def silence_gateways(self, gone):
        """The firewall no longer holds these gateway addresses [(bridge, "a/p")]."""
        for line in self.topology.ip("fw", "-o", "addr", "show").splitlines():
            words = line.split()
            for _bridge, text in gone:
                if len(words) > 3 and words[3] == text:
                    self.topology.ip("fw", "addr", "del", text, "dev", words[1])

    def delete_addresses(self, pairs):
        """Someone deletes addresses [(ifname, "a/p")] in dom0."""
        self.topology.ip("dom0", batch=["addr del %s dev %s" % (a, i) for i, a in pairs])

    def kernel_state(self):
        """(addresses [(ifname, "a/p")], default routes [(family, gateway, ifname)]) in dom0."""
        addresses = [(w[1], w[3]) for w in (line.split() for line in self.topology.ip(
            "dom0", "-o", "addr", "show").splitlines()) if len(w) > 3 and w[2] in ("inet", "inet6")]
        routes = []
        for family in (4, 6):
            for line in self.topology.ip("dom0", "-%d" % family, "route", "show", "default").splitlines():
                w = line.split()
                if "via" in w and "dev" in w:
                    routes.append((family, w[w.index("via") + 1], w[w.index("dev") + 1]))
        return addresses, routes

    def ping(self, target):
        """ICMP echo from dom0 through the firewall (3 tries: neighbours may be cold after a flush)."""
        tries, ok = 0, False
        while not ok and tries < 3:
            tries += 1
            ok = self._ping("dom0", target)
        return {"ok": ok, "from": "dom0 (%s)" % self.topology.dom0, "target": target,
                "how": "ICMP echo, 1 s timeout, %d %s" % (tries, "try" if tries == 1 else "tries")}

    def start_agent(self):
        """`agent run` as its own process inside dom0; its output goes to agent.log."""
        import subprocess
        with open(self.log_path, "ab") as log:
            self.agent = subprocess.Popen(
                ["ip", "netns", "exec", self.topology.dom0, sys.executable, "-m", "agent", "run",
                 "--config", self.config.path], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.workdir, env=_child_env())

    def agent_alive(self):
        """True until the agent process has exited."""
        return self.agent is None or self.agent.poll() is None

    def stop_agent(self):
        """SIGTERM, as systemd does; wait; check the config's addresses and routes remain."""
        import subprocess
        if self.agent is None:
            return None
        code = self.agent.poll()
        if code is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                code = self.agent.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        missing = self.kernel_missing()
        return {"how": "SIGTERM", "exit": code, "networking_left_in_place": not missing,
                "missing": missing}

    def close(self):
        """Agent (if it still runs), simulator, namespaces: each step even if another fails."""
        storage = getattr(self, "storage", None)
        for step in (self._kill_agent, self.sim.stop, storage.stop if storage else _nothing,
                     self.topology.cleanup):
            try:
                step()
            except Exception as exc:
                sys.stderr.write("agent lab: while cleaning up: %s, continuing\n" % exc)

    def _kill_agent(self):
        if self.agent is not None and self.agent.poll() is None:
            self.agent.kill()
            self.agent.wait()

    def info(self):
        """As _Env.info, with the namespaces and the agent process."""
        out = _Env.info(self)
        out.update({"namespaces": [self.topology.dom0, self.topology.fw, self.topology.lan],
                    "bridges": self.topology.backend.description,
                    "agent_pid": self.agent.pid if self.agent else None,
                    "agent_command": self.agent_command})
        return out
