"""The order dom0 really has: the firewall's bridge appears down, its VIF is added as a port, and
only later does xcp-networkd bring the bridge up. The agent binds only after IFF_UP.

Real parts: the simulated host (agent/lab/harness.py) with the real agent as its own process in
dom0, the bridges of ``$SSPN_BRIDGE`` (Linux or Open vSwitch), and a netlink socket of this test
in dom0 that records the kernel's own notifications in the order the kernel sent them.
"""

import os
import shutil

import pytest

from agent.adapters import rtnl_msg as msg
from agent.adapters.net import IFF_UP
from agent.adapters.rtnl import WATCH_GROUPS, open_socket
from agent.lab.harness import FIREWALL, Host
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                       reason="needs root and iproute2 `ip` to create network namespaces"),
]

MIRROR = "192.0.2.2/32"     # the harness config's management mirror of 192.0.2.2/24, on xenbr0


def _notifications(sock):
    """Every pending notification, in the kernel's order: ("link", name, index, up) or
    ("addr", None, index, "a/p")."""
    out = []
    while True:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return out
        for kind, _flags, _seq, payload in msg.split(data):
            if kind == msg.RTM_NEWLINK:
                index, flags, name = msg.parse_link(payload)
                out.append(("link", name, index, bool(flags & IFF_UP)))
            elif kind == msg.RTM_NEWADDR:
                index, text = msg.parse_address(payload)
                out.append(("addr", None, index, text))


def _mirror_adds(host):
    """How often the trace records the mirror added (on its own or in a transition)."""
    what = "add %s on xenbr0" % MIRROR
    count = 0
    for record in host.trace():
        effects = record.get("effects", []) + ([record] if "what" in record else [])
        count += sum(1 for e in effects if e.get("what") == what and e.get("result") != "present")
    return count


def test_agent_binds_only_after_the_bridge_comes_up():
    """Bridge down with its VIF as port, VM running: the agent has read the kernel since (it saw
    its mirror address go) and bound nothing; once the bridge is up it binds and ends HEALTHY."""
    with Host(probe=False, bring_up=False) as host:
        topo = host.topology
        sock = open_socket(topo.dom0, 1 << 22, WATCH_GROUPS)
        try:
            sock.setblocking(False)
            host.start_agent()
            host.wait_state("WAITING_VM")
            host.sim.vm_start(FIREWALL)
            st = host.wait(lambda st: st["state"] != "WAITING_VM" or any(
                "running: %s" % FIREWALL in b for b in st.get("blockers", ())), "the agent to see the firewall running")
            assert st["state"] == "WAITING_VM", "left WAITING_VM with the bridge down: %s" % st["transitions"][-1]
            assert topo.ports("xapi0") == ["vif1.0"]
            # A barrier: the notification of this removal comes after those of the bridge and its
            # port. Mirrors are kept in every state (docs/bindings.md), so once the trace shows
            # the mirror added again, the agent has read the kernel with the bridge down in it.
            adds = _mirror_adds(host)
            topo.ip("dom0", "addr", "del", MIRROR, "dev", "xenbr0")
            wait_until(lambda: _mirror_adds(host) > adds, timeout=30.0,
                       message="the agent to add the mirror again after it went")
            assert host.status()["state"] == "WAITING_VM", host.status()["state"]
            assert topo.ip("dom0", "-o", "addr", "show", "dev", "xapi0", "scope", "global") == ""
            topo.bridge_up("xapi0")
            st = host.wait_state("HEALTHY")
            assert all(a["present"] for a in st["addresses"]) and all(r["present"] for r in st["routes"])
            events = _notifications(sock)
        finally:
            sock.close()
    bridge = [e for e in events if e[0] == "link" and e[1] == "xapi0"]
    assert bridge and not bridge[0][3], "the bridge did not appear down: %s" % bridge
    first_up = events.index(next(e for e in bridge if e[3]))
    on_bridge = [i for i, e in enumerate(events) if e[0] == "addr" and e[2] == bridge[0][2]
                 and e[3] in ("192.0.2.2/24", "2001:db8:1::2/64")]
    assert len(on_bridge) >= 2 and min(on_bridge) > first_up, events
