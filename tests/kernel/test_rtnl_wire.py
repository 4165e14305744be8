"""The hand-written rtnetlink codec (agent/adapters/rtnl_msg.py) against pyroute2 on one kernel.

pyroute2 is the oracle: the same namespace, dumped by pyroute2's IPRoute and by RtnlNet, must
give the same links, addresses and main-table default routes, including the cases a parser
gets wrong: multipath, a link-local v6 gateway, other tables, a blackhole, a source-specific
default, prefix twins (/24 and /25 of one address), a down link, and a dump of thousands of
routes spanning many datagrams.
"""

import ipaddress
import os
import shutil
import socket

import pytest

from agent.adapters import rtnl, rtnl_msg
from agent.adapters.net import IFF_UP, RtnlNet
from agent.decision.world import KernelView

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                       reason="needs root and iproute2 `ip` to create network namespaces"),
]

SETUP = [
    "link add br-a type bridge", "link set br-a up",
    "link add br-b type bridge", "link set br-b up",
    "link add br-down type bridge",                     # never up: not a present link
    "addr add 192.0.2.2/24 dev br-a", "addr add 192.0.2.2/25 dev br-a",
    "addr add 198.51.100.7/32 dev br-b", "addr add 10.9.0.1/16 dev br-down",
    "addr add 2001:db8:1::2/64 dev br-a nodad", "addr add 2001:db8:9::5/128 dev br-b nodad",
    "route add default via 192.0.2.1 dev br-a",
    "route add default via 198.51.100.1 dev br-b onlink metric 50",
    "route add default via 192.0.2.9 dev br-a table 100",       # another table
    "route add default via 192.0.2.9 dev br-a table 1000",      # a table id above 255
    "route add blackhole default metric 900",                   # not unicast
    "route add ::/0 via fe80::1 dev br-a",                      # link-local gateway
    "route add ::/0 metric 77 nexthop via 2001:db8:1::1 dev br-a nexthop via fe80::2 dev br-b",
    "route add ::/0 from 2001:db8:1::/64 via 2001:db8:1::3 dev br-a",  # source-specific
]


def pyroute2_view(ns):
    """The oracle: the same KernelView built only from pyroute2's own parsing."""
    from pyroute2 import IPRoute
    with rtnl.thread_in_netns(ns):
        ipr = IPRoute()
    try:
        names, up = {}, set()
        for link in ipr.get_links():
            names[link["index"]] = link.get_attr("IFLA_IFNAME")
            if link["flags"] & IFF_UP:
                up.add(names[link["index"]])
        addresses = set()
        for a in ipr.get_addr():
            text = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            addresses.add((names[a["index"]],
                           str(ipaddress.ip_interface("%s/%d" % (text, a["prefixlen"])))))
        routes = set()
        for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            for r in ipr.get_routes(family=family):
                table = r.get_attr("RTA_TABLE") or r["table"]
                if r["dst_len"] or r["type"] != 1 or table != 254 or r.get_attr("RTA_SRC"):
                    continue
                hops = r.get_attr("RTA_MULTIPATH")
                pairs = ([(h.get_attr("RTA_GATEWAY"), h["oif"]) for h in hops] if hops
                         else [(r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF"))])
                for gw, oif in pairs:
                    routes.add((version, str(ipaddress.ip_address(gw)) if gw else "", names[oif]))
        return KernelView(links=up, addresses=addresses, routes=routes)
    finally:
        ipr.close()


def same_view(a, b):
    return (a.links, a.addresses, a.routes) == (b.links, b.addresses, b.routes)


def test_read_view_matches_pyroute2(topology):
    ns = topology.ns("dom0")
    topology.ip("dom0", batch=SETUP)
    net = RtnlNet(netns=ns)
    try:
        view = net.read_view()
    finally:
        net.close()
    assert same_view(view, pyroute2_view(ns)), (view, pyroute2_view(ns))
    # and what the cases above mean, spelled out
    assert "br-a" in view.links and "br-down" not in view.links
    assert {("br-a", "192.0.2.2/24"), ("br-a", "192.0.2.2/25"),
            ("br-a", "2001:db8:1::2/64")} <= view.addresses
    assert {r for r in view.routes} == {
        (4, "192.0.2.1", "br-a"), (4, "198.51.100.1", "br-b"),
        (6, "fe80::1", "br-a"), (6, "2001:db8:1::1", "br-a"), (6, "fe80::2", "br-b")}


def test_a_dump_of_thousands_of_routes_spans_datagrams_and_matches_pyroute2(topology):
    ns = topology.ns("dom0")
    topology.ip("dom0", batch=SETUP[:2] + ["addr add 192.0.2.2/24 dev br-a",
                                           "route add default via 192.0.2.1 dev br-a"]
                + ["route add 10.%d.%d.0/24 via 192.0.2.1 dev br-a" % (i // 250, i % 250)
                   for i in range(3000)])
    sock = rtnl.RtnlSocket(ns)
    try:
        dump = sock.dump(rtnl_msg.RTM_GETROUTE, rtnl_msg.dump_routes(socket.AF_INET))
    finally:
        sock.close()
    assert len(dump) >= 3001
    net = RtnlNet(netns=ns)
    try:
        view = net.read_view()
    finally:
        net.close()
    assert same_view(view, pyroute2_view(ns))
    assert view.routes == {(4, "192.0.2.1", "br-a")}


def test_a_refused_request_names_the_errno_and_the_socket_stays_usable(topology):
    ns = topology.ns("dom0")
    topology.ip("dom0", batch=SETUP[:2])
    sock = rtnl.RtnlSocket(ns)
    try:
        with pytest.raises(rtnl.RtnlError) as info:
            sock.request(rtnl_msg.RTM_GETLINK, 0, rtnl_msg.get_link("no-such-link"))
        assert info.value.errno == 19      # ENODEV
        payload = sock.request(rtnl_msg.RTM_GETLINK, 0, rtnl_msg.get_link("br-a"))
        assert rtnl_msg.parse_link(payload)[2] == "br-a"
    finally:
        sock.close()
