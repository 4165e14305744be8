"""What the agent tells others: sd_notify(3) datagrams to systemd, and its XAPI messages' words.

The XAPI messages (message.create on this host, README "Reading the agent") are what Xen
Orchestra lists in the host's Logs tab and XCP-ng Center in its alerts: one when the agent
enters DEGRADED, one when it is HEALTHY again after that.
"""

import os
import socket

from agent.decision.world import RaiseMessage

DEGRADED = "SSPN_AGENT_DEGRADED"
RECOVERED = "SSPN_AGENT_RECOVERED"
# message.create priorities as xen-api's ocaml/xapi-consts/api_messages.ml defines them:
# 2 "service-loss imminent" (dom0 may be unreachable), 4 "service recovered".
DEGRADED_PRIORITY, RECOVERED_PRIORITY = 2, 4


def _host_name(host):
    return host.name_label or host.uuid or "this host"


def degraded_message(host, reasons):
    """The SSPN_AGENT_DEGRADED message for ``host`` (a HostView) with the reasons' text."""
    body = ("sspn-agent is DEGRADED on %s: %s. It keeps retrying; run `agent status` on the "
            "host for details." % (_host_name(host), reasons or "no reason recorded"))
    return RaiseMessage(DEGRADED, body, priority=DEGRADED_PRIORITY, host_uuid=host.uuid)


def recovered_message(host, reasons):
    """The SSPN_AGENT_RECOVERED message: HEALTHY again after the DEGRADED one (its reasons)."""
    body = ("sspn-agent is HEALTHY again on %s (it was DEGRADED: %s)."
            % (_host_name(host), reasons or "no reason recorded"))
    return RaiseMessage(RECOVERED, body, priority=RECOVERED_PRIORITY, host_uuid=host.uuid)


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
