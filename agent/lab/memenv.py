"""The in-memory kernel model as a rehearsal's kernel: no root needed.

The agent runs in this process (agent.service.Service with the model's ports and the real
XAPI adapter) against the real simulator; reachability is the model's verdict, no packet is
sent. Used where `ip netns` is unavailable, or with `agent lab --in-memory`.
"""

import ipaddress
import os
import threading

from agent.lab.envs import IN_MEMORY, _Env
from agent.lab.simhost import STOP_TIMEOUT


def _server_of(device_config):
    """The storage server of a PBD's device_config (NFS/CIFS "server", else the host of "location")."""
    server = device_config.get("server", "")
    if not server and device_config.get("location", "").startswith("//"):
        server = device_config["location"][2:].split("/", 1)[0]
    return server


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
        """Where the model's kernel hints (KernelNotified) go."""
        with self._lock:
            self._net.post = post


class _MemoryWatcher(object):
    """The NetWatcher port on the model: events from its changes, after one full view."""

    def __init__(self, net):
        self.net = net

    def start(self, post):
        """Post the model's full view, then every change of it, through ``post``."""
        from agent.decision.events import KernelResynced
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
        """Post the model's answer for every target at once (a ``host:port`` storage target:
        its host's, the model's services being up with it)."""
        from agent.decision.events import ProbeDone
        from agent.decision.sm_targets import split_target
        self.post(ProbeDone(key, dict((str(t), self.reachable(split_target(str(t))[0]))
                                      for t in targets)))

    def close(self):
        """Nothing to release."""


class MemoryEnv(_Env):
    """The in-memory kernel model, the agent in this process (Service with the model's ports,
    the real XAPI adapter), the real simulator. No root needed."""

    kind = IN_MEMORY
    agent_command = "in this process (agent.service.Service on the in-memory kernel model)"

    def __init__(self, plan, workdir, lab):
        from agent.adapters.memory import MemoryNet
        from agent.lab.xapi import Simulator
        _Env.__init__(self, plan, workdir, lab,
                      Simulator(os.path.join(workdir, "xapi"), scenario=plan.scenario, seed=0))
        self.net = _LockedNet(MemoryNet())
        self.storage_up_ = True
        self.service = self.thread = self.exit = self._log = None
        self._running = {}   # uplink VM -> its internal bridges

    def open(self):
        """The management bridge with networkd's address, the VM hook, the simulator (its
        PBD.plug asks the model whether the storage server answers)."""
        self.net.add_link(self.netns.MGMT_BRIDGE)
        self.net.add_address(self.netns.MGMT_BRIDGE, self.netns.MGMT_ADDRESS)
        self.sim.add_vm_power_hook(self._hook(self._vm_hook))
        self.sim.storage_probe = lambda dc: self.storage_answers(_server_of(dc))
        self._count_calls()
        self.sim.start()

    def _vm_hook(self, vm_name, record, domid, bridges, old_state, new_state):
        """A running uplink VM's internal bridges exist; the last one to stop takes them along."""
        if vm_name not in self.firewalls:
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
        if str(ip) in getattr(self, "silent", ()):
            return False
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

    def silence_gateways(self, gone):
        """The firewall no longer answers on these gateway addresses [(bridge, "a/p")]."""
        self.silent = getattr(self, "silent", set()) | set(t.split("/")[0] for _b, t in gone)

    def restore_gateways(self):
        """The firewall answers on every gateway address again."""
        self.silent = set()

    def delete_addresses(self, pairs):
        """Someone deletes addresses [(ifname, "a/p")]."""
        for ifname, text in pairs:
            self.net.remove_address(ifname, text)

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
        from agent.decision.events import StopRequested
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
            from agent.decision.events import StopRequested
            self.service.agent.post(StopRequested("lab cleanup"))
            self.thread.join(STOP_TIMEOUT)
        self.sim.stop()
        if self._log is not None:
            logging.getLogger().removeHandler(self._log)
            logging.getLogger().setLevel(self._old_level)
            self._log.close()
