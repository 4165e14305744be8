"""sd_notify(3) without libsystemd: READY, STATUS, WATCHDOG and STOPPING datagrams."""

import os
import socket


class Notifier(object):
    """Talks to $NOTIFY_SOCKET when systemd set one; silent no-op otherwise."""

    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET", "")
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = (int(usec) / 1e6 / 2.0) if usec.isdigit() and mine else None

    @property
    def enabled(self):
        return bool(self.address)

    def send(self, *fields):
        """Send ``KEY=value`` fields in one datagram; errors are ignored (best effort)."""
        if not self.address:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode("utf-8"))
            return True
        except OSError:
            return False
        finally:
            sock.close()
