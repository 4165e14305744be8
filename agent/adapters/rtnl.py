"""RTNL plumbing: per-thread netns entry, a monitor socket and a request socket (plain sockets).

Both sockets are opened in the calling thread's namespace, or inside a named one (tests, the
lab) by entering it for the socket() call only; a missing namespace raises FileNotFoundError
and is never created. Messages are encoded and parsed in rtnl_msg.
"""

import contextlib
import ctypes
import errno
import logging
import os
import socket
import threading

from agent.adapters import rtnl_msg

log = logging.getLogger(__name__)

# rtnetlink multicast groups (linux/rtnetlink.h)
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
WATCH_GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)

NETLINK_ROUTE = 0

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
DEFAULT_RCVBUF = 1 << 20  # an overflow (ENOBUFS) then needs a real storm


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


def call_in_netns(name, function, *args):
    """``function(*args)`` run by a short-lived thread inside namespace ``name``: its result,
    or its exception raised here. The calling thread never moves (tests, the lab, the
    simulator's SM check); sockets the function creates stay in ``name``."""
    box = {}

    def run():
        try:
            with thread_in_netns(name):
                box["result"] = function(*args)
        except BaseException as exc:  # handed to the caller, who decides
            box["error"] = exc
    thread = threading.Thread(target=run, name="in-netns-%s" % os.path.basename(name))
    thread.daemon = True
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def open_socket(netns, rcvbuf, groups):
    """A NETLINK_ROUTE socket bound to ``groups`` (0: requests only), in namespace ``netns``
    (None: the calling thread's own). SO_RCVBUFFORCE (root) ignores net.core.rmem_max, so
    ``rcvbuf`` really applies in dom0."""
    if netns is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    else:
        with thread_in_netns(netns):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, groups))
    except Exception:
        sock.close()
        raise
    return sock


class RtnlMonitor(object):
    """A raw NETLINK_ROUTE socket subscribed to link, address and route changes; select()-able.

    Messages are not parsed: they are only hints that the state must be re-read, because the
    kernel also changes things without telling (docs/kernel-behaviour.md §2). After an overflow recv
    raises ENOBUFS once, and closing always releases the one fd.
    """

    def __init__(self, groups=WATCH_GROUPS, rcvbuf=None, netns=None):
        self._sock = open_socket(netns, rcvbuf or DEFAULT_RCVBUF, groups)
        self._sock.setblocking(False)
        self._buf = bytearray(65536)

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


class RtnlError(OSError):
    """The kernel refused a request: ``errno`` is its error code."""


class RtnlSocket(object):
    """A plain NETLINK_ROUTE socket for requests and dumps, one at a time (one thread).

    Each request carries its own sequence number; replies of another sequence (left over
    from a request that failed half way) are skipped. Encoding and parsing: rtnl_msg.
    """

    def __init__(self, netns=None, rcvbuf=DEFAULT_RCVBUF):
        self._sock = open_socket(netns, rcvbuf, 0)
        self._seq = 0

    def _send(self, kind, flags, body):
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self._sock.send(rtnl_msg.message(kind, flags | rtnl_msg.NLM_F_REQUEST, self._seq, body))
        return self._seq

    def _replies(self, seq):
        """Messages answering ``seq``, datagram by datagram, until the caller stops."""
        while True:
            data = self._sock.recv(1 << 16)
            for kind, flags, got, payload in rtnl_msg.split(data):
                if got == seq:
                    yield kind, flags, payload

    def request(self, kind, flags, body):
        """Send a request with NLM_F_ACK; return the reply message's payload (a get), or None
        for a plain acknowledgement. Raises RtnlError(errno) when the kernel refuses."""
        seq = self._send(kind, flags | rtnl_msg.NLM_F_ACK, body)
        answer = None
        for reply, _flags, payload in self._replies(seq):
            if reply == rtnl_msg.NLMSG_ERROR:
                code = rtnl_msg.error_code(payload)
                if code:
                    raise RtnlError(code, os.strerror(code))
                return answer
            answer = bytes(payload)    # a get answers with the object, then the ack

    def dump(self, kind, body):
        """Every message of a dump, as (type, payload bytes); an interrupted dump (the table
        changed meanwhile, NLM_F_DUMP_INTR) is read again, up to 3 times, then returned."""
        for _attempt in range(3):
            seq = self._send(kind, rtnl_msg.NLM_F_DUMP, body)
            out, interrupted = [], False
            for reply, flags, payload in self._replies(seq):
                interrupted = interrupted or bool(flags & rtnl_msg.NLM_F_DUMP_INTR)
                if reply == rtnl_msg.NLMSG_DONE:
                    break
                if reply == rtnl_msg.NLMSG_ERROR:
                    code = rtnl_msg.error_code(payload)
                    raise RtnlError(code, os.strerror(code))
                out.append((reply, bytes(payload)))
            if not interrupted:
                break
        return out

    def close(self):
        """Close the socket (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def is_overflow(exc):
    """True when ``exc`` is the ENOBUFS a netlink socket reports after dropping messages."""
    return isinstance(exc, OSError) and exc.errno == errno.ENOBUFS
