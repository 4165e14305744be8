"""The lab's network: namespaces for dom0, the firewall VM and the storage LAN, always cleaned up.

::

    dom0                              fw (firewall VM)                lan (storage server)
    xenbr0 203.0.113.5/24 (mgmt)
    <bridge> ── vif<domid>.<dev> ═══ fwvif<domid>.<dev>   lan0 ═══ sw0 ── eth0
                                     192.0.2.1/24         198.51.100.1/24   198.51.100.10/24
                                     2001:db8:1::1/64     2001:db8:2::1/64  2001:db8:2::10/64
                                     fe80::1              (forwarding on)   default via fw

    (lan's eth0 is a bridge with one port, sw0: a switch between the firewall and the
    server, so that the server going down leaves the firewall's link up)

This is the one builder of that topology: the lab (agent/lab/envs.py), the simulated host of
the tests and benches (agent/lab/harness.py) and the kernel tests all use ``Topology``. dom0's
bridges come from a backend (agent/lab/bridges.py): Linux bridges, or Open vSwitch bridges as
on dom0 (agent/lab/ovs.py); ``$SSPN_BRIDGE`` picks it when the caller does not. The internal
bridge and the VIF exist only while the firewall VM runs, as with xapi for a PIF-less network
(xapi ``ocaml/xapi/xapi_network.ml``: ``attach_internal`` -> ``create_internal_bridge`` on VM
start, ``deregister_vif`` -> ``detach`` after the last VIF): the bridge is created down, the VIF
is added as a port, then the bridge is brought up. Interfaces and addresses are made
with the ``ip`` command, so this module needs no pyroute2 and mirrors what an operator types.

Namespaces are removed by ``cleanup()``, on leaving the ``with`` block (also on an exception),
on SIGINT and SIGTERM (handlers clean up, restore the previous handlers and re-deliver the
signal) and at interpreter exit. A lab killed outright is swept by the next one
(agent/lab/orphans.py).
"""

import atexit
import binascii
import collections
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from agent.adapters.rtnl import call_in_netns
from agent.lab import announce, bridges, orphans

log = logging.getLogger(__name__)

MGMT_BRIDGE = "xenbr0"
MGMT_ADDRESS = "203.0.113.5/24"     # stands in for the networkd-configured management address
GATEWAY4 = "192.0.2.1/24"
GATEWAY6 = "2001:db8:1::1/64"
GATEWAY6_LINK_LOCAL = "fe80::1/64"  # lets tests use a link-local v6 gateway
FW_LAN4 = "198.51.100.1/24"
FW_LAN6 = "2001:db8:2::1/64"
LAN4 = "198.51.100.10/24"
LAN6 = "2001:db8:2::10/64"
ROLES = ("dom0", "fw", "lan")


class TopologyError(RuntimeError):
    """An ``ip`` command failed while building or changing the lab network."""


def _run(argv, input_text=None, check=True):
    """Run a command; its stdout text, or TopologyError naming the command and its stderr."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    out, err = proc.communicate(input_text)
    if check and proc.returncode != 0:
        raise TopologyError("%s failed (exit %d): %s" % (" ".join(argv), proc.returncode,
                                                         err.strip() or out.strip()))
    return out


def vif_name(domid, device=0):
    """dom0's name for a VM's VIF (netback's vif<domid>.<devid>: drivers/net/xen-netback/interface.c)."""
    return "vif%d.%d" % (domid, device)


def fw_side_name(domid, device=0):
    """The name of the VIF's other end inside the firewall namespace (at most 15 characters)."""
    return "fwvif%d.%d" % (domid, device)


PREFIX = "sspn"
CARRIER_TIMEOUT = 5.0   # seconds create and storage_back wait for lan's switch to forward
SETTLE_TIMEOUT = 10.0   # seconds storage_in_use waits for the firewall to confirm the server
DISCARD_PORT = 9        # RFC 863
GUEST_INDEX_BASE = 1 << 20  # guests' ends of VIFs: indexes far above any dom0 reaches


def sweep_orphans():
    """Remove what labs that no longer run left behind (agent/lab/orphans.py): their OVS daemons
    first (by pid file), then whatever still runs inside their namespaces ``<prefix>-*``
    (their agent, say), then the namespaces. Returns the namespace names removed."""
    removed = []

    def delete(prefix):
        try:
            present = set(line.split()[0] for line in _run(["ip", "netns", "list"], check=False).splitlines()
                          if line.strip())
        except Exception:  # no `ip`: create() will say so
            return
        for name in sorted(n for n in present if n.startswith(prefix + "-")):  # extra roles too
            pids = _run(["ip", "netns", "pids", name], check=False).split()
            orphans.stop_pids([int(p) for p in pids if p.isdigit()], name)
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    orphans.sweep(delete)
    return removed


class Topology(object):
    """Namespaces ``<prefix>-dom0``, ``<prefix>-fw`` and ``<prefix>-lan``, wired as in the module doc.

    ``bridge``: the bridge backend, "linux" or "ovs" (default: ``$SSPN_BRIDGE``, else "linux").
    ``workdir``: the run directory of the lab using it, which the sweep removes along with the
    namespaces if that lab dies without cleaning up (agent/lab/orphans.py).
    """

    def __init__(self, prefix=None, bridge=None, workdir=None):
        if prefix is None:
            prefix = "%s-%d-%s" % (PREFIX, os.getpid(), binascii.hexlify(os.urandom(3)).decode())
        self.prefix = prefix
        self.dom0 = prefix + "-dom0"
        self.fw = prefix + "-fw"
        self.lan = prefix + "-lan"
        self.backend = bridges.make(bridge, self)
        self.state_dir = None
        self.workdir = workdir
        self.up_at = {}   # bridge -> wall time (time.time()) of its last bring-up
        self._extra = {}  # role -> namespace name, from add_namespace
        self._created = []
        self._guest_index = GUEST_INDEX_BASE  # the last interface index given to a guest's end
        self._owner = os.getpid()
        self._lock = threading.RLock()

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self):
        self.create()
        return self

    def __exit__(self, *exc_info):
        self.cleanup()
        return False

    def create(self):
        """Create and wire the three namespaces; on any failure remove what was made, then raise."""
        if self._created:
            raise RuntimeError("topology %s is already created" % self.prefix)
        self._owner = os.getpid()
        sweep_orphans()
        _register(self)
        try:
            try:
                self.state_dir = orphans.claim(self.prefix, self.workdir)
            except OSError as exc:
                raise TopologyError("cannot make the lab's state directory for %s: %s" % (self.prefix, exc))
            for name in (self.dom0, self.fw, self.lan):
                _run(["ip", "netns", "add", name])
                self._created.append(name)
            self.ip("dom0", "link", "set", "lo", "up")
            self.backend.start()
            self.backend.create_bridge(MGMT_BRIDGE)
            self.ip("dom0", batch=[
                "link set %s up" % MGMT_BRIDGE,
                "addr add %s dev %s" % (MGMT_ADDRESS, MGMT_BRIDGE),
            ])
            # fw holds the ends of every firewall VM's VIFs (a CARP pair's two members too):
            # each end answers ARP only for its own addresses (arp_ignore=1), as a separate VM
            # does; Linux's default (0) answers on any interface for any address of the host
            # (kernel Documentation/networking/ip-sysctl.rst, arp_ignore).
            self.exec("fw", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                             "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.arp_ignore=1"])
            # lan's bridge before the veth: sw0 then gets an ifindex other than its peer lan0's.
            # With equal ones the kernel takes the pair for a device that is not stacked on
            # another and reports sw0's carrier through the rate-limited path, up to 1 s late
            # (net/core/link_watch.c, linkwatch_urgent_event: ifindex != iflink); the switch
            # port does not forward until then.
            self.ip("lan", "link", "add", "eth0", "type", "bridge", "mcast_snooping", "0")
            self.ip("fw", batch=[
                "link set lo up",
                "link add lan0 type veth peer name sw0 netns %s" % self.lan,
                "addr add %s dev lan0" % FW_LAN4,
                "addr add %s dev lan0 nodad" % FW_LAN6,
                "link set lan0 up",
            ])
            # lan: the storage server's eth0 hangs off a switch port (sw0), so that the server
            # leaving (its eth0 down) does not take the firewall's carrier with it: the firewall
            # keeps asking ARP for it, unanswered, as behind a real switch
            self.ip("lan", batch=[
                "link set lo up",
                "link set sw0 master eth0",
                "link set sw0 up",
                "addr add %s dev eth0" % LAN4,
                "addr add %s dev eth0 nodad" % LAN6,
                "link set eth0 up",
                "route add default via %s" % FW_LAN4.split("/")[0],
                "route add default via %s" % FW_LAN6.split("/")[0],
            ])
            self._wait_switch()
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self):
        """Delete every namespace this topology created (idempotent; interfaces go with them).

        Only in the process that created them: a forked child (pyroute2 forks helpers and stops
        them with SIGTERM) inherits our handlers and atexit, and must not tear the lab down.
        """
        if os.getpid() != self._owner:
            return
        with self._lock:
            created, self._created = self._created, []
            state_dir, self.state_dir = self.state_dir, None
        if state_dir is not None:
            try:  # the daemons first: vswitchd keeps dom0's namespace busy
                self.backend.stop()
            except Exception as exc:
                log.warning("could not stop the %s of %s (%s), continuing", self.backend.description,
                            self.prefix, exc)
        for name in reversed(created):
            try:
                _run(["ip", "netns", "del", name], check=False)
            except Exception as exc:  # keep deleting the others
                log.warning("could not delete namespace %s (%s), continuing", name, exc)
        if state_dir is not None:
            orphans.release(state_dir)
        _unregister(self)

    @property
    def namespaces(self):
        """The namespace names this topology has created and not yet removed."""
        return list(self._created)

    # --- helpers ------------------------------------------------------------------------------

    def ns(self, role):
        """The namespace name for a role ("dom0", "fw", "lan", or one added with
        ``add_namespace``); a full name passes through."""
        if role in ROLES:
            return getattr(self, role)
        return self._extra.get(role, role)

    def add_namespace(self, role):
        """One more namespace ``<prefix>-<role>`` (lo up), removed with the others; its name.

        For tests that need more than one guest or server (a second firewall VM, a storage
        server of its own): ``vm_started(..., guest=role)`` puts a VIF's other end there.
        """
        if role in ROLES or role in self._extra or not role.replace("_", "").isalnum():
            raise ValueError("role %r is taken or not a plain word" % role)
        name = "%s-%s" % (self.prefix, role)
        _run(["ip", "netns", "add", name])
        with self._lock:
            self._created.append(name)
            self._extra[role] = name
        self.ip(name, "link", "set", "lo", "up")
        return name

    def exec(self, ns, argv, check=True, input_text=None):
        """Run ``argv`` inside namespace ``ns`` (a role or a name) via ``ip netns exec``; its stdout."""
        return _run(["ip", "netns", "exec", self.ns(ns)] + list(argv), input_text, check)

    def ip(self, ns, *args, batch=None, check=True):
        """Run ``ip -n <ns> args...``, or with ``batch=[lines]`` one ``ip -batch`` for all lines."""
        if batch is not None:
            return _run(["ip", "-n", self.ns(ns), "-batch", "-"], "\n".join(batch) + "\n", check)
        return _run(["ip", "-n", self.ns(ns)] + list(args), None, check)

    def ping(self, ns, address, timeout=1.0):
        """True when one ICMP echo from namespace ``ns`` to ``address`` is answered.

        Uses icmplib (a dependency; iputils ping is often not installed) in this interpreter,
        run inside the namespace with ``ip netns exec``.
        """
        code = ("import sys, icmplib\n"
                "h = icmplib.ping(sys.argv[1], count=1, timeout=float(sys.argv[2]), privileged=True)\n"
                "sys.exit(0 if h.is_alive else 1)\n")
        import icmplib
        site = os.path.dirname(os.path.dirname(os.path.abspath(icmplib.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p))
        argv = ["ip", "netns", "exec", self.ns(ns), sys.executable, "-c", code, address, str(timeout)]
        return subprocess.call(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env) == 0

    def links(self, ns):
        """{interface name: name of its master bridge or None} in namespace ``ns``."""
        result = {}
        for line in self.ip(ns, "-o", "link", "show").splitlines():
            if not line.strip():
                continue
            name = line.split(":")[1].strip().split("@")[0]
            words = line.split()
            result[name] = words[words.index("master") + 1] if "master" in words else None
        return result

    def link_names(self, ns):
        """The sorted interface names in namespace ``ns``."""
        return sorted(self.links(ns))

    def ports(self, bridge):
        """The ports of dom0's ``bridge``, as its backend lists them."""
        return self.backend.ports(bridge)

    # --- the firewall VM's VIF ----------------------------------------------------------------

    def vm_started(self, domid, bridge, device=0, gateway=True, up=True, addresses=None, guest="fw"):
        """The VM got a VIF on ``bridge``: the veth into fw, the bridge (created down if missing)
        with the VIF as its port, then -- with ``up``, as xcp-networkd does -- the bridge up.

        The fw end gets ``addresses`` (default: with ``gateway`` the gateway addresses, v6 with
        nodad, plus fe80::1; without, none). ``guest``: the role of the namespace standing for
        the VM (default fw; another VM's: ``add_namespace``).
        """
        vif, peer = vif_name(domid, device), fw_side_name(domid, device)
        # The VIF first, then the bridge: making a veth end in another namespace holds the
        # RTNL lock for milliseconds (the agent's first read after the bridge appeared took
        # 6.3 ms in the slowest of 100 reboots on Python 3.6, 0.6 ms usually), a cost with
        # no counterpart on a host, where netback makes vif<domid>.<n> in dom0 itself. Made
        # before the bridge, it stays out of the bridge's timeline (bench/kernel_latency.py).
        # The fw end comes up last, as a guest's netfront connects after its VIF is plugged:
        # that gives the bridge carrier (an agent read made meanwhile took 5.7 ms).
        # The guest's end gets an interface index of its own range, never the VIF's: with equal
        # ones the kernel takes the pair for devices not stacked on another and reports their
        # carrier on its rate-limited path, up to a second late (net/core/link_watch.c,
        # linkwatch_urgent_event). IPv6 stayed off on the guest's end meanwhile, its addresses
        # tentative: the gateway's first neighbour solicitations went unanswered for 0.4 s.
        # On a host the guest's end is in another kernel. The pair is made from the guest's
        # side: iproute2 6.1 did not apply an `index` given in a veth's peer part.
        self._guest_index += 1
        self.ip(guest, "link", "add", peer, "index", str(self._guest_index), "type", "veth",
                "peer", "name", vif, "netns", self.ns("dom0"))
        self.backend.guest_end(self.ns(guest), peer)
        self.backend.plug(bridge, vif, create=bridge not in self.links("dom0"))
        if up:
            self.bridge_up(bridge)
        if addresses is None:
            addresses = (GATEWAY4, GATEWAY6, GATEWAY6_LINK_LOCAL) if gateway else ()
        self.fw_answers(["link set %s up" % peer],
                        ["addr add %s dev %s%s" % (text, peer, " nodad" if ":" in text else "")
                         for text in addresses], role=guest)

    def bridge_up(self, bridge):
        """Bring dom0's ``bridge`` up (xcp-networkd's step after the bridge and its ports exist)."""
        self.up_at[bridge] = time.time()  # before: the agent may bind before `ip` has exited
        self.ip("dom0", "link", "set", bridge, "up")

    # A scenario setting: seconds from the firewall's VIF coming up to the firewall answering
    # on it (its addresses configured), as a guest needs seconds after netfront connects.
    fw_answer_delay = 0.0

    def fw_answers(self, link_up, addresses, role="fw"):
        """Bring the firewall's end up; its ``addresses`` at once (before the link, in one batch,
        with no fw_answer_delay) or fw_answer_delay seconds later, from a timer thread."""
        if self.fw_answer_delay <= 0 or not addresses:
            self.ip(role, batch=addresses + link_up)
            return
        self.ip(role, batch=link_up)

        def configure():
            try:
                self.fw_answering_from = time.monotonic()  # benches measure from here
                self.ip(role, batch=addresses)
            except TopologyError as exc:  # the VM stopped (or the lab ended) meanwhile
                log.info("firewall addresses not added after the delay: %s", exc)
        timer = threading.Timer(self.fw_answer_delay, configure)
        timer.daemon = True
        timer.start()

    def guest_mac(self, domid, device=0, guest="fw"):
        """The MAC address of the VIF's other end (in ``guest``'s namespace)."""
        out = self.ip(guest, "-o", "link", "show", "dev", fw_side_name(domid, device)).split()
        return out[out.index("link/ether") + 1]

    def gateway_takeover(self, domid, device, addresses, mac, guest="fw"):
        """The CARP backup on VIF ``domid``.``device`` becomes master: its end takes ``addresses``
        and the pair's MAC ``mac`` (CARP's virtual MAC: the gateway keeps its link-layer address
        across a takeover) and announces them at once, as a new CARP master does (a gratuitous
        ARP and an unsolicited neighbour advertisement per address: FreeBSD
        ``sys/netinet/ip_carp.c`` ``carp_master_down_locked``: ``carp_send_arp``, ``carp_send_na``).
        The kernel sends them when the address changes, with ``arp_notify`` and
        ``ndisc_notify`` on that end (kernel Documentation/networking/ip-sysctl.rst)."""
        peer = fw_side_name(domid, device)
        self.exec(guest, ["sysctl", "-q", "-w", "net/ipv4/conf/%s/arp_notify=1" % peer,
                          "net/ipv6/conf/%s/ndisc_notify=1" % peer])
        self.ip(guest, batch=["addr add %s dev %s%s" % (text, peer, " nodad" if ":" in text else "")
                              for text in addresses] + ["link set %s address %s" % (peer, mac)])

    def vm_stopped(self, domid, bridge, device=0):
        """The VM stopped: destroy its VIF, then the bridge once no port is left (xapi
        ``xapi_network.ml`` ``deregister_vif``: an internal bridge goes with its last VIF)."""
        vif = vif_name(domid, device)
        links = self.links("dom0")
        if vif in links:
            self.backend.unplug(bridge, vif)  # takes the fw end with it
        if bridge in links and not self.backend.ports(bridge):
            self.backend.delete_bridge(bridge)

    # --- the storage LAN ----------------------------------------------------------------------

    def neighbour_state(self, ns, address):
        """The NUD state of ``ns``'s neighbour entry for ``address`` ("REACHABLE", "STALE",
        ...), "" when it has none."""
        words = self.ip(ns, "neigh", "show", address).split()
        return words[-1] if words else ""

    def storage_in_use(self, timeout=SETTLE_TIMEOUT):
        """Wait until the firewall holds a confirmed (REACHABLE) entry for the storage server,
        as on a LAN whose storage is in use; raise TopologyError after ``timeout`` s.

        What an outage looks like from the firewall depends on that entry: a confirmed one
        keeps its address for the outage (Linux for its reachable time, 15 to 45 s;
        FreeBSD, pfSense's kernel, for 20 minutes: sys/netinet/if_ether.c, arpt_keep), and
        what is sent meanwhile is lost at the switch. An unconfirmed one fails a few seconds
        in, and the next packet waits in a new entry until the server announces itself.
        A datagram from the firewall to the server's discard port every 0.2 s starts the
        kernel's check (STALE, DELAY, one unicast ARP probe, REACHABLE: about 5 s)."""
        server = LAN4.split("/")[0]
        deadline = time.monotonic() + timeout
        sock = call_in_netns(self.ns("fw"), socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            while self.neighbour_state("fw", server) != "REACHABLE":
                if time.monotonic() > deadline:
                    raise TopologyError("the firewall has not confirmed the storage server's "
                                        "address %.0f s after asking" % timeout)
                sock.sendto(b"", (server, DISCARD_PORT))
                time.sleep(0.2)
        finally:
            sock.close()

    def storage_away(self):
        """The storage server leaves the network: its link goes down (its IPv6 addresses and
        its routes go with it; its neighbour entries too)."""
        self.ip("lan", "link", "set", "eth0", "down")

    def storage_back(self, targets=()):
        """The storage server is back: link up, its addresses and default routes as before
        (and the extra ``targets`` of storage_targets), then it announces every address
        (agent/lab/announce.py). Nothing on the firewall is flushed: what the firewall holds for
        the server in an unresolved neighbour entry is sent on by the announcement."""
        self.ip("lan", batch=[
            "link set eth0 up", "addr replace %s dev eth0" % LAN4,
            "addr replace %s dev eth0 nodad" % LAN6,  # v6 addresses went with the link
            "route replace default via %s" % FW_LAN4.split("/")[0],
            "route replace default via %s" % FW_LAN6.split("/")[0]])
        self.storage_targets(targets, "replace")
        self._wait_switch()  # an announcement sent before the switch forwards would be lost
        extra = [t for t in targets if t not in (LAN4.split("/")[0], LAN6.split("/")[0])]
        announce.announce(self.ns("lan"), "eth0", [LAN4, LAN6] + extra)

    def _wait_switch(self):
        """Wait until lan's switch forwards (its bridge, eth0, has carrier once its port sw0
        is enabled); TopologyError after CARRIER_TIMEOUT s."""
        deadline = time.monotonic() + CARRIER_TIMEOUT
        while "NO-CARRIER" in self.ip("lan", "-o", "link", "show", "dev", "eth0"):
            if time.monotonic() > deadline:
                raise TopologyError("lan's switch (eth0) has no carrier %.0f s after it came up"
                                    % CARRIER_TIMEOUT)
            time.sleep(0.01)

    def storage_targets(self, targets, verb="add"):
        """Put storage addresses ``targets`` on lan's eth0 (host routes, besides its own address),
        routed by fw; ``verb`` "add", or "replace" to put them back."""
        lan, fw = [], []
        for text in targets:
            ip = ipaddress.ip_address(text)
            base = LAN4 if ip.version == 4 else LAN6
            if text == base.split("/")[0]:
                continue
            lan.append("addr %s %s/%d dev eth0%s" % (verb, ip, ip.max_prefixlen,
                                                     " nodad" if ip.version == 6 else ""))
            if ip not in ipaddress.ip_interface(base).network:
                fw.append("route replace %s/%d via %s" % (ip, ip.max_prefixlen, base.split("/")[0]))
        for role, lines in (("lan", lan), ("fw", fw)):
            if lines:
                self.ip(role, batch=lines)


class _Vif(object):
    """A VIF that ``sim_hook`` plugged: where it is, the addresses its VM has on that network,
    and whether its end holds them (a CARP backup's does not)."""

    __slots__ = ("domid", "bridge", "device", "guest", "addresses", "holds")

    def __init__(self, domid, bridge, device, guest, addresses, holds):
        self.domid, self.bridge, self.device, self.guest = domid, bridge, device, guest
        self.addresses, self.holds = addresses, holds

    def peer_of(self, other):
        """True when ``other`` is this VIF's CARP peer: the same addresses on the same bridge."""
        return other is not self and bool(self.addresses) and (other.bridge, other.addresses) == (
            self.bridge, self.addresses)


def sim_hook(topology, vm_names=None, is_internal=None, addresses_of=None, up=True, guest_of=None):
    """A simulator VM power hook that plugs and unplugs the VIFs of VMs on internal networks.

    Returns ``fn(vm_name, vm_record_dict, domid, bridges, old_state, new_state)`` for
    ``sim.add_vm_power_hook``. ``bridges`` lists the bridges of the VM's networks in VIF device
    order; only internal ones (``xapiN``, or ``is_internal(bridge)``) get a VIF
    here, and only the first gets the gateway addresses. ``vm_names`` limits it to those VMs
    (the firewalls); default: every VM with an internal VIF. The VIFs made at start are
    remembered, so a stop removes exactly those even when the record's domid is already -1.
    ``addresses_of(bridge)``: the firewall's addresses on that bridge instead of the gateway
    addresses. ``up`` False leaves new bridges down (``topology.bridge_up`` brings them up).
    ``guest_of(vm_name)``: the role of the namespace standing for that VM (default fw).

    VMs that get the same addresses on one bridge are a CARP pair (docs/bindings.md): the first
    to run is master and its VIF holds them; one that starts while they are held is backup (its
    VIF has none). When the master stops, the backup running longest takes over at once
    (``Topology.gateway_takeover``: the addresses, the master's MAC, the announcement); a
    member that starts again stays backup (no preemption).
    """
    internal = is_internal or (lambda bridge: bridge.startswith("xapi"))
    plugged = collections.OrderedDict()  # vm_name -> [_Vif], in start order
    lock = threading.Lock()

    def running():
        return [vif for vifs in plugged.values() for vif in vifs]

    def unplug(vm_name):
        for vif in plugged.pop(vm_name, []):
            heirs = [other for other in running() if vif.peer_of(other)]
            mac = topology.guest_mac(vif.domid, vif.device, vif.guest) if vif.holds and heirs else None
            topology.vm_stopped(vif.domid, vif.bridge, vif.device)
            if mac is not None:
                heir = heirs[0]
                topology.gateway_takeover(heir.domid, heir.device, list(heir.addresses), mac, heir.guest)
                heir.holds = True

    def hook(vm_name, vm_record, domid, bridges, old_state, new_state):
        if vm_names is not None and vm_name not in vm_names:
            return
        with lock:
            if new_state == "Running" and old_state != "Paused":
                unplug(vm_name)  # a reboot arrives as Running -> Running with a new domid
                made = []
                guest = guest_of(vm_name) if guest_of else "fw"
                for device, bridge in enumerate(bridges):
                    if not internal(bridge):
                        continue
                    if addresses_of is not None:
                        addresses = tuple(addresses_of(bridge))
                    else:
                        addresses = (GATEWAY4, GATEWAY6, GATEWAY6_LINK_LOCAL) if not made else ()
                    vif = _Vif(int(domid), bridge, device, guest, addresses, bool(addresses))
                    vif.holds = vif.holds and not any(o.holds for o in running() if vif.peer_of(o))
                    topology.vm_started(vif.domid, bridge, device, up=up, guest=guest,
                                        addresses=addresses if vif.holds else ())
                    made.append(vif)
                if made:
                    plugged[vm_name] = made
            elif new_state in ("Halted", "Suspended"):
                unplug(vm_name)

    return hook


# --- removal on signals and at exit ------------------------------------------------------------

_live = []
_live_lock = threading.RLock()  # re-entered when a signal arrives while it is held
_previous = {}          # signal number -> handler in place before ours
_atexit_done = []
_handler_pid = []       # the pid that installed the handlers (a forked child inherits them)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _register(topology):
    with _live_lock:
        if topology not in _live:
            _live.append(topology)
        if not _atexit_done:
            atexit.register(_cleanup_all)
            _atexit_done.append(True)
        if not _previous and threading.current_thread() is threading.main_thread():
            _handler_pid[:] = [os.getpid()]
            for signum in _SIGNALS:
                # An ignored signal stays ignored (e.g. SIGINT of a job started with `&` by a
                # non-interactive shell): it will not end the process, so it must not remove
                # the namespaces from under it either.
                if signal.getsignal(signum) != signal.SIG_IGN:
                    _previous[signum] = signal.signal(signum, _on_signal)


def _unregister(topology):
    with _live_lock:
        if topology in _live:
            _live.remove(topology)
        if not _live:
            _restore_handlers()


def _restore_handlers():
    """Put back the handlers we replaced, unless someone replaced ours in the meantime."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_previous.items()):
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        del _previous[signum]


def _cleanup_all():
    for topology in list(_live):
        topology.cleanup()


def _on_signal(signum, frame):
    """Remove every live topology, then let the signal do what it did before (default: terminate).

    In a forked child that inherited this handler (pyroute2 stops its helpers with SIGTERM)
    nothing is cleaned up and no lock is taken: a lock held by a parent thread at fork time
    would never be released there.
    """
    previous = _previous.get(signum, signal.SIG_DFL)
    if previous is None:  # installed from C: treat as the default action
        previous = signal.SIG_DFL
    if _handler_pid and os.getpid() == _handler_pid[0]:
        _cleanup_all()
        with _live_lock:
            _restore_handlers()
    else:
        signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)        # e.g. default_int_handler raises KeyboardInterrupt
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)   # re-deliver: the process ends by this signal
