"""A toolstack restart in each state the agent can be held in, on the simulator and namespaces.

The real agent runs as its own process in dom0 against the XAPI simulator; each test pins the
agent in one state, restarts xapi for 1 s (sessions die, the socket refuses), then lets the
world heal and checks that the agent reaches HEALTHY and that nothing it had done is done
again. BINDING and ROUTED last milliseconds and need no XAPI at all (netlink only); ROUTED is
held by a firewall that does not answer ICMP.
"""

import os
import shutil

import pytest

from agent.lab.harness import Host
from tests.faults import invariants as inv

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 `ip` to create network namespaces")

SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"


def restart_and_wait_reconnect(host):
    host.sim.toolstack_restart(1.0)
    host.wait(lambda st: not st.get("xapi", {}).get("connected"), "the agent to see XAPI go")
    host.wait(lambda st: st.get("xapi", {}).get("connected"), "the agent to reconnect")


def effects(host, what):
    return [e for r in host.trace() for e in ([r] if r.get("type") == "effect" else r.get("effects", []))
            if e["what"].startswith(what) and e["result"] in ("ok", "added", "replaced")]


def test_restart_in_booting():
    """xapi restarting while the agent connects: BOOTING retries, then reaches HEALTHY."""
    with Host() as host:
        host.sim.vm_start("pfsense")
        host.sim.toolstack_restart(1.0)
        host.start_agent()
        host.wait_state("HEALTHY", deadline=60)


def test_restart_in_waiting_vm():
    """Restart while waiting for the firewall; its start afterwards still binds everything."""
    with Host() as host:
        host.start_agent()
        host.wait_state("WAITING_VM")
        restart_and_wait_reconnect(host)
        host.sim.vm_start("pfsense")
        host.wait_state("HEALTHY", deadline=60)


def test_restart_in_maintenance():
    """Restart while host.enable answers HOST_STILL_BOOTING: xapi re-enables the host itself on
    its way up (auto_enable, docs/xapi-behaviour.md §5), so the agent leaves MAINTENANCE without a fix of
    its own and, not having enabled the host, does not start the firewall; once it runs, HEALTHY."""
    with Host() as host:
        host.sim.host_disable()
        host.sim.boot_phase(30.0)
        host.start_agent()
        host.wait_state("MAINTENANCE")
        restart_and_wait_reconnect(host)
        host.sim.boot_phase(0.0)
        host.wait_state("WAITING_VM", deadline=60)
        assert not effects(host, "host.enable")
        host.sim.vm_start("pfsense")
        host.wait_state("HEALTHY", deadline=60)


def test_restart_in_routed_then_degraded():
    """Restart while the gateway is silent (ROUTED, then DEGRADED): kernel state stays, resumes."""
    with Host() as host:
        fw = host.topology
        fw.exec("fw", ["sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=1"])
        fw.exec("fw", ["sysctl", "-q", "-w", "net.ipv6.icmp.echo_ignore_all=1"], check=False)
        host.start_agent()
        host.wait_state("WAITING_VM")
        host.sim.vm_start("pfsense")
        host.wait_state("ROUTED")
        restart_and_wait_reconnect(host)
        host.wait_state("DEGRADED", deadline=60)
        restart_and_wait_reconnect(host)
        fw.exec("fw", ["sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=0"])
        fw.exec("fw", ["sysctl", "-q", "-w", "net.ipv6.icmp.echo_ignore_all=0"], check=False)
        host.wait_state("HEALTHY", deadline=60)
        assert len(effects(host, "add 192.0.2.2/24")) == 1  # bound once, never again


def test_restart_in_sr_probing():
    """Restart while storage is unreachable; it is plugged once it answers."""
    with Host() as host:
        host.topology.ip("lan", "route", "del", "default")
        host.start_agent()
        host.wait_state("WAITING_VM")
        host.sim.vm_start("pfsense")
        host.wait_state("SR_PROBING")
        restart_and_wait_reconnect(host)
        host.topology.ip("lan", "route", "add", "default", "via", "198.51.100.1")
        host.wait_state("HEALTHY", deadline=60)
        inv.plugs_traced(host, 1)
        assert len(effects(host, "PBD.plug")) == 1


def test_restart_in_healthy_repeats_nothing():
    """Restart in HEALTHY: reconnect, no effect repeated, still HEALTHY."""
    with Host() as host:
        host.start_agent()
        host.wait_state("WAITING_VM")
        host.sim.vm_start("pfsense")
        host.wait_state("HEALTHY")
        inv.plugs_traced(host, 1)   # idle: the plug that led to HEALTHY has its answer
        before = len(host.trace())
        restart_and_wait_reconnect(host)
        host.wait_state("HEALTHY")
        after = host.trace()[before:]
        assert not [r for r in after if r.get("type") == "transition"]
        assert not effects(host, "PBD.plug")[1:] and len(effects(host, "VM.start web")) == 1
