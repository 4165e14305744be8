"""Prober: one echo (or TCP connect) per target, all targets at once, one ProbeDone per round.

A target ``host:port`` (``[v6]:port``) is a TCP connect to a storage service
(agent/adapters/tcp_probe.py; the ports come from agent/decision/sm_targets.py); any other target is an
ICMP echo, a host name being resolved when the round runs.

Why the low-level icmplib API (ICMPv4Socket / ICMPv6Socket + ICMPRequest) and not ``ping()``:
``ping()`` swallows every per-probe error and only says ``is_alive=False``; the socket API lets a
Destination Unreachable end the probe at once and tells us why (docs/kernel-behaviour.md §9). Raw sockets
(``privileged=True``) are needed for that: DGRAM ping sockets never see the ICMP error, and
``ping_group_range`` is ``1 0`` by default anyway (docs/kernel-behaviour.md §9).

Works with icmplib 2.1.1 (Python 3.6, no asyncio API) and 3.0.4: only ICMPv4Socket, ICMPv6Socket,
ICMPRequest, ``send``/``receive``/``close`` and the exception classes are used, which both share.
Threads, not asyncio: one short-lived thread per round, and one per target inside it.
icmplib is imported lazily so that importing this module costs nothing without it.
"""

import errno
import ipaddress
import logging
import random
import threading
import time

import attr

from agent.adapters.tcp_probe import REFUSED, UNRESOLVED, connect_target, resolve_first  # noqa: F401
from agent.decision.events import ProbeDone
from agent.ports import Prober
from agent.decision.sm_targets import is_address, split_target

log = logging.getLogger(__name__)

# Why a target did not answer (``Outcome.reason``; ``IcmpProber.last_reasons``).
TIMEOUT = "timeout"            # nothing came back before the deadline (silent host or filtered)
UNREACHABLE = "unreachable"    # a router (or the target) answered ICMP Destination Unreachable
NO_ROUTE = "no route"          # our own kernel refused to send: no route, unreachable/blackhole route
PROHIBITED = "prohibited"      # our own kernel refused to send: prohibit route or local firewall
TTL_EXCEEDED = "ttl exceeded"  # ICMP Time Exceeded: a routing loop on the way
PERMISSION = "permission"      # the raw socket could not be opened (not root / no CAP_NET_RAW)
ERROR = "error"                # anything else (bad target text, parameter problem, socket error)
# and, from agent/adapters/tcp_probe.py: REFUSED (host up, service not), UNRESOLVED (bad name)
_REASONS = {"timeout": TIMEOUT, "no route": NO_ROUTE, "prohibited": PROHIBITED, "error": ERROR}

# Receive in short slices: icmplib's receive() applies the socket timeout to each recvfrom and
# checks its own limit with wall-clock time(), so under unrelated ICMP traffic (every raw socket
# sees all of it) or a clock step at boot a single call could overrun; slices keep the probe
# bounded by our monotonic deadline (at most one slice late).
_RECEIVE_SLICE = 0.25

# A round thread that outlives its deadline by this much is reported as an error (it cannot
# happen unless a socket call ignores its timeout); close() waits this long past the deadlines.
_SLACK = 1.0

# ICMP types (RFC 792, RFC 4443) that end a probe; any other matching type (a redirect, an
# obsolete source quench) is ignored and the probe keeps waiting.
_ECHO_REPLY = {4: 0, 6: 129}
_DEST_UNREACHABLE = {4: 3, 6: 1}
_TIME_EXCEEDED = {4: 11, 6: 3}
_OTHER_ERRORS = {4: {12: "parameter problem"}, 6: {2: "packet too big", 4: "parameter problem"}}

# sendto() errno -> reason, measured on Linux 6.x raw sockets (v4 and v6 alike): no route at all
# ENETUNREACH, an ``unreachable`` route EHOSTUNREACH, a ``blackhole`` route EINVAL, a
# ``prohibit`` route EACCES (icmplib turns PermissionError into SocketBroadcastError).
_SEND_ERRNO_REASONS = {
    errno.ENETUNREACH: NO_ROUTE,
    errno.EHOSTUNREACH: NO_ROUTE,
    errno.EINVAL: NO_ROUTE,
    errno.EACCES: PROHIBITED,
    errno.EPERM: PROHIBITED,
}


@attr.s(frozen=True, slots=True)
class Outcome(object):
    """What one echo to one target came to: answered, or the reason (and a detail) why not."""

    target = attr.ib()
    answered = attr.ib()
    reason = attr.ib(default=None)
    detail = attr.ib(default="")
    rtt_ms = attr.ib(default=None)


class IcmpIds(object):
    """Hands out ICMP echo identifiers unique among the probes in flight in this process.

    A raw ICMP socket receives every ICMP packet the host gets, so each probe tells its reply
    apart by (id, sequence); two probes in flight must never share an id.
    """

    def __init__(self, rng=None):
        self._lock = threading.Lock()
        self._in_use = set()
        self._next = (rng or random.SystemRandom()).randrange(1, 0x10000)

    def acquire(self):
        """Reserve and return an id in 1..65535 that no probe in flight holds."""
        with self._lock:
            for _ in range(0xFFFF):
                candidate = self._next
                self._next = candidate % 0xFFFF + 1
                if candidate not in self._in_use:
                    self._in_use.add(candidate)
                    return candidate
        raise RuntimeError("all 65535 ICMP echo ids are in use by probes in flight; "
                           "probe fewer targets at once")

    def release(self, ident):
        """Give an id back once its probe has finished."""
        with self._lock:
            self._in_use.discard(ident)

    def in_use(self):
        """How many ids are reserved now."""
        with self._lock:
            return len(self._in_use)


# One allocator per process: ids must differ across prober instances too.
_IDS = IcmpIds()
_SEQUENCES = random.SystemRandom()


def _parse_target(text):
    """The ipaddress object of ``text`` without any ``%scope`` suffix; raises ValueError."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def _same_host(source, address):
    """True when the reply's source text is ``address`` (a v6 ``%scope`` suffix is ignored)."""
    try:
        return _parse_target(source) == address
    except ValueError:
        return False


def _send_failure(target, exc):
    """The Outcome for an ICMPSocketError raised by send(): our own kernel refused the packet."""
    # icmplib raises ICMPSocketError(str(err)) inside ``except OSError as err``, so the original
    # OSError (with its errno) is the exception's __context__ on both 2.1.1 and 3.0.4.
    cause = exc.__context__
    code = getattr(cause, "errno", None)
    reason = _SEND_ERRNO_REASONS.get(code, ERROR)
    return Outcome(target, False, reason, "send failed: %s" % (cause or exc))


def _classify(target, address, reply, request):
    """The Outcome a matching reply settles, or None when the probe should keep waiting."""
    version = address.version
    if reply.type == _ECHO_REPLY[version]:
        if not _same_host(reply.source, address):
            return None  # our id from another host: not our answer
        rtt_ms = max(0.0, (reply.time - request.time) * 1000.0)
        return Outcome(target, True, None, "", round(rtt_ms, 3))
    if reply.type == _DEST_UNREACHABLE[version]:
        return Outcome(target, False, UNREACHABLE, "destination unreachable (code %d) from %s"
                       % (reply.code, reply.source))
    if reply.type == _TIME_EXCEEDED[version]:
        return Outcome(target, False, TTL_EXCEEDED, "time exceeded (code %d) from %s"
                       % (reply.code, reply.source))
    name = _OTHER_ERRORS[version].get(reply.type)
    if name:
        return Outcome(target, False, ERROR, "%s (code %d) from %s" % (name, reply.code, reply.source))
    return None


def echo_target(target, timeout, privileged=True):
    """Send one ICMP echo to ``target`` (text) and wait up to ``timeout`` seconds: an Outcome.

    Never raises for network conditions: no answer, ICMP errors, send failures and socket
    setup failures all come back as an Outcome with a reason.
    """
    from icmplib import ICMPRequest, ICMPv4Socket, ICMPv6Socket
    from icmplib.exceptions import (ICMPLibError, ICMPSocketError, SocketBroadcastError,
                                    SocketPermissionError, TimeoutExceeded)

    try:
        address = _parse_target(target)
    except ValueError:
        return Outcome(target, False, ERROR, "not an IP address: %r" % (target,))
    socket_class = ICMPv4Socket if address.version == 4 else ICMPv6Socket
    try:
        sock = socket_class(privileged=privileged)
    except SocketPermissionError as exc:
        return Outcome(target, False, PERMISSION, str(exc) or "permission denied")
    except ICMPLibError as exc:
        return Outcome(target, False, ERROR, "cannot open an ICMPv%d socket: %s"
                       % (address.version, exc))
    try:
        ident = _IDS.acquire()
    except RuntimeError as exc:
        sock.close()
        return Outcome(target, False, ERROR, str(exc))
    try:
        request = ICMPRequest(destination=target, id=ident,
                              sequence=_SEQUENCES.randrange(0, 0x10000))
        deadline = time.monotonic() + timeout
        try:
            sock.send(request)
        except SocketBroadcastError as exc:
            # sendto() got EACCES: a prohibit route, or a broadcast target (measured, see above).
            return Outcome(target, False, PROHIBITED, "send refused: %s" % (exc.__context__ or exc))
        except ICMPSocketError as exc:
            return _send_failure(target, exc)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Outcome(target, False, TIMEOUT, "no answer within %gs" % timeout)
            try:
                reply = sock.receive(request, min(remaining, _RECEIVE_SLICE))
            except TimeoutExceeded:
                continue
            except ICMPSocketError as exc:
                return Outcome(target, False, ERROR, "receive failed: %s" % exc)
            outcome = _classify(target, address, reply, request)
            if outcome is not None:
                return outcome
    finally:
        sock.close()
        _IDS.release(ident)


def probe_target(text, timeout, privileged=True):
    """One target: a TCP connect for ``host:port``, else an ICMP echo (a name resolved first)."""
    host, port = split_target(text)
    if port is not None:
        return connect_target(text, host, port, timeout, Outcome, _REASONS)
    if not is_address(host):
        address = resolve_first(host)
        if address is None:
            return Outcome(text, False, UNRESOLVED, "cannot resolve %s" % host)
        return attr.evolve(echo_target(address, timeout, privileged), target=text)
    return echo_target(text, timeout, privileged)


def _target_texts(targets):
    """Targets (ipaddress objects or text) as unique text, in the given order."""
    texts = []
    for target in targets:
        text = str(target)
        if text not in texts:
            texts.append(text)
    return texts


def probe_round(targets, timeout, privileged=True):
    """Echo every target concurrently (one thread each) and wait: {target_text: Outcome}."""
    texts = _target_texts(targets)
    outcomes = {}
    threads = []

    def run(text):
        try:
            outcomes[text] = probe_target(text, timeout, privileged)
        except Exception as exc:  # a bug, not a network condition: say so, keep the round going
            log.exception("probing %s failed unexpectedly", text)
            outcomes[text] = Outcome(text, False, ERROR, "unexpected error: %r" % (exc,))

    for text in texts:
        thread = threading.Thread(target=run, args=(text,), name="sspn-probe %s" % text)
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": out of threads or memory
            outcomes[text] = Outcome(text, False, ERROR, "cannot start a probe thread: %s" % exc)
            continue
        threads.append(thread)
    deadline = time.monotonic() + timeout + _SLACK
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    result = {}
    for text in texts:
        outcome = outcomes.get(text)
        if outcome is None:
            outcome = Outcome(text, False, ERROR, "probe thread did not finish in time")
        result[text] = outcome
    return result


class IcmpProber(Prober):
    """The real Prober: ICMP echo on raw sockets, posting ProbeDone(key, {target: answered}).

    ``last_reasons(key)`` and ``last_outcomes(key)`` tell why targets of the latest finished
    round for ``key`` did not answer; they are recorded before the ProbeDone is posted, so the
    decision thread can read them when it handles that event.
    """

    def __init__(self, post, privileged=True):
        self._post = post
        self._privileged = privileged
        self._lock = threading.Lock()
        self._closed = False
        self._rounds = {}        # thread -> monotonic deadline of its round
        self._outcomes = {}      # key -> {target_text: Outcome} of the latest finished round
        self._permission_logged = False

    def probe(self, key, targets, timeout):
        """Start a round for ``key`` in its own thread and return at once; see Prober.probe."""
        if not timeout > 0:
            raise ValueError("probe timeout must be a positive number of seconds, got %r" % (timeout,))
        texts = _target_texts(targets)
        with self._lock:
            if self._closed:
                log.debug("probe %s requested after close, ignoring", key)
                return
            thread = threading.Thread(target=self._run_round, args=(key, texts, timeout),
                                      name="sspn-probe-round %s" % (key,))
            thread.daemon = True
            self._rounds[thread] = time.monotonic() + timeout + _SLACK
            try:
                thread.start()
                return
            except RuntimeError as exc:
                del self._rounds[thread]
                failure = exc
        # Could not start the round thread: still answer, so the machine is not left waiting.
        log.error("cannot start a probe thread for %s (%s); reporting its targets as silent",
                  key, failure)
        outcomes = dict((t, Outcome(t, False, ERROR, "cannot start a probe thread")) for t in texts)
        self._finish(key, outcomes)

    def probe_once(self, targets, timeout):
        """Probe ``targets`` and block until done (for ``agent check``, benches): {target: answered}."""
        return dict((t, o.answered) for t, o in self.outcomes_once(targets, timeout).items())

    def outcomes_once(self, targets, timeout):
        """Like probe_once, but {target_text: Outcome} with the reason of every failure."""
        outcomes = probe_round(targets, timeout, self._privileged)
        self._log_permission(outcomes)
        return outcomes

    def last_reasons(self, key):
        """{target_text: reason} for targets that did not answer in ``key``'s latest round."""
        with self._lock:
            outcomes = self._outcomes.get(key, {})
            return dict((t, o.reason) for t, o in outcomes.items() if not o.answered)

    def last_outcomes(self, key):
        """{target_text: Outcome} of ``key``'s latest finished round ({} when none finished)."""
        with self._lock:
            return dict(self._outcomes.get(key, {}))

    def running(self):
        """How many rounds are in flight."""
        with self._lock:
            return len(self._rounds)

    def close(self, timeout=None):
        """Refuse new probes and wait for running rounds; True when all of them finished.

        Each round ends by its own deadline, so by default this waits until the latest one
        (plus a little slack); ``timeout`` bounds the wait further.
        """
        with self._lock:
            self._closed = True
            rounds = dict(self._rounds)
        now = time.monotonic()
        deadline = max(list(rounds.values()) + [now])
        if timeout is not None:
            deadline = min(deadline, now + timeout)
        for thread in rounds:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [t.name for t in rounds if t.is_alive()]
        if left:
            log.warning("probe rounds still running at close: %s, leaving them", ", ".join(left))
        return not left

    def _run_round(self, key, texts, timeout):
        """Thread body: probe, record the outcomes, post ProbeDone."""
        try:
            outcomes = probe_round(texts, timeout, self._privileged)
            self._log_permission(outcomes)
            self._finish(key, outcomes)
        except Exception:  # a bug: never let the thread die silently
            log.exception("probe round %s failed", key)
        finally:
            with self._lock:
                self._rounds.pop(threading.current_thread(), None)

    def _finish(self, key, outcomes):
        """Record the round's outcomes, then post its ProbeDone."""
        with self._lock:
            self._outcomes[key] = outcomes
        for text, outcome in sorted(outcomes.items()):
            if not outcome.answered:
                log.debug("probe %s: %s did not answer: %s (%s)", key, text, outcome.reason,
                          outcome.detail)
        try:
            self._post(ProbeDone(key, dict((t, o.answered) for t, o in outcomes.items()),
                                 [t for t, o in outcomes.items() if o.reason == REFUSED]))
        except Exception:
            log.exception("posting ProbeDone for %s failed, ignoring", key)

    def _log_permission(self, outcomes):
        """Log the first raw-socket permission failure of this prober, once."""
        denied = [o for o in outcomes.values() if o.reason == PERMISSION]
        if not denied:
            return
        with self._lock:
            if self._permission_logged:
                return
            self._permission_logged = True
        log.error("cannot open a raw ICMP socket (%s): run the agent as root or give it "
                  "CAP_NET_RAW; until then every probe target counts as not answering",
                  denied[0].detail)
