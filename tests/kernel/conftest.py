"""Fixtures for the real-kernel tests: a throwaway dom0/fw/lan namespace topology, removed even on failure.

Other test modules reuse the ``topology`` fixture; it skips (with the reason) when the run is
not root or iproute2 is missing, so a module needs no skip marker of its own to use it. Its
bridges are the backend ``$SSPN_BRIDGE`` names (Linux bridges by default; ``ovs``: Open
vSwitch, as on dom0), so the same tests run on both; a test asks ``topology.ports(bridge)``
rather than assuming one backend's kernel shape.
"""

import pytest

from tests.kernel.labhelp import NETNS_REASON, namespaces_with_prefix, netns_available, ping_from


@pytest.fixture
def topology():
    """A fresh lab Topology (namespaces <prefix>-dom0, -fw, -lan); deleted afterwards, also on failure."""
    if not netns_available():
        pytest.skip(NETNS_REASON)
    from agent.lab.netns import Topology
    topo = Topology()
    topo.create()
    try:
        yield topo
    finally:
        topo.cleanup()
    leftovers = namespaces_with_prefix(topo.prefix + "-")
    assert not leftovers, "namespaces left behind: %s" % leftovers


@pytest.fixture
def ping():
    """``ping(topology, ns, address)`` -> True when the address answers one echo from inside ``ns``."""
    return ping_from
