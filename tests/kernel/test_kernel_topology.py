"""The lab topology: namespaces made and always removed, the VIF plugged and unplugged, pings crossing fw."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from agent.lab.netns import Topology, TopologyError, sim_hook
from tests.kernel.labhelp import namespaces_with_prefix
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                       reason="needs root and iproute2 `ip` to create network namespaces"),
]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_create_and_cleanup_leave_no_namespace():
    """The three namespaces exist inside the with block and none is left after it; cleanup is idempotent."""
    with Topology() as topo:
        assert sorted(namespaces_with_prefix(topo.prefix + "-")) == sorted(
            [topo.dom0, topo.fw, topo.lan])
        assert topo.dom0.startswith("sspn-%d-" % os.getpid())
    assert namespaces_with_prefix(topo.prefix + "-") == []
    topo.cleanup()
    assert topo.namespaces == []


def test_cleanup_on_exception():
    """An exception inside the with block still removes every namespace."""
    with pytest.raises(RuntimeError):
        with Topology() as topo:
            raise RuntimeError("boom")
    assert namespaces_with_prefix(topo.prefix + "-") == []


def test_failed_create_removes_what_was_made():
    """A create that fails halfway (the name is taken) raises and removes the namespaces it made."""
    first = Topology()
    first.create()
    try:
        clash = Topology(prefix=first.prefix)
        with pytest.raises(TopologyError):
            clash.create()
        assert clash.namespaces == []
        assert sorted(namespaces_with_prefix(first.prefix + "-")) == sorted(first.namespaces)
    finally:
        first.cleanup()


def test_sigkilled_lab_namespaces_are_swept_by_the_next_lab():
    """A lab killed with SIGKILL cannot clean up; the next one removes its namespaces (dead pid),
    and leaves alone those of a lab still running and names not of our pattern."""
    dead = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    dead.wait()
    orphan = "sspn-%d-0a0b0c-dom0" % dead.pid
    alive = "sspn-%d-0d0e0f-fw" % os.getpid()
    foreign = "sspn-keep-me-%d" % os.getpid()
    for name in (orphan, alive, foreign):
        subprocess.check_call(["ip", "netns", "add", name])
    try:
        with Topology():
            left = namespaces_with_prefix("sspn-")
            assert orphan not in left
            assert alive in left and foreign in left
    finally:
        for name in (orphan, alive, foreign):
            subprocess.call(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)


def test_initial_wiring(topology):
    """dom0 has xenbr0 (up, 203.0.113.5/24); fw forwards and reaches lan; no VIF before the VM starts."""
    assert topology.link_names("dom0") == ["lo", "xenbr0"]
    assert "203.0.113.5/24" in topology.ip("dom0", "-o", "addr", "show", "dev", "xenbr0")
    assert ",UP" in topology.ip("dom0", "link", "show", "xenbr0")
    assert topology.exec("fw", ["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == "1"
    assert topology.exec("fw", ["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).strip() == "1"
    assert topology.link_names("fw") == ["lan0", "lo"]


def _run_child(body):
    """Start a Python child that builds a Topology, prints its prefix and waits; return (proc, prefix)."""
    script = textwrap.dedent("""
        import signal, sys
        # A job started with `&` by a non-interactive shell (CI runners) inherits SIGINT
        # ignored; these children are about the default Python handler behind ours.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, %r)
        from agent.lab.netns import Topology
        topo = Topology().create()
    """ % REPO) + textwrap.dedent(body)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    prefix = proc.stdout.readline().strip()
    assert prefix.startswith("sspn-"), proc.stderr.read()
    return proc, prefix


def _reap(proc, prefix):
    """Kill the child if it still runs; remove whatever it left (after a failed assertion)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for name in namespaces_with_prefix(prefix + "-"):
        subprocess.call(["ip", "netns", "del", name])


def test_sigterm_removes_namespaces():
    """SIGTERM to a process holding a Topology removes its namespaces and still ends it by SIGTERM."""
    proc, prefix = _run_child("""
        print(topo.prefix, flush=True)
        sys.stdin.read()
    """)
    try:
        assert len(namespaces_with_prefix(prefix + "-")) == 3
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)   # not communicate(): closing stdin would race the signal
        assert proc.returncode == -signal.SIGTERM
        assert namespaces_with_prefix(prefix + "-") == []
    finally:
        _reap(proc, prefix)


def test_sigint_removes_namespaces_and_raises_keyboardinterrupt():
    """SIGINT removes the namespaces, then the previous handler raises KeyboardInterrupt as usual."""
    proc, prefix = _run_child("""
        try:
            print(topo.prefix, flush=True)
            sys.stdin.read()
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
    """)
    try:
        proc.send_signal(signal.SIGINT)
        # Wait before reading: communicate() would close the child's stdin, and its read()
        # could return at EOF before the signal's handler ran (seen once in CI).
        proc.wait(timeout=30)
        out = proc.stdout.read()
        assert "KeyboardInterrupt" in out, proc.stderr.read()
        assert namespaces_with_prefix(prefix + "-") == []
    finally:
        _reap(proc, prefix)


def test_exit_without_cleanup_removes_namespaces():
    """A process that exits without calling cleanup() still removes its namespaces (atexit)."""
    proc, prefix = _run_child("""
        print(topo.prefix, flush=True)
    """)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert namespaces_with_prefix(prefix + "-") == []


def test_handlers_restored_after_cleanup():
    """After the last topology is cleaned up, the previous SIGINT/SIGTERM handlers are back."""
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with Topology():
        assert signal.getsignal(signal.SIGTERM) is not before[1]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_vm_start_stop_cycles_leak_nothing(topology):
    """100 VM start/stop cycles leave exactly the interfaces there were before, in dom0 and fw."""
    dom0_before, fw_before = topology.link_names("dom0"), topology.link_names("fw")
    for domid in range(1, 101):
        topology.vm_started(domid, "xapi0")
        assert {"xapi0", "vif%d.0" % domid} <= set(topology.link_names("dom0"))
        topology.vm_stopped(domid, "xapi0")
    assert topology.link_names("dom0") == dom0_before
    assert topology.link_names("fw") == fw_before


def test_vif_gets_gateway_addresses(topology):
    """The fw end of the VIF is up with 192.0.2.1/24, 2001:db8:1::1/64 and fe80::1, none tentative."""
    topology.vm_started(3, "xapi0")
    out = topology.ip("fw", "-o", "addr", "show", "dev", "fwvif3.0")
    for address in ("192.0.2.1/24", "2001:db8:1::1/64", "fe80::1/64"):
        assert address in out
    assert not [line for line in out.splitlines() if "fe80::1/64" in line and "tentative" in line]
    assert "master xapi0" in topology.ip("dom0", "link", "show", "vif3.0")


def test_bridge_kept_while_another_port_remains(topology):
    """Stopping one of two VMs on a bridge keeps the bridge; the last one takes it away (docs/xapi-behaviour.md §8)."""
    topology.vm_started(4, "xapi0")
    topology.vm_started(5, "xapi0", gateway=False)
    topology.vm_stopped(4, "xapi0")
    assert "xapi0" in topology.link_names("dom0")
    topology.vm_stopped(5, "xapi0")
    assert "xapi0" not in topology.link_names("dom0")


def test_ping_crosses_the_firewall(topology, ping):
    """With 192.0.2.2/24 and 2001:db8:1::2/64 on xapi0 and defaults via fw, dom0 reaches lan both ways."""
    assert not ping(topology, "dom0", "198.51.100.10")  # no route yet
    topology.vm_started(1, "xapi0")
    topology.ip("dom0", batch=[
        "addr add 192.0.2.2/24 dev xapi0",
        "addr add 2001:db8:1::2/64 dev xapi0 nodad",
        "route add default via 192.0.2.1",
        "route add default via 2001:db8:1::1",
    ])
    wait_until(lambda: ping(topology, "dom0", "198.51.100.10"), timeout=10,
               message="198.51.100.10 answering from dom0 through fw")
    wait_until(lambda: ping(topology, "dom0", "2001:db8:2::10"), timeout=10,
               message="2001:db8:2::10 answering from dom0 through fw")


def test_sim_hook_plugs_internal_networks_only(topology):
    """The power hook plugs VIFs on xapiN bridges only, follows a reboot's new domid and unplugs on halt."""
    hook = sim_hook(topology)
    hook("fw", {}, 5, ["xenbr0", "xapi1"], "Halted", "Running")
    assert {"xapi1", "vif5.1"} <= set(topology.link_names("dom0"))
    assert "vif5.0" not in topology.link_names("dom0")
    assert "192.0.2.1/24" in topology.ip("fw", "-o", "addr", "show", "dev", "fwvif5.1")
    hook("web", {}, 6, ["xenbr0"], "Halted", "Running")  # no internal network: nothing
    assert "vif6.0" not in topology.link_names("dom0")
    hook("fw", {}, 5, ["xenbr0", "xapi1"], "Running", "Paused")
    hook("fw", {}, 5, ["xenbr0", "xapi1"], "Paused", "Running")
    assert "vif5.1" in topology.link_names("dom0")
    hook("fw", {}, 9, ["xenbr0", "xapi1"], "Running", "Running")  # rebooted as domid 9
    names = set(topology.link_names("dom0"))
    assert "vif9.1" in names and "vif5.1" not in names
    hook("fw", {}, -1, ["xenbr0", "xapi1"], "Running", "Halted")
    assert topology.link_names("dom0") == ["lo", "xenbr0"]
    assert topology.link_names("fw") == ["lan0", "lo"]


def test_sim_hook_limited_to_named_vms(topology):
    """With vm_names, only those VMs get VIFs in the lab network."""
    hook = sim_hook(topology, vm_names=["fw"])
    hook("other", {}, 2, ["xapi0"], "Halted", "Running")
    assert "xapi0" not in topology.link_names("dom0")
    hook("fw", {}, 3, ["xapi0"], "Halted", "Running")
    assert "vif3.0" in topology.link_names("dom0")


def test_an_ignored_sigint_stays_ignored():
    """A process that ignores SIGINT keeps running on one, and keeps its namespaces: the
    handler is installed only over a disposition that would end the process."""
    proc, prefix = _run_child("""
        topo.cleanup()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        topo = Topology().create()
        print(topo.prefix, flush=True)
        print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN, flush=True)
        sys.stdin.readline()
        print(len(topo.namespaces), flush=True)
    """)
    try:
        assert proc.stdout.readline().strip() == "True"   # still ignored after create()
        proc.send_signal(signal.SIGINT)          # SIG_IGN: the kernel drops it at once
        assert len(namespaces_with_prefix(prefix + "-")) == 3
        out, _ = proc.communicate("go\n", timeout=30)
        assert out.strip() == "3" and proc.returncode == 0   # a handler would have emptied it
    finally:
        _reap(proc, prefix)
