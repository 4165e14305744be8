"""The two kernels a rehearsal can run on; this module holds the shared part and the real one.

``NetnsEnv``: the simulated host of agent/lab/simhost.py (namespaces dom0/fw/lan, the real
agent as its own process inside dom0: the service's code path) driven by a scenario. The
in-memory kernel model lives in agent/lab/memenv.py. Both run the XAPI simulator in this
process on a Unix socket in the run's directory and record into the lab's timeline.
"""

import ipaddress
import os
import sys
import time

NAMESPACES, IN_MEMORY = "real kernel in network namespaces", "[in-memory kernel model]"
WAIT_TIMEOUT = 20.0      # seconds any one wait of a scenario may take before it fails
COUNTED_CALLS = ("host.enable", "VM.start", "PBD.plug")  # what changes the host, as XAPI saw it


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


class _Env(object):
    """What both kernels share: the simulator ``sim`` (made by the kernel's env), and a VM
    power hook that records into the lab."""

    kind = ""
    agent_command = ""

    def __init__(self, plan, workdir, lab, sim):
        from agent.lab import netns
        self.netns = netns  # loaded with the first lab, not with `agent`'s parser
        self.plan, self.workdir, self.lab = plan, workdir, lab
        self.sim = sim
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

    def _count_calls(self):
        """From now on, note the simulator's COUNTED_CALLS in the lab."""
        dispatch = self.sim.dispatch

        def counted(method, params, ctx=None):
            """Every wire call passes here (Simulator._handle): note the ones that change the host."""
            when = self.lab.now()
            answer = dispatch(method, params, ctx)
            if method in COUNTED_CALLS:
                self.lab.xapi_call(when, method, answer.get("Status") == "Success")
            return answer
        self.sim.dispatch = counted  # this run's simulator only

    def kernel_missing(self):
        """What of the config's addresses and routes the kernel lacks right now."""
        return _missing(self.config, self.bridge_of, *self.kernel_state())

    def info(self):
        """What the JSON output says about this run's lab."""
        return {"kernel": self.kind, "workdir": self.workdir, "agent_log": self.log_path,
                "config": self.config.path if self.config else None,
                "xapi_socket": self.sim.socket_path}


class NetnsEnv(_Env):
    """The real kernel: the simulated host (agent/lab/simhost.py) of the plan's scenario."""

    kind = NAMESPACES

    def __init__(self, plan, workdir, lab, bridge=None):
        """``bridge``: the bridge backend, "linux" or "ovs" (agent/lab/bridges.py)."""
        from agent.lab.simhost import SimulatedHost
        self.host = SimulatedHost(workdir, scenario=plan.scenario, seed=0, bridge=bridge)
        _Env.__init__(self, plan, workdir, lab, self.host.sim)
        self.topology = self.host.topology
        self.agent_command = "ip netns exec %s %s -m agent run --config agent.toml" % (
            self.topology.dom0, os.path.basename(sys.executable))

    def open(self):
        """Namespaces, the storage targets and service ports in lan, the VM hook, the simulator."""
        try:
            self.host.create_network(self.plan.storage_service_delay)  # a NAS whose nfsd starts late
        except self.netns.TopologyError as exc:
            raise NetnsUnavailable(str(exc))
        self.topology.storage_targets(self.plan.storage)
        self._wait_lan_v6()
        self.topology.fw_answer_delay = self.plan.fw_answer_delay
        self._count_calls()
        self.host.start_simulator(self._hook(self.netns.sim_hook(
            self.topology, vm_names=list(self.firewalls), is_internal=lambda b: b in self.fw_by_bridge,
            addresses_of=lambda b: self.fw_by_bridge.get(b, ()))))

    def _wait_lan_v6(self):
        """With IPv6 storage, the storage LAN must answer before the rehearsal starts: on the new
        fw-lan link neighbour discovery works only after lan's link-local address passed DAD
        (about 1 s); each try is one echo with a 0.2 s timeout, up to the deadline."""
        if all(ipaddress.ip_address(t).version == 4 for t in self.plan.storage + (self.plan.ping_target,)):
            return
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not self.topology.ping("fw", self.netns.LAN6.split("/")[0], timeout=0.2):
            if time.monotonic() > deadline:
                raise RuntimeError("the storage LAN did not answer IPv6 from %s within %.0f s"
                                   % (self.topology.fw, WAIT_TIMEOUT))

    def storage_down(self):
        """The storage server leaves the network (its link goes down)."""
        self.topology.storage_away()

    def storage_up(self):
        """The storage server is back and announces itself (Topology.storage_back); its
        service restarts with it and, with a storage_service_delay, answers that much later."""
        if self.plan.storage_service_delay > 0:
            self.host.storage.stop()
        self.topology.storage_back(self.plan.storage)
        if self.plan.storage_service_delay > 0:
            self.host.storage.start(self.plan.storage_service_delay)

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
        self._silenced = getattr(self, "_silenced", [])
        for line in self.topology.ip("fw", "-o", "addr", "show").splitlines():
            words = line.split()
            for _bridge, text in gone:
                if len(words) > 3 and words[3] == text:
                    self.topology.ip("fw", "addr", "del", text, "dev", words[1])
                    self._silenced.append((words[1], text))

    def restore_gateways(self):
        """The firewall holds the gateway addresses ``silence_gateways`` took away again."""
        for device, text in getattr(self, "_silenced", []):
            self.topology.ip("fw", "addr", "add", text, "dev", device.split("@")[0])
        self._silenced = []

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
            ok = self.topology.ping("dom0", target)
        return {"ok": ok, "from": "dom0 (%s)" % self.topology.dom0, "target": target,
                "how": "ICMP echo, 1 s timeout, %d %s" % (tries, "try" if tries == 1 else "tries")}

    def start_agent(self):
        """`agent run` as its own process inside dom0; its output goes to agent.log."""
        self.host.start_agent(self.config.path, append=True)

    def agent_alive(self):
        """True until the agent process has exited."""
        return self.host.agent_alive()

    def stop_agent(self):
        """SIGTERM, as systemd does; wait; check the config's addresses and routes remain."""
        if self.host.agent is None:
            return None
        code = self.host.stop_agent()
        missing = self.kernel_missing()
        return {"how": "SIGTERM", "exit": code, "networking_left_in_place": not missing,
                "missing": missing}

    def close(self):
        """Agent (if it still runs), simulator, storage ports, namespaces: each step even if
        another fails."""
        for exc in self.host.close():
            sys.stderr.write("agent lab: while cleaning up: %s, continuing\n" % exc)

    def info(self):
        """As _Env.info, with the namespaces and the agent process."""
        out = _Env.info(self)
        out.update({"namespaces": [self.topology.dom0, self.topology.fw, self.topology.lan],
                    "bridges": self.topology.backend.description,
                    "agent_pid": self.host.agent.pid if self.host.agent else None,
                    "agent_command": self.agent_command})
        return out
