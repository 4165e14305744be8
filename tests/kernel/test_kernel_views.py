"""Pure parts of the kernel adapters (no root needed): view diffs and the lazy pyroute2 import."""

import subprocess
import sys

from agent.decision.events import (AddressAdded, AddressRemoved, LinkAppeared, LinkGone, RouteAdded,
                          RouteRemoved)
from agent.decision.world import KernelView, diff_views


def test_diff_of_equal_views_is_empty():
    """Two equal views give no events: a batch of irrelevant notifications posts nothing."""
    view = KernelView(links={"lo", "xenbr0"}, addresses={("lo", "127.0.0.1/8")},
                      routes={(4, "192.0.2.1", "xapi0")})
    assert diff_views(view, KernelView(view.links, view.addresses, view.routes)) == []


def test_diff_orders_the_cause_first():
    """A gone link first (the earliest drift), then addresses (a v4 default route dies with its
    address), then routes; additions link, address, route; each sorted."""
    old = KernelView(links={"lo", "xapi0"},
                     addresses={("xapi0", "192.0.2.2/24")},
                     routes={(4, "192.0.2.1", "xapi0")})
    new = KernelView(links={"lo", "xapi1"},
                     addresses={("xapi1", "192.0.2.2/24")},
                     routes={(6, "fe80::1", "xapi1")})
    assert diff_views(old, new) == [
        LinkGone("xapi0"),
        AddressRemoved("xapi0", "192.0.2.2/24"),
        RouteRemoved(4, "192.0.2.1", "xapi0"),
        LinkAppeared("xapi1"),
        AddressAdded("xapi1", "192.0.2.2/24"),
        RouteAdded(6, "fe80::1", "xapi1"),
    ]


def test_diff_sees_a_route_change_as_remove_plus_add():
    """A default route moving to another gateway is RouteRemoved(old) then RouteAdded(new)."""
    old = KernelView(links={"xenbr0"}, routes={(4, "203.0.113.1", "xenbr0")})
    new = KernelView(links={"xenbr0"}, routes={(4, "203.0.113.2", "xenbr0")})
    assert diff_views(old, new) == [RouteRemoved(4, "203.0.113.1", "xenbr0"),
                                    RouteAdded(4, "203.0.113.2", "xenbr0")]


def test_the_agent_does_not_import_pyroute2():
    """The kernel side speaks rtnetlink itself; pyroute2 (~24 MiB, 200 ms to import) is only the
    tests' and the bench's independent reader."""
    code = ("import sys\n"
            "import agent.adapters.net, agent.adapters.netwatch, agent.adapters.rtnl, agent.lab.netns\n"
            "import agent.service, agent.tools.check\n"
            "sys.exit(1 if 'pyroute2' in sys.modules else 0)\n")
    root = __file__.rsplit("/tests/", 1)[0]
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    _, err = proc.communicate()
    assert proc.returncode == 0, err or "pyroute2 was imported"
