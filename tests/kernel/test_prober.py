"""IcmpProber against the real kernel: real ICMP in the lab's dom0/fw/lan namespaces.

The lab's topology (agent/lab/netns.py ``Topology``, built once per module and removed
afterwards even on failure), with the firewall VM's VIF plugged and dom0 holding the uplink
addresses and default routes the agent binds::

    dom0 (prober)  xapi0 ==VIF== fwvif1.0  fw (router)  lan0 ==veth== eth0  lan (silent host)
    192.0.2.2/24                192.0.2.1/24         198.51.100.1/24   198.51.100.10/24
    2001:db8:1::2/64            2001:db8:1::1/64     2001:db8:2::1/64  2001:db8:2::10/64

fw forwards and has ``unreachable`` routes for 198.51.100.9 and 2001:db8:3::9, so it answers
probes to them with ICMP Destination Unreachable. lan ignores echo requests
(``icmp_echo_ignore_all``). dom0 has its own ``unreachable`` and ``prohibit`` routes for
203.0.113.200/.201 and 2001:db8:3::200/::201, so those probes are refused by dom0's kernel.

The prober runs inside dom0 in a subprocess, ``ip netns exec <dom0> python -c SCRIPT SPEC``,
which prints JSON: the simplest robust way to run threads and raw sockets inside a namespace (no
setns in a threaded pytest process, and the same interpreter as the test run).
"""

import importlib
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import threading

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # tests/conftest.py normally does this; keep the file runnable alone
    sys.path.insert(0, REPO)

from agent.lab import netns  # noqa: E402 (needs the repository on sys.path)
from tests.kernel.labhelp import namespaces_with_prefix  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

_skip_unless_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip"),
    reason="needs root and iproute2 `ip` to build network namespaces and open raw ICMP sockets")


def needs_root(test):
    """Mark a test as root-only (the ``root`` marker) and skip it, with the reason, without root."""
    return pytest.mark.root(_skip_unless_root(test))

DOM0_V4, DOM0_V6 = "192.0.2.2/24", "2001:db8:1::2/64"   # dom0's uplink addresses
V4_NEAR = netns.GATEWAY4.split("/")[0]   # fw, on dom0's link
V4_FAR = netns.FW_LAN4.split("/")[0]     # fw, routed
V6_NEAR = netns.GATEWAY6.split("/")[0]
V6_FAR = netns.FW_LAN6.split("/")[0]
V4_SILENT = netns.LAN4.split("/")[0]     # lan
V6_SILENT = netns.LAN6.split("/")[0]
V4_UNREACHABLE = "198.51.100.9"          # fw answers Destination Unreachable
V6_UNREACHABLE = "2001:db8:3::9"
V4_NO_ROUTE = "203.0.113.200"            # dom0's own unreachable route
V6_NO_ROUTE = "2001:db8:3::200"
V4_PROHIBITED = "203.0.113.201"          # dom0's own prohibit route
V6_PROHIBITED = "2001:db8:3::201"
ANSWERING = [V4_NEAR, V4_FAR, V6_NEAR, V6_FAR]

# Runs inside P. argv[1] is a JSON spec; prints one JSON object. Python 3.6 syntax.
SCRIPT = r'''
import json, logging, os, queue, sys, threading, time
import icmplib  # imported before any privilege drop; the prober imports it lazily
from agent.adapters.prober import IcmpProber

spec = json.loads(sys.argv[1])
records = []

class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.levelname, record.getMessage()])

logger = logging.getLogger("agent.adapters.prober")
logger.addHandler(Keep())
logger.setLevel(logging.DEBUG)

if spec.get("as_nobody"):
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)

events = queue.Queue()
caller = threading.get_ident()

def post(event):
    events.put((event, threading.get_ident()))

prober = IcmpProber(post, privileged=True)
out = {"done": [], "log": records}
if spec.get("once"):
    out["once"] = prober.probe_once(spec["once"], spec["timeout"])
for r in spec.get("rounds", []):
    prober.probe(r["key"], r["targets"], r["timeout"])
if spec.get("close_at_once"):
    out["closed"] = prober.close()
    prober.probe("late", spec["rounds"][0]["targets"], 1.0)
    out["running_after_close"] = prober.running()
deadline = time.monotonic() + max([r["timeout"] for r in spec.get("rounds", [])] + [0]) + 20
while len(out["done"]) < len(spec.get("rounds", [])):
    try:
        event, poster = events.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        break
    out["done"].append({"kind": event.kind, "key": event.key, "results": dict(event.results),
                        "poster_is_caller": poster == caller,
                        "reasons": prober.last_reasons(event.key)})
out["extra_events"] = events.qsize()
if not spec.get("close_at_once"):
    out["closed"] = prober.close()
out["probe_threads"] = [t.name for t in threading.enumerate() if t.name.startswith("sspn-probe")]
print(json.dumps(out))
'''


def run_prober(topo, spec, timeout=60):
    """Run SCRIPT in dom0 with ``spec``; the parsed JSON it printed."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        ["ip", "netns", "exec", topo.ns("dom0"), sys.executable, "-c", SCRIPT, json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("prober subprocess hung; stderr: %s" % err)
    assert proc.returncode == 0, "prober subprocess failed: %s" % err
    return json.loads(out)


def probe_round(topo, key, targets, timeout):
    """One probe() round in dom0: its ProbeDone as a dict (results, reasons, poster_is_caller)."""
    out = run_prober(topo, {"rounds": [{"key": key, "targets": targets, "timeout": timeout}]})
    assert len(out["done"]) == 1, out
    return out["done"][0]


def _sysctl(topo, role, name, value):
    """Set a per-namespace sysctl in ``role``; False when the kernel does not have it."""
    if not os.path.exists("/proc/sys/" + name.replace(".", "/")):
        return False
    topo.exec(role, ["sysctl", "-q", "-w", "%s=%s" % (name, value)])
    return True


def _wire(topo):
    """The firewall's VIF up with its gateway addresses; dom0's uplink addresses and default
    routes (as the agent makes them); the unreachable and prohibit routes of the module doc."""
    for role in ("dom0", "fw"):  # no DAD on the VIF's link-local addresses: v6 works at once
        _sysctl(topo, role, "net.ipv6.conf.default.accept_dad", 0)
    topo.vm_started(1, "xapi0")
    topo.ip("dom0", batch=[
        "addr add %s dev xapi0" % DOM0_V4, "addr add %s dev xapi0 nodad" % DOM0_V6,
        "route add default via %s" % V4_NEAR, "route add default via %s" % V6_NEAR,
        "route add unreachable %s/32" % V4_NO_ROUTE, "route add unreachable %s/128" % V6_NO_ROUTE,
        "route add prohibit %s/32" % V4_PROHIBITED, "route add prohibit %s/128" % V6_PROHIBITED])
    topo.ip("fw", batch=["route add unreachable %s/32" % V4_UNREACHABLE,
                         "route add unreachable %s/128" % V6_UNREACHABLE])
    # The kernel rate-limits ICMP errors (docs/kernel-behaviour.md §9): off in fw, so every probe of an
    # unreachable target gets its Destination Unreachable, whatever ran just before.
    _sysctl(topo, "fw", "net.ipv4.icmp_ratelimit", 0)
    _sysctl(topo, "fw", "net.ipv6.icmp.ratelimit", 0)


def _silence(topo):
    """Make lan ignore echo requests, v4 and v6."""
    _sysctl(topo, "lan", "net.ipv4.icmp_echo_ignore_all", 1)
    if not _sysctl(topo, "lan", "net.ipv6.icmp.echo_ignore_all", 1):
        # Older kernels (< 4.18) lack the v6 knob: drop lan's replies towards dom0 instead.
        topo.ip("lan", "-6", "route", "add", "blackhole", str(ipaddress.ip_interface(DOM0_V6).network))


@pytest.fixture(scope="module")
def topo():
    """The lab's topology wired as in the module doc; always removed, also when building it fails."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 `ip`")
    topo = netns.Topology()
    try:
        try:
            topo.create()
        except netns.TopologyError as exc:
            if "ip netns add" in str(exc):
                pytest.skip("cannot create network namespaces here: %s" % exc)
            raise
        _wire(topo)
        # Ready (and the silent host is reachable, so its later silence is meaningful): every
        # host answers, including lan before it is silenced. Neighbour discovery may need a try.
        everyone = ANSWERING + [V4_SILENT, V6_SILENT]
        wait_until(lambda: all(run_prober(topo, {"once": everyone, "timeout": 1.0})["once"].values()),
                   15, interval=0.1, message="every host answering from %s" % topo.dom0)
        _silence(topo)
        yield topo
    finally:
        topo.cleanup()
    leftovers = namespaces_with_prefix(topo.prefix + "-")
    assert not leftovers, "namespaces left behind: %s" % leftovers


@needs_root
def test_v4_and_v6_targets_answer(topo):
    """Answering v4 and v6 hosts, on-link and routed, are reported True with no reasons."""
    done = probe_round(topo, "gw", ANSWERING, 2.0)
    assert done["kind"] == "probe_done"
    assert done["key"] == "gw"
    assert done["results"] == dict((t, True) for t in ANSWERING)
    assert done["reasons"] == {}


@needs_root
def test_probe_once_returns_answers_synchronously(topo):
    """probe_once blocks and returns {target: answered} without posting anything."""
    out = run_prober(topo, {"once": [V4_NEAR, V6_NEAR, V4_SILENT], "timeout": 1.0})
    assert out["once"] == {V4_NEAR: True, V6_NEAR: True, V4_SILENT: False}
    assert out["done"] == [] and out["extra_events"] == 0


@needs_root
def test_silent_targets_time_out(topo):
    """Hosts that ignore echo requests (v4 and v6) are reported False with reason "timeout"."""
    done = probe_round(topo, "storage", [V4_SILENT, V6_SILENT], 1.0)
    assert done["results"] == {V4_SILENT: False, V6_SILENT: False}
    assert done["reasons"] == {V4_SILENT: "timeout", V6_SILENT: "timeout"}


@needs_root
def test_unreachable_behind_router_fails_early_with_reason(topo):
    """A router's ICMP Destination Unreachable ends the probe: False with reason "unreachable".

    The timeout is long; the reason proves the probe ended on the ICMP error, not on the timeout.
    """
    done = probe_round(topo, "gw", [V4_UNREACHABLE, V6_UNREACHABLE], 10.0)
    assert done["results"] == {V4_UNREACHABLE: False, V6_UNREACHABLE: False}
    assert done["reasons"] == {V4_UNREACHABLE: "unreachable", V6_UNREACHABLE: "unreachable"}


@needs_root
def test_local_route_refusals_are_named(topo):
    """Our own kernel refusing to send gives "no route" (unreachable route) or "prohibited"."""
    targets = [V4_NO_ROUTE, V6_NO_ROUTE, V4_PROHIBITED, V6_PROHIBITED]
    done = probe_round(topo, "gw", targets, 10.0)
    assert done["results"] == dict((t, False) for t in targets)
    assert done["reasons"] == {V4_NO_ROUTE: "no route", V6_NO_ROUTE: "no route",
                               V4_PROHIBITED: "prohibited", V6_PROHIBITED: "prohibited"}


@needs_root
def test_mixed_round_posts_one_probedone_with_every_target(topo):
    """Many targets of every kind, probed concurrently, come back in ONE ProbeDone with all keys,
    posted from a prober thread (not the caller's)."""
    targets = ANSWERING + [V4_SILENT, V6_SILENT, V4_UNREACHABLE, V6_UNREACHABLE, V4_NO_ROUTE]
    out = run_prober(topo, {"rounds": [{"key": "all", "targets": targets, "timeout": 1.0}]})
    assert len(out["done"]) == 1 and out["extra_events"] == 0
    done = out["done"][0]
    assert done["poster_is_caller"] is False
    expected = dict((t, t in ANSWERING) for t in targets)
    assert done["results"] == expected
    assert done["reasons"] == {V4_SILENT: "timeout", V6_SILENT: "timeout",
                               V4_UNREACHABLE: "unreachable", V6_UNREACHABLE: "unreachable",
                               V4_NO_ROUTE: "no route"}
    assert out["closed"] is True and out["probe_threads"] == []


@needs_root
def test_concurrent_rounds_do_not_mix_results(topo):
    """Concurrent probe() calls with different keys, sharing targets, each get exactly their own
    targets and the right answers, in exactly one ProbeDone per key."""
    rounds = [
        {"key": "a", "targets": [V4_NEAR, V4_SILENT], "timeout": 1.0},
        {"key": "b", "targets": [V4_NEAR, V6_NEAR], "timeout": 1.0},
        {"key": "c", "targets": [V6_SILENT, V6_FAR, V4_UNREACHABLE], "timeout": 1.0},
        {"key": "d", "targets": [V4_SILENT, V6_SILENT], "timeout": 1.0},
        {"key": "e", "targets": [V4_FAR, V6_FAR, V4_NEAR, V6_NEAR], "timeout": 1.0},
        {"key": "f", "targets": [V4_NEAR], "timeout": 1.0},
    ]
    out = run_prober(topo, {"rounds": rounds})
    assert out["extra_events"] == 0
    by_key = dict((d["key"], d) for d in out["done"])
    assert sorted(by_key) == sorted(r["key"] for r in rounds)
    for r in rounds:
        expected = dict((t, t in ANSWERING) for t in r["targets"])
        assert by_key[r["key"]]["results"] == expected, r["key"]


@needs_root
def test_permission_failure_counts_as_silent_and_logs_once(topo):
    """Without raw-socket rights, targets count as not answering with reason "permission", the
    prober keeps working (every round still posts), and the problem is logged once."""
    rounds = [{"key": "a", "targets": [V4_NEAR, V6_NEAR], "timeout": 1.0},
              {"key": "b", "targets": [V4_FAR], "timeout": 1.0}]
    out = run_prober(topo, {"as_nobody": True, "rounds": rounds})
    by_key = dict((d["key"], d) for d in out["done"])
    assert by_key["a"]["results"] == {V4_NEAR: False, V6_NEAR: False}
    assert by_key["a"]["reasons"] == {V4_NEAR: "permission", V6_NEAR: "permission"}
    assert by_key["b"]["reasons"] == {V4_FAR: "permission"}
    errors = [msg for level, msg in out["log"] if level == "ERROR"]
    assert len(errors) == 1 and "raw ICMP socket" in errors[0], out["log"]


@needs_root
def test_close_joins_rounds_and_refuses_new_probes(topo):
    """close() waits for the running round (which still posts its ProbeDone), leaves no probe
    thread behind, and a probe() after close starts nothing."""
    out = run_prober(topo, {"close_at_once": True,
                    "rounds": [{"key": "a", "targets": [V4_SILENT, V4_NEAR], "timeout": 1.0}]})
    assert out["closed"] is True
    assert out["running_after_close"] == 0
    assert [d["key"] for d in out["done"]] == ["a"] and out["extra_events"] == 0
    assert out["probe_threads"] == []


def test_icmp_ids_are_unique_while_held():
    """Concurrently acquired ICMP ids never collide while held, and come back when released."""
    from agent.adapters.prober import IcmpIds
    ids = IcmpIds(random.Random(7))
    held = []
    lock = threading.Lock()

    def grab():
        for _ in range(500):
            ident = ids.acquire()
            with lock:
                held.append(ident)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == len(set(held)) == 4000
    assert all(1 <= i <= 0xFFFF for i in held)
    for ident in held:
        ids.release(ident)
    assert ids.in_use() == 0


def test_all_ids_in_use_is_a_clear_error():
    """When all 65535 ids are held, acquire() raises and says what to do."""
    from agent.adapters.prober import IcmpIds
    ids = IcmpIds(random.Random(1))
    for _ in range(0xFFFF):
        ids.acquire()
    with pytest.raises(RuntimeError, match="probe fewer targets"):
        ids.acquire()


def test_import_does_not_import_icmplib():
    """Importing the prober module does not import icmplib (it is imported lazily)."""
    saved = dict(sys.modules)
    try:
        for name in list(sys.modules):
            if name.split(".")[0] == "icmplib" or name == "agent.adapters.prober":
                del sys.modules[name]
        importlib.import_module("agent.adapters.prober")
        assert "icmplib" not in sys.modules
    finally:
        for name in set(sys.modules) - set(saved):
            del sys.modules[name]
        sys.modules.update(saved)


def test_ipaddress_targets_are_reported_as_text():
    """Targets given as ipaddress objects are keyed by their text, duplicates once, in order."""
    from agent.adapters.prober import _target_texts
    targets = [ipaddress.ip_address(V4_NEAR), ipaddress.ip_address(V6_NEAR), V4_NEAR]
    assert _target_texts(targets) == [V4_NEAR, V6_NEAR]


# --- TCP service probes (agent/adapters/tcp_probe.py): real sockets on loopback ---------------

def _listener(family=None, host="127.0.0.1"):
    import socket
    sock = socket.socket(family or socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(4)
    return sock


def _free_port():
    sock = _listener()
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_tcp_target_answers_when_its_service_listens_and_is_refused_when_not():
    """host:port is a TCP connect: a listening port answers with an RTT, a closed one is
    ``refused`` (the host is up, its service is not), told apart from silence."""
    from agent.adapters import prober as pr
    listening = _listener()
    try:
        port = listening.getsockname()[1]
        closed = _free_port()
        result = pr.probe_round(["127.0.0.1:%d" % port, "127.0.0.1:%d" % closed], 1.0)
        up, down = result["127.0.0.1:%d" % port], result["127.0.0.1:%d" % closed]
        assert up.answered and up.rtt_ms is not None
        assert not down.answered and down.reason == pr.REFUSED and "nothing listens" in down.detail
    finally:
        listening.close()


def test_the_round_event_names_the_refused_targets_apart_from_the_silent_ones():
    """ProbeDone.refused: the decision thread probes a refusing service faster
    (agent/decision/schedule.py); an unresolvable name is silent, not refused."""
    import queue
    from agent.adapters.prober import IcmpProber
    closed = "127.0.0.1:%d" % _free_port()
    events = queue.Queue()
    prober = IcmpProber(events.put)
    prober.probe("sr:x", [closed], 1.0)
    done = events.get(timeout=10.0)
    assert done.refused == (closed,) and done.refusing() and "refused" in done.describe()
    prober.probe("sr:y", [closed, "no-such-host.invalid:2049"], 1.0)
    done = events.get(timeout=10.0)
    assert done.refused == (closed,) and not done.refusing()
    prober.close()


def test_tcp_target_by_name_is_resolved_when_probed():
    """A name (here localhost, from /etc/hosts) is resolved at probe time; v6 in brackets."""
    import socket
    from agent.adapters.prober import IcmpProber
    listening = _listener()
    try:
        port = listening.getsockname()[1]
        assert IcmpProber(lambda e: None).probe_once(["localhost:%d" % port], 1.0) \
            == {"localhost:%d" % port: True}
    finally:
        listening.close()
    if socket.has_ipv6:
        try:
            six = _listener(socket.AF_INET6, "::1")
        except OSError:
            return  # no ::1 in this namespace
        try:
            target = "[::1]:%d" % six.getsockname()[1]
            assert IcmpProber(lambda e: None).probe_once([target], 1.0) == {target: True}
        finally:
            six.close()


def test_a_service_that_starts_later_answers_at_the_next_round():
    """The nfsd that comes up after the network: refused, then answered once it listens."""
    from agent.adapters import prober as pr
    port = _free_port()
    target = "127.0.0.1:%d" % port
    assert pr.probe_round([target], 1.0)[target].reason == pr.REFUSED
    import socket
    late = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    late.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    late.bind(("127.0.0.1", port))
    late.listen(1)
    try:
        assert pr.probe_round([target], 1.0)[target].answered
    finally:
        late.close()
