"""Helpers for the real-kernel tests: is `ip netns` usable, which namespaces exist, does a ping answer."""

import os
import shutil
import subprocess
import sys

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


# icmplib (a project dependency) stands in where iputils ping is not installed.
_ICMPLIB_PING = (
    "import sys, icmplib\n"
    "host = icmplib.ping(sys.argv[1], count=1, timeout=1, privileged=True)\n"
    "sys.exit(0 if host.is_alive else 1)\n"
)


def ping_from(topology, ns, address):
    """True when one echo request from namespace ``ns`` to ``address`` is answered within 1 s.

    Uses ``ping -c1 -W1`` when iputils ping is installed, otherwise the same probe with icmplib
    in this interpreter, both run with ``ip netns exec``.
    """
    if shutil.which("ping"):
        argv = ["ping", "-c1", "-W1", address]
    else:
        argv = [sys.executable, "-c", _ICMPLIB_PING, address]
    proc = subprocess.Popen(["ip", "netns", "exec", topology.ns(ns)] + argv,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.communicate()
    return proc.returncode == 0
