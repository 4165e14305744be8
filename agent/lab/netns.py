"""The lab's network: namespaces for dom0, the firewall VM and the storage LAN, always cleaned up.

::

    dom0                              fw (firewall VM)                lan (storage server)
    xenbr0 203.0.113.5/24 (mgmt)
    <bridge> ── vif<domid>.<dev> ═══ fwvif<domid>.<dev>   lan0 ═══════ eth0
                                     192.0.2.1/24         198.51.100.1/24   198.51.100.10/24
                                     2001:db8:1::1/64     2001:db8:2::1/64  2001:db8:2::10/64
                                     fe80::1              (forwarding on)   default via fw

The internal bridge and the VIF exist only while the firewall VM runs, as with xapi for a
PIF-less network (xapi-facts §6). Everything is done with the ``ip`` command, so this module
needs no pyroute2 and mirrors what an operator would type.

Namespaces are removed by ``cleanup()``, on leaving the ``with`` block (also on an exception),
on SIGINT and SIGTERM (handlers clean up, restore the previous handlers and re-deliver the
signal) and at interpreter exit.
"""

import atexit
import binascii
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from agent.status import pid_alive

log = logging.getLogger(__name__)

MGMT_BRIDGE = "xenbr0"
MGMT_ADDRESS = "203.0.113.5/24"     # stands in for the networkd-configured management address
GATEWAY4 = "192.0.2.1/24"
GATEWAY6 = "2001:db8:1::1/64"
GATEWAY6_LINK_LOCAL = "fe80::1/64"  # lets tests use a link-local v6 gateway
FW_LAN4 = "198.51.100.1/24"
FW_LAN6 = "2001:db8:2::1/64"
LAN4 = "198.51.100.10/24"
LAN6 = "2001:db8:2::10/64"
ROLES = ("dom0", "fw", "lan")


class TopologyError(RuntimeError):
    """An ``ip`` command failed while building or changing the lab network."""


def _run(argv, input_text=None, check=True):
    """Run a command; its stdout text, or TopologyError naming the command and its stderr."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    out, err = proc.communicate(input_text)
    if check and proc.returncode != 0:
        raise TopologyError("%s failed (exit %d): %s" % (" ".join(argv), proc.returncode,
                                                         err.strip() or out.strip()))
    return out


def vif_name(domid, device=0):
    """dom0's name for a VM's VIF (netback's vif<domid>.<devid>, xapi-facts §6)."""
    return "vif%d.%d" % (domid, device)


def fw_side_name(domid, device=0):
    """The name of the VIF's other end inside the firewall namespace (at most 15 characters)."""
    return "fwvif%d.%d" % (domid, device)


PREFIX = "sspn"


def sweep_orphans():
    """Delete the namespaces of labs whose process is gone (named ``sspn-<pid>-<hex>-<role>``).

    A lab killed with SIGKILL (or a machine reset mid-run) cannot clean up after itself; the next
    lab removes what it left. Only names of exactly our pattern whose pid no longer exists are
    touched. Returns the names removed.
    """
    try:
        out = _run(["ip", "netns", "list"], check=False)
    except Exception:  # no `ip`: create() will say so
        return []
    removed = []
    for line in out.splitlines():
        parts = line.split()[0].split("-") if line.strip() else []
        if (len(parts) == 4 and parts[0] == PREFIX and parts[1].isdigit() and parts[3] in ROLES
                and not pid_alive(int(parts[1]))):
            name = "-".join(parts)
            _run(["ip", "netns", "del", name], check=False)
            log.warning("removed namespace %s left by a lab that no longer runs (pid %s)", name, parts[1])
            removed.append(name)
    return removed


class Topology(object):
    """Namespaces ``<prefix>-dom0``, ``<prefix>-fw`` and ``<prefix>-lan``, wired as in the module doc."""

    def __init__(self, prefix=None):
        if prefix is None:
            prefix = "%s-%d-%s" % (PREFIX, os.getpid(), binascii.hexlify(os.urandom(3)).decode())
        self.prefix = prefix
        self.dom0 = prefix + "-dom0"
        self.fw = prefix + "-fw"
        self.lan = prefix + "-lan"
        self._created = []
        self._owner = os.getpid()
        self._lock = threading.RLock()

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self):
        self.create()
        return self

    def __exit__(self, *exc_info):
        self.cleanup()
        return False

    def create(self):
        """Create and wire the three namespaces; on any failure remove what was made, then raise."""
        if self._created:
            raise RuntimeError("topology %s is already created" % self.prefix)
        self._owner = os.getpid()
        sweep_orphans()
        _register(self)
        try:
            for name in (self.dom0, self.fw, self.lan):
                _run(["ip", "netns", "add", name])
                self._created.append(name)
            self.ip("dom0", batch=[
                "link set lo up",
                "link add %s type bridge" % MGMT_BRIDGE,
                "link set %s up" % MGMT_BRIDGE,
                "addr add %s dev %s" % (MGMT_ADDRESS, MGMT_BRIDGE),
            ])
            self.exec("fw", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                             "net.ipv6.conf.all.forwarding=1"])
            self.ip("fw", batch=[
                "link set lo up",
                "link add lan0 type veth peer name eth0 netns %s" % self.lan,
                "addr add %s dev lan0" % FW_LAN4,
                "addr add %s dev lan0 nodad" % FW_LAN6,
                "link set lan0 up",
            ])
            self.ip("lan", batch=[
                "link set lo up",
                "addr add %s dev eth0" % LAN4,
                "addr add %s dev eth0 nodad" % LAN6,
                "link set eth0 up",
                "route add default via %s" % FW_LAN4.split("/")[0],
                "route add default via %s" % FW_LAN6.split("/")[0],
            ])
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self):
        """Delete every namespace this topology created (idempotent; interfaces go with them).

        Only in the process that created them: a forked child (pyroute2 forks helpers and stops
        them with SIGTERM) inherits our handlers and atexit, and must not tear the lab down.
        """
        if os.getpid() != self._owner:
            return
        with self._lock:
            created, self._created = self._created, []
        for name in reversed(created):
            try:
                _run(["ip", "netns", "del", name], check=False)
            except Exception as exc:  # keep deleting the others
                log.warning("could not delete namespace %s (%s), continuing", name, exc)
        _unregister(self)

    @property
    def namespaces(self):
        """The namespace names this topology has created and not yet removed."""
        return list(self._created)

    # --- helpers ------------------------------------------------------------------------------

    def ns(self, role):
        """The namespace name for a role ("dom0", "fw", "lan"); a full name passes through."""
        if role in ROLES:
            return getattr(self, role)
        return role

    def exec(self, ns, argv, check=True, input_text=None):
        """Run ``argv`` inside namespace ``ns`` (a role or a name) via ``ip netns exec``; its stdout."""
        return _run(["ip", "netns", "exec", self.ns(ns)] + list(argv), input_text, check)

    def ip(self, ns, *args, batch=None, check=True):
        """Run ``ip -n <ns> args...``, or with ``batch=[lines]`` one ``ip -batch`` for all lines."""
        if batch is not None:
            return _run(["ip", "-n", self.ns(ns), "-batch", "-"], "\n".join(batch) + "\n", check)
        return _run(["ip", "-n", self.ns(ns)] + list(args), None, check)

    def ping(self, ns, address, timeout=1.0):
        """True when one ICMP echo from namespace ``ns`` to ``address`` is answered.

        Uses icmplib (a dependency; iputils ping is often not installed) in this interpreter,
        run inside the namespace with ``ip netns exec``.
        """
        code = ("import sys, icmplib\n"
                "h = icmplib.ping(sys.argv[1], count=1, timeout=float(sys.argv[2]), privileged=True)\n"
                "sys.exit(0 if h.is_alive else 1)\n")
        import icmplib
        site = os.path.dirname(os.path.dirname(os.path.abspath(icmplib.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p))
        argv = ["ip", "netns", "exec", self.ns(ns), sys.executable, "-c", code, address, str(timeout)]
        return subprocess.call(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env) == 0

    def links(self, ns):
        """{interface name: name of its master bridge or None} in namespace ``ns``."""
        result = {}
        for line in self.ip(ns, "-o", "link", "show").splitlines():
            if not line.strip():
                continue
            name = line.split(":")[1].strip().split("@")[0]
            words = line.split()
            result[name] = words[words.index("master") + 1] if "master" in words else None
        return result

    def link_names(self, ns):
        """The sorted interface names in namespace ``ns``."""
        return sorted(self.links(ns))

    # --- the firewall VM's VIF ----------------------------------------------------------------

    def vm_started(self, domid, bridge, device=0, gateway=True):
        """The VM got a VIF on ``bridge``: create the bridge in dom0 (up) and the veth into fw.

        With ``gateway`` the fw end gets the gateway addresses (v6 with nodad, plus fe80::1).
        """
        vif, peer = vif_name(domid, device), fw_side_name(domid, device)
        # The VIF first, then the bridge: making a veth end in another namespace holds the
        # RTNL lock for milliseconds (the agent's first read after the bridge appeared took
        # 6.3 ms in the slowest of 100 reboots on Python 3.6, 0.6 ms usually), a cost with
        # no counterpart on a host, where netback makes vif<domid>.<n> in dom0 itself. Made
        # before the bridge, it stays out of the bridge's timeline (bench/kernel_latency.py).
        # The fw end comes up last, as a guest's netfront connects after its VIF is plugged:
        # that gives the bridge carrier (an agent read made meanwhile took 5.7 ms).
        lines = ["link add %s type veth peer name %s netns %s" % (vif, peer, self.fw)]
        if bridge not in self.links("dom0"):
            lines += ["link add %s type bridge" % bridge, "link set %s up" % bridge]
        self.ip("dom0", batch=lines + [
            "link set %s master %s" % (vif, bridge),
            "link set %s up" % vif,
        ])
        lines = ["link set %s up" % peer]
        if gateway:
            self.fw_answers(lines, ["addr add %s dev %s" % (GATEWAY4, peer),
                                    "addr add %s dev %s nodad" % (GATEWAY6, peer),
                                    "addr add %s dev %s nodad" % (GATEWAY6_LINK_LOCAL, peer)])
        else:
            self.ip("fw", batch=lines)

    # A scenario setting: seconds from the firewall's VIF coming up to the firewall answering
    # on it (its addresses configured), as a guest needs seconds after netfront connects.
    fw_answer_delay = 0.0

    def fw_answers(self, link_up, addresses):
        """Bring the firewall's end up; its ``addresses`` at once (before the link, in one batch,
        with no fw_answer_delay) or fw_answer_delay seconds later, from a timer thread."""
        if self.fw_answer_delay <= 0:
            self.ip("fw", batch=addresses + link_up)
            return
        self.ip("fw", batch=link_up)

        def configure():
            try:
                self.fw_answering_from = time.monotonic()  # benches measure from here
                self.ip("fw", batch=addresses)
            except TopologyError as exc:  # the VM stopped (or the lab ended) meanwhile
                log.info("firewall addresses not added after the delay: %s", exc)
        timer = threading.Timer(self.fw_answer_delay, configure)
        timer.daemon = True
        timer.start()

    def vm_stopped(self, domid, bridge, device=0):
        """The VM stopped: destroy its VIF, then the bridge once no port is left (xapi-facts §6)."""
        vif = vif_name(domid, device)
        links = self.links("dom0")
        lines = []
        if vif in links:
            lines.append("link del %s" % vif)  # takes the fw end with it
        others = [name for name, master in links.items() if master == bridge and name != vif]
        if bridge in links and not others:
            lines.append("link del %s" % bridge)
        if lines:
            self.ip("dom0", batch=lines)


def sim_hook(topology, vm_names=None, is_internal=None):
    """A simulator VM power hook that plugs and unplugs the VIFs of VMs on internal networks.

    Returns ``fn(vm_name, vm_record_dict, domid, bridges, old_state, new_state)`` for
    ``sim.add_vm_power_hook``. ``bridges`` lists the bridges of the VM's networks in VIF device
    order; only internal ones (``xapiN``, xapi-facts §6, or ``is_internal(bridge)``) get a VIF
    here, and only the first gets the gateway addresses. ``vm_names`` limits it to those VMs
    (the firewalls); default: every VM with an internal VIF. The VIFs made at start are
    remembered, so a stop removes exactly those even when the record's domid is already -1.
    """
    internal = is_internal or (lambda bridge: bridge.startswith("xapi"))
    plugged = {}  # vm_name -> [(domid, bridge, device)]
    lock = threading.Lock()

    def unplug(vm_name):
        for domid, bridge, device in plugged.pop(vm_name, []):
            topology.vm_stopped(domid, bridge, device)

    def hook(vm_name, vm_record, domid, bridges, old_state, new_state):
        if vm_names is not None and vm_name not in vm_names:
            return
        with lock:
            if new_state == "Running" and old_state != "Paused":
                unplug(vm_name)  # a reboot arrives as Running -> Running with a new domid
                made = []
                for device, bridge in enumerate(bridges):
                    if internal(bridge):
                        topology.vm_started(int(domid), bridge, device, gateway=not made)
                        made.append((int(domid), bridge, device))
                if made:
                    plugged[vm_name] = made
            elif new_state in ("Halted", "Suspended"):
                unplug(vm_name)

    return hook


# --- removal on signals and at exit ------------------------------------------------------------

_live = []
_live_lock = threading.RLock()  # re-entered when a signal arrives while it is held
_previous = {}          # signal number -> handler in place before ours
_atexit_done = []
_handler_pid = []       # the pid that installed the handlers (a forked child inherits them)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _register(topology):
    with _live_lock:
        if topology not in _live:
            _live.append(topology)
        if not _atexit_done:
            atexit.register(_cleanup_all)
            _atexit_done.append(True)
        if not _previous and threading.current_thread() is threading.main_thread():
            _handler_pid[:] = [os.getpid()]
            for signum in _SIGNALS:
                # An ignored signal stays ignored (e.g. SIGINT of a job started with `&` by a
                # non-interactive shell): it will not end the process, so it must not remove
                # the namespaces from under it either.
                if signal.getsignal(signum) != signal.SIG_IGN:
                    _previous[signum] = signal.signal(signum, _on_signal)


def _unregister(topology):
    with _live_lock:
        if topology in _live:
            _live.remove(topology)
        if not _live:
            _restore_handlers()


def _restore_handlers():
    """Put back the handlers we replaced, unless someone replaced ours in the meantime."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_previous.items()):
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        del _previous[signum]


def _cleanup_all():
    for topology in list(_live):
        topology.cleanup()


def _on_signal(signum, frame):
    """Remove every live topology, then let the signal do what it did before (default: terminate).

    In a forked child that inherited this handler (pyroute2 stops its helpers with SIGTERM)
    nothing is cleaned up and no lock is taken: a lock held by a parent thread at fork time
    would never be released there.
    """
    previous = _previous.get(signum, signal.SIG_DFL)
    if previous is None:  # installed from C: treat as the default action
        previous = signal.SIG_DFL
    if _handler_pid and os.getpid() == _handler_pid[0]:
        _cleanup_all()
        with _live_lock:
            _restore_handlers()
    else:
        signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)        # e.g. default_int_handler raises KeyboardInterrupt
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)   # re-deliver: the process ends by this signal
