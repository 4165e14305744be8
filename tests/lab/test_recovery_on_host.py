"""Storage and maintenance recovery on the simulator and namespaces, with the real agent process
(issue 5's list): a deliberately disabled host left alone and said so; after a lock-out the
firewall started once, and left halted when an operator stops it later; PBD.plug failing 5 times
with growing retry delays, then plugged; autostart in integer order, never an auto_poweron
"false" VM; an IPv6-only storage target.
"""

import os
import shutil

import pytest

from agent.lab.harness import FIREWALL, Host
from tests.faults import invariants as inv

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 `ip` to create network namespaces")

SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
DEADLINE = 60.0
STORAGE6 = "2001:db8:2::10"


def trace_effects(host, prefix):
    return [e for r in host.trace() for e in ([r] if r.get("type") == "effect" else r.get("effects", []))
            if e["what"].startswith(prefix)]


def config_with(host, *replacements):
    """The agent.toml the host writes by default, with (old, new) replaced; each old text once in it."""
    with open(host.write_config()) as f:
        text = f.read()
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def test_deliberately_disabled_host_is_left_alone_and_status_says_so():
    with Host() as host:
        inv.plant_foreign(host)
        host.sim.host_disable(False)                 # host.disable with auto_enable=false
        host.start_agent()
        st = host.wait(lambda s: any("on purpose" in b for b in s.get("blockers", ())),
                       "the status to say the host was disabled on purpose", DEADLINE)
        assert st["state"] == "WAITING_VM"
        assert not trace_effects(host, "host.enable") and not trace_effects(host, "VM.start")
        assert host.sim.state()["vms"][FIREWALL]["power_state"] == "Halted"


def test_after_a_lock_out_the_firewall_is_started_once_and_an_operator_stop_is_respected():
    with Host() as host:
        inv.plant_foreign(host)
        host.sim.host_disable()                      # locked out: disabled, the firewall halted
        host.start_agent()
        inv.assert_recovered(host, deadline=DEADLINE)
        assert [e["result"] for e in trace_effects(host, "VM.start " + FIREWALL)] == ["ok"]
        host.sim.vm_stop(FIREWALL)                   # the operator shuts the firewall down
        st = host.wait(lambda s: any("xe vm-start" in b for b in s.get("blockers", ())),
                       "the status to say the firewall was stopped after it ran", DEADLINE)
        assert st["state"] == "WAITING_VM"
        assert host.sim.state()["vms"][FIREWALL]["power_state"] == "Halted"
        assert len(trace_effects(host, "VM.start " + FIREWALL)) == 1
        host.sim.vm_start(FIREWALL)                  # and starts it again when done
        inv.assert_recovered(host, deadline=DEADLINE)


def test_pbd_plug_failing_five_times_then_plugged():
    with Host() as host:
        inv.plant_foreign(host)
        host.config_text = config_with(host, ("retry_budget = 5", "retry_budget = 8"))
        host.sim.plug_failures(SR, 5)
        host.sim.vm_start(FIREWALL)
        host.start_agent()
        inv.assert_recovered(host, deadline=DEADLINE)
        inv.plugs_traced(host, 6, deadline=DEADLINE)
        plugs = trace_effects(host, "PBD.plug sr:" + SR)
        assert [p["result"].split(":")[0] for p in plugs] == ["failed"] * 5 + ["ok"]
        assert all("SR_BACKEND_FAILURE" in p["result"] for p in plugs[:5])
        # Backoff grows: failure n waits base * 2**(n-1), capped, times a jitter in [0.5, 1]
        # (the lab's timings, agent/lab/rehearsal.py LAB_TIMING: base 0.2 s, cap 2 s; below the
        # cap each delay is at least the last).
        delays = [p["retry_in"] for p in plugs[:5]]
        raw = [min(2.0, 0.2 * 2 ** n) for n in range(5)]
        assert all(0.5 * r - 0.001 <= d <= r + 0.001 for d, r in zip(delays, raw)), delays
        assert delays[:4] == sorted(delays[:4]), delays


def test_autostart_in_integer_order_and_never_auto_poweron_false():
    with Host() as host:
        inv.plant_foreign(host)
        host.sim.vm_start(FIREWALL)
        host.start_agent()
        inv.assert_recovered(host, deadline=DEADLINE)
        started = [e["what"].split()[1] for e in trace_effects(host, "VM.start") if e["result"] == "ok"]
        assert started == ["web", "db"]               # order 2 before order 10 (not "10" < "2")
        vms = host.sim.state()["vms"]
        assert vms["scratch"]["power_state"] == "Halted"          # auto_poweron "false"
        assert vms["db before upgrade"]["power_state"] != "Running"  # a snapshot is never started


def test_ipv6_only_storage_target():
    with Host() as host:
        inv.plant_foreign(host)
        host.config_text = config_with(host, ("probe = []", 'probe = ["%s"]' % STORAGE6))  # [[sr]]'s
        host.sim.storage_probe = lambda device_config: host.ping(STORAGE6)   # the mount goes over v6
        host.topology.ip("lan", "-4", "route", "del", "default")             # no way back over v4
        host.sim.vm_start(FIREWALL)
        host.start_agent()
        inv.assert_recovered(host, deadline=DEADLINE)
        probes = trace_effects(host, "probe sr:" + SR)
        assert probes and all(STORAGE6 in p["what"] for p in probes)
        assert not host.ping("198.51.100.10") and host.sim.state()["srs"][SR]["attached"]
