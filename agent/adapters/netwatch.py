"""The NetWatcher port on netlink: a thread that turns RTNL multicast into kernel hints.

Events are hints, the kernel is the truth (docs/architecture.md §4): the kernel drops a v4 default route
silently when its address or link goes (docs/kernel-behaviour.md §2), so the messages are not parsed at
all. After subscribing (and after every overflow) the thread reads everything once and posts
KernelResynced(view); after that every drained batch of notifications becomes one
KernelNotified, and the decision thread re-reads when it takes it (core.Agent). Reading
there, not here, means the agent never decides on a read older than its own last change, a
burst that arrives while it repairs costs one read, and no second thread parses dumps while
it repairs (bench/kernel_latency.py: a re-read here competed with every repair for the GIL
and the CPU).

One exception to "not parsed": a second socket reads neighbour and link messages, because
the kernel's own ARP/ND state says when a gateway starts answering, before any probe could.
The watcher keeps, per (interface, address), whether the entry is valid (has a link-layer
address) and posts NeighbourChanged only when that flips -- the reachable/stale/delay/probe
cycle of a busy neighbour posts nothing -- and CarrierUp when a link it has seen without
carrier gets it (the firewall's end of the VIF came up).

Order matters: subscribe first, then dump, so nothing falls between the two (docs/architecture.md §4).
After an overflow (ENOBUFS) or any socket error, the watcher closes everything, subscribes
again, re-reads and posts a new KernelResynced. The thread sleeps in select() on the netlink
socket and a wake-up pipe: idle costs nothing, and stop() wakes it at once.
"""

import logging
import os
import select
import threading

from agent.adapters import rtnl, rtnl_msg
from agent.adapters.net import RtnlNet
from agent.decision.events import CarrierUp, KernelNotified, KernelResynced, NeighbourChanged
from agent.ports import NetWatcher

log = logging.getLogger(__name__)

DRAIN_LIMIT = 256         # datagrams per hint, so a never-ending storm still gets hints out
RETRY_BASE = 0.05         # seconds before the 2nd consecutive reopen; the 1st (ENOBUFS) is immediate
RETRY_CAP = 5.0
STOP_TIMEOUT = 5.0        # bounded join: a netlink dump in flight finishes in milliseconds
RTMGRP_NEIGH = 0x4        # 1 << (RTNLGRP_NEIGH - 1), linux/rtnetlink.h
HINT_GROUPS = RTMGRP_NEIGH | rtnl.RTMGRP_LINK
NEIGH_RCVBUF = 1 << 18


class _Stopping(Exception):
    """Raised inside the thread when stop() was asked for."""


class NetlinkWatcher(NetWatcher):
    """Watches links, addresses and default routes in the current (or a named) network namespace."""

    def __init__(self, netns=None, rcvbuf=None, name="netlink-watcher"):
        self._netns = netns
        self._rcvbuf = rcvbuf
        self._name = name
        self._thread = None
        self._wake_r = self._wake_w = None
        self._stopping = threading.Event()
        self.resyncs = 0  # how many KernelResynced were posted (1 + overflows/reopens)
        self._valid = {}  # (index, address) -> True while its neighbour entry is valid
        self._carrier = {}  # index -> has carrier, as last notified

    def start(self, post):
        """Start the thread; it subscribes, posts KernelResynced, then posts deltas through ``post``."""
        if self._thread is not None:
            raise RuntimeError("NetlinkWatcher.start() called twice")
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, args=(post,), name=self._name)
        self._thread.daemon = True
        self._thread.start()

    def stop(self):
        """Wake the thread, wait for it (bounded) and release its socket and pipe."""
        thread = self._thread
        if thread is None or self._stopping.is_set():
            return
        self._stopping.set()
        os.write(self._wake_w, b"x")
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            # Leave the pipe open rather than risk the thread using a recycled fd number.
            log.error("netlink watcher did not stop within %.0f s, leaving it behind", STOP_TIMEOUT)
            return
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = None

    # --- the thread ---------------------------------------------------------------------------

    def _run(self, post):
        failures = 0
        while not self._stopping.is_set():
            monitor = reader = neigh = None
            try:
                # Created, bound and read in this one thread (docs/kernel-behaviour.md §8).
                monitor = rtnl.RtnlMonitor(rcvbuf=self._rcvbuf, netns=self._netns)
                neigh = rtnl.open_socket(self._netns, NEIGH_RCVBUF, HINT_GROUPS)
                neigh.setblocking(False)
                self._valid.clear()
                self._carrier.clear()
                reader = RtnlNet(self._netns)
                view = reader.read_view()
                reader.close()
                self.resyncs += 1
                post(KernelResynced(view))
                failures = 0
                self._follow(post, monitor, neigh)
            except _Stopping:
                break
            except Exception as exc:
                failures += 1
                if rtnl.is_overflow(exc):
                    log.warning("netlink receive buffer overflowed (ENOBUFS): events were lost, "
                                "re-reading links, addresses and routes")
                else:
                    log.warning("netlink watcher failed (%s), reopening and re-reading", exc,
                                exc_info=log.isEnabledFor(logging.DEBUG))
            finally:
                if monitor is not None:
                    monitor.close()
                if neigh is not None:
                    neigh.close()
                if reader is not None:
                    reader.close()
            if failures > 1 and self._wait_woken(min(RETRY_CAP, RETRY_BASE * 2 ** (failures - 2))):
                break
        log.debug("netlink watcher stopped")

    def _follow(self, post, monitor, neigh):
        """Wait for notifications; post one KernelNotified per drained batch, and a
        NeighbourChanged per neighbour entry whose validity flipped."""
        while True:
            readable, _, _ = select.select([monitor, neigh, self._wake_r], [], [])
            if self._wake_r in readable or self._stopping.is_set():
                raise _Stopping()
            if neigh in readable:
                for event in self._neighbour_flips(neigh):
                    post(event)
            if monitor in readable:
                count = monitor.drain(DRAIN_LIMIT)
                if count:
                    post(KernelNotified(count))

    def _neighbour_flips(self, sock):
        """Read pending neighbour datagrams; the NeighbourChanged events of entries that
        became valid or stopped being so. An overflow here loses only hints: forgotten."""
        out = []
        for _ in range(DRAIN_LIMIT):
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if not rtnl.is_overflow(exc):
                    raise
                self._valid.clear()
                self._carrier.clear()
                continue
            for index, ifname, carrier in rtnl_msg.carrier_events(data):
                if carrier and self._carrier.get(index) is False and ifname:
                    out.append(CarrierUp(ifname, index))
                self._carrier[index] = carrier
            for kind, index, address, state in rtnl_msg.neighbour_events(data):
                valid = kind == rtnl_msg.RTM_NEWNEIGH and bool(state & rtnl_msg.NUD_VALID)
                if self._valid.get((index, address), False) != valid:
                    out.append(NeighbourChanged(address, index, valid))
                if valid:
                    self._valid[(index, address)] = True
                else:
                    self._valid.pop((index, address), None)
        return out

    def _wait_woken(self, seconds):
        """Back off before reopening; True when stop() woke us meanwhile."""
        readable, _, _ = select.select([self._wake_r], [], [], seconds)
        return bool(readable) or self._stopping.is_set()
