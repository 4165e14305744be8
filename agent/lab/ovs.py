"""Open vSwitch bridges for the lab: a private ovsdb-server and ovs-vswitchd per topology.

As on dom0 (xcp-networkd runs ``ovs-vsctl``: xen-api ``network_utils.ml``, module ``Ovs``), the bridges are
Open vSwitch bridges. This machine has no ``openvswitch`` kernel module, so they use the
userspace datapath (``datapath_type=netdev``): each bridge's internal port is a tap device,
and its ports are plain links that vswitchd reads with AF_PACKET -- no ``master`` link.
vswitchd makes its taps in its own network namespace, so it runs inside the topology's dom0
namespace; each topology has its own database and daemons under its state directory
(``<state>/ovs``, also OVS_RUNDIR, so parallel labs never share ``/var/run/openvswitch``).
Stopping: vswitchd, then ovsdb-server, by their pid files (agent/lab/orphans.py does the same
for a lab that died without stopping them).
"""

import os
import shutil
import subprocess

from agent.lab import orphans

INSTALL_HINT = ("Open vSwitch is not installed (no ovs-vswitchd or ethtool): apt-get install "
                "--no-install-recommends openvswitch-switch ethtool (with a policy-rc.d exiting 101 "
                "so the packaged service does not start)")
SCHEMA = ("/usr/share/openvswitch/vswitch.ovsschema",)
DAEMONS = ("ovs-vswitchd", "ovsdb-server")   # stop order
PROGRAMS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ethtool")
VSCTL_TIMEOUT = 10   # seconds ovs-vsctl waits for the database and for vswitchd to apply a change


def _which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def missing():
    """None when Open vSwitch can be used here, else the one line saying how to install it."""
    if any(_which(p) is None for p in PROGRAMS) or not any(os.path.exists(s) for s in SCHEMA):
        return INSTALL_HINT
    return None


def stop_daemons(state_dir):
    """Stop the OVS daemons of the topology whose state directory is ``state_dir`` (by pid file;
    only a process whose command line names that directory is signalled). True when all are gone."""
    rundir = os.path.join(state_dir, "ovs")
    ok = True
    for daemon in DAEMONS:
        ok = orphans.stop_by_pidfile(os.path.join(rundir, daemon + ".pid"), rundir) and ok
    return ok


class OvsBridges(object):
    """Bridges ``datapath_type=netdev`` on the topology's own ovsdb-server and ovs-vswitchd."""

    name = "ovs"
    description = "Open vSwitch bridges (userspace datapath)"

    def __init__(self, topology):
        self.topology = topology
        self.rundir = None

    def _env(self):
        env = dict(os.environ)
        env.update(OVS_RUNDIR=self.rundir, OVS_DBDIR=self.rundir, OVS_LOGDIR=self.rundir)
        return env

    @staticmethod
    def _schema():
        return next(s for s in SCHEMA if os.path.exists(s))

    def _run(self, argv):
        from agent.lab.netns import TopologyError
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True, env=self._env())
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise TopologyError("%s failed (exit %d): %s%s" % (
                " ".join(argv), proc.returncode, err.strip() or out.strip(), self._log_tail()))
        return out

    def _log_tail(self):
        try:
            with open(os.path.join(self.rundir, "ovs-vswitchd.log")) as f:
                lines = f.read().splitlines()[-3:]
        except (OSError, TypeError):
            return ""
        return "; vswitchd log: " + " | ".join(lines) if lines else ""

    def vsctl(self, *args):
        """``ovs-vsctl`` on this topology's database (waits until vswitchd applied the change)."""
        return self._run(["ovs-vsctl", "--db=unix:%s/db.sock" % self.rundir,
                          "--timeout=%d" % VSCTL_TIMEOUT] + list(args))

    def start(self):
        """Database, ovsdb-server, then ovs-vswitchd inside dom0; returns once vswitchd serves."""
        from agent.lab.netns import TopologyError
        hint = missing()
        if hint:
            raise TopologyError(hint)
        self.rundir = os.path.join(self.topology.state_dir, "ovs")
        os.mkdir(self.rundir, 0o700)
        d = self.rundir
        self._run(["ovsdb-tool", "create", d + "/conf.db", self._schema()])
        self._run(["ovsdb-server", d + "/conf.db", "--remote=punix:%s/db.sock" % d,
                   "--pidfile=%s/ovsdb-server.pid" % d, "--unixctl=%s/ovsdb-server.ctl" % d,
                   "--log-file=%s/ovsdb-server.log" % d, "--detach", "--no-chdir"])
        self._run(["ovs-vsctl", "--db=unix:%s/db.sock" % d, "--no-wait", "init"])
        self._run(["ip", "netns", "exec", self.topology.dom0, "ovs-vswitchd", "unix:%s/db.sock" % d,
                   "--pidfile=%s/ovs-vswitchd.pid" % d, "--unixctl=%s/ovs-vswitchd.ctl" % d,
                   "--log-file=%s/ovs-vswitchd.log" % d, "--detach", "--no-chdir"])
        self.vsctl("set", "Open_vSwitch", ".", "other_config:sspn-lab=%s" % self.topology.prefix)

    def stop(self):
        """vswitchd, then ovsdb-server (by pid file); their files go with the state directory."""
        if self.rundir is not None:
            stop_daemons(os.path.dirname(self.rundir))

    def create_bridge(self, bridge):
        """Create ``bridge`` with the userspace datapath; its tap appears in dom0, down."""
        self.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")

    def add_port(self, bridge, port):
        """Add the dom0 link ``port`` to ``bridge``."""
        self.vsctl("add-port", bridge, port)

    def guest_end(self, ns, peer):
        """Checksum the guest end's packets in the kernel: the userspace datapath forwards a
        veth's packets as they are, and a TCP segment left for the NIC to checksum
        (CHECKSUM_PARTIAL, include/linux/skbuff.h) would reach dom0 with a bad checksum and be
        dropped; ICMP, checksummed in full, crosses either way."""
        self._run(["ip", "netns", "exec", ns, "ethtool", "-K", peer, "tx", "off"])

    def plug(self, bridge, port, create):
        """``create``: make the bridge (down) first; add ``port`` in the same transaction; set it up."""
        args = ["add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev", "--"] if create else []
        self.vsctl(*(args + ["add-port", bridge, port]))
        self.topology.ip("dom0", "link", "set", port, "up")

    def unplug(self, bridge, port):
        """Take ``port`` off ``bridge``, then delete the link (its fw end goes with it)."""
        self.vsctl("--if-exists", "del-port", bridge, port)
        self.topology.ip("dom0", "link", "del", port)

    def delete_bridge(self, bridge):
        """Delete ``bridge`` (its tap goes with it)."""
        self.vsctl("--if-exists", "del-br", bridge)

    def ports(self, bridge):
        """The sorted names of ``bridge``'s ports, as the database lists them."""
        return sorted(self.vsctl("list-ports", bridge).split())

    def bridges(self):
        """The sorted names of the bridges in the database."""
        return sorted(self.vsctl("list-br").split())

    def processes(self):
        """The pids of this topology's ovsdb-server and ovs-vswitchd that still run."""
        pids = []
        for daemon in DAEMONS:
            try:
                with open(os.path.join(self.rundir or "", daemon + ".pid")) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                continue
            if not orphans.process_gone(pid):
                pids.append(pid)
        return pids
