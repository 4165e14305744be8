"""A host that comes back announces its addresses: one gratuitous ARP per IPv4 address and one
unsolicited neighbour advertisement per IPv6 address, sent once its addresses and routes are
in place (as ifup-eth's ``arping -A`` and NetworkManager's address announcements do).

What this does to a Linux router that holds packets for the host in an unresolved neighbour
entry: the announcement updates the entry it already has (kernel ``net/ipv4/arp.c``
``arp_process``; ``net/ipv6/ndisc.c`` ``ndisc_recv_na``) and ``neigh_update`` sends the held
packets on at once. It never deletes the entry: a neighbour flush instead drops what is held.

The sockets are opened by a short-lived thread inside the host's namespace (setns(2) moves only
that thread); a socket keeps the namespace it was made in.
"""

import ipaddress
import socket
import struct

from agent.adapters.rtnl import call_in_netns

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
ARP_REQUEST = 1
ND_NEIGHBOR_ADVERT = 136
NA_OVERRIDE = 0x20000000         # RFC 4861 section 4.4: O set, R and S clear (unsolicited)
ND_OPT_TARGET_LL_ADDR = 2
ALL_NODES = "ff02::1"
HOP_LIMIT = 255                  # RFC 4861 section 7.1.2: a receiver drops an NA with any other


def gratuitous_arp(mac, address):
    """The Ethernet frame of an ARP request for ``address`` from ``address`` (RFC 5227 section 3)."""
    ip = ipaddress.IPv4Address(address).packed
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, ARP_REQUEST, mac, ip, b"\0" * 6, ip)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def unsolicited_na(mac, address):
    """The ICMPv6 message of an unsolicited neighbour advertisement of ``address`` (checksum
    left 0: the kernel fills it in for an IPPROTO_ICMPV6 raw socket, RFC 3542 section 3.1)."""
    target = ipaddress.IPv6Address(address).packed
    return struct.pack("!BBHI16sBB6s", ND_NEIGHBOR_ADVERT, 0, 0, NA_OVERRIDE, target,
                       ND_OPT_TARGET_LL_ADDR, 1, mac)


def _send(ifname, addresses):
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as link:
        link.bind((ifname, ETH_P_ARP))
        mac = link.getsockname()[4]
        for address in addresses:
            if address.version == 4:
                link.send(gratuitous_arp(mac, address))
                continue
            with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as nd:
                index = socket.if_nametoindex(ifname)
                nd.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, HOP_LIMIT)
                nd.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                nd.bind((str(address), 0, 0, index))
                nd.sendto(unsolicited_na(mac, address), (ALL_NODES, 0, 0, index))


def announce(netns, ifname, addresses):
    """Announce ``addresses`` (texts, with or without a prefix) on ``ifname`` in ``netns``."""
    wanted = [ipaddress.ip_interface(text).ip for text in addresses]
    call_in_netns(netns, _send, ifname, wanted)
