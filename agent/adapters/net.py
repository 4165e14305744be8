"""The Net port on rtnetlink: idempotent addresses and default routes, verified by reading back.

Never deletes anything: the agent owns only what its config names, and even that it only adds
or replaces (docs/architecture.md §2 "who may touch what").

Requests go through a plain NETLINK_ROUTE socket (rtnl.RtnlSocket, messages in rtnl_msg):
a request and its acknowledgement take tens of microseconds, where pyroute2's IPRoute took
1-3 ms and a full read 4.5 ms (docs/performance.md), too slow for repairs within 10 ms. Use one
RtnlNet from one thread at a time; the socket is opened by the first call.
"""

import errno
import functools
import ipaddress
import os
import socket
import time

import attr

from agent.adapters import rtnl
from agent.adapters import rtnl_msg as msg
from agent.ports import Net, NetError
from agent.decision.world import KernelView

RTA_PRIORITY = 6  # linux/rtnetlink.h: the route's metric


IFF_UP = 0x1  # linux/if.h


# The kernel's text of an address or gateway -> ipaddress object. Every read parses the same
# few dozen texts again; ipaddress costs tens of microseconds each on Python 3.6.
_interface = functools.lru_cache(maxsize=1024)(ipaddress.ip_interface)
_address = functools.lru_cache(maxsize=1024)(ipaddress.ip_address)


@functools.lru_cache(maxsize=1024)
def _interface_text(text):
    return str(_interface(text))


@functools.lru_cache(maxsize=1024)
def _address_text(text):
    return str(_address(text))


def _family(ip):
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _text_of(exc):
    """A short reason from an OSError: "File exists (errno 17)"."""
    code = getattr(exc, "errno", None)
    if code:
        return "%s (errno %d)" % (os.strerror(code), code)
    return str(exc) or exc.__class__.__name__


class RtnlNet(Net):
    """Addresses and main-table default routes through one rtnetlink socket."""

    def __init__(self, netns=None):
        self._netns = netns
        self._sock = None
        self._known = {}  # ifname -> index, from the last read_view (the decision thread's)

    # --- socket handling ----------------------------------------------------------------------

    def _socket(self):
        if self._sock is None:
            try:
                self._sock = rtnl.RtnlSocket(self._netns)
            except FileNotFoundError:
                raise NetError("network namespace %r does not exist; create it (ip netns add) "
                               "or drop the netns argument" % (self._netns,), errno.ENOENT)
            except Exception as exc:
                raise NetError("cannot open a netlink socket: %s; is the agent running as root?"
                               % _text_of(exc), getattr(exc, "errno", None))
        return self._sock

    def _drop_socket(self):
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _call(self, what, request):
        """Run ``request(socket)``; a kernel refusal becomes NetError(code=errno)."""
        sock = self._socket()
        try:
            return request(sock)
        except rtnl.RtnlError as exc:
            raise NetError("%s: %s" % (what, _text_of(exc)), exc.errno)
        except Exception as exc:
            # A socket-level error (ENOBUFS, a malformed reply) may leave replies of this
            # request unread: drop the socket so the next call starts clean.
            self._drop_socket()
            raise NetError("%s: netlink socket failed (%s); the next call opens a new socket"
                           % (what, _text_of(exc)), getattr(exc, "errno", None))

    def close(self):
        """Release the socket; every address and route stays in place."""
        self._drop_socket()

    def forget_neighbour(self, gateway, ifname):
        """Delete the neighbour entry of ``gateway`` (ipaddress) on ``ifname``, so the next
        packet solicits at once instead of at the entry's next retransmit; absent is fine."""
        index = self._index(ifname)
        if index is None:
            return False
        try:
            self._call("forget neighbour %s dev %s" % (gateway, ifname),
                       lambda sock: sock.request(msg.RTM_DELNEIGH, 0, msg.del_neighbour(index, gateway)))
        except NetError as exc:
            if exc.code == errno.ENOENT:
                return False
            raise
        return True

    def resolve_fast(self, ifname):
        """Let the kernel re-solicit a silent gateway on ``ifname`` every 100 ms, not every
        second (agent/adapters/resolve.py)."""
        from agent.adapters import resolve
        return resolve.set_retrans(ifname, netns=self._netns)

    # --- lookups ------------------------------------------------------------------------------

    def _index(self, ifname):
        """The interface index of ``ifname``, or None when it does not exist."""
        try:
            payload = self._call("look up interface %s" % ifname,
                                 lambda sock: sock.request(msg.RTM_GETLINK, 0, msg.get_link(ifname)))
        except NetError as exc:
            if exc.code in (errno.ENODEV, errno.EINVAL, errno.ERANGE):  # missing, or a bad name
                return None
            raise
        return msg.parse_link(payload)[0] if payload else None

    def _require_index(self, ifname, doing, known=True):
        """The index of ``ifname``: the last read's when ``known`` and it has one (a repair
        follows a read, and each lookup is one more round trip that can wait behind RTNL),
        else looked up now."""
        index = self._known.get(ifname) if known else None
        if index is None:
            index = self._index(ifname)
        if index is None:
            raise NetError("interface %s does not exist, cannot %s; it appears when the VM "
                           "attached to its network starts" % (ifname, doing), errno.ENODEV)
        return index

    def _on_fresh_index(self, ifname, change):
        """Run ``change(known)``; when the index from the last read is gone (ENODEV: the
        interface was re-created since; indexes come from a counter that only wraps at 2^31),
        once more with a fresh lookup."""
        try:
            return change(True)
        except NetError as exc:
            if exc.code != errno.ENODEV or self._known.pop(ifname, None) is None:
                raise
            return change(False)

    def _addresses_on(self, index, ip):
        """The prefix lengths with which address ``ip`` sits on interface ``index``."""
        dump = self._call("list addresses", lambda sock: sock.dump(msg.RTM_GETADDR,
                                                                 msg.dump_addresses(_family(ip))))
        found = []
        for _kind, payload in dump:
            got, text = msg.parse_address(payload)
            if got == index and text:
                iface = _interface(text)
                if iface.ip == ip:
                    found.append(iface.network.prefixlen)
        return found

    def _has_default(self, gateway, index):
        dump = self._call("list routes", lambda sock: sock.dump(msg.RTM_GETROUTE,
                                                              msg.dump_routes(_family(gateway))))
        for _kind, payload in dump:
            for gw, oif in msg.default_hops(payload):
                if oif == index and gw and _address(gw) == gateway:
                    return True
        return False

    def _displaced(self, gateway, index):
        """The main-table default routes a replace via ``gateway`` would swap out: the other
        hops of the same family and metric (ours has none: 0 for IPv4, 1024 for IPv6), as text."""
        dump = self._call("list routes", lambda sock: sock.dump(msg.RTM_GETROUTE,
                                                              msg.dump_routes(_family(gateway))))
        ours = 0 if gateway.version == 4 else 1024
        names = dict((i, n) for n, i in self._known.items())
        out = []
        for _kind, payload in dump:
            hops = msg.default_hops(payload)
            priority = msg._attrs(payload, msg._RTMSG.size).get(RTA_PRIORITY) if hops else None
            metric = msg._U32.unpack_from(priority)[0] if priority else 0
            for gw, oif in hops:
                if metric == ours and not (oif == index and gw and _address(gw) == gateway):
                    out.append("default via %s dev %s metric %d" % (
                        gw or "(none)", names.get(oif, "#%s" % oif), metric))
        return out

    # --- the port -----------------------------------------------------------------------------

    def link_exists(self, ifname):
        """True when the interface exists."""
        return self._index(ifname) is not None

    def ensure_address(self, ifname, interface):
        """Make ``interface`` present on ``ifname`` (v6 with nodad): "added" or "present", else NetError."""
        iface = ipaddress.ip_interface(interface)
        return self._on_fresh_index(ifname, lambda known: self._ensure_address(ifname, iface, known))

    def _ensure_address(self, ifname, iface, known):
        ip, prefixlen = iface.ip, iface.network.prefixlen
        index = self._require_index(ifname, "add %s" % iface, known)
        # No read first: the add itself says EEXIST when the address is there with this
        # prefix. The kernel keys IPv4 addresses by address AND prefix, so 192.0.2.2/25 makes
        # the add succeed as a second address (docs/kernel-behaviour.md §4); the read-back below
        # compares both.
        # v6 with nodad: else the address stays TENTATIVE for ~1 s and cannot be used as a
        # source (docs/kernel-behaviour.md §4); the agent owns this address, so DAD buys nothing here.
        body = msg.new_address(index, ip, prefixlen)
        status = "added"
        try:
            self._call("add %s to %s" % (iface, ifname),
                       lambda sock: sock.request(msg.RTM_NEWADDR, msg.NLM_F_CREATE | msg.NLM_F_EXCL, body))
        except NetError as exc:
            if exc.code != errno.EEXIST:  # EEXIST: already there (the read-back checks the prefix)
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
        return self._on_fresh_index(ifname, lambda known: self._ensure_default_route(gw, ifname, known))

    def _ensure_default_route(self, gw, ifname, known):
        index = self._require_index(ifname, "route via %s" % gw, known)
        if self._has_default(gw, index):
            return "present"
        # "replace" is idempotent and swaps an existing default of the same metric in place
        # (docs/kernel-behaviour.md §5); oif makes a link-local IPv6 gateway (fe80::1) usable.
        body = msg.new_default_route(gw, index)
        displaced = self._displaced(gw, index)
        try:
            self._call("set default route via %s dev %s" % (gw, ifname),
                       lambda sock: sock.request(msg.RTM_NEWROUTE, msg.NLM_F_CREATE | msg.NLM_F_REPLACE, body))
        except NetError as exc:
            if exc.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise NetError("gateway %s is not reachable on %s (%s): the bridge needs an "
                               "address in the gateway's subnet first, or the configured gateway "
                               "is wrong" % (gw, ifname, os.strerror(exc.code)), exc.code)
            raise
        if not self._has_default(gw, index):
            raise NetError("set the default route via %s dev %s but reading back does not show it; "
                           "something removes routes (xcp-networkd?)" % (gw, ifname))
        # the trace and the status name what a replace removed (docs/hostile.md, README)
        return "replaced" + (" (it replaced %s)" % "; ".join(displaced) if displaced else "")

    def read_view(self):
        """A KernelView: every link, every address, every main-table default route (v4 and v6)."""
        def dump(sock):
            return (sock.dump(msg.RTM_GETLINK, msg.dump_links()),
                    sock.dump(msg.RTM_GETADDR, msg.dump_addresses()),
                    sock.dump(msg.RTM_GETROUTE, msg.dump_routes(socket.AF_INET)),
                    sock.dump(msg.RTM_GETROUTE, msg.dump_routes(socket.AF_INET6)))
        began = time.monotonic()
        links, addrs, routes4, routes6 = self._call("read links, addresses and routes", dump)
        known = {}
        view = view_from_dumps(links, addrs, ((4, routes4), (6, routes6)), index_of=known)
        self._known = known
        return attr.evolve(view, read_at=began)


def view_from_dumps(links, addrs, routes_by_family, index_of=None):
    """Build a KernelView from RTM_GETLINK, RTM_GETADDR and (version, RTM_GETROUTE) dumps.

    Addresses are ipaddress-normalised "addr/prefix" text; a default route without a gateway
    (a device route) has gateway "". Only administratively up links count as present: a
    route cannot be added through a down link (ENETUNREACH), link down drops the v4 routes
    and v6 addresses, and link up brings back only prefix routes (docs/kernel-behaviour.md §2) -- so
    a down bridge is an absent uplink, and its coming up is what starts binding.
    ``index_of``, when given, is filled with name -> index of every link (one parse).
    """
    names, up = {}, set()
    for _kind, payload in links:
        index, flags, name = msg.parse_link(payload)
        names[index] = name
        if index_of is not None:
            index_of[name] = index
        if flags & IFF_UP:
            up.add(name)
    addresses = set()
    for _kind, payload in addrs:
        index, text = msg.parse_address(payload)
        name = names.get(index)
        if name is None or not text:  # appeared between the dumps: the next event re-reads
            continue
        addresses.add((name, _interface_text(text)))
    routes = set()
    for version, dump in routes_by_family:
        for _kind, payload in dump:
            for gw, oif in msg.default_hops(payload):
                name = names.get(oif)
                if name is not None:
                    routes.add((version, _address_text(gw) if gw else "", name))
    return KernelView(links=up, addresses=addresses, routes=routes)
