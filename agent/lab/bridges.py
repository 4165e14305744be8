"""The lab's bridge backends: how a topology makes dom0's bridges and plugs ports into them.

dom0's bridges are Open vSwitch bridges; the lab can build them as Linux bridges (the
default, nothing to install) or as Open vSwitch bridges with the userspace datapath
(agent/lab/ovs.py). Both follow xapi's order for a VIF on a PIF-less network: the bridge is
created down, the VIF is added as a port, and xcp-networkd brings the bridge up afterwards
(xcp-networkd, xen-api ``network_server.ml``: ``Bridge.create``, and ``Interface.bring_up``,
which is ``ip link set up``; the VIF is plugged by the ``vif`` hotplug script). The topology
(agent/lab/netns.py) issues that last step itself.

A backend answers with the ports of a bridge (``ports``), so tests ask it instead of
assuming the kernel's shape: a Linux bridge's port shows ``master <bridge>``, an Open
vSwitch port does not (on a netdev bridge nothing in the kernel links them).
"""

import os

BRIDGE_ENV = "SSPN_BRIDGE"   # "linux" (default) or "ovs": the backend tests, benches and the lab use
LINUX, OVS = "linux", "ovs"
NAMES = (LINUX, OVS)


class BridgeBackendError(RuntimeError):
    """The backend cannot be used here (the name is unknown, or its programs are missing)."""


def default_name():
    """The backend named by $SSPN_BRIDGE, else Linux bridges."""
    return os.environ.get(BRIDGE_ENV, "").strip().lower() or LINUX


def make(name, topology):
    """A backend instance ``name`` ("linux" or "ovs") for ``topology``."""
    name = (name or default_name()).lower()
    if name == LINUX:
        return LinuxBridges(topology)
    if name == OVS:
        from agent.lab.ovs import OvsBridges
        return OvsBridges(topology)
    raise BridgeBackendError("unknown bridge backend %r (%s=%s); use one of: %s"
                             % (name, BRIDGE_ENV, os.environ.get(BRIDGE_ENV, ""), ", ".join(NAMES)))


class LinuxBridges(object):
    """Kernel bridges made with ``ip link add type bridge``; a port is a link with ``master``."""

    name = LINUX
    description = "Linux bridges"

    def __init__(self, topology):
        self.topology = topology

    def start(self):
        """Nothing to start: the kernel is the switch."""

    def stop(self):
        """Nothing to stop: the bridges go with the namespace."""

    def guest_end(self, ns, peer):
        """Nothing to prepare: the kernel bridge hands checksum offload on as it is."""

    def create_bridge(self, bridge):
        """Create ``bridge`` in dom0, down."""
        self.topology.ip("dom0", "link", "add", bridge, "type", "bridge")

    def add_port(self, bridge, port):
        """Enslave the dom0 link ``port`` to ``bridge``."""
        self.topology.ip("dom0", "link", "set", port, "master", bridge)

    def plug(self, bridge, port, create):
        """``create``: make the bridge (down) first; then add ``port`` and set it up. One ``ip``."""
        lines = ["link add %s type bridge" % bridge] if create else []
        self.topology.ip("dom0", batch=lines + ["link set %s master %s" % (port, bridge),
                                                "link set %s up" % port])

    def unplug(self, bridge, port):
        """Delete the link ``port``: that takes it off ``bridge`` (and its fw end with it)."""
        self.topology.ip("dom0", "link", "del", port)

    def delete_bridge(self, bridge):
        """Delete ``bridge`` from dom0."""
        self.topology.ip("dom0", "link", "del", bridge)

    def ports(self, bridge):
        """The sorted names of ``bridge``'s ports."""
        return sorted(name for name, master in self.topology.links("dom0").items() if master == bridge)

    def bridges(self):
        """The sorted names of dom0's bridges."""
        out = self.topology.ip("dom0", "-o", "link", "show", "type", "bridge")
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip())

    def processes(self):
        """The pids of daemons this backend runs: none."""
        return []
