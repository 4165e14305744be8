"""NetlinkWatcher against the real kernel: what it posts when links, addresses and routes change.

The watcher posts KernelResynced(view) after subscribing and a KernelNotified hint per batch
of notifications; the Recorder below does what the decision thread does with a hint (re-read,
name the differences), so the tests see the typed deltas a consumer ends up with.
"""

import ctypes
import os
import platform
import shutil
import threading

import pytest

from agent.adapters.net import RtnlNet
from agent.adapters.netwatch import NetlinkWatcher
from agent.decision.events import (AddressAdded, AddressRemoved, KernelNotified, KernelResynced,
                          LinkAppeared, LinkGone, RouteAdded, RouteRemoved)
from agent.decision.world import KernelView, diff_views
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                       reason="needs root and iproute2 `ip` to create network namespaces"),
]


def _gettid():
    """The calling thread's kernel thread id (threading.get_native_id needs Python 3.8)."""
    native = getattr(threading, "get_native_id", None)
    if native is not None:
        return native()
    return ctypes.CDLL(None, use_errno=True).syscall(186)  # SYS_gettid on x86_64


def fold(view, event):
    """Apply one posted event to a KernelView: what a consumer of the events believes."""
    if isinstance(event, KernelResynced):
        return event.view
    links, addresses, routes = set(view.links), set(view.addresses), set(view.routes)
    if isinstance(event, LinkAppeared):
        links.add(event.ifname)
    elif isinstance(event, LinkGone):
        links.discard(event.ifname)
    elif isinstance(event, AddressAdded):
        addresses.add((event.ifname, event.address))
    elif isinstance(event, AddressRemoved):
        addresses.discard((event.ifname, event.address))
    elif isinstance(event, RouteAdded):
        routes.add((event.family, event.gateway, event.ifname))
    elif isinstance(event, RouteRemoved):
        routes.discard((event.family, event.gateway, event.ifname))
    return KernelView(links=links, addresses=addresses, routes=routes)


class Recorder(object):
    """A ``post`` callable that keeps every event; ``gate`` (when set) blocks the watcher thread.

    A KernelNotified hint is followed as core.Agent follows it: a fresh read of ``netns``,
    recorded as its typed deltas against the previous picture."""

    def __init__(self, netns):
        self.netns = netns
        self.events = []
        self.hints = 0
        self.kinds = set()
        self.view = KernelView()
        self.lock = threading.Lock()
        self.gate = None
        self.threads = set()
        self.tids = set()
        self._net = None

    def __call__(self, event):
        with self.lock:
            self.kinds.add(type(event))
            if isinstance(event, KernelNotified):
                self.hints += 1
                if self._net is None:
                    self._net = RtnlNet(netns=self.netns)
                new = self._net.read_view()
                self.events.extend(diff_views(self.view, new))
                self.view = new
            else:
                if isinstance(event, KernelResynced):
                    self.view = event.view
                self.events.append(event)
        self.threads.add(threading.current_thread().name)
        self.tids.add(_gettid())
        gate = self.gate
        if gate is not None:
            gate.wait(30)

    def close(self):
        with self.lock:
            if self._net is not None:
                self._net.close()
                self._net = None

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def of(self, kind):
        return [e for e in self.snapshot() if isinstance(e, kind)]

    def since(self, mark):
        return self.snapshot()[mark:]

    def believed(self):
        view = KernelView()
        for event in self.snapshot():
            view = fold(view, event)
        return view


def truth(topology):
    """A fresh read of dom0's links, addresses and default routes."""
    net = RtnlNet(netns=topology.dom0)
    try:
        return net.read_view()
    finally:
        net.close()


def converged(topology, recorder):
    """True when the events posted so far add up to the kernel's current state."""
    return recorder.believed() == truth(topology)


@pytest.fixture
def watched(topology):
    """A NetlinkWatcher on dom0 that has posted its first KernelResynced; stopped afterwards."""
    recorder = Recorder(topology.dom0)
    watcher = NetlinkWatcher(netns=topology.dom0)
    watcher.start(recorder)
    try:
        wait_until(lambda: recorder.of(KernelResynced), message="first KernelResynced")
        yield watcher, recorder
    finally:
        watcher.stop()
        recorder.close()


def test_initial_resync_shows_the_current_state(topology, watched):
    """The first event is KernelResynced with dom0's links, the foreign address, and no default route."""
    _, recorder = watched
    first = recorder.snapshot()[0]
    assert isinstance(first, KernelResynced)
    assert {"lo", "xenbr0"} <= first.view.links
    assert ("xenbr0", "203.0.113.5/24") in first.view.addresses
    assert first.view.routes == frozenset()
    assert recorder.threads == {"netlink-watcher"}


def test_bridge_appears_and_goes(topology, watched):
    """Starting the VM posts LinkAppeared for xapi0 and its VIF; stopping it posts LinkGone for both."""
    _, recorder = watched
    topology.vm_started(7, "xapi0")
    wait_until(lambda: {"xapi0", "vif7.0"} <= {e.ifname for e in recorder.of(LinkAppeared)},
               message="LinkAppeared for xapi0 and vif7.0")
    topology.vm_stopped(7, "xapi0")
    wait_until(lambda: {"xapi0", "vif7.0"} <= {e.ifname for e in recorder.of(LinkGone)},
               message="LinkGone for xapi0 and vif7.0")
    wait_until(lambda: converged(topology, recorder), message="events adding up to the kernel state")


def test_notifications_become_hints_and_are_never_parsed_here(topology, watched):
    """After the first read the watcher posts only KernelNotified: one per drained batch, with
    the count of messages; it never reads or posts a view itself (the decision thread does)."""
    _, recorder = watched
    topology.ip("dom0", batch=["addr add 192.0.2.7/32 dev xenbr0", "addr add 192.0.2.8/32 dev xenbr0"])
    wait_until(lambda: {AddressAdded("xenbr0", "192.0.2.7/32"), AddressAdded("xenbr0", "192.0.2.8/32")}
               <= set(recorder.snapshot()), message="both addresses seen after hints")
    assert recorder.hints >= 1
    assert recorder.kinds == {KernelResynced, KernelNotified}
    assert len(recorder.of(KernelResynced)) == 1


def test_external_address_removal(topology, watched):
    """An address removed by someone else (ip addr del) is posted as AddressRemoved."""
    _, recorder = watched
    topology.ip("dom0", "addr", "add", "192.0.2.2/32", "dev", "xenbr0")
    wait_until(lambda: AddressAdded("xenbr0", "192.0.2.2/32") in recorder.snapshot(),
               message="AddressAdded 192.0.2.2/32")
    topology.ip("dom0", "addr", "del", "192.0.2.2/32", "dev", "xenbr0")
    wait_until(lambda: AddressRemoved("xenbr0", "192.0.2.2/32") in recorder.snapshot(),
               message="AddressRemoved 192.0.2.2/32")


def test_external_route_removal(topology, watched):
    """A default route added then deleted by someone else gives RouteAdded then RouteRemoved."""
    _, recorder = watched
    topology.ip("dom0", "route", "add", "default", "via", "203.0.113.1", "dev", "xenbr0")
    wait_until(lambda: RouteAdded(4, "203.0.113.1", "xenbr0") in recorder.snapshot(),
               message="RouteAdded via 203.0.113.1")
    topology.ip("dom0", "route", "del", "default")
    wait_until(lambda: RouteRemoved(4, "203.0.113.1", "xenbr0") in recorder.snapshot(),
               message="RouteRemoved via 203.0.113.1")


def test_address_removal_reports_the_silently_dropped_route(topology, watched):
    """Deleting the v4 address drops the default route without RTM_DELROUTE; RouteRemoved is posted anyway."""
    _, recorder = watched
    topology.ip("dom0", "route", "add", "default", "via", "203.0.113.1", "dev", "xenbr0")
    wait_until(lambda: RouteAdded(4, "203.0.113.1", "xenbr0") in recorder.snapshot(),
               message="RouteAdded via 203.0.113.1")
    mark = len(recorder.snapshot())
    topology.ip("dom0", "addr", "del", "203.0.113.5/24", "dev", "xenbr0")
    wait_until(lambda: RouteRemoved(4, "203.0.113.1", "xenbr0") in recorder.since(mark),
               message="RouteRemoved for the silently dropped default route")
    assert AddressRemoved("xenbr0", "203.0.113.5/24") in recorder.since(mark)


def test_link_down_and_up(topology, watched):
    """Link down drops the default routes (v4 silently), up brings neither back: the events follow."""
    _, recorder = watched
    topology.ip("dom0", batch=[
        "addr add 2001:db8:5::5/64 dev xenbr0 nodad",
        "route add default via 203.0.113.1 dev xenbr0",
        "route add default via 2001:db8:5::1 dev xenbr0",
    ])
    wait_until(lambda: {RouteAdded(4, "203.0.113.1", "xenbr0"),
                        RouteAdded(6, "2001:db8:5::1", "xenbr0")} <= set(recorder.snapshot()),
               message="both default routes seen")
    topology.ip("dom0", "link", "set", "xenbr0", "down")
    wait_until(lambda: {RouteRemoved(4, "203.0.113.1", "xenbr0"),
                        RouteRemoved(6, "2001:db8:5::1", "xenbr0")} <= set(recorder.snapshot()),
               message="both default routes removed on link down")
    wait_until(lambda: converged(topology, recorder), message="view converged after link down")
    topology.ip("dom0", "link", "set", "xenbr0", "up")
    wait_until(lambda: converged(topology, recorder), message="view converged after link up")
    believed = recorder.believed()
    assert ("xenbr0", "203.0.113.5/24") in believed.addresses  # v4 address survives down/up
    assert not believed.routes                                   # defaults are gone for good


def test_overflow_is_followed_by_resync_and_no_fd_leak(topology):
    """10,000 route changes into a tiny buffer: ENOBUFS, a new KernelResynced, the true view, no fd leak."""
    fds_before = len(os.listdir("/proc/self/fd"))
    recorder = Recorder(topology.dom0)
    recorder.gate = threading.Event()  # hold the watcher inside its first post: nobody reads
    watcher = NetlinkWatcher(netns=topology.dom0, rcvbuf=4096)
    watcher.start(recorder)
    try:
        wait_until(lambda: recorder.of(KernelResynced), message="first KernelResynced")
        lines = ["route replace default via 203.0.113.%d dev xenbr0" % (1 + i % 2)
                 for i in range(10000)]
        topology.ip("dom0", batch=lines)
        recorder.gate.set()
        recorder.gate = None
        wait_until(lambda: len(recorder.of(KernelResynced)) >= 2, timeout=20,
                   message="a second KernelResynced after the overflow")
        wait_until(lambda: converged(topology, recorder), timeout=20,
                   message="events adding up to the kernel state after the overflow")
        assert recorder.believed().routes == {(4, "203.0.113.2", "xenbr0")}
        assert watcher.resyncs >= 2
    finally:
        if recorder.gate is not None:
            recorder.gate.set()
        watcher.stop()
        recorder.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_stop_ends_the_thread(topology):
    """stop() wakes the idle thread at once and joins it: no thread left, no fd left."""
    fds_before = len(os.listdir("/proc/self/fd"))
    recorder = Recorder(topology.dom0)
    watcher = NetlinkWatcher(netns=topology.dom0)
    watcher.start(recorder)
    wait_until(lambda: recorder.of(KernelResynced), message="first KernelResynced")
    watcher.stop()
    assert not any(t.name == "netlink-watcher" for t in threading.enumerate())
    assert len(os.listdir("/proc/self/fd")) == fds_before
    watcher.stop()  # a second stop is harmless


# x86_64 syscall numbers: select, pselect6, poll, ppoll; the timeout argument index of each.
_WAITS = {"23": 4, "270": 4, "7": 2, "271": 2}


def _blocked_without_timeout(tid):
    """True when thread ``tid`` sleeps in select/poll with no timeout (a NULL pointer or -1)."""
    with open("/proc/self/task/%d/syscall" % tid) as f:
        fields = f.read().split()
    if not fields or fields[0] not in _WAITS:
        return False
    timeout = int(fields[1 + _WAITS[fields[0]]], 16)
    if fields[0] == "7":  # poll: an int, -1 means forever
        return timeout in (0xffffffff, 0xffffffffffffffff)
    return timeout == 0     # a NULL timeout pointer


@pytest.mark.skipif(platform.machine() != "x86_64", reason="reads x86_64 syscall numbers from /proc")
def test_idle_watcher_waits_without_a_timer(topology, watched):
    """Idle, the watcher thread sleeps in select() with no timeout: it polls nothing on a timer."""
    _, recorder = watched
    assert len(recorder.tids) == 1
    tid = next(iter(recorder.tids))
    wait_until(lambda: _blocked_without_timeout(tid), timeout=20,
               message="watcher blocked in select/poll with no timeout")
