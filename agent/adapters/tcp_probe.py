"""TCP connect probes: does the storage service accept a connection on its port (as SM checks)?

One probe resolves the host *when it runs* (``getaddrinfo``: a name such as nas.lan is a valid
target, and a changed DNS answer is seen at the next round), then connects to each address in
turn until one accepts or the deadline passes; the connection is closed at once, nothing is
sent. Refused means the server is up and the service is not (an nfsd still starting); the
reasons are those of agent/adapters/prober.py plus ``refused`` and ``unresolved``.
Python 3.6 compatible.
"""

import errno
import socket
import time

REFUSED = "refused"          # the host answered with a reset: it is up, the service is not
UNRESOLVED = "unresolved"    # the name did not resolve


def _reason_of(exc, reasons):
    """Outcome reason for a failed connect()."""
    if isinstance(exc, socket.timeout):
        return reasons["timeout"]
    code = getattr(exc, "errno", None)
    if code == errno.ECONNREFUSED:
        return REFUSED
    if code in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL):
        return reasons["no route"]
    if code in (errno.EACCES, errno.EPERM):
        return reasons["prohibited"]
    return reasons["error"]


def connect_target(target, host, port, timeout, outcome, reasons):
    """Connect to ``host``:``port`` within ``timeout`` s: ``outcome(target, answered, reason,
    detail, rtt_ms)`` (the prober's Outcome). Never raises for network conditions."""
    deadline = time.monotonic() + timeout
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        return outcome(target, False, UNRESOLVED, "cannot resolve %s: %s" % (host, exc.strerror))
    except (UnicodeError, OSError) as exc:
        return outcome(target, False, UNRESOLVED, "cannot resolve %r: %s" % (host, exc))
    last = None
    for family, kind, proto, _name, address in infos:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(remaining)
            started = time.monotonic()
            sock.connect(address)
            rtt_ms = (time.monotonic() - started) * 1000.0
            return outcome(target, True, None, "", round(rtt_ms, 3))
        except (OSError, socket.timeout) as exc:
            last = (exc, address[0])
        finally:
            sock.close()
    if last is None:
        return outcome(target, False, reasons["timeout"], "no answer within %gs" % timeout)
    exc, address = last
    reason = _reason_of(exc, reasons)
    if reason == REFUSED:
        detail = "%s is up but nothing listens on port %d" % (address, port)
    elif isinstance(exc, socket.timeout):
        detail = "no answer from %s port %d within %gs" % (address, port, timeout)
    else:
        detail = "connect to %s port %d: %s" % (address, port, exc.strerror or exc)
    return outcome(target, False, reason, detail)


def resolve_first(host):
    """The first address ``host`` resolves to (text), or None; for pinging a name."""
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_RAW)
    except (socket.gaierror, UnicodeError, OSError):
        return None
    for _family, _kind, _proto, _name, address in infos:
        return address[0]
    return None
