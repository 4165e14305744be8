"""The gateway's neighbour entry as a hint, on the real kernel: the codec against pyroute2,
the watcher's NeighbourChanged on a flip (and silence otherwise), and the bridge's
retransmit time set by the Net port."""

import ipaddress
import os
import socket
import threading

import pytest

from agent.adapters import rtnl, rtnl_msg
from agent.adapters.net import RtnlNet
from agent.adapters.netwatch import NetlinkWatcher
from agent.decision.events import CarrierUp, KernelResynced, NeighbourChanged
from tests.waiting import wait_until

pytestmark = [pytest.mark.root]

BRIDGE = "xapi1"
GATEWAY = "192.0.2.1"


def _bridge_with_firewall(topology):
    topology.vm_started(1, BRIDGE)
    topology.ip("dom0", "addr", "add", "192.0.2.2/24", "dev", BRIDGE)


def _neighbours_by_us(ns):
    sock = rtnl.RtnlSocket(ns)
    try:
        dump = sock.dump(rtnl_msg.RTM_GETNEIGH, rtnl_msg.dump_neighbours())
    finally:
        sock.close()
    out = set()
    for _kind, payload in dump:
        index, address, state = rtnl_msg.parse_neighbour(payload)
        if address is not None:
            out.add((index, address, state))
    return out


def _neighbours_by_pyroute2(ns):
    from pyroute2 import IPRoute
    with rtnl.thread_in_netns(ns):
        ipr = IPRoute()
    try:
        out = set()
        for n in ipr.get_neighbours():
            if n["family"] in (socket.AF_INET, socket.AF_INET6) and n.get_attr("NDA_DST"):
                out.add((n["ifindex"], n.get_attr("NDA_DST"), n["state"]))
        return out
    finally:
        ipr.close()


def test_neighbour_dump_parses_as_pyroute2_does(topology, ping):
    _bridge_with_firewall(topology)
    assert ping(topology, "dom0", GATEWAY)
    # multicast entries (NOARP) come and go with MLD joins between two dumps: unicast only
    unicast = lambda entries: set(e for e in entries if not ipaddress.ip_address(e[1]).is_multicast)
    ours = _neighbours_by_us(topology.dom0)
    assert unicast(ours) == unicast(_neighbours_by_pyroute2(topology.dom0))
    assert any(ipaddress.ip_address(e[1]).is_multicast for e in ours)  # parsed too
    assert any(a == GATEWAY and s & rtnl_msg.NUD_VALID for _i, a, s in ours), ours


class Posted(object):
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def __call__(self, event):
        with self.lock:
            self.events.append(event)

    def of(self, kind):
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]


def test_the_watcher_posts_a_gateway_that_resolves_and_one_that_goes(topology, ping):
    _bridge_with_firewall(topology)
    posted = Posted()
    watcher = NetlinkWatcher(netns=topology.dom0)
    watcher.start(posted)
    try:
        wait_until(lambda: posted.of(KernelResynced), 10, message="the first read")
        assert ping(topology, "dom0", GATEWAY)
        wait_until(lambda: [e for e in posted.of(NeighbourChanged) if e.address == GATEWAY and e.valid],
                   10, message="a hint that the gateway resolved")
        assert ping(topology, "dom0", GATEWAY)   # still valid: no second hint
        topology.ip("dom0", "neigh", "del", GATEWAY, "dev", BRIDGE)
        wait_until(lambda: [e for e in posted.of(NeighbourChanged) if e.address == GATEWAY and not e.valid],
                   10, message="a hint that the entry went")
        hints = [e for e in posted.of(NeighbourChanged) if e.address == GATEWAY]
        assert [e.valid for e in hints] == [True, False], hints
    finally:
        watcher.stop()


def test_resolve_fast_sets_the_bridges_retransmit_time_and_only_that_bridge(topology):
    _bridge_with_firewall(topology)
    net = RtnlNet(topology.dom0)
    written = net.resolve_fast(BRIDGE)
    assert len(written) == 2
    read = lambda fam, dev: int(topology.exec("dom0", ["cat", "/proc/sys/net/%s/neigh/%s/retrans_time_ms"
                                                       % (fam, dev)]).strip())
    assert read("ipv4", BRIDGE) == 100 and read("ipv6", BRIDGE) == 100
    assert read("ipv4", "xenbr0") == 1000
    with pytest.raises(ValueError):
        net.resolve_fast("../all")
    assert os.path.exists("/proc/sys/net/ipv4/neigh/default/retrans_time_ms")


def test_the_watcher_posts_carrier_when_the_firewalls_end_comes_up(topology):
    # the bridge and dom0's VIF first, the firewall's end still down: no carrier yet
    topology.ip("dom0", batch=["link add vif9.0 type veth peer name fwvif9.0 netns %s" % topology.fw,
                               "link add %s type bridge" % BRIDGE, "link set %s up" % BRIDGE,
                               "link set vif9.0 master %s" % BRIDGE, "link set vif9.0 up"])
    posted = Posted()
    watcher = NetlinkWatcher(netns=topology.dom0)
    watcher.start(posted)
    try:
        wait_until(lambda: posted.of(KernelResynced), 10, message="the first read")
        topology.ip("dom0", "link", "set", BRIDGE, "down")   # a notification without carrier
        topology.ip("dom0", "link", "set", BRIDGE, "up")
        assert not posted.of(CarrierUp)
        topology.ip("fw", "link", "set", "fwvif9.0", "up")
        wait_until(lambda: [e for e in posted.of(CarrierUp) if e.ifname == BRIDGE], 10,
                   message="carrier on the bridge")
    finally:
        watcher.stop()


def test_forget_neighbour_deletes_the_entry_and_an_absent_one_is_fine(topology, ping):
    _bridge_with_firewall(topology)
    assert ping(topology, "dom0", GATEWAY)
    net = RtnlNet(topology.dom0)
    gateway = ipaddress.ip_address(GATEWAY)
    assert GATEWAY in topology.ip("dom0", "neigh", "show", "dev", BRIDGE)
    assert net.forget_neighbour(gateway, BRIDGE) is True
    assert GATEWAY not in topology.ip("dom0", "neigh", "show", "dev", BRIDGE)
    assert net.forget_neighbour(gateway, BRIDGE) is False
    assert net.forget_neighbour(gateway, "nosuchbr") is False
    net.close()
