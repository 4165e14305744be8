"""rtnetlink messages as bytes: the few requests the agent sends, and the dumps it reads.

Only what the Net port needs: RTM_GETLINK (one link by name, or all), RTM_NEWADDR,
RTM_GETADDR, RTM_NEWROUTE and RTM_GETROUTE; and, for the netlink watcher's gateway hint,
RTM_NEWNEIGH / RTM_DELNEIGH (linux/neighbour.h). Layouts are linux/netlink.h, linux/rtnetlink.h,
linux/if_link.h and linux/if_addr.h; the tests check every parse against pyroute2's on the
same kernel. Hand-written because pyroute2 costs 1-3 ms per request and a full read 4.5 ms
(bench/kernel_latency.py), while the kernel answers in tens of microseconds.

Python 3.6 compatible; standard library only.
"""

import socket
import struct

# linux/netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
# linux/rtnetlink.h
RTM_NEWLINK, RTM_GETLINK = 16, 18
IFF_LOWER_UP = 0x10000  # linux/if.h: the link has carrier
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
# linux/neighbour.h: NUD_* states and the attributes of an ndmsg
NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY = 0x01, 0x02, 0x04, 0x08
NUD_PROBE, NUD_FAILED, NUD_NOARP, NUD_PERMANENT = 0x10, 0x20, 0x40, 0x80
NUD_VALID = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY
NDA_DST, NDA_LLADDR = 1, 2
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02
RTA_SRC, RTA_OIF, RTA_GATEWAY, RTA_MULTIPATH, RTA_TABLE = 2, 4, 5, 9, 15
NLA_TYPE_MASK = 0x3FFF

_NLMSGHDR = struct.Struct("=IHHII")       # len, type, flags, seq, pid
_NLMSGERR = struct.Struct("=i")           # error (negative errno, 0 for an ack)
_IFINFOMSG = struct.Struct("=BxHiII")     # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")      # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")      # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")       # family, pad, index, state, flags, type
_RTATTR = struct.Struct("=HH")            # len, type
_RTNEXTHOP = struct.Struct("=HBBi")       # len, flags, hops, ifindex
_U32 = struct.Struct("=I")


def _align(n):
    return (n + 3) & ~3


def _attr(kind, payload):
    data = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return data + b"\0" * (_align(len(data)) - len(data))


def message(kind, flags, seq, body):
    """One netlink message: header + body (the body already padded)."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


# --- requests ---------------------------------------------------------------------------------

def get_link(ifname):
    """RTM_GETLINK body for one interface by name (answered with RTM_NEWLINK or ENODEV)."""
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, ifname.encode() + b"\0")


def dump_links():
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def dump_addresses(family=socket.AF_UNSPEC):
    return _IFADDRMSG.pack(family, 0, 0, 0, 0)


def dump_routes(family):
    return _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)


def new_address(index, ip, prefixlen):
    """RTM_NEWADDR body for ``ip`` (an ipaddress object) on ``index``; v6 with nodad."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    flags = IFA_F_NODAD if ip.version == 6 else 0
    packed = ip.packed
    return (_IFADDRMSG.pack(family, prefixlen, flags, RT_SCOPE_UNIVERSE, index)
            + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed))


def new_default_route(gateway, index):
    """RTM_NEWROUTE body: main-table default route via ``gateway`` (ipaddress) out of ``index``."""
    family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
    return (_RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE,
                        RTN_UNICAST, 0)
            + _attr(RTA_GATEWAY, gateway.packed) + _attr(RTA_OIF, _U32.pack(index)))


# --- replies ----------------------------------------------------------------------------------

def split(data):
    """The messages of one datagram: (type, flags, seq, payload memoryview)."""
    view = memoryview(data)
    offset, end = 0, len(data)
    while offset + _NLMSGHDR.size <= end:
        length, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > end:
            raise ValueError("malformed netlink message (length %d at offset %d of %d)"
                             % (length, offset, end))
        yield kind, flags, seq, view[offset + _NLMSGHDR.size:offset + length]
        offset += _align(length)


def error_code(payload):
    """The errno of an NLMSG_ERROR payload (0: an acknowledgement)."""
    return -_NLMSGERR.unpack_from(payload)[0]


def _attrs(payload, offset):
    """{type: memoryview} of the attributes from ``offset`` to the end of ``payload``."""
    out = {}
    end = len(payload)
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(payload, offset)
        if length < _RTATTR.size:
            break
        out[kind & NLA_TYPE_MASK] = payload[offset + _RTATTR.size:offset + length]
        offset += _align(length)
    return out


def _attr_of(payload, offset, wanted):
    """The first attribute of type ``wanted`` from ``offset`` on, or None; stops at it, so a
    link's name (among its first attributes) is found without walking its ~50 others."""
    end = len(payload)
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(payload, offset)
        if length < _RTATTR.size:
            break
        if kind & NLA_TYPE_MASK == wanted:
            return payload[offset + _RTATTR.size:offset + length]
        offset += _align(length)
    return None


def _ip_text(family, raw):
    return socket.inet_ntop(family, bytes(raw))


def parse_link(payload):
    """(index, flags, ifname) of an RTM_NEWLINK payload."""
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    name = _attr_of(payload, _IFINFOMSG.size, IFLA_IFNAME)
    return index, flags, bytes(name).split(b"\0", 1)[0].decode() if name is not None else None


def parse_address(payload):
    """(index, "addr/prefix" text or None) of an RTM_NEWADDR payload (IFA_LOCAL, else IFA_ADDRESS)."""
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(payload)
    attrs = _attrs(payload, _IFADDRMSG.size)
    raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
    if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
        return index, None
    return index, "%s/%d" % (_ip_text(family, raw), prefixlen)


def default_hops(payload):
    """[(gateway text or None, oif)] when the RTM_NEWROUTE payload is a main-table unicast
    default route (one per next hop of a multipath route), else []. Most routes are rejected
    by their fixed header alone: a dump of thousands stays cheap."""
    family, dst_len, _src_len, _tos, table, _proto, _scope, kind, _flags = _RTMSG.unpack_from(payload)
    if dst_len != 0 or kind != RTN_UNICAST:
        return []
    attrs = _attrs(payload, _RTMSG.size)
    if RTA_SRC in attrs:
        return []
    if RTA_TABLE in attrs:                       # carries table ids above 255
        table = _U32.unpack_from(attrs[RTA_TABLE])[0]
    if table != RT_TABLE_MAIN:
        return []
    multipath = attrs.get(RTA_MULTIPATH)
    if multipath is not None:
        hops, offset = [], 0
        while offset + _RTNEXTHOP.size <= len(multipath):
            length, _hflags, _hops, oif = _RTNEXTHOP.unpack_from(multipath, offset)
            if length < _RTNEXTHOP.size:
                break
            gw = _attrs(multipath[offset:offset + length], _RTNEXTHOP.size).get(RTA_GATEWAY)
            hops.append((_ip_text(family, gw) if gw is not None else None, oif))
            offset += _align(length)
        return hops
    gw, oif = attrs.get(RTA_GATEWAY), attrs.get(RTA_OIF)
    return [(_ip_text(family, gw) if gw is not None else None,
             _U32.unpack_from(oif)[0] if oif is not None else None)]


def dump_neighbours(family=socket.AF_UNSPEC):
    """RTM_GETNEIGH dump body (the tests compare its parse with pyroute2's)."""
    return _NDMSG.pack(family, 0, 0, 0, 0)


def parse_neighbour(payload):
    """(index, address text or None, NUD state bits) of an RTM_NEWNEIGH/RTM_DELNEIGH payload.

    The address is None for families other than IPv4/IPv6 (the bridge's own fdb entries
    arrive as AF_BRIDGE neighbours) and when NDA_DST is missing.
    """
    family, index, state, _flags, _type = _NDMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return index, None, state
    raw = _attr_of(payload, _NDMSG.size, NDA_DST)
    if raw is None:
        return index, None, state
    return index, _ip_text(family, raw), state


def neighbour_events(data):
    """[(kind, index, address, state)] of the neighbour messages in one datagram, where kind
    is RTM_NEWNEIGH or RTM_DELNEIGH; other messages and non-IP neighbours are skipped."""
    out = []
    for kind, _flags, _seq, payload in split(data):
        if kind in (RTM_NEWNEIGH, RTM_DELNEIGH) and len(payload) >= _NDMSG.size:
            index, address, state = parse_neighbour(payload)
            if address is not None:
                out.append((kind, index, address, state))
    return out


def del_neighbour(index, ip):
    """RTM_DELNEIGH body: forget the neighbour entry of ``ip`` (ipaddress) on ``index``."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return _NDMSG.pack(family, index, 0, 0, 0) + _attr(NDA_DST, ip.packed)


def carrier_events(data):
    """[(index, ifname, has carrier)] of the RTM_NEWLINK messages in one datagram."""
    out = []
    for kind, _flags, _seq, payload in split(data):
        if kind == RTM_NEWLINK:
            index, flags, name = parse_link(payload)
            out.append((index, name, bool(flags & IFF_LOWER_UP)))
    return out
