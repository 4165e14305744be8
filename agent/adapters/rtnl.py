"""RTNL plumbing: pyroute2 version differences, safe closing, per-thread netns entry, a raw monitor socket.

pyroute2 is imported lazily, inside functions: ``import pyroute2`` loads NDB, IPDB, nftables and
more, about 24 MiB and 200 ms (libraries.md §2.10), which ``agent status`` must not pay.

Two pyroute2 lines are supported (libraries.md §2.1, §7):

* 0.9.x (Python >= 3.9): ``IPRoute(netns=name, flags=0)``; the socket is opened by a short-lived
  forked child and handed back, no helper stays alive. ``flags=0`` because the default
  ``O_CREAT`` silently creates a missing namespace.
* 0.8.1 (Python 3.6, dom0): no ``netns=`` keyword (TypeError); ``NetNS(name, flags=0)`` relays
  every request through a helper child process that lives until ``close()``.
"""

import contextlib
import ctypes
import errno
import inspect
import logging
import os
import socket

log = logging.getLogger(__name__)

# rtnetlink multicast groups (linux/rtnetlink.h; equal to pyroute2.netlink.rtnl.RTMGRP_*,
# defined here so the watcher does not import pyroute2 for five integers).
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
WATCH_GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)

NETLINK_ROUTE = 0
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
IFA_F_NODAD = 0x02       # linux/if_addr.h: skip duplicate address detection
IFA_F_TENTATIVE = 0x40   # DAD still running: the address cannot be used yet (libraries.md §2.2)
IFA_F_DADFAILED = 0x08

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
DEFAULT_RCVBUF = 1 << 20  # pyroute2's default; an overflow (ENOBUFS) then needs a real storm


def netlink_error():
    """The pyroute2 NetlinkError class (its ``code`` is the errno)."""
    from pyroute2 import NetlinkError
    return NetlinkError


def _iproute_takes_netns():
    """True on pyroute2 0.9.x, whose IPRoute accepts ``netns=``; 0.8.1 takes only ``*argv, **kwarg``."""
    from pyroute2 import IPRoute
    try:
        return "netns" in inspect.signature(IPRoute.__init__).parameters
    except (TypeError, ValueError):
        return False


def open_iproute(netns=None):
    """A synchronous IPRoute in the current namespace, or in namespace ``netns`` (never creating it).

    A missing namespace raises FileNotFoundError on both pyroute2 lines.
    """
    from pyroute2 import IPRoute
    if netns is None:
        return IPRoute()
    if _iproute_takes_netns():
        return IPRoute(netns=netns, flags=0)
    from pyroute2 import NetNS
    return NetNS(netns, flags=0)


def close_quietly(ipr):
    """Close a pyroute2 socket object, also one poisoned by ENOBUFS, without raising and without leaking fds.

    pyroute2 0.9.x stores a socket error in its asyncio core and re-raises it from every later
    call, close() included, leaving 4 fds open per broken object; clearing the stored error
    first lets close() finish (libraries.md §2.7, t2_enobufs_leak2.py). The attribute is
    private, so its absence (0.8.1, later releases) is tolerated.
    """
    if ipr is None:
        return
    try:
        ipr.close()
        return
    except OSError as exc:
        log.debug("closing a broken netlink socket raised %s, clearing its stored error", exc)
    except Exception as exc:  # close must never take the caller down with it
        log.debug("closing a netlink socket raised %r, ignoring", exc)
        return
    core = getattr(ipr, "asyncore", None)
    stored = getattr(core, "_error_event", None)
    if stored is not None:
        stored.clear()
    try:
        ipr.close()
    except Exception as exc:
        log.warning("netlink socket did not close cleanly (%r), ignoring", exc)


_libc = None


def _setns(fd):
    """setns(2) for the calling thread only: a network namespace is per thread on Linux."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, "setns(CLONE_NEWNET) failed: %s" % os.strerror(code))


def netns_path(name):
    """The bind-mount path of a named namespace (``ip netns`` keeps them in /var/run/netns)."""
    return name if os.path.isabs(name) else os.path.join(NETNS_RUN_DIR, name)


@contextlib.contextmanager
def thread_in_netns(name):
    """Run the block with the calling thread inside namespace ``name``; sockets created there stay there.

    Used to open the monitor socket in a test or lab namespace; the agent itself runs inside
    dom0's own namespace and never enters another. Raises FileNotFoundError for a missing
    namespace (it is never created).
    """
    target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)
    finally:
        os.close(target)


class RtnlMonitor(object):
    """A raw NETLINK_ROUTE socket subscribed to link, address and route changes; select()-able.

    Messages are not parsed: they are only hints that the state must be re-read, because the
    kernel also changes things without telling (libraries.md §2.4). A plain socket avoids
    pyroute2's per-thread socket objects (§2.6) and its ENOBUFS poisoning (§2.7): recv raises
    ENOBUFS once, and closing always releases the one fd.
    """

    def __init__(self, groups=WATCH_GROUPS, rcvbuf=None, netns=None):
        if netns is None:
            sock = self._new_socket()
        else:
            with thread_in_netns(netns):
                sock = self._new_socket()
        try:
            self._set_rcvbuf(sock, rcvbuf or DEFAULT_RCVBUF)
            sock.bind((0, groups))
            sock.setblocking(False)
        except Exception:
            sock.close()
            raise
        self._sock = sock
        self._buf = bytearray(65536)

    @staticmethod
    def _new_socket():
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)

    @staticmethod
    def _set_rcvbuf(sock, size):
        # SO_RCVBUFFORCE (root) ignores net.core.rmem_max, so the 1 MiB really applies in dom0.
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def fileno(self):
        """The socket's file descriptor, for select()."""
        return self._sock.fileno()

    def drain(self, limit):
        """Read up to ``limit`` pending datagrams without blocking and return how many were read.

        Raises OSError(ENOBUFS) when the kernel dropped messages because the receive buffer
        was full: the caller must re-read everything.
        """
        count = 0
        while count < limit:
            try:
                self._sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                break
            count += 1
        return count

    def close(self):
        """Close the socket (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def is_overflow(exc):
    """True when ``exc`` is the ENOBUFS a netlink socket reports after dropping messages."""
    return isinstance(exc, OSError) and exc.errno == errno.ENOBUFS
