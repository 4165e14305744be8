"""SIGKILL of the agent at random instants in the middle of real work, then a restart (DESIGN §10).

systemd's Restart=always restarts a killed agent; the new one must converge from whatever the
old one left half done. Each seed picks one piece of work and a random instant in it, kills
the agent (SIGKILL: no handler, no cleanup) and starts a new one:

* cold-boot: the agent killed while idle, then the host disabled with the firewall VM halted
  (locked out) and the SR's PBD detached; a new agent starts and is killed while it enables
  the host, starts the firewall, binds, probes and plugs;
* firewall-reboot: killed while it re-binds the firewall's new bridge;
* address-deleted: killed while it restores an address someone deleted;
* storage-back: killed while it probes and plugs storage that has just come back.

After every restart (tests/faults/invariants.py): HEALTHY with every configured address,
mirror and route, the planted foreign state intact, no traceback in either agent's log; the
status file is whole JSON written by the new process; the trace still reads; a VM an operator
stopped after the boot stays stopped (autostart is once per boot, also across restarts).

SSPN_FAULT_SEEDS (default 50) sets the number of seeds, e.g. 500 for a nightly run:
``SSPN_FAULT_SEEDS=500 pytest tests/faults/test_sigkill.py``. A failure names its seed.
"""

import json
import os
import random
import shutil
import signal
import time

import pytest

from agent import trace
from agent.lab.harness import FIREWALL, Host
from tests.faults import invariants as inv
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 `ip` to create network namespaces")

SEEDS = int(os.environ.get("SSPN_FAULT_SEEDS", "50"))
PER_HOST = 10                     # seeds run one after another on one simulated host
PHASES = ("cold-boot", "firewall-reboot", "address-deleted", "storage-back")
SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
STOPPED_BY_OPERATOR = "db"        # an auto-power-on VM stopped after the boot: stays stopped
DEADLINE = 60.0                   # bounds a failure only


def kill(host):
    """SIGKILL the agent process and reap it."""
    host.agent.send_signal(signal.SIGKILL)
    host.agent.wait(10)


def inject(host, phase, rng):
    """Start the phase's work; return with the agent in the middle of it (not yet killed)."""
    if phase == "cold-boot":
        kill(host)
        host.sim.vm_stop(FIREWALL)
        host.sim.pbd_unplug(SR)
        host.sim.host_disable()
        host.start_agent(append=True)
    elif phase == "firewall-reboot":
        host.sim.vm_reboot(FIREWALL)
    elif phase == "address-deleted":
        host.topology.ip("dom0", "addr", "del", inv.ADDRESSES[0], "dev", inv.sspn_bridge(host))
    else:  # storage-back
        host.topology.ip("lan", "route", "del", "default")
        host.sim.pbd_unplug(SR)
        host.wait(lambda st: st.get("state") != "HEALTHY", "the agent to see the PBD detached", DEADLINE)
        host.topology.ip("lan", "route", "add", "default", "via", "198.51.100.1")


def check_after_restart(host, seed, phase):
    where = "seed %d (%s)" % (seed, phase)
    host.wait(lambda st: st.get("pid") == host.agent.pid and st.get("state") == "HEALTHY",
              "%s: the new agent's own status to show HEALTHY" % where, DEADLINE)
    inv.assert_recovered(host, deadline=DEADLINE)
    with open(os.path.join(host.dir, "status.json")) as f:
        status = json.load(f)                      # whole JSON: written temp + rename
    assert status["pid"] == host.agent.pid, where
    assert trace.read(os.path.join(host.dir, "trace.jsonl")), where
    vms = host.sim.state()["vms"]
    assert vms[STOPPED_BY_OPERATOR]["power_state"] == "Halted", \
        "%s: autostart ran again after a restart and started %s" % (where, STOPPED_BY_OPERATOR)
    assert vms[FIREWALL]["power_state"] == "Running", where


@pytest.mark.parametrize("first", range(0, SEEDS, PER_HOST), ids=lambda s: "seeds-%d" % s)
def test_sigkill_at_random_instants_then_restart(first):
    with Host() as host:
        inv.plant_foreign(host)
        host.start_agent()
        host.wait_state("WAITING_VM", deadline=DEADLINE)
        host.sim.vm_start(FIREWALL)
        host.wait_state("HEALTHY", deadline=DEADLINE)
        wait_until(lambda: host.status().get("autostart_done"), timeout=DEADLINE,
                   message="the boot's autostart to be done")
        host.sim.vm_stop(STOPPED_BY_OPERATOR)
        for seed in range(first, min(first + PER_HOST, SEEDS)):
            rng = random.Random(seed)
            phase = PHASES[seed % len(PHASES)]
            inject(host, phase, rng)
            time.sleep(rng.uniform(0.0, 0.6))      # the injection instant, not a synchronisation
            kill(host)
            host.start_agent(append=True)
            check_after_restart(host, seed, phase)
