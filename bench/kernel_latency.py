"""Bench: kernel repair latency, the agent against the same work done by `ip` subprocesses.

Method. A throwaway topology (agent.lab.netns: dom0, fw, lan namespaces) and the XAPI
simulator; the firewall VM's start hook creates bridge xapiN + vif<domid>.0 in dom0, its stop
destroys them. An independent listener (bench/rtm_listener.py: its own process in dom0, a raw
netlink socket bound to the RTM groups, SCHED_FIFO) stamps every datagram with
time.monotonic() as recv() returns; the bench parses them afterwards with pyroute2, not
with the agent's code.

  1. bridge appears -> addresses + default routes installed: reboot the firewall VM N times;
     latency = last of {RTM_NEWADDR v4, v6 on the bridge, RTM_NEWROUTE default v4, v6}
     minus the first RTM_NEWLINK of the bridge with IFF_UP (the lab makes the bridge down, adds
     the VIF, then brings it up, as dom0 does; nobody can bind before that).
  2. address removed -> restored: `ip addr del` of the v4 address (the kernel drops the v4
     default route with it) N times; latency = last of {NEWADDR, NEWROUTE v4} minus DELADDR.
  3. route removed -> restored: `ip route del default` v6, N times; NEWROUTE minus DELROUTE.

Each is run with the real agent (`agent run` as its own process in dom0: decision loop,
RtnlNet, NetlinkWatcher, the real XAPI adapter on the simulator's socket; ICMP probing
off) and then, in the same run, with a reactor in the bench process that does the same work
by forking `ip` (as vif-ip-binder did). Needs root.

  --other-binding-halted: the same rows with a second [[binding]] ("sspn-b", its firewall VM
     "opnsense" halted all along): the agent stays in WAITING_VM and binding "sspn" must be
     served on its own, as fast (agent/decision/keeper.py).

    python bench/kernel_latency.py [--runs 200] [--json] [--agent-only] [--other-binding-halted]
    python bench/kernel_latency.py [--runs 200] [--json] [--agent-only] [--bridge linux|ovs|both]

``--bridge``: dom0's bridges as Linux bridges or Open vSwitch (userspace datapath) bridges;
``both`` runs the whole bench once per backend, one after the other, in this invocation.
"""

import argparse
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stats import summary  # noqa: E402
from agent.lab.harness import Host  # noqa: E402
from agent.lab.scenarios_several import SECOND_BINDING  # noqa: E402

V4, V6 = "192.0.2.2/24", "2001:db8:1::2/64"
GW4, GW6 = "192.0.2.1", "2001:db8:1::1"


class Listener(object):
    """Independent RTM listener in a namespace: (monotonic, event, ifname, address or gateway).

    The stamps come from bench/rtm_listener.py, its own process; the datagrams are parsed
    here with pyroute2's marshal, not with the agent's codec. ``background``: parse at nice
    19, since pyroute2 spends about 0.2 ms of CPU per message and a firewall reboot makes
    ~40 of them, CPU the agent being timed needs on a 2-vCPU machine (the stamps are taken
    in the listener process, so parsing late changes no number).
    """

    def __init__(self, ns, background=False):
        self.background = background
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl
        self.marshal = MarshalRtnl()
        self.events = queue.Queue()
        self.names = {}
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                                      os.path.join(ROOT, "bench", "rtm_listener.py")],
                                     stdout=subprocess.PIPE, bufsize=0)
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        if not self.ready.wait(10):
            self.close()
            raise RuntimeError("bench/rtm_listener.py did not subscribe within 10 s")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def _read(self, size):
        data = b""
        while len(data) < size:
            chunk = self.proc.stdout.read(size - len(data))
            if not chunk:
                raise EOFError("rtm_listener exited")
            data += chunk
        return data

    def _run(self):
        from rtm_listener import RECORD
        if self.background:
            os.setpriority(os.PRIO_PROCESS, _thread_id(), 19)
        try:
            while True:
                stamp, size = RECORD.unpack(self._read(RECORD.size))
                if not size:
                    self.ready.set()
                    continue
                for msg in self.marshal.parse(self._read(size)):
                    self._put(stamp, msg)
        except EOFError:
            pass

    def _put(self, stamp, msg):
        kind = msg["event"]
        index = msg.get("index") or msg.get("oif")
        if kind in ("RTM_NEWLINK", "RTM_DELLINK"):
            self.names[index] = msg.get("ifname")
            what = "up" if msg["flags"] & 1 else "down"  # IFF_UP, linux/if.h
            self.events.put((stamp, kind, self.names.get(index, str(index)), what))
            return
        what = msg.get("address") if "ADDR" in kind else (
            "default%d" % (4 if msg["family"] == socket.AF_INET else 6)
            if "ROUTE" in kind and not msg.get("dst") else msg.get("dst"))
        if "ADDR" in kind and what:
            what = "%s/%s" % (what, msg["prefixlen"])
        self.events.put((stamp, kind, self.names.get(index, str(index)), what))

    def wait_for(self, wanted, deadline=10.0):
        """Consume events until every (kind, ifname or None, what) in ``wanted`` was seen;
        return {item: time}. Items are matched in any order."""
        seen, end = {}, time.monotonic() + deadline
        while len(seen) < len(wanted):
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("not seen: %s" % [w for w in wanted if w not in seen])
            try:
                stamp, kind, ifname, what = self.events.get(timeout=left)
            except queue.Empty:
                continue
            for item in wanted:
                k, i, w = item
                if item not in seen and k == kind and (i is None or i == ifname) and (w is None or w == what):
                    seen[item] = stamp
        return seen

    def drain(self):
        while not self.events.empty():
            self.events.get_nowait()


def _thread_id():
    """The calling thread's kernel id (threading.get_native_id needs Python 3.8)."""
    native = getattr(threading, "get_native_id", None)
    if native is not None:
        return native()
    import ctypes
    return ctypes.CDLL(None, use_errno=True).syscall(186)  # SYS_gettid on x86_64


class IpReactor(object):
    """The same work by forking `ip`: re-add on RTM_NEWLINK / RTM_DELADDR / RTM_DELROUTE."""

    def __init__(self, topo, bridge_of):
        self.topo, self.bridge_of = topo, bridge_of
        self.listener = Listener(topo.ns("dom0"))
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def close(self):
        self.stop = True
        self.listener.close()

    def ip(self, *args):
        subprocess.call(["ip", "-n", self.topo.ns("dom0")] + list(args),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def bind(self, bridge):
        self.ip("addr", "add", V4, "dev", bridge)
        self.ip("-6", "addr", "add", V6, "dev", bridge, "nodad")
        self.ip("route", "replace", "default", "via", GW4, "dev", bridge)
        self.ip("-6", "route", "replace", "default", "via", GW6, "dev", bridge)

    def _run(self):
        while not self.stop:
            try:
                _stamp, kind, ifname, _what = self.listener.events.get(timeout=0.2)
            except queue.Empty:
                continue
            bridge = self.bridge_of()
            if ifname == bridge and kind in ("RTM_NEWLINK", "RTM_DELADDR", "RTM_DELROUTE"):
                self.bind(bridge)


def run_scenarios(topo, sim, listener, runs, label):
    """The three measurements against whatever currently repairs dom0."""
    bridge = current_bridge(sim)
    out = {}
    appear = []
    for _ in range(runs):
        sim.vm_stop("pfsense")
        listener.wait_for([("RTM_DELLINK", bridge, None)])
        listener.drain()
        sim.vm_start("pfsense")
        seen = listener.wait_for([("RTM_NEWLINK", bridge, "up"), ("RTM_NEWADDR", bridge, V4),
                                  ("RTM_NEWADDR", bridge, V6), ("RTM_NEWROUTE", bridge, "default4"),
                                  ("RTM_NEWROUTE", bridge, "default6")])
        appear.append(max(seen.values()) - seen[("RTM_NEWLINK", bridge, "up")])
    out["bridge_appears_to_bound"] = summary(appear)
    addr = []
    for _ in range(runs):
        listener.drain()
        topo.ip("dom0", "addr", "del", V4, "dev", bridge)
        seen = listener.wait_for([("RTM_DELADDR", bridge, V4), ("RTM_NEWADDR", bridge, V4),
                                  ("RTM_NEWROUTE", bridge, "default4")])
        addr.append(max(seen.values()) - seen[("RTM_DELADDR", bridge, V4)])
    out["address_removed_to_restored"] = summary(addr)
    route = []
    for _ in range(runs):
        # the `ip` reactor can lose the v6 route on a bridge that came up late: put it back
        topo.ip("dom0", "-6", "route", "replace", "default", "via", GW6, "dev", bridge)
        time.sleep(0.05)  # let that change's notifications pass before measuring
        listener.drain()
        topo.ip("dom0", "-6", "route", "del", "default", "via", GW6, "dev", bridge)
        seen = listener.wait_for([("RTM_DELROUTE", bridge, "default6"), ("RTM_NEWROUTE", bridge, "default6")])
        route.append(seen[("RTM_NEWROUTE", bridge, "default6")] - seen[("RTM_DELROUTE", bridge, "default6")])
    out["route_removed_to_restored"] = summary(route)
    print("  %-5s bridge->bound p50 %.2f p99 %.2f | addr del->restored p50 %.2f p99 %.2f | "
          "route del->restored p50 %.2f p99 %.2f (ms, %d runs each)" % (
              label, out["bridge_appears_to_bound"]["p50_ms"], out["bridge_appears_to_bound"]["p99_ms"],
              out["address_removed_to_restored"]["p50_ms"], out["address_removed_to_restored"]["p99_ms"],
              out["route_removed_to_restored"]["p50_ms"], out["route_removed_to_restored"]["p99_ms"], runs),
          file=sys.stderr)
    return out


def current_bridge(sim):
    return sim.state()["networks"]["sspn"]["bridge"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--agent-only", action="store_true", help="skip the `ip` reactor half")
    parser.add_argument("--other-binding-halted", action="store_true",
                        help="a second binding whose firewall VM stays halted (agent only)")
    parser.add_argument("--bridge", choices=("linux", "ovs", "both"), default="linux",
                        help="dom0's bridges: Linux, Open vSwitch, or both one after the other")
    args = parser.parse_args()
    if args.other_binding_halted:
        return other_binding_halted(args)
    if os.geteuid() != 0 or not shutil.which("ip"):
        sys.exit("kernel_latency needs root and iproute2 (network namespaces)")
    if args.bridge == "both":
        return both(args)
    results = {"method": "bench/rtm_listener.py in dom0 (own process, SCHED_FIFO) stamps each "
                         "datagram with time.monotonic() at recv; parsed by pyroute2",
               "runs": args.runs, "bridge": args.bridge}
    print("bridges: %s" % args.bridge, file=sys.stderr)
    with Host(probe=False, bridge=args.bridge) as host:
        topo, sim = host.topology, host.sim
        listener = Listener(topo.ns("dom0"), background=True)
        reactor = None
        try:
            host.start_agent()
            host.wait_state("WAITING_VM")
            sim.vm_start("pfsense")
            host.wait_state("HEALTHY")
            print("kernel repair latency (bench/kernel_latency.py)", file=sys.stderr)
            results["agent"] = run_scenarios(topo, sim, listener, args.runs, "agent")
            host.stop_agent()
            if not args.agent_only:
                reactor = IpReactor(topo, lambda: current_bridge(sim))
                results["ip_subprocess"] = run_scenarios(topo, sim, listener, args.runs, "ip")
        finally:
            for each in (reactor, listener):
                if each is not None:
                    each.close()
    if args.json:
        print(json.dumps(results, indent=1))


def other_binding_halted(args):
    """The agent's rows while binding "sspn-b"'s firewall stays halted (WAITING_VM throughout)."""
    from agent.lab import scenarios
    results = {"method": "as the default rows; binding sspn-b's VM opnsense halted throughout",
               "runs": args.runs}
    with Host(probe=False, scenario=scenarios.several_plan().scenario,
              extra_config=SECOND_BINDING) as host:
        topo, sim = host.topology, host.sim
        listener = Listener(topo.ns("dom0"), background=True)
        try:
            host.start_agent()
            host.wait_state("WAITING_VM")
            sim.vm_start("pfsense")
            host.wait(lambda st: st.get("state") == "WAITING_VM" and any(
                b["network"] == "sspn" and b["bridge_exists"] and not b["missing"]
                for b in st.get("bindings", [])), "binding sspn served in WAITING_VM")
            print("kernel repair latency, binding sspn-b halted (bench/kernel_latency.py)",
                  file=sys.stderr)
            results["agent_other_binding_halted"] = run_scenarios(topo, sim, listener, args.runs,
                                                                  "agent")
            if host.status().get("state") != "WAITING_VM":
                raise RuntimeError("the agent left WAITING_VM: sspn-b's firewall ran?")
        finally:
            listener.close()
    if args.json:
        print(json.dumps(results, indent=1))


def both(args):
    """The bench on Linux bridges, then on Open vSwitch bridges, each in its own process."""
    results = {}
    for bridge in ("linux", "ovs"):
        argv = [sys.executable, os.path.abspath(__file__), "--runs", str(args.runs), "--bridge", bridge,
                "--json"] + (["--agent-only"] if args.agent_only else [])
        results[bridge] = json.loads(subprocess.check_output(argv, universal_newlines=True))
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
