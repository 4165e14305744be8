"""HTTP/1.1 XML-RPC listeners on a Unix socket and on 127.0.0.1, with a simulated outage.

Threaded, keep-alive, POST to ``/`` or ``/RPC2`` (datamodel.ml ``post_root``, ``post_RPC2``).
Traps avoided: no ``TCP_NODELAY`` on AF_UNIX (``setsockopt`` fails with EOPNOTSUPP) and no
request logging that assumes ``client_address`` is a tuple (it is ``''`` on AF_UNIX).

``stop()`` models xapi exiting: the listening sockets close but the socket *file* stays, so new
connections get ``ConnectionRefusedError`` (xapi.ml ``listen_unix_socket`` unlinks only at
start); idle kept-alive connections are shut down and busy ones close right after their reply.
"""

import http.server
import logging
import os
import socket
import socketserver
import sys
import threading

from .errors import Disconnect

LOG = logging.getLogger(__name__)
MAX_UNIX_PATH = 107   # sun_path is 108 bytes including the NUL


def check_socket_path(path):
    """Raise ValueError unless ``path`` can be reached by XenAPI's UDSTransport."""
    if "_" in path:
        raise ValueError(
            "XAPI simulator socket path %r contains '_': XenAPI's UDSHTTPConnection turns every "
            "'_' of the URL host into '/', so clients could not reach it; choose a path without "
            "'_', e.g. /tmp/sspn-lab/xapi" % path)
    if ":" in path:
        raise ValueError("XAPI simulator socket path %r contains ':', which the HTTP client "
                         "would read as a port; choose a path without ':'" % path)
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise ValueError("XAPI simulator socket path %r is longer than %d bytes, the AF_UNIX "
                         "limit; choose a shorter path" % (path, MAX_UNIX_PATH))


class _Handler(http.server.BaseHTTPRequestHandler):
    """One client connection: HTTP/1.1 keep-alive requests carrying XML-RPC calls."""

    protocol_version = "HTTP/1.1"
    server_version = "xapi"
    sys_version = ""
    disable_nagle_algorithm = False   # TCP_NODELAY fails with EOPNOTSUPP on AF_UNIX

    def setup(self):
        """Register the connection with the frontend (for outages)."""
        http.server.BaseHTTPRequestHandler.setup(self)
        self.busy = False
        self.epoch = self.server.frontend.register(self)

    def finish(self):
        """Unregister and close, tolerating a socket an outage already shut."""
        self.server.frontend.unregister(self)
        try:
            http.server.BaseHTTPRequestHandler.finish(self)
        except OSError:
            pass   # the peer or an outage already closed the socket

    def log_message(self, fmt, *args):
        """Log requests at debug level (client_address is '' on AF_UNIX)."""
        LOG.debug("xapi simulator %s: " + fmt, self.server.transport, *args)

    def address_string(self):
        """The peer for log lines: its IP, or "unix"."""
        return self.client_address[0] if isinstance(self.client_address, tuple) else "unix"

    def do_GET(self):
        """XML-RPC is POST only."""
        self.send_error(405, "XML-RPC needs POST")

    def do_POST(self):
        """Answer one XML-RPC call with status 200 and xapi's headers, then run after-actions."""
        if self.path.split("?")[0] not in ("/", "/RPC2"):
            self.send_error(404, "only / and /RPC2 serve XML-RPC here")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        frontend = self.server.frontend
        self.busy = True
        try:
            payload, after = frontend.handle(body, self.server.transport)
        except Disconnect:
            # xapi went away mid-call: the client sees the connection drop, no reply.
            self.busy = False
            self.close_connection = True
            self._shutdown()
            return
        except BaseException:
            self.busy = False
            raise
        try:
            # still busy while the reply goes out: stop() must not cut it after its headers
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "X-Requested-With")
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        finally:
            self.busy = False
        if frontend.epoch != self.epoch or not frontend.up:
            self.close_connection = True
        for action in after:
            action()

    def _shutdown(self):
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _QuietErrors(object):
    """A client hanging up mid-reply (a toolstack restart, a stopped agent) is normal here."""

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            return
        socketserver.BaseServer.handle_error(self, request, client_address)


class _UnixServer(_QuietErrors, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    transport = "unix"

    def server_bind(self):
        """Unlink a stale socket file, then bind."""
        # xapi unlinks a stale socket file at start-up, then binds (xapi.ml listen_unix_socket).
        try:
            os.unlink(self.server_address)
        except OSError:
            pass
        socketserver.UnixStreamServer.server_bind(self)


class _TcpServer(_QuietErrors, socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    transport = "tcp"


class Frontend(object):
    """The listeners of one simulator; ``handle(body, transport)`` returns (bytes, after list)."""

    def __init__(self, socket_path, port, handle):
        check_socket_path(socket_path)
        self.socket_path = socket_path
        self.port = port              # None: no TCP listener; 0: pick a free port at first start
        self.handle = handle
        self.up = False
        self.epoch = 0
        self.accepted = 0             # connections accepted so far (keep-alive reuses one)
        self._servers = []
        self._lock = threading.Lock()
        self._connections = set()

    def register(self, handler):
        """Track a new connection; returns the listener epoch it belongs to."""
        with self._lock:
            self._connections.add(handler)
            self.accepted += 1
            return self.epoch

    def unregister(self, handler):
        """Forget a finished connection."""
        with self._lock:
            self._connections.discard(handler)

    def start(self):
        """Bind and serve (the Unix socket, and TCP if a port was given)."""
        with self._lock:
            if self.up:
                return
            # Like xapi's listen_unix_socket: create the socket's directory (0700) if absent.
            directory = os.path.dirname(os.path.abspath(self.socket_path))
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o700)
            servers = [_UnixServer(self.socket_path, _Handler)]
            if self.port is not None:
                servers.append(_TcpServer(("127.0.0.1", self.port), _Handler))
                self.port = servers[-1].server_address[1]
            self.epoch += 1
            for server in servers:
                server.frontend = self
                # A short poll keeps stop() (and a simulated restart) quick.
                thread = threading.Thread(target=server.serve_forever, args=(0.01,),
                                          name="xapi-sim-%s" % server.transport)
                thread.daemon = True
                thread.start()
            self._servers = servers
            self.up = True

    def stop(self, remove_socket=False):
        """Close the listeners (the socket file stays unless asked) and drop idle connections."""
        with self._lock:
            servers, self._servers = self._servers, []
            self.up = False
            self.epoch += 1
            connections = list(self._connections)
        stoppers = [threading.Thread(target=server.shutdown) for server in servers]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        for server in servers:
            server.server_close()
        for handler in connections:
            if not handler.busy:
                handler._shutdown()   # a busy one closes after writing its reply
        if remove_socket:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
