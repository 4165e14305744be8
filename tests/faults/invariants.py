"""What every fault test checks once the fault is over (issue 7, docs/testing.md §4).

After each fault: the agent converges (HEALTHY, every configured address, mirror and default
route present), no address or route outside the config was removed (a foreign address and a
foreign route are planted on the management bridge before the fault), the agent printed no
traceback, and `agent status` (the status file and its last transitions) names what happened.

All kernel reads are ``ip -j`` inside the lab's dom0 namespace: independent of the agent's own
netlink code.
"""

import json
import os

from tests.waiting import wait_until

# The harness's agent.toml (agent/lab/harness.py: the lab's default plan, agent.toml.example):
# one binding on network "sspn".
ADDRESSES = ("192.0.2.2/24", "2001:db8:1::2/64")
MIRRORS = ("192.0.2.2/32", "2001:db8:1::2/128")
GATEWAYS = ("192.0.2.1", "2001:db8:1::1")
MGMT = "xenbr0"

# Not in the config: the agent must never remove these.
FOREIGN_ADDRESSES = ((MGMT, "203.0.113.77/24"), (MGMT, "2001:db8:99::7/64"))
FOREIGN_ROUTES = (("198.18.0.0/15", MGMT), ("2001:db8:98::/48", MGMT))


def sspn_bridge(host):
    """The bridge xapi gives network "sspn" (xapiN)."""
    return host.sim.state()["networks"]["sspn"]["bridge"]


def _ip_json(host, *args):
    out = host.topology.ip("dom0", "-j", *args)
    return json.loads(out or "[]")


def addresses(host):
    """{(ifname, "addr/prefix")} in dom0."""
    return set((link["ifname"], "%s/%d" % (a["local"], a["prefixlen"]))
               for link in _ip_json(host, "addr", "show") for a in link.get("addr_info", ()))


def routes(host):
    """{(dst, gateway or None, dev)} of dom0's main tables, v4 and v6."""
    out = set()
    for family in ("-4", "-6"):
        for r in _ip_json(host, family, "route", "show"):
            out.add((r.get("dst"), r.get("gateway"), r.get("dev")))
    return out


def plant_foreign(host):
    """Add an address and a route per family that the config does not name."""
    lines = ["addr add %s dev %s%s" % (a, dev, " nodad" if ":" in a else "") for dev, a in FOREIGN_ADDRESSES]
    lines += ["route add %s dev %s" % (dst, dev) for dst, dev in FOREIGN_ROUTES]
    host.topology.ip("dom0", batch=lines)


def missing(host):
    """What of the config's kernel state dom0 lacks right now (empty when converged)."""
    bridge = sspn_bridge(host)
    have, have_routes = addresses(host), routes(host)
    want = [(bridge, a) for a in ADDRESSES] + [(MGMT, m) for m in MIRRORS]
    out = ["%s on %s" % (a, dev) for dev, a in want if (dev, a) not in have]
    out += ["default via %s dev %s" % (g, bridge) for g in GATEWAYS if ("default", g, bridge) not in have_routes]
    return out


def foreign_missing(host):
    """What of the planted foreign state is gone (must stay empty)."""
    have, have_routes = addresses(host), routes(host)
    out = ["%s on %s" % (a, dev) for dev, a in FOREIGN_ADDRESSES if (dev, a) not in have]
    out += ["%s dev %s" % (dst, dev) for dst, dev in FOREIGN_ROUTES if (dst, None, dev) not in have_routes]
    return out


def tracebacks(host):
    """Lines of the agent's log that start a Python traceback."""
    path = os.path.join(host.dir, "agent.log")
    try:
        with open(path) as f:
            return [line for line in f if "Traceback (most recent call last)" in line]
    except OSError:
        return []


def assert_recovered(host, deadline=60.0):
    """HEALTHY with everything configured in place, nothing foreign removed, no traceback."""
    host.wait_state("HEALTHY", deadline=deadline)
    wait_until(lambda: not missing(host), timeout=deadline,
               message="dom0 to hold every configured address and route (missing: %s)" % missing(host))
    assert foreign_missing(host) == [], "the agent removed state the config does not name"
    assert tracebacks(host) == [], "the agent printed a traceback; see %s/agent.log" % host.dir


def plugs_traced(host, count=1, deadline=60.0):
    """Wait until the trace holds ``count`` PBD.plug answers. HEALTHY can come before the answer
    to the plug that led there: the PBD's attach reaches the agent as an XAPI event first, the
    plug's reply after it."""
    def plugs():
        return [e for r in host.trace() for e in ([r] if r.get("type") == "effect" else r.get("effects", []))
                if e["what"].startswith("PBD.plug")]
    wait_until(lambda: len(plugs()) >= count, timeout=deadline,
               message="%d PBD.plug answer(s) in the trace" % count)


def transitions_since(status, since):
    """The status file's recent transitions (docs/architecture.md §7; key "time") at or after wall time ``since``."""
    return [t for t in status.get("transitions", ()) if t.get("time", 0) >= since]
