"""The lab topology: namespaces made and always removed, the VIF plugged and unplugged, pings crossing fw.

The ``topology`` fixture's bridges follow ``$SSPN_BRIDGE`` (Linux or Open vSwitch); tests ask the
backend for a bridge's ports instead of assuming one kernel shape. Tests about what a lab
leaves behind run on every backend installed here.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from agent.lab import orphans
from agent.lab.netns import Topology, TopologyError, sim_hook, sweep_orphans
from agent.lab.simhost import private_dir
from tests.kernel.labhelp import backends, namespaces_with_prefix, process_gone
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
        state = topo.state_dir
        assert os.path.isdir(state)
    assert namespaces_with_prefix(topo.prefix + "-") == []
    assert not os.path.exists(state)
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


@pytest.mark.parametrize("bridge", backends())
def test_nothing_left_after_a_failure(bridge):
    """A run that fails inside the with block leaves no namespace, no daemon and no state directory."""
    with pytest.raises(RuntimeError):
        with Topology(bridge=bridge) as topo:
            topo.vm_started(1, "xapi0")
            pids, state = topo.backend.processes(), topo.state_dir
            assert os.path.isdir(state) and (bridge == "linux" or len(pids) == 2)
            raise RuntimeError("boom")
    assert namespaces_with_prefix(topo.prefix + "-") == []
    assert [pid for pid in pids if not process_gone(pid)] == []
    assert not os.path.exists(state)


@pytest.mark.parametrize("bridge", backends())
def test_sigkilled_lab_is_swept_by_the_next_lab(bridge):
    """A lab killed with SIGKILL cannot clean up (its daemons keep running); the next lab's sweep
    stops its daemons, deletes its namespaces and its state directory."""
    proc, prefix = _run_child("""
        print(topo.prefix, flush=True)
        print(json.dumps([topo.state_dir, topo.backend.processes()]), flush=True)
        sys.stdin.read()
    """, bridge)
    try:
        state, pids = json.loads(proc.stdout.readline())
        proc.kill()
        proc.wait()
        assert len(namespaces_with_prefix(prefix + "-")) == 3 and os.path.isdir(state)
        assert bridge == "linux" or [pid for pid in pids if not process_gone(pid)] == pids != []
        with Topology(bridge="linux"):
            assert namespaces_with_prefix(prefix + "-") == []
            assert [pid for pid in pids if not process_gone(pid)] == []
            assert not os.path.exists(state)
    finally:
        _reap(proc, prefix)


def _plant(prefix, pid, pidns, start=None, workdir=None):
    """A state directory with an owner record, as a lab writes it, and the lab's dom0 namespace."""
    path = os.path.join(orphans.STATE_ROOT, prefix)
    os.makedirs(path, 0o700)
    record = {"pid": pid, "start": start, "pidns": pidns}
    if workdir is not None:
        record["workdir"] = workdir
    with open(os.path.join(path, orphans.OWNER), "w") as f:
        json.dump(record, f)
    subprocess.check_call(["ip", "netns", "add", prefix + "-dom0"])
    return path


def test_sweep_touches_only_labs_provably_dead():
    """The sweep removes the labs whose recorded owner is gone in this pid namespace (its pid
    unused, or reused by a process started later) and leaves alone a namespace with no owner
    record, an owner from another pid namespace, and a live owner."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = orphans.pid_namespace()
    gone = "sspn-%d-0a0b01" % dead.pid
    reused = "sspn-%d-0a0b02" % os.getpid()
    no_record = "sspn-%d-0a0b03" % dead.pid
    elsewhere = "sspn-%d-0a0b04" % dead.pid
    alive = "sspn-%d-0a0b05" % os.getpid()
    planted = [_plant(gone, dead.pid, mine), _plant(reused, os.getpid(), mine, start=1),
               _plant(elsewhere, dead.pid, "pid:[1]"), _plant(alive, os.getpid(), mine,
                                                              start=orphans.start_time(os.getpid()))]
    subprocess.check_call(["ip", "netns", "add", no_record + "-dom0"])
    try:
        removed = sweep_orphans()
        assert sorted(removed) == sorted([gone + "-dom0", reused + "-dom0"])
        left = namespaces_with_prefix("sspn-")
        for prefix in (no_record, elsewhere, alive):
            assert prefix + "-dom0" in left
        assert not os.path.exists(planted[0]) and not os.path.exists(planted[1])
        assert os.path.isdir(planted[2]) and os.path.isdir(planted[3])
    finally:
        for prefix in (gone, reused, no_record, elsewhere, alive):
            subprocess.call(["ip", "netns", "del", prefix + "-dom0"], stderr=subprocess.DEVNULL)
            orphans.release(os.path.join(orphans.STATE_ROOT, prefix))


def test_sweep_removes_a_dead_labs_run_directory_only_while_it_is_the_labs():
    """A dead lab's run directory (named in its owner record) goes with its namespaces while it
    is still a private directory of ours, mode 0700 as the lab made it; one opened to others, or
    replaced by a link, is left alone, and so is the link's target."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    private, opened, target = private_dir("sspnlab"), private_dir("sspnlab"), private_dir("sspnlab")
    with open(os.path.join(private, "agent.log"), "w") as f:
        f.write("the dead lab's log\n")
    os.chmod(opened, 0o755)
    link = target + "link"
    os.symlink(target, link)
    prefixes = ["sspn-%d-0c0d0%d" % (dead.pid, n) for n in (1, 2, 3)]
    planted = [_plant(prefix, dead.pid, orphans.pid_namespace(), workdir=workdir)
               for prefix, workdir in zip(prefixes, (private, opened, link))]
    try:
        removed = sweep_orphans()
        assert sorted(removed) == sorted(prefix + "-dom0" for prefix in prefixes)
        assert not any(os.path.exists(path) for path in planted)
        assert not os.path.exists(private)
        assert os.path.isdir(opened) and os.path.islink(link) and os.path.isdir(target)
    finally:
        for prefix in prefixes:
            subprocess.call(["ip", "netns", "del", prefix + "-dom0"], stderr=subprocess.DEVNULL)
            orphans.release(os.path.join(orphans.STATE_ROOT, prefix))
        for path in (private, opened, target):
            shutil.rmtree(path, ignore_errors=True)
        if os.path.islink(link):
            os.unlink(link)


def _no_vif(topology):
    """dom0 has no VIF and no internal bridge: its only bridge is xenbr0, with no port."""
    assert topology.backend.bridges() == ["xenbr0"]
    assert topology.ports("xenbr0") == []
    assert [n for n in topology.link_names("dom0") if n.startswith(("vif", "xapi"))] == []
    return True


def test_initial_wiring(topology):
    """dom0 has xenbr0 (up, 203.0.113.5/24); fw forwards and reaches lan; no VIF before the VM starts."""
    assert _no_vif(topology)
    assert "203.0.113.5/24" in topology.ip("dom0", "-o", "addr", "show", "dev", "xenbr0")
    assert ",UP" in topology.ip("dom0", "link", "show", "xenbr0")
    assert topology.exec("fw", ["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == "1"
    assert topology.exec("fw", ["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).strip() == "1"
    assert topology.link_names("fw") == ["lan0", "lo"]


def _ifindex(topology, role, name):
    return int(topology.ip(role, "-o", "link", "show", "dev", name).split(":")[0])


def test_storage_switch_forwards_when_create_returns(topology):
    """lan's switch has carrier at once, and its port sw0 has an ifindex other than its peer
    lan0's: with equal ones the kernel reported sw0's carrier up to a second late, the port
    did not forward meanwhile, and the firewall's first ARP for the server was lost."""
    assert "NO-CARRIER" not in topology.ip("lan", "-o", "link", "show", "dev", "eth0")
    assert _ifindex(topology, "lan", "sw0") != _ifindex(topology, "fw", "lan0")
    assert "state forwarding" in topology.ip("lan", "-d", "-o", "link", "show", "dev", "sw0")


def _run_child(body, bridge="linux"):
    """Start a Python child that builds a Topology, prints its prefix and waits; return (proc, prefix)."""
    script = textwrap.dedent("""
        import json, signal, sys
        # A job started with `&` by a non-interactive shell (CI runners) inherits SIGINT
        # ignored; these children are about the default Python handler behind ours.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, %r)
        from agent.lab.netns import Topology
        topo = Topology(bridge=%r).create()
    """ % (REPO, bridge)) + textwrap.dedent(body)
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
    assert topology.ports("xapi0") == ["vif3.0"]


def test_guest_end_of_a_vif_never_shares_its_interface_index(topology):
    """The first VIF of a fresh lab and its guest's end got the same index (3) in their two
    namespaces; the kernel then reported the guest's carrier up to a second late and kept its
    IPv6 addresses tentative meanwhile (the gateway's first neighbour solicitations went
    unanswered). Each guest's end gets an index of its own range."""
    topology.vm_started(1, "xapi0")
    topology.vm_started(2, "xapi0")
    for domid in (1, 2):
        assert _ifindex(topology, "fw", "fwvif%d.0" % domid) != _ifindex(topology, "dom0", "vif%d.0" % domid)
    assert "@if%d:" % _ifindex(topology, "dom0", "vif1.0") in topology.ip("fw", "-o", "link", "show", "dev", "fwvif1.0")


def _flags(topology, ifname):
    """The flags of a dom0 link, as ``ip link`` shows them (``<BROADCAST,MULTICAST,UP,...>``)."""
    out = topology.ip("dom0", "-o", "link", "show", "dev", ifname)
    return set(out[out.index("<") + 1:out.index(">")].split(","))


def test_bridge_made_down_ports_added_then_up(topology):
    """As on dom0: the bridge appears down, the VIF is added as its port, and only the separate
    bring-up step (xcp-networkd's) sets it up."""
    topology.vm_started(2, "xapi0", up=False)
    assert "UP" not in _flags(topology, "xapi0")
    assert topology.ports("xapi0") == ["vif2.0"]
    assert "UP" in _flags(topology, "vif2.0")
    topology.bridge_up("xapi0")
    assert "UP" in _flags(topology, "xapi0")
    assert topology.ports("xapi0") == ["vif2.0"]


def test_bridge_kept_while_another_port_remains(topology):
    """Stopping one of two VMs on a bridge keeps the bridge; the last one takes it away (xapi
    ``xapi_network.ml`` ``deregister_vif``)."""
    topology.vm_started(4, "xapi0")
    topology.vm_started(5, "xapi0", gateway=False)
    topology.vm_stopped(4, "xapi0")
    assert "xapi0" in topology.link_names("dom0") and topology.ports("xapi0") == ["vif5.0"]
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
    assert _no_vif(topology)
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


def test_two_vms_on_one_bridge_each_in_its_own_namespace(topology, ping):
    """A second guest namespace (add_namespace): two VMs' VIFs are ports of one bridge, each VM
    answers from its own namespace, and both namespaces go with the topology."""
    second = topology.add_namespace("fw2")
    topology.vm_started(6, "xapi0", addresses=["192.0.2.1/24"])
    topology.vm_started(7, "xapi0", addresses=["192.0.2.3/24"], guest="fw2")
    assert topology.ports("xapi0") == ["vif6.0", "vif7.0"]
    assert "fwvif7.0" in topology.link_names(second) and "fwvif7.0" not in topology.link_names("fw")
    topology.ip("dom0", "addr", "add", "192.0.2.2/24", "dev", "xapi0")
    for address in ("192.0.2.1", "192.0.2.3"):
        wait_until(lambda: ping(topology, "dom0", address), timeout=10,
                   message="%s answering dom0 across the bridge" % address)
    assert second in topology.namespaces
    with pytest.raises(ValueError):
        topology.add_namespace("fw2")


def _inet(topology, peer):
    """The global addresses on the fw end ``peer``, as ``ip -o addr`` writes them."""
    return [w[3] for w in (line.split() for line in topology.ip(
        "fw", "-o", "addr", "show", "dev", peer).splitlines()) if w[2] in ("inet", "inet6")
        and not w[3].startswith("fe80:")]


def _gateway_lladdr(topology):
    """The link-layer address of dom0's neighbour entry for 192.0.2.1 on xapi0, or None."""
    words = topology.ip("dom0", "neigh", "show", "192.0.2.1", "dev", "xapi0").split()
    return words[words.index("lladdr") + 1] if "lladdr" in words else None


def test_sim_hook_carp_pair_one_holds_the_gateway_and_the_other_takes_over(topology, ping):
    """Two VMs given the same addresses on one bridge are a CARP pair: the first holds them and
    alone answers ARP for them (the other's end, in the same fw namespace, does not); when the
    holder stops, the other takes the addresses and the holder's MAC, so dom0's neighbour entry
    for the gateway stays right through each takeover and a ping crosses the pair at once."""
    gateway = ("192.0.2.1/24", "2001:db8:1::1/64")
    hook = sim_hook(topology, addresses_of=lambda bridge: gateway)
    hook("fw-a", {}, 1, ["xapi0"], "Halted", "Running")
    hook("fw-b", {}, 2, ["xapi0"], "Halted", "Running")
    assert sorted(_inet(topology, "fwvif1.0")) == sorted(gateway) and _inet(topology, "fwvif2.0") == []
    mac = topology.guest_mac(1)
    topology.ip("dom0", batch=["addr add 192.0.2.2/24 dev xapi0", "route add default via 192.0.2.1"])
    wait_until(lambda: ping(topology, "dom0", "198.51.100.10"), timeout=10,
               message="198.51.100.10 answering from dom0 through the pair")
    assert _gateway_lladdr(topology) == mac          # the backup stayed silent
    for stop, heir, returning in (("fw-a", 2, 3), ("fw-b", 3, None)):
        hook(stop, {}, -1, ["xapi0"], "Running", "Halted")
        assert sorted(_inet(topology, "fwvif%d.0" % heir)) == sorted(gateway)
        assert topology.guest_mac(heir) == mac
        assert _gateway_lladdr(topology) in (mac, None)
        # as the lab's final ping: up to 3 echoes of 1 s, far below the kernel's neighbour
        # timeouts a stale entry would need
        assert any(ping(topology, "dom0", "198.51.100.10") for _ in range(3)), (
            "no answer through fwvif%d.0 after %s stopped" % (heir, stop))
        if returning:   # the stopped member returns as backup: no preemption
            hook(stop, {}, returning, ["xapi0"], "Halted", "Running")
            assert _inet(topology, "fwvif%d.0" % returning) == []
    assert topology.ports("xapi0") == ["vif3.0"]


def _neighbour(topology, address):
    return topology.ip("fw", "neigh", "show", address, "dev", "lan0").strip()


SEND_UDP = ("import socket, sys\n"
            "for a in sys.argv[1:]:\n"
            "    family = socket.AF_INET6 if ':' in a else socket.AF_INET\n"
            "    socket.socket(family, socket.SOCK_DGRAM).sendto(b'x', (a, 9))\n")


def test_storage_back_announces_itself_to_the_firewall(topology):
    """A storage server that returns sends a gratuitous ARP and an unsolicited NA: the entries
    the firewall holds packets in while it asks for the server become valid with its MAC and
    send them on. The firewall asks only every 30 s here (retrans_time_ms), so nothing but the
    announcement can resolve them within the deadline; its link stays up while the server is
    away (lan's switch port), as behind a real switch."""
    lan4, lan6 = "198.51.100.10", "2001:db8:2::10"
    topology.exec("fw", ["sysctl", "-q", "-w", "net.ipv4.neigh.lan0.retrans_time_ms=30000",
                         "net.ipv6.neigh.lan0.retrans_time_ms=30000"])
    topology.storage_away()
    topology.exec("fw", [sys.executable, "-c", SEND_UDP, lan4, lan6])
    assert "NO-CARRIER" not in topology.ip("fw", "-o", "link", "show", "dev", "lan0")
    for address in (lan4, lan6):
        assert "INCOMPLETE" in _neighbour(topology, address)
    topology.storage_back()
    out = topology.ip("lan", "-o", "link", "show", "dev", "eth0").split()
    mac = out[out.index("link/ether") + 1]
    for address in (lan4, lan6):
        wait_until(lambda: "lladdr %s" % mac in _neighbour(topology, address), timeout=5,
                   message="fw's entry for %s carrying the announced %s" % (address, mac))


def test_storage_in_use_waits_for_the_firewall_to_confirm_the_server(topology):
    """The end-to-end bench starts every storage outage from the same firewall state: its entry
    for the server confirmed (REACHABLE). With no entry, and from a stale one, storage_in_use
    makes the firewall ask and returns once it is confirmed; with the server away it cannot
    be, and the error says so within the timeout."""
    lan4 = "198.51.100.10"
    assert topology.neighbour_state("fw", lan4) == ""
    topology.storage_in_use()
    assert topology.neighbour_state("fw", lan4) == "REACHABLE"
    topology.ip("fw", "neigh", "change", lan4, "dev", "lan0", "nud", "stale")
    topology.storage_in_use()
    assert topology.neighbour_state("fw", lan4) == "REACHABLE"
    topology.ip("fw", "neigh", "change", lan4, "dev", "lan0", "nud", "stale")
    topology.storage_away()
    with pytest.raises(TopologyError, match="has not confirmed the storage server"):
        topology.storage_in_use(timeout=1.0)
    assert topology.neighbour_state("fw", lan4) != "REACHABLE"
