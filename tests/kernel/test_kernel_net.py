"""RtnlNet against the real kernel, inside the lab topology's dom0 namespace."""

import errno
import ipaddress
import os
import shutil

import pytest

from agent.adapters.net import RtnlNet
from agent.ports import NetError
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                       reason="needs root and iproute2 `ip` to create network namespaces"),
]

IF = ipaddress.ip_interface
IP = ipaddress.ip_address


@pytest.fixture
def dom0(topology):
    """The firewall VM running (bridge xapi0 in dom0) and a RtnlNet inside dom0, closed afterwards."""
    topology.vm_started(1, "xapi0")
    net = RtnlNet(netns=topology.dom0)
    try:
        yield net
    finally:
        net.close()


def addr_lines(topology, ifname, family="-4"):
    """``ip -o addr show dev ifname`` lines of one family, as text."""
    return topology.ip("dom0", "-o", family, "addr", "show", "dev", ifname).splitlines()


def test_ensure_address_v4_is_idempotent(topology, dom0):
    """Adding a v4 address twice adds it once: "added", then "present", one kernel address."""
    assert dom0.ensure_address("xapi0", IF("192.0.2.2/24")) == "added"
    assert dom0.ensure_address("xapi0", IF("192.0.2.2/24")) == "present"
    lines = [line for line in addr_lines(topology, "xapi0") if " 192.0.2.2/" in line]
    assert len(lines) == 1 and "192.0.2.2/24" in lines[0]
    assert ("xapi0", "192.0.2.2/24") in dom0.read_view().addresses


def test_ensure_address_v6_is_usable_at_once(topology, dom0):
    """A v6 address is added with nodad: not tentative when ensure returns; a second call says present."""
    assert dom0.ensure_address("xapi0", IF("2001:db8:1::2/64")) == "added"
    line = [x for x in addr_lines(topology, "xapi0", "-6") if "2001:db8:1::2/64" in x]
    assert line, "address missing"
    assert "tentative" not in line[0] and "nodad" in line[0]
    assert dom0.ensure_address("xapi0", IF("2001:db8:1::2/64")) == "present"


def test_address_compared_with_its_prefix(topology, dom0):
    """The same v4 address with another prefix counts as missing; the other one is left alone."""
    topology.ip("dom0", "addr", "add", "192.0.2.2/25", "dev", "xapi0")
    assert dom0.ensure_address("xapi0", IF("192.0.2.2/24")) == "added"
    addresses = dom0.read_view().addresses
    assert {("xapi0", "192.0.2.2/24"), ("xapi0", "192.0.2.2/25")} <= addresses


def test_v6_address_with_another_prefix_is_reported(topology, dom0):
    """A v6 address already present with another prefix gives a NetError naming both prefixes."""
    topology.ip("dom0", "addr", "add", "2001:db8:1::2/48", "dev", "xapi0", "nodad")
    with pytest.raises(NetError) as caught:
        dom0.ensure_address("xapi0", IF("2001:db8:1::2/64"))
    assert "/48" in str(caught.value) and "/64" in str(caught.value)
    assert ("xapi0", "2001:db8:1::2/48") in dom0.read_view().addresses


def test_mirror_on_management_bridge_leaves_foreign_address(topology, dom0):
    """/32 and /128 mirrors go onto xenbr0 next to its foreign 203.0.113.5/24, which stays."""
    assert dom0.ensure_address("xenbr0", IF("192.0.2.2/32")) == "added"
    assert dom0.ensure_address("xenbr0", IF("2001:db8:1::2/128")) == "added"
    assert dom0.ensure_address("xenbr0", IF("192.0.2.2/32")) == "present"
    addresses = dom0.read_view().addresses
    assert {("xenbr0", "192.0.2.2/32"), ("xenbr0", "2001:db8:1::2/128"),
            ("xenbr0", "203.0.113.5/24")} <= addresses


def test_default_route_v4_replaces_in_place(topology, dom0):
    """The v4 default route is replaced (not added beside) and a second call does not touch it."""
    dom0.ensure_address("xapi0", IF("192.0.2.2/24"))
    topology.ip("dom0", "route", "add", "default", "via", "192.0.2.254", "dev", "xapi0")
    result = dom0.ensure_default_route(IP("192.0.2.1"), "xapi0")
    assert result.startswith("replaced (it replaced default via 192.0.2.254 dev ")  # named
    assert dom0.ensure_default_route(IP("192.0.2.1"), "xapi0") == "present"
    routes = [r for r in dom0.read_view().routes if r[0] == 4]
    assert routes == [(4, "192.0.2.1", "xapi0")]


def test_default_route_v6_global_then_link_local(topology, dom0, ping):
    """v6 default via a global, then via the link-local fe80::1 (oif given); traffic then flows through it."""
    dom0.ensure_address("xapi0", IF("2001:db8:1::2/64"))
    assert dom0.ensure_default_route(IP("2001:db8:1::1"), "xapi0") == "replaced"
    assert {r for r in dom0.read_view().routes if r[0] == 6} == {(6, "2001:db8:1::1", "xapi0")}
    assert dom0.ensure_default_route(IP("fe80::1"), "xapi0") == \
        "replaced (it replaced default via 2001:db8:1::1 dev xapi0 metric 1024)"
    assert dom0.ensure_default_route(IP("fe80::1"), "xapi0") == "present"
    assert {r for r in dom0.read_view().routes if r[0] == 6} == {(6, "fe80::1", "xapi0")}
    wait_until(lambda: ping(topology, "dom0", "2001:db8:2::10"), timeout=10,
               message="lan 2001:db8:2::10 answering through the link-local gateway")


def test_ping_crosses_firewall_after_ensure(topology, dom0, ping):
    """Address plus default route set by the adapter let dom0 reach the LAN through fw (v4)."""
    dom0.ensure_address("xapi0", IF("192.0.2.2/24"))
    dom0.ensure_default_route(IP("192.0.2.1"), "xapi0")
    wait_until(lambda: ping(topology, "dom0", "198.51.100.10"), timeout=10,
               message="lan 198.51.100.10 answering through fw")


def test_unreachable_gateway_names_gateway_and_bridge(dom0):
    """An off-link gateway raises NetError (ENETUNREACH / EHOSTUNREACH) naming gateway and bridge."""
    dom0.ensure_address("xapi0", IF("192.0.2.2/24"))
    with pytest.raises(NetError) as caught:
        dom0.ensure_default_route(IP("198.51.100.1"), "xapi0")
    assert caught.value.code == errno.ENETUNREACH
    assert "198.51.100.1" in str(caught.value) and "xapi0" in str(caught.value)
    with pytest.raises(NetError) as caught6:
        dom0.ensure_default_route(IP("2001:db8:9::1"), "xapi0")
    assert caught6.value.code == errno.EHOSTUNREACH
    assert "2001:db8:9::1" in str(caught6.value) and "xapi0" in str(caught6.value)


def test_missing_link_raises_neterror(topology):
    """Before the VM runs there is no xapi0: link_exists is False and ensure_* raise NetError(ENODEV)."""
    net = RtnlNet(netns=topology.dom0)
    try:
        assert not net.link_exists("xapi0")
        with pytest.raises(NetError) as caught:
            net.ensure_address("xapi0", IF("192.0.2.2/24"))
        assert caught.value.code == errno.ENODEV and "xapi0" in str(caught.value)
        with pytest.raises(NetError) as caught:
            net.ensure_default_route(IP("192.0.2.1"), "xapi0")
        assert caught.value.code == errno.ENODEV
    finally:
        net.close()


def test_link_gone_between_calls(topology, dom0):
    """When the bridge goes away under the adapter, the next ensure raises NetError rather than lying."""
    assert dom0.ensure_address("xapi0", IF("192.0.2.2/24")) == "added"
    topology.vm_stopped(1, "xapi0")
    assert not dom0.link_exists("xapi0")
    with pytest.raises(NetError):
        dom0.ensure_address("xapi0", IF("192.0.2.2/24"))


def test_read_view_has_only_main_table_defaults(topology, dom0):
    """read_view lists links, normalised addresses and only main-table default routes."""
    dom0.ensure_address("xapi0", IF("2001:0db8:0001:0000::2/64"))
    dom0.ensure_address("xapi0", IF("192.0.2.2/24"))
    dom0.ensure_default_route(IP("192.0.2.1"), "xapi0")
    topology.ip("dom0", "route", "add", "default", "via", "192.0.2.9", "dev", "xapi0", "table", "100")
    topology.ip("dom0", "route", "add", "198.51.100.0/24", "via", "192.0.2.1", "dev", "xapi0")
    view = dom0.read_view()
    assert {"lo", "xenbr0", "xapi0", "vif1.0"} <= view.links
    assert ("xapi0", "2001:db8:1::2/64") in view.addresses
    assert view.routes == {(4, "192.0.2.1", "xapi0")}


def test_close_leaves_everything_in_place(topology, dom0):
    """close() releases the socket only: addresses and routes are still there for a new adapter."""
    dom0.ensure_address("xapi0", IF("192.0.2.2/24"))
    dom0.ensure_default_route(IP("192.0.2.1"), "xapi0")
    dom0.close()
    again = RtnlNet(netns=topology.dom0)
    try:
        view = again.read_view()
    finally:
        again.close()
    assert ("xapi0", "192.0.2.2/24") in view.addresses
    assert (4, "192.0.2.1", "xapi0") in view.routes


def test_missing_namespace_is_not_created(topology):
    """A wrong namespace name gives NetError and is never created."""
    name = topology.prefix + "-typo"
    net = RtnlNet(netns=name)
    with pytest.raises(NetError):
        net.read_view()
    net.close()
    assert not os.path.exists(os.path.join("/var/run/netns", name))


def test_a_bridge_recreated_since_the_last_read_gets_its_address_and_route(topology, dom0):
    """ensure_* use the index of the last read; the firewall rebooted since (new bridge, new
    index): the stale index is refused (ENODEV) and the call looks the bridge up again."""
    old = dom0.read_view()
    assert "xapi0" in old.links
    old_index = int(topology.ip("dom0", "-o", "link", "show", "xapi0").split(":")[0])
    topology.vm_stopped(1, "xapi0")
    topology.vm_started(2, "xapi0")
    new_index = int(topology.ip("dom0", "-o", "link", "show", "xapi0").split(":")[0])
    assert new_index != old_index
    assert dom0.ensure_address("xapi0", IF("192.0.2.2/24")) == "added"
    assert dom0.ensure_default_route(IP("192.0.2.1"), "xapi0") == "replaced"
    view = dom0.read_view()
    assert ("xapi0", "192.0.2.2/24") in view.addresses and (4, "192.0.2.1", "xapi0") in view.routes


def test_a_bridge_gone_since_the_last_read_is_named_missing(topology, dom0):
    """The index of the last read is gone and so is the bridge: the error names the interface."""
    dom0.read_view()
    topology.vm_stopped(1, "xapi0")
    with pytest.raises(NetError) as err:
        dom0.ensure_address("xapi0", IF("192.0.2.2/24"))
    assert err.value.code == errno.ENODEV and "xapi0 does not exist" in str(err.value)
