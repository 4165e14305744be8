"""The Net port on pyroute2's sync IPRoute: idempotent addresses and default routes, verified by reading back.

Never deletes anything: the agent owns only what its config names, and even that it only adds
or replaces (DESIGN.md §3 "touch only what we own"). pyroute2 is imported on first use, not
when this module is imported (libraries.md §2.10).

Use one PyrouteNet from one thread: pyroute2 0.9.x keeps its socket per thread (libraries.md
§2.6), so the socket is opened lazily by the first call, in the calling thread.
"""

import errno
import ipaddress
import os
import socket
import time

import attr

from agent.adapters import rtnl
from agent.ports import Net, NetError
from agent.world import KernelView


IFF_UP = 0x1  # linux/if.h


def _family(ip):
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _text_of(exc):
    """A short reason from a NetlinkError or OSError: "File exists (errno 17)"."""
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if code:
        return "%s (errno %d)" % (os.strerror(code), code)
    return str(exc) or exc.__class__.__name__


class PyrouteNet(Net):
    """Addresses and main-table default routes through one pyroute2 IPRoute (or NetNS on 0.8.1)."""

    def __init__(self, netns=None):
        self._netns = netns
        self._ipr = None

    # --- socket handling ----------------------------------------------------------------------

    def _socket(self):
        if self._ipr is None:
            try:
                self._ipr = rtnl.open_iproute(self._netns)
            except FileNotFoundError:
                raise NetError("network namespace %r does not exist; create it (ip netns add) "
                               "or drop the netns argument" % (self._netns,), errno.ENOENT)
            except Exception as exc:
                raise NetError("cannot open a netlink socket: %s; is the agent running as root?"
                               % _text_of(exc), getattr(exc, "errno", None))
        return self._ipr

    def _drop_socket(self):
        ipr, self._ipr = self._ipr, None
        rtnl.close_quietly(ipr)

    def _call(self, what, request):
        """Run ``request(ipr)``; a kernel refusal becomes NetError(code=errno)."""
        netlink_error = rtnl.netlink_error()
        ipr = self._socket()
        try:
            return request(ipr)
        except netlink_error as exc:
            raise NetError("%s: %s" % (what, _text_of(exc)), exc.code)
        except Exception as exc:
            # A socket-level error poisons a pyroute2 0.9 object for good (libraries.md §2.7):
            # drop it so the next call opens a fresh socket.
            self._drop_socket()
            raise NetError("%s: netlink socket failed (%s); the next call opens a new socket"
                           % (what, _text_of(exc)), getattr(exc, "errno", None))

    def close(self):
        """Release the socket; every address and route stays in place."""
        self._drop_socket()

    # --- lookups ------------------------------------------------------------------------------

    def _index(self, ifname):
        """The interface index of ``ifname``, or None when it does not exist."""
        try:
            msgs = self._call("look up interface %s" % ifname,
                              lambda ipr: ipr.link("get", ifname=ifname))
        except NetError as exc:
            if exc.code in (errno.ENODEV, errno.EINVAL, errno.ERANGE):  # missing, or a bad name
                return None
            raise
        for msg in msgs:
            return msg["index"]
        return None

    def _require_index(self, ifname, doing):
        index = self._index(ifname)
        if index is None:
            raise NetError("interface %s does not exist, cannot %s; it appears when the VM "
                           "attached to its network starts" % (ifname, doing), errno.ENODEV)
        return index

    def _addresses_on(self, index, ip):
        """The prefix lengths with which address ``ip`` sits on interface ``index``."""
        msgs = self._call("list addresses", lambda ipr: list(ipr.get_addr(family=_family(ip))))
        found = []
        for msg in msgs:
            if msg["index"] != index:
                continue
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if text and ipaddress.ip_address(text) == ip:
                found.append(msg["prefixlen"])
        return found

    def _has_default(self, gateway, index):
        msgs = self._call("list routes", lambda ipr: list(ipr.get_routes(family=_family(gateway))))
        for msg in msgs:
            for gw, oif in _default_hops(msg):
                if oif == index and gw and ipaddress.ip_address(gw) == gateway:
                    return True
        return False

    # --- the port -----------------------------------------------------------------------------

    def link_exists(self, ifname):
        """True when the interface exists."""
        return self._index(ifname) is not None

    def ensure_address(self, ifname, interface):
        """Make ``interface`` present on ``ifname`` (v6 with nodad): "added" or "present", else NetError."""
        iface = ipaddress.ip_interface(interface)
        ip, prefixlen = iface.ip, iface.network.prefixlen
        index = self._require_index(ifname, "add %s" % iface)
        # Compare address AND prefix: the kernel keys IPv4 addresses by both, so 192.0.2.2/25
        # would be a second address next to 192.0.2.2/24 (libraries.md §2.2).
        if prefixlen in self._addresses_on(index, ip):
            return "present"
        request = {"index": index, "address": str(ip), "prefixlen": prefixlen}
        if ip.version == 6:
            # Without nodad the address stays TENTATIVE for ~1 s and cannot be used as a source
            # (libraries.md §2.2); the agent owns this address, so DAD buys nothing here.
            request["flags"] = rtnl.IFA_F_NODAD
        status = "added"
        try:
            self._call("add %s to %s" % (iface, ifname), lambda ipr: ipr.addr("add", **request))
        except NetError as exc:
            if exc.code != errno.EEXIST:  # EEXIST: someone added it meanwhile
                raise
            status = "present"
        present = self._addresses_on(index, ip)
        if prefixlen not in present:
            if present:
                raise NetError(
                    "%s is already on %s as /%d, not /%d; remove it (ip addr del %s/%d dev %s) "
                    "or fix the prefix in the config" % (ip, ifname, present[0], prefixlen,
                                                         ip, present[0], ifname), errno.EEXIST)
            raise NetError("added %s to %s but reading back does not show it; something removes "
                           "addresses from %s (xcp-networkd?)" % (iface, ifname, ifname))
        return status

    def ensure_default_route(self, gateway, ifname):
        """Make the main-table default route go via ``gateway`` on ``ifname``; "replaced" or "present"."""
        gw = ipaddress.ip_address(gateway)
        index = self._require_index(ifname, "route via %s" % gw)
        if self._has_default(gw, index):
            return "present"
        # "replace" is idempotent and swaps an existing default of the same metric in place
        # (libraries.md §2.3); oif makes a link-local IPv6 gateway (fe80::1) usable.
        request = {"dst_len": 0, "gateway": str(gw), "oif": index, "family": _family(gw),
                   "table": rtnl.RT_TABLE_MAIN}
        try:
            self._call("set default route via %s dev %s" % (gw, ifname),
                       lambda ipr: ipr.route("replace", **request))
        except NetError as exc:
            if exc.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise NetError("gateway %s is not reachable on %s (%s): the bridge needs an "
                               "address in the gateway's subnet first, or the configured gateway "
                               "is wrong" % (gw, ifname, os.strerror(exc.code)), exc.code)
            raise
        if not self._has_default(gw, index):
            raise NetError("set the default route via %s dev %s but reading back does not show it; "
                           "something removes routes (xcp-networkd?)" % (gw, ifname))
        return "replaced"

    def read_view(self):
        """A KernelView: every link, every address, every main-table default route (v4 and v6)."""
        def dump(ipr):
            return (list(ipr.get_links()), list(ipr.get_addr()),
                    list(ipr.get_routes(family=socket.AF_INET)),
                    list(ipr.get_routes(family=socket.AF_INET6)))
        began = time.monotonic()
        links, addrs, routes4, routes6 = self._call("read links, addresses and routes", dump)
        return attr.evolve(view_from_dumps(links, addrs, ((4, routes4), (6, routes6))), read_at=began)


def _default_hops(msg):
    """(gateway text or None, oif) of each next hop when ``msg`` is a main-table unicast default route."""
    if msg["dst_len"] != 0 or msg.get_attr("RTA_SRC") or msg["type"] != rtnl.RTN_UNICAST:
        return []
    table = msg.get_attr("RTA_TABLE") or msg["table"]  # RTA_TABLE carries ids > 255
    if table != rtnl.RT_TABLE_MAIN:
        return []
    multipath = msg.get_attr("RTA_MULTIPATH")
    if multipath:
        return [(hop.get_attr("RTA_GATEWAY"), hop["oif"]) for hop in multipath]
    return [(msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF"))]


def view_from_dumps(links, addrs, routes_by_family):
    """Build a KernelView from pyroute2 link, address and (family, route messages) dumps.

    Addresses are ipaddress-normalised "addr/prefix" text; a default route without a gateway
    (a device route) has gateway "". Only administratively up links count as present: a
    route cannot be added through a down link (ENETUNREACH), link down drops the v4 routes
    and v6 addresses, and link up brings back only prefix routes (libraries.md §2.4) -- so
    a down bridge is an absent uplink, and its coming up is what starts binding.
    """
    names, up = {}, set()
    for msg in links:
        names[msg["index"]] = msg.get_attr("IFLA_IFNAME")
        if msg["flags"] & IFF_UP:
            up.add(names[msg["index"]])
    addresses = set()
    for msg in addrs:
        name = names.get(msg["index"])
        text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if name is None or not text:  # appeared between the dumps: the next event re-reads
            continue
        addresses.add((name, str(ipaddress.ip_interface("%s/%d" % (text, msg["prefixlen"])))))
    routes = set()
    for version, msgs in routes_by_family:
        for msg in msgs:
            for gw, oif in _default_hops(msg):
                name = names.get(oif)
                if name is not None:
                    routes.add((version, str(ipaddress.ip_address(gw)) if gw else "", name))
    return KernelView(links=up, addresses=addresses, routes=routes)
