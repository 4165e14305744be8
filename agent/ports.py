"""Ports: the small interfaces through which the decision thread touches the world.

Real adapters (agent/adapters/) wrap XenAPI, rtnetlink and icmplib; the in-memory adapters
(agent/adapters/memory.py) serve the unit and property tests and the lab without root.
Nothing here imports an I/O library. Python 3.6: abc.ABC, no typing generics needed.

Asynchronous ports (Xapi, Prober) never block the decision thread: they take a request and
later ``post`` an event (ActionDone, ProbeDone, XapiConnected, ...) onto the one queue.
The Net port is synchronous: netlink requests take well under a millisecond, and the
machine verifies every change by reading it back.
"""

import abc


class NetError(Exception):
    """A kernel request failed; ``code`` is the errno (or None) and the text says what was asked."""

    def __init__(self, message, code=None):
        Exception.__init__(self, message)
        self.code = code


class Net(abc.ABC):
    """Addresses and default routes in the kernel, idempotent, verified by reading back."""

    @abc.abstractmethod
    def link_exists(self, ifname):
        """True when the interface exists."""

    @abc.abstractmethod
    def ensure_address(self, ifname, interface):
        """Make ``interface`` (ipaddress.IPv4Interface / IPv6Interface) present on ``ifname``.

        IPv6 addresses are added with nodad so they are usable at once. Returns "added" or
        "present"; raises NetError when the kernel refuses or the read-back does not show it.
        Never removes anything.
        """

    @abc.abstractmethod
    def ensure_default_route(self, gateway, ifname):
        """Make the main-table default route of the gateway's family go via ``gateway`` on ``ifname``.

        ``gateway`` is an ipaddress.IPv4Address / IPv6Address (link-local v6 works because the
        output interface is given). Returns "replaced" or "present"; raises NetError.
        """

    @abc.abstractmethod
    def read_view(self):
        """A KernelView of every link, address and main-table default route."""

    def close(self):
        """Release sockets; leaves every address and route in place."""


class NetWatcher(abc.ABC):
    """Netlink watcher: its own thread; subscribes first, then posts KernelResynced(view), then
    one KernelNotified hint per batch of changes (the decision thread re-reads on a hint)."""

    @abc.abstractmethod
    def start(self, post):
        """Begin watching; ``post(event)`` receives KernelResynced and KernelNotified events."""

    @abc.abstractmethod
    def stop(self):
        """Stop the thread and close its socket."""


# The first word of an ActionDone error for an action the Xapi port did not send (XAPI known
# down, or the call before it lost the connection): no failure of the action itself.
UNSENT = "XAPI unreachable"


class Xapi(abc.ABC):
    """XAPI, asynchronously: a watcher that posts world events, and a worker that runs actions."""

    @abc.abstractmethod
    def start(self, post):
        """Connect (retrying with backoff), resolve the config's labels, subscribe, and post
        XapiConnected / XapiLost / HostChanged / VmChanged / PbdChanged events."""

    @abc.abstractmethod
    def request(self, action):
        """Queue an action (agent.decision.world.EnableHost, StartVm, PlugPbd, ...); its ActionDone is posted."""

    @abc.abstractmethod
    def stop(self):
        """Stop the threads and log out."""


class Prober(abc.ABC):
    """ICMP echo to several targets at once, off the decision thread."""

    @abc.abstractmethod
    def probe(self, key, targets, timeout):
        """Probe every target in ``targets`` (ipaddress objects) concurrently, then post
        ProbeDone(key, {target_text: answered}). Returns at once."""

    def close(self):
        """Stop any probe threads."""


class Clock(abc.ABC):
    """Time, injectable so tests step it instead of sleeping."""

    @abc.abstractmethod
    def monotonic(self):
        """Seconds from an arbitrary origin, never going back."""

    @abc.abstractmethod
    def wall(self):
        """Seconds since the epoch, for status and trace time stamps."""


class Report(abc.ABC):
    """Where the machine says what it did: status file, trace, journal, XAPI, systemd."""

    @abc.abstractmethod
    def transition(self, record):
        """A transition happened: ``record`` is a dict (time, from, to, trigger, cause, effects)."""

    @abc.abstractmethod
    def status(self, snapshot):
        """The current status dict changed; persist or publish it."""

    def effect(self, record):
        """An effect ran outside a transition (a retry, a repair): dict with what and result."""

    def close(self):
        """Flush and release files."""
