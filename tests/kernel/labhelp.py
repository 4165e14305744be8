"""Helpers for the real-kernel tests: is `ip netns` usable, which namespaces exist, does a ping answer."""

import os
import shutil
import subprocess

NETNS_REASON = "needs root and iproute2 `ip` to create network namespaces"


def netns_available():
    """True when this process may create network namespaces with `ip netns`."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def namespaces_with_prefix(prefix):
    """The named namespaces (``ip netns list``) whose name starts with ``prefix``."""
    out = subprocess.Popen(["ip", "netns", "list"], stdout=subprocess.PIPE,
                           universal_newlines=True).communicate()[0]
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [name for name in names if name.startswith(prefix)]


def ping_from(topology, ns, address):
    """True when one echo request from namespace ``ns`` to ``address`` is answered within 1 s."""
    return topology.ping(ns, address)


def ovs_missing():
    """None when Open vSwitch bridges can be built here, else why not (how to install it)."""
    from agent.lab import ovs
    return ovs.missing()


def backends():
    """pytest params for each bridge backend; Open vSwitch skips (saying how to install it) when absent."""
    import pytest
    return [pytest.param("linux"),
            pytest.param("ovs", marks=pytest.mark.skipif(ovs_missing() is not None,
                                                         reason=ovs_missing() or ""))]


def process_gone(pid):
    """True when ``pid`` runs no process or only a zombie (PID 1 may reap late)."""
    from agent.lab import orphans
    return orphans.process_gone(pid)
