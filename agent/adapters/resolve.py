"""Faster link-layer resolution on an uplink bridge: the neighbour table's retransmit time.

When the agent installs its default route the firewall's end of the bridge often does not
answer ARP/ND yet (the guest is still coming up). The kernel then solicits again only every
``retrans_time_ms`` (1000 ms by default, linux/Documentation/networking/ip-sysctl.rst,
neigh/default/retrans_time_ms), so the first packet after the firewall starts answering
waits up to a second. On the uplink bridge the agent sets it to RETRANS_MS: the kernel
solicits at that period only while a packet waits for the gateway, three times
(mcast_solicit), then marks the entry FAILED until the next packet; nothing is sent when
nothing waits. The bridge is re-created with the firewall VM (agent/lab/netns.py), so the
setting is made again with every route install (agent/decision/probing.py route_writing).

Written through /proc/sys/net/ipv{4,6}/neigh/<bridge>/retrans_time_ms of the namespace the
calling thread is in (entered for the write only when the Net port works in a named one).
"""

import errno
import os

from agent.adapters import rtnl

RETRANS_MS = 100
_PATHS = ("/proc/sys/net/ipv4/neigh/%s/retrans_time_ms", "/proc/sys/net/ipv6/neigh/%s/retrans_time_ms")


def _valid_ifname(ifname):
    return 0 < len(ifname) < 16 and "/" not in ifname and ifname not in (".", "..")


def _write(path, text):
    """Write ``text`` to an existing /proc/sys file, never following a link; False when absent."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:  # no IPv6 on this kernel, or the bridge is gone
            return False
        raise
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return True


def set_retrans(ifname, ms=RETRANS_MS, netns=None):
    """Set the ARP and ND retransmit time of ``ifname`` to ``ms``; returns the files written."""
    if not _valid_ifname(ifname):
        raise ValueError("%r is not an interface name" % (ifname,))
    paths = [p % ifname for p in _PATHS]
    if netns is None:
        return [p for p in paths if _write(p, "%d\n" % int(ms))]
    with rtnl.thread_in_netns(netns):
        return [p for p in paths if _write(p, "%d\n" % int(ms))]


def get_retrans(ifname, family=4):
    """The current retransmit time of ``ifname`` in ms (the tests read it back)."""
    with open(_PATHS[0 if family == 4 else 1] % ifname) as f:
        return int(f.read().strip())
