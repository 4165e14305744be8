"""The lab's storage server: real TCP listeners for NFS (2049), the portmapper (111), SMB (445)
and iSCSI (3260) inside the lan namespace, which can come up later than the network does.

A NAS answers ping as soon as its network is up, while its nfsd may start tens of seconds
later; PBD.plug (SM) and the agent's probe connect to the service port, so the lab needs real
listeners to tell the two apart (docs/xapi-fidelity.md, "Agent-side behaviours"). They run in
a child process inside the namespace (``ip netns exec``): each port listens on the dual-stack
wildcard address, accepts and closes at once, and sends nothing. ``start(delay)`` brings them
up ``delay`` seconds from now (the "NFS up 30 s after ping" scenario); ``stop()`` takes them
down (connections are then refused: host up, service down). Python 3.6 compatible.
"""

import os
import select
import subprocess
import sys
import threading
import time

PORTS = (2049, 111, 445, 3260)
READY_TIMEOUT = 10.0

# Runs inside the namespace: listen on every port given, print "ready", serve until stdin closes.
_SERVER = r"""
import os, select, socket, sys
socks = []
for port in [int(p) for p in sys.argv[1:]]:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr = ("::", port)
    except OSError:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        addr = ("0.0.0.0", port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.listen(64)
    socks.append(s)
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    readable = select.select(socks + [sys.stdin], [], [])[0]
    if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
        break
    for s in readable:
        if s is not sys.stdin:
            try:
                conn, _ = s.accept()
                conn.close()
            except OSError:
                pass
"""


class StorageServices(object):
    """The storage service ports of the lab's storage server, in namespace ``netns``."""

    def __init__(self, netns, ports=PORTS):
        self.netns = netns
        self.ports = tuple(ports)
        self._proc = None
        self._timer = None
        self._lock = threading.Lock()
        self.up_at = None     # time.time() when the listeners last came up

    @property
    def up(self):
        """True while the listeners run."""
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def start(self, delay=0.0):
        """Bring the listeners up now, or ``delay`` seconds from now (in a timer thread)."""
        self.cancel()
        if delay <= 0:
            self._start_now()
            return
        timer = threading.Timer(delay, self._start_now)
        timer.daemon = True
        with self._lock:
            self._timer = timer
        timer.start()

    def cancel(self):
        """Forget a delayed start that has not happened yet."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _start_now(self):
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            argv = ["ip", "netns", "exec", self.netns, sys.executable, "-c", _SERVER]
            argv += [str(p) for p in self.ports]
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + READY_TIMEOUT
            line = b""
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                    break
                chunk = os.read(proc.stdout.fileno(), 64)
                if not chunk:
                    break
                line += chunk
            if line.strip() != b"ready":
                _end(proc)
                raise RuntimeError("the lab's storage listeners (ports %s) did not start in %s"
                                   % (", ".join(map(str, self.ports)), self.netns))
            self._proc = proc
            self.up_at = time.time()

    def stop(self):
        """Take the listeners down (and forget a delayed start)."""
        self.cancel()
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            _end(proc)


def _end(proc):
    """Close the child's stdin (it exits), then make sure it is gone."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(2.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()
