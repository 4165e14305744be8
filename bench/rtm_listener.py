"""The benches' stopwatch: an RTNL listener in its own process, stamping datagrams as they arrive.

Run inside a namespace (``ip netns exec NS python rtm_listener.py``). It subscribes to link,
address and route changes and, for every datagram, writes ``<double monotonic><uint32
length>`` and the raw bytes to stdout; a zero-length record says it is subscribed. It parses
nothing, so each stamp is taken right after recv() returns. It asks for SCHED_FIFO (root) so
that a busy machine delays the stopwatch less than the processes it times; where that is
refused it says so on stderr and runs at normal priority.

Its own process, not a thread of the bench: a thread shares the bench's GIL with the XAPI
simulator, and its stamps came out up to 2.5 ms late (measured against the agent's own
timestamps, docs/performance.md). The bench parses the datagrams afterwards with pyroute2,
so the agent's netlink code is never the judge of itself. Python 3.6 compatible.
"""

import fcntl
import os
import socket
import struct
import sys
import time

GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400  # LINK, IPV4_IFADDR, IPV4_ROUTE, IPV6_IFADDR, IPV6_ROUTE
SO_RCVBUFFORCE = 33
RECORD = struct.Struct("<dI")
F_SETPIPE_SZ = 1031  # linux/fcntl.h (fcntl.F_SETPIPE_SZ needs Python 3.10)


def main():
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (OSError, AttributeError) as exc:
        sys.stderr.write("rtm_listener: running without SCHED_FIFO (%s)\n" % exc)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    sock.bind((0, GROUPS))
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else sys.stdout
    fd = out.fileno()
    try:
        # A 1 MiB pipe: with the default 64 KiB a slow reader filled it within a few firewall
        # reboots, and a blocked write() delayed the next recv() and its stamp (by ~2 ms).
        fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
    except OSError as exc:
        sys.stderr.write("rtm_listener: pipe stays at its default size (%s)\n" % exc)
    _write_all(fd, RECORD.pack(time.monotonic(), 0))
    buf = bytearray(1 << 16)
    while True:
        size = sock.recv_into(buf)
        now = time.monotonic()
        _write_all(fd, RECORD.pack(now, size) + bytes(buf[:size]))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
