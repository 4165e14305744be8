"""What `agent lab` rehearses: the scenarios, by name, driven against a simulated host.

A ``HostPlan`` says which simulated host the lab builds and which agent config it runs: the
default plan is the host of agent.toml.example (agent/lab/hosts/default.toml); ``plan_for``
derives one from an operator's own agent.toml. Each scenario is a function of a ``Lab`` (one
run: simulator, kernel side, agent) that injects faults through ``sim.*`` and the network and
waits on the agent's status file and trace with deadlines. The plan and the Lab live in
agent/lab/rehearsal.py; the scenarios in one module per kind (scenarios_basic, scenarios_several
for several networks and CARP pairs, scenarios_xapi for xen-api as it is); this module names
them. Python 3.6 compatible.
"""

import collections

# What the lab's runner, tests and benches use from here (agent/lab/rehearsal.py holds them):
from agent.lab.rehearsal import (LAN4_IP, SILENT_PROBES, Lab, LabFailure, PlanError,  # noqa: F401
                                 default_plan, plan_for, write_config)
from agent.lab.scenarios_basic import (cold_boot, firewall_reboot, flush, late_storage,
                                       maintenance_lockout, toolstack_restart)
from agent.lab.scenarios_several import (SEVERAL_SCENARIOS, applicable, carp_failover,  # noqa: F401
                                         firewall_stops_later, gateway_falls_silent, one_firewall_down,
                                         plan_for_scenario, route_failover, several_plan,
                                         silent_gateway6)
from agent.lab.scenarios_xapi import (autostart_race, enable_refused, evacuated, member_emergency,
                                      nfs_late, self_enable, slow_plug)

SCENARIOS = collections.OrderedDict((
    ("cold-boot", cold_boot),
    ("firewall-reboot", firewall_reboot),
    ("toolstack-restart", toolstack_restart),
    ("late-storage", late_storage),
    ("maintenance-lockout", maintenance_lockout),
    ("flush", flush),
    ("carp-failover", carp_failover),
    ("one-firewall-down", one_firewall_down),
    ("firewall-stops-later", firewall_stops_later),
    ("route-failover", route_failover),
    ("silent-gateway6", silent_gateway6),
    ("gateway-falls-silent", gateway_falls_silent),
    ("self-enable", self_enable),
    ("enable-refused", enable_refused),
    ("evacuated", evacuated),
    ("autostart-race", autostart_race),
    ("slow-plug", slow_plug),
    ("nfs-late", nfs_late),
    ("member-emergency", member_emergency),
))


def describe(name):
    """A scenario's docstring, on one line."""
    return " ".join(SCENARIOS[name].__doc__.split())
