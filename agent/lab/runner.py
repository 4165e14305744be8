"""`agent lab`: rehearse the agent on a simulated host and print what it did, as a timeline.

One run = a fresh temp dir; the XAPI simulator in this process on a Unix socket there; the
dom0/fw/lan namespaces (agent/lab/netns.py); the *real* agent as its own process inside dom0
(``ip netns exec <dom0> python -m agent run --config <dir>/agent.toml``: the service's code path).
A scenario (agent/lab/scenarios.py) injects faults and waits on the agent's status file and
trace; then a ping must cross dom0 -> fw -> lan, the agent is stopped with SIGTERM and must
leave its addresses and routes in place, and everything is removed (also on failure, SIGINT,
SIGTERM). Storage reachability is real: the simulator's PBD.plug pings the storage server from
dom0, through the firewall.

Without root or ``ip netns`` the same scenario runs with the agent in this process on the
in-memory kernel model (agent/adapters/memory.py), still on the real simulator and the real
XAPI adapter; the output says so. The module top imports only the standard library and
`agent`'s parser reads SCENARIOS from here; the rest loads when a lab runs. Python 3.6.
"""

import argparse
import ipaddress
import json
import os
import shutil
import signal
import sys
import textwrap
import threading
import time

SCENARIOS = ("cold-boot", "firewall-reboot", "toolstack-restart", "late-storage",
             "maintenance-lockout", "flush")
NAMESPACES, IN_MEMORY = "real kernel in network namespaces", "[in-memory kernel model]"
FORCE_MEMORY_ENV = "SSPN_LAB_IN_MEMORY"   # "1": the in-memory kernel model even as root
WAIT_TIMEOUT = 20.0      # seconds any one wait of a scenario may take before it fails
STOP_TIMEOUT = 10.0      # for the agent to exit after SIGTERM
EX_CONFIG = 78
COUNTED_CALLS = ("host.enable", "VM.start", "PBD.plug")  # what changes the host, as XAPI saw it


# One ICMP echo with icmplib (a dependency; iputils ping is often not installed), run inside a
# namespace by a child interpreter.
_ICMP_ECHO = ("import sys, icmplib\n"
              "h = icmplib.ping(sys.argv[1], count=1, timeout=float(sys.argv[2]), privileged=True)\n"
              "sys.exit(0 if h.is_alive else 1)\n")


class LabInterrupted(BaseException):
    """SIGTERM reached the lab: unwind (every finally cleans up), then exit 143."""


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
    for family, gateway in config.gateways():
        bridge = bridge_of[config.bindings[config.binding_for_gateway(gateway)].network]
        if (family, gateway, bridge) not in have_routes:
            out.append("default via %s dev %s" % (gateway, bridge))
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

    def bridges(self):
        """The uplink bridges, in binding order."""
        return [self.bridge_of[b.network] for b in self.plan.config.bindings]

    def _hook(self, inner):
        """The kernel-side VM hook ``inner``, then a timeline entry for what the simulator did."""
        from agent.lab.netns import vif_name

        def hook(vm_name, record, domid, bridges, old_state, new_state):
            when = self.lab.now()  # the bridge appears during inner: bind delays count from here
            inner(vm_name, record, domid, bridges, old_state, new_state)
            mine = [b for b in bridges if b in self.fw_by_bridge] if vm_name in self.plan.uplinks else []
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
        self.sim.storage_probe = lambda dc: self.storage_answers(_server_of(dc))
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

    def kernel_missing(self):
        """What of the config's addresses and routes the kernel lacks right now."""
        return _missing(self.config, self.bridge_of, *self.kernel_state())

    def info(self):
        """What the JSON output says about this run's lab."""
        return {"kernel": self.kind, "workdir": self.workdir, "agent_log": self.log_path,
                "config": self.config.path if self.config else None,
                "xapi_socket": self.sim.socket_path}


class _FirewallVifs(object):
    """The topology as netns.sim_hook drives it, with the plan's firewall addresses on each bridge
    instead of netns.py's defaults."""

    def __init__(self, topology, fw_by_bridge):
        self.topology, self.fw_by_bridge = topology, fw_by_bridge

    def vm_started(self, domid, bridge, device=0, gateway=True):
        """Bridge and VIF as Topology.vm_started makes them; then this bridge's firewall addresses."""
        from agent.lab.netns import fw_side_name
        self.topology.vm_started(domid, bridge, device, gateway=False)
        peer = fw_side_name(domid, device)
        lines = ["addr add %s dev %s%s" % (text, peer, " nodad" if ":" in text else "")
                 for text in self.fw_by_bridge.get(bridge, ())]
        if lines:
            self.topology.ip("fw", batch=lines)

    def vm_stopped(self, domid, bridge, device=0):
        """As Topology.vm_stopped."""
        self.topology.vm_stopped(domid, bridge, device)


class NetnsEnv(_Env):
    """The real kernel: namespaces dom0/fw/lan and the agent as its own process in dom0."""

    kind = NAMESPACES

    def __init__(self, plan, workdir, lab):
        _Env.__init__(self, plan, workdir, lab)
        self.topology = self.netns.Topology()
        self.agent = None
        self.agent_command = "ip netns exec %s %s -m agent run --config agent.toml" % (
            self.topology.dom0, os.path.basename(sys.executable))

    def open(self):
        """Namespaces, the storage targets in lan, the VM hook, the simulator."""
        try:
            self.topology.create()
        except self.netns.TopologyError as exc:
            raise NetnsUnavailable(str(exc))
        self._wire_storage("add")
        self._wait_lan_v6()
        self.sim.add_vm_power_hook(self._hook(self.netns.sim_hook(
            _FirewallVifs(self.topology, self.fw_by_bridge), vm_names=list(self.plan.uplinks),
            is_internal=lambda b: b in self.fw_by_bridge)))
        self._start_sim()

    def _wire_storage(self, verb):
        """The plan's storage targets on lan's eth0 (besides its own address), routed by fw."""
        lan, fw = [], []
        for text in self.plan.storage:
            ip = ipaddress.ip_address(text)
            base = self.netns.LAN4 if ip.version == 4 else self.netns.LAN6
            if text == base.split("/")[0]:
                continue
            lan.append("addr %s %s/%d dev eth0%s" % (verb, ip, ip.max_prefixlen,
                                                     " nodad" if ip.version == 6 else ""))
            if ip not in ipaddress.ip_interface(base).network:
                fw.append("route replace %s/%d via %s" % (ip, ip.max_prefixlen, base.split("/")[0]))
        for role, lines in (("lan", lan), ("fw", fw)):
            if lines:
                self.topology.ip(role, batch=lines)

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

    def storage_answers(self, server):
        """For the simulator's PBD.plug: does the storage server answer a ping from dom0?"""
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
        self.topology.ip("fw", "neigh", "flush", "dev", "lan0")
        self._wire_storage("replace")

    def flush(self):
        """networkd-style: flush the bridges' addresses and the default routes, then networkd
        re-adds only its own management address."""
        links = self.topology.links("dom0")
        self.topology.ip("dom0", batch=["addr flush dev %s" % self.netns.MGMT_BRIDGE] + [
            "addr flush dev %s" % b for b in self.bridges() if b in links] + ["route flush default"])
        self.topology.ip("dom0", "-6", "route", "flush", "default")
        self.topology.ip("dom0", "addr", "add", self.netns.MGMT_ADDRESS, "dev", self.netns.MGMT_BRIDGE)

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
        for step in (self._kill_agent, self.sim.stop, self.topology.cleanup):
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
                    "agent_pid": self.agent.pid if self.agent else None,
                    "agent_command": self.agent_command})
        return out


class _LockedNet(object):
    """MemoryNet shared by the agent's thread and the simulator's hook: one lock around it."""

    def __init__(self, net):
        self._net, self._lock = net, threading.RLock()

    def __getattr__(self, name):
        attr_ = getattr(self._net, name)
        if not callable(attr_):
            return attr_

        def locked(*args, **kw):
            with self._lock:
                return attr_(*args, **kw)
        return locked

    def set_post(self, post):
        """Where the model's KernelChanged events go."""
        with self._lock:
            self._net.post = post


class _MemoryWatcher(object):
    """The NetWatcher port on the model: events from its changes, after one full view."""

    def __init__(self, net):
        self.net = net

    def start(self, post):
        """Post the model's full view, then every change of it, through ``post``."""
        from agent.events import KernelResynced
        with self.net._lock:  # subscribe, then read: nothing falls in between
            self.net.set_post(post)
            post(KernelResynced(self.net.read_view()))

    def stop(self):
        """Post nothing more."""
        self.net.set_post(lambda event: None)


class _ModelProber(object):
    """The Prober port on the model: a target answers when the model says it is reachable."""

    def __init__(self, reachable):
        self.reachable, self.post = reachable, None

    def probe(self, key, targets, timeout):
        """Post the model's answer for every target at once."""
        from agent.events import ProbeDone
        self.post(ProbeDone(key, dict((str(t), self.reachable(str(t))) for t in targets)))

    def close(self):
        """Nothing to release."""


class MemoryEnv(_Env):
    """The in-memory kernel model, the agent in this process (Service with the model's ports,
    the real XAPI adapter), the real simulator. No root needed."""

    kind = IN_MEMORY
    agent_command = "in this process (agent.service.Service on the in-memory kernel model)"

    def __init__(self, plan, workdir, lab):
        from agent.adapters.memory import MemoryNet
        _Env.__init__(self, plan, workdir, lab)
        self.net = _LockedNet(MemoryNet())
        self.storage_up_ = True
        self.service = self.thread = self.exit = self._log = None
        self._running = {}   # uplink VM -> its internal bridges

    def open(self):
        """The management bridge with networkd's address, the VM hook, the simulator."""
        self.net.add_link(self.netns.MGMT_BRIDGE)
        self.net.add_address(self.netns.MGMT_BRIDGE, self.netns.MGMT_ADDRESS)
        self.sim.add_vm_power_hook(self._hook(self._vm_hook))
        self._start_sim()

    def _vm_hook(self, vm_name, record, domid, bridges, old_state, new_state):
        """A running uplink VM's internal bridges exist; the last one to stop takes them along."""
        if vm_name not in self.plan.uplinks:
            return
        if new_state == "Running" and old_state != "Paused":
            self._running[vm_name] = [b for b in bridges if b in self.fw_by_bridge]
            for bridge in self._running[vm_name]:
                if not self.net.link_exists(bridge):
                    self.net.add_link(bridge)
        elif new_state in ("Halted", "Suspended"):
            for bridge in self._running.pop(vm_name, []):
                if not any(bridge in b for b in self._running.values()):
                    self.net.remove_link(bridge)

    def reachable(self, target):
        """The model's verdict: the firewall answers on a present bridge where dom0 has an
        address (or link-local); storage answers when up and a default route leads to the firewall."""
        ip = ipaddress.ip_address(target.split("%")[0])
        view = self.net.read_view()
        for bridge, ifaces in self.fw_by_bridge.items():
            if any(ipaddress.ip_interface(text).ip == ip for text in ifaces):
                return bridge in view.links and (ip.is_link_local or any(
                    i == bridge and ip in ipaddress.ip_interface(a).network for i, a in view.addresses))
        if not self.storage_up_ or target not in self.plan.storage + (self.plan.ping_target,):
            return False
        return any(f == ip.version and self.reachable(g) for f, g, _i in view.routes)

    def storage_answers(self, server):
        """For the simulator's PBD.plug: the model's verdict on the storage server."""
        return not server or self.reachable(server)

    def storage_down(self):
        """The storage server leaves the network."""
        self.storage_up_ = False

    def storage_up(self):
        """The storage server is back."""
        self.storage_up_ = True

    def flush(self):
        """networkd-style flush of the bridges and default routes; networkd re-adds its address."""
        for ifname in [self.netns.MGMT_BRIDGE] + self.bridges():
            self.net.flush(ifname)
        for route in sorted(self.net.read_view().routes):
            self.net.remove_route(*route)
        self.net.add_address(self.netns.MGMT_BRIDGE, self.netns.MGMT_ADDRESS)

    def kernel_state(self):
        """(addresses, default routes) of the model."""
        view = self.net.read_view()
        return sorted(view.addresses), sorted(view.routes)

    def ping(self, target):
        """The model's reachability of ``target`` (no packet is sent)."""
        return {"ok": self.reachable(target), "from": "dom0", "target": target,
                "how": "%s reachability, no packet sent" % IN_MEMORY}

    def start_agent(self):
        """The service's decision loop on a thread of this process; its log goes to agent.log."""
        import logging
        import random
        from agent.adapters.xapi import XapiAdapter
        from agent.service import Service
        rng = random.Random()
        prober = _ModelProber(self.reachable)
        self.service = Service(self.config, adapters={
            "net": self.net, "watcher": _MemoryWatcher(self.net), "prober": prober,
            "xapi": XapiAdapter(self.config, rng=rng, local_db_path=self.config.xapi.local_db)})
        self.service._signals = lambda: None  # signals belong to the lab's main thread here
        self._log = logging.FileHandler(self.log_path)
        self._log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        self._old_level = root.level
        root.addHandler(self._log)
        root.setLevel(logging.INFO)

        def run():
            self.exit = self.service.run()
        self.thread = threading.Thread(target=run, name="lab-agent")
        self.thread.daemon = True
        self.thread.start()

    def agent_alive(self):
        """True until the agent's thread has ended."""
        return self.thread is None or self.thread.is_alive()

    def stop_agent(self):
        """A stop request, as the SIGTERM handler posts it; check the model kept its networking."""
        if self.thread is None:
            return None
        from agent.events import StopRequested
        if self.service.agent is not None:
            self.service.agent.post(StopRequested("SIGTERM"))
        self.thread.join(STOP_TIMEOUT)
        missing = self.kernel_missing()
        return {"how": "stop request (the SIGTERM handler's event)",
                "exit": None if self.thread.is_alive() else self.exit,
                "networking_left_in_place": not missing, "missing": missing}

    def close(self):
        """Stop the agent's thread if it still runs, the simulator, the log capture."""
        import logging
        if self.thread is not None and self.thread.is_alive() and self.service.agent is not None:
            from agent.events import StopRequested
            self.service.agent.post(StopRequested("lab cleanup"))
            self.thread.join(STOP_TIMEOUT)
        self.sim.stop()
        if self._log is not None:
            logging.getLogger().removeHandler(self._log)
            logging.getLogger().setLevel(self._old_level)
            self._log.close()


def run_one(name, plan, memory, timeout=WAIT_TIMEOUT):
    """Scenario ``name`` on a fresh lab; the run as a dict (ok, error, lab, timeline, summary).

    The temp dir is removed after a success and kept (with agent.log) after a failure.
    """
    from agent.lab import scenarios, timeline
    from agent.lab.harness import private_dir
    lab = scenarios.Lab(plan, time.time(), timeout)
    workdir = private_dir("sspnlab")
    env = error = ping = stop = None
    finished = False
    try:
        env = (MemoryEnv if memory else NetnsEnv)(plan, workdir, lab)
        lab.env, lab.sim = env, env.sim
        try:
            env.open()
            env.config = lab.config = scenarios.write_config(plan, workdir, env.sim)
            scenarios.SCENARIOS[name](lab)
            ping = env.ping(plan.ping_target)
            if not ping["ok"]:
                lab.fail("no answer from %s through the firewall" % plan.ping_target)
        except (scenarios.LabFailure, RuntimeError) as exc:  # TopologyError is a RuntimeError
            if isinstance(exc, NetnsUnavailable):
                raise
            error = str(exc)
        stop = env.stop_agent()
        if error is None and stop and (stop["exit"] != 0 or stop["missing"]):
            error = "the agent did not stop cleanly (%s): exit %s, missing after it: %s" % (
                stop["how"], stop["exit"], ", ".join(stop["missing"]) or "nothing")
        finished = True
    finally:
        if env is not None:
            env.close()
        if not finished:  # interrupted, or no namespaces: nothing in it to look at
            shutil.rmtree(workdir, ignore_errors=True)
    entries = lab.entries() if lab.config else []
    summary = timeline.summary(name, entries, lab, env.kind, error, ping, stop)
    info = env.info()
    info["workdir_kept"] = error is not None
    if error is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"scenario": name, "description": scenarios.describe(name), "kernel": env.kind,
            "ok": error is None, "error": error, "lab": info, "timeline": entries,
            "summary": summary}


HELP_EPILOG = """scenarios:
%s

--config FILE rehearses your own agent.toml (cold-boot only). After validating it, the lab
builds a simulated host with your network and VM labels and SR uuids; the firewall namespace
takes your gateways (and an address in every binding subnet), the storage namespace your SR
probe targets; an SR without probe gets the lab's storage server %s as NFS server.
Your [xapi], [files] and management bridge are replaced by the lab's; bindings, route, SRs,
maintenance and timing stay yours. Limits: subnets overlapping the lab's own 203.0.113.0/24,
198.51.100.0/24 or 2001:db8:2::/64, and storage targets inside a binding's subnet, cannot be
rehearsed; only the first VM of each binding is started (and auto-power-on); the simulated
host has no other VMs for autostart.

Without root or `ip netns` (or with --in-memory, or %s=1) the agent runs in
this process on the in-memory kernel model, with the real XAPI simulator and adapter; the
output says so.
Exit status: 0 when every scenario ended HEALTHY, 1 when one failed, 78 for a config the lab
cannot use, 130/143 when interrupted (the lab is removed either way)."""


def build_parser():
    """The argument parser of `agent lab`."""
    from agent.lab import scenarios
    p = argparse.ArgumentParser(
        prog="agent lab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rehearse the agent: an embedded XAPI simulator, network namespaces (dom0, "
                    "firewall, storage LAN) with the real agent inside, a scenario, a timeline.",
        epilog=HELP_EPILOG % ("\n".join(textwrap.fill(
            scenarios.describe(n), 92, initial_indent="  %-21s" % n, subsequent_indent=" " * 23)
            for n in SCENARIOS), scenarios.LAN4_IP, FORCE_MEMORY_ENV))
    p.add_argument("--scenario", action="append", metavar="NAME", choices=SCENARIOS + ("all",),
                   help="scenario to run (default cold-boot); repeat it, or give 'all'")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--config", metavar="FILE", help="rehearse this agent.toml (cold-boot)")
    p.add_argument("--keep-going", action="store_true",
                   help="with several scenarios, run the rest after one fails")
    p.add_argument("--in-memory", action="store_true",
                   help="use the in-memory kernel model even where namespaces are available")
    return p


def _plan(config_path):
    """(HostPlan, None), or (None, exit status) after saying why the config cannot be used."""
    from agent import config as cfgmod
    from agent.lab import scenarios
    if not config_path:
        return scenarios.default_plan(), None
    try:
        return scenarios.plan_for(cfgmod.load_config(config_path), config_path), None
    except cfgmod.ConfigError as exc:
        print("agent lab: %s" % exc, file=sys.stderr)
    except scenarios.PlanError as exc:
        print("agent lab: cannot rehearse %s: %s" % (config_path, exc), file=sys.stderr)
    return None, EX_CONFIG


def netns_available():
    """True when this process may create network namespaces with `ip netns`."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def main(argv=None):
    """`agent lab`: run the scenarios, print timelines and summaries; 0 when all ended HEALTHY."""
    args = build_parser().parse_args(argv)
    names = args.scenario or ["cold-boot"]
    names = list(SCENARIOS) if "all" in names else names
    if args.config and names != ["cold-boot"]:
        print("agent lab: --config rehearses cold-boot only; leave out --scenario", file=sys.stderr)
        return 2
    plan, code = _plan(args.config)
    if plan is None:
        return code
    forced = args.in_memory or os.environ.get(FORCE_MEMORY_ENV) == "1"
    memory = forced or not netns_available()
    if memory and not forced:
        print("agent lab: not root or no `ip netns`: the agent runs in-process on the in-memory "
              "kernel model (the XAPI simulator and adapter are real)", file=sys.stderr)
    timeout = WAIT_TIMEOUT
    if args.config:  # the operator's own timings: allow a few of their probe rounds and backoffs
        t = plan.config.timing
        timeout += 4 * (t.probe_interval + t.probe_timeout) + 2 * t.backoff_cap
    from agent.lab import timeline
    previous = _install_term_handler()
    runs = []
    try:
        for name in names:
            try:
                run = run_one(name, plan, memory, timeout)
            except NetnsUnavailable as exc:
                print("agent lab: cannot create network namespaces (%s): the agent runs in-process "
                      "on the in-memory kernel model" % exc, file=sys.stderr)
                memory = True
                run = run_one(name, plan, memory, timeout)
            runs.append(run)
            if not args.json:
                print(timeline.render_run(run) + "\n", flush=True)
            if not run["ok"] and not args.keep_going:
                break
    except (KeyboardInterrupt, LabInterrupted) as exc:
        print("agent lab: interrupted; the agent, the simulator and the namespaces were removed",
              file=sys.stderr)
        return 143 if isinstance(exc, LabInterrupted) else 130
    finally:
        _restore_term_handler(previous)
    ok = len(runs) == len(names) and all(run["ok"] for run in runs)
    if args.json:
        print(json.dumps({"ok": ok, "runs": runs}, indent=1, sort_keys=True))
    return 0 if ok else 1


def _install_term_handler():
    """SIGTERM unwinds the lab like Ctrl-C (netns.py's handler removes the namespaces first,
    then calls this one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_term(signum, _frame):
        raise LabInterrupted(signum)
    return signal.signal(signal.SIGTERM, on_term)


def _restore_term_handler(previous):
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
