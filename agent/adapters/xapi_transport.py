"""XML-RPC transports with a timeout on every call, and one XAPI session per thread on top of them.

Why custom transports: the XenAPI client has no timeout at all and is not thread-safe
(docs/xapi-behaviour.md §1): one ``Session`` is one ``xmlrpc.client.Transport`` holding one kept-alive
connection. Each ``XapiConnection`` therefore owns its session and transport and is used by one
thread only; the only cross-thread call is ``abort()``, which shuts the socket down so that a
thread blocked in ``event.from`` returns at once when the agent stops.

Transport errors are not wrapped by XenAPI (``ConnectionRefusedError``, ``FileNotFoundError``,
``socket.timeout``; docs/xapi-behaviour.md §4); ``describe_error`` turns them, XenAPI failures and the
client's own odd exceptions into one short line.

XenAPI is imported lazily (inside ``XapiConnection``) so importing this module costs nothing.
Python 3.6 compatible.
"""

import errno
import http.client
import socket
import xmlrpc.client

# Local login over the Unix socket: xapi pre-authenticates root on this socket and ignores the
# user name and the password (docs/xapi-behaviour.md §2), as dom0's own scripts do.
LOCAL_USER = "root"
ORIGINATOR = "sspn-agent"
API_VERSION = "1.0"


class TransportClosed(OSError):
    """The connection was aborted on purpose (the agent is stopping)."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix stream socket, with a timeout on connect and on every read."""

    def __init__(self, host, path, timeout):
        http.client.HTTPConnection.__init__(self, host, timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except Exception:
            sock.close()
            raise
        self.sock = sock


class _TimeoutMixin(object):
    """Shared by the transports: a settable per-call timeout, and an abort switch."""

    timeout = 10.0
    _closed = False

    def _apply_timeout(self, conn):
        # HTTPConnection uses .timeout only when it connects; a kept-alive socket keeps the
        # timeout it was created with, so set it on the live socket too (the next call may be
        # event.from with a longer timeout).
        conn.timeout = self.timeout
        if conn.sock is not None:
            conn.sock.settimeout(self.timeout)
        return conn

    def _check_open(self):
        if self._closed:
            raise TransportClosed(errno.ESHUTDOWN, "XAPI connection closed: the agent is stopping")

    def abort(self):
        """Close the connection from another thread; later calls fail with TransportClosed."""
        self._closed = True
        conn = getattr(self, "_connection", (None, None))[1]
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class UnixTimeoutTransport(_TimeoutMixin, xmlrpc.client.Transport):
    """XML-RPC over a Unix socket (like XenAPI.UDSTransport), with a timeout.

    The socket path is kept as given instead of being decoded from the URL host the way
    ``UDSHTTPConnection`` does (``_`` -> ``/``, docs/xapi-behaviour.md §1), so a path containing ``_``
    works too; the URL host still carries the xapi_local() form for the ``Host:`` header.
    """

    def __init__(self, path, timeout):
        xmlrpc.client.Transport.__init__(self)
        self.path = path
        self.timeout = timeout

    def make_connection(self, host):
        self._check_open()
        if self._connection and host == self._connection[0]:
            return self._apply_timeout(self._connection[1])
        self._connection = host, _UnixHTTPConnection(host, self.path, self.timeout)
        return self._connection[1]


class HttpTimeoutTransport(_TimeoutMixin, xmlrpc.client.Transport):
    """XML-RPC over TCP (http://) with a timeout."""

    def __init__(self, timeout):
        xmlrpc.client.Transport.__init__(self)
        self.timeout = timeout

    def make_connection(self, host):
        self._check_open()
        return self._apply_timeout(xmlrpc.client.Transport.make_connection(self, host))


class HttpsTimeoutTransport(_TimeoutMixin, xmlrpc.client.SafeTransport):
    """XML-RPC over TLS (https://) with a timeout; certificates are verified by default."""

    def __init__(self, timeout):
        xmlrpc.client.SafeTransport.__init__(self)
        self.timeout = timeout

    def make_connection(self, host):
        self._check_open()
        return self._apply_timeout(xmlrpc.client.SafeTransport.make_connection(self, host))


def endpoint_of(xapi_config):
    """The URL, or the socket path when the URL is empty: what error texts name."""
    return xapi_config.url or xapi_config.socket


def uds_url(path):
    """The XenAPI URL of a Unix socket path, in xapi_local() form ("http://_var_lib_xcp_xapi/")."""
    return "http://" + path.replace("/", "_") + "/"


class XapiConnection(object):
    """One XenAPI session over its own transport, for use by one thread only."""

    def __init__(self, xapi_config, originator=ORIGINATOR):
        self._config = xapi_config
        self._originator = originator
        self.endpoint = endpoint_of(xapi_config)
        self.call_timeout = float(xapi_config.call_timeout)
        self._url = xapi_config.url or uds_url(xapi_config.socket)
        self.transport = self._new_transport(self.call_timeout)
        import XenAPI  # lazily: see the module docstring
        self.session = XenAPI.Session(self._url, transport=self.transport)
        self._seen_handle = None

    def _new_transport(self, timeout):
        if not self._config.url:
            return UnixTimeoutTransport(self._config.socket, timeout)
        if self._config.url.startswith("https:"):
            return HttpsTimeoutTransport(timeout)
        return HttpTimeoutTransport(timeout)

    @property
    def logged_in(self):
        """True once a login succeeded (the client re-logs in by itself after SESSION_INVALID)."""
        return self.session.handle is not None

    def login(self):
        """Log in: local socket without a password, a remote URL with the configured user."""
        self.transport.timeout = self.call_timeout
        if self._config.url:
            user = self._config.username
            password = self._config.read_password()
        else:
            user, password = LOCAL_USER, ""
        self.session.xenapi.login_with_password(user, password, API_VERSION, self._originator)
        self._seen_handle = self.session.handle

    def ensure_login(self):
        """Log in unless a session exists (a kept session survives transport errors)."""
        if not self.logged_in:
            self.login()

    def call(self, method, *args, **kwargs):
        """Call ``Class.method`` ("VM.get_record") with the session prepended; ``timeout=`` s."""
        self.transport.timeout = kwargs.pop("timeout", None) or self.call_timeout
        try:
            target = self.session.xenapi
            for part in method.split("."):
                target = getattr(target, part)
            return target(*args)
        finally:
            self.transport.timeout = self.call_timeout

    def relogged(self):
        """True (once) when the client logged in again behind our back (after SESSION_INVALID)."""
        handle = self.session.handle
        changed = handle != self._seen_handle
        self._seen_handle = handle
        return changed

    def abort(self):
        """From another thread: interrupt a blocked call and refuse new ones."""
        self.transport.abort()

    def logout(self, timeout=1.0):
        """Best-effort logout with a short timeout, on a fresh transport; never raises.

        A fresh transport, because the session's own may have been aborted by stop() (possibly
        right after this thread last looked); xapi forgets idle sessions only after 24 h
        (docs/xapi-behaviour.md §2), so a restarting agent should not leave its sessions behind.
        """
        handle = self.session.handle
        self.transport.close()
        if handle is None:
            return
        transport = self._new_transport(timeout)
        try:
            proxy = xmlrpc.client.ServerProxy(self._url, transport=transport, allow_none=True)
            proxy.session.logout(handle)
        except Exception:  # best effort
            pass
        finally:
            transport.close()


def error_details(exc):
    """The ErrorDescription list of a XenAPI.Failure, or None for any other exception."""
    details = getattr(exc, "details", None)
    if isinstance(details, (list, tuple)) and type(exc).__name__ == "Failure":
        return [str(d) for d in details] or ["UNKNOWN_FAILURE"]
    return None


def is_transport_error(exc):
    """True for errors of the connection itself (refused, missing socket, timeout, reset, HTTP)."""
    return isinstance(exc, (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError))


def describe_error(exc, endpoint):
    """One short human line for an exception raised by a XAPI call (never includes secrets)."""
    details = error_details(exc)
    if details is not None:
        return " ".join(details)
    if isinstance(exc, TransportClosed):
        return "connection closed: the agent is stopping"
    if isinstance(exc, socket.timeout):
        return "no answer within the call timeout: %s" % endpoint
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: %s" % endpoint
    if isinstance(exc, FileNotFoundError):
        return "no socket at %s (is xapi running?)" % endpoint
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        return "connection closed by %s" % endpoint
    if isinstance(exc, xmlrpc.client.ProtocolError):
        return "HTTP %s %s from %s" % (exc.errcode, exc.errmsg, endpoint)
    if isinstance(exc, xmlrpc.client.Fault):
        return "XAPI fault %s: %s" % (exc.faultCode, _short(exc.faultString))
    if isinstance(exc, OSError):
        return "%s: %s" % (exc.strerror or type(exc).__name__, endpoint)
    # XenAPI's _parse_result raises TypeError on a reply that is not a dict (docs/xapi-behaviour.md §1);
    # an XML parse error surfaces as ExpatError. Both mean a malformed reply.
    return "malformed reply from %s (%s: %s)" % (endpoint, type(exc).__name__, _short(str(exc)))


def _short(text, limit=160):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
