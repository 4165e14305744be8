"""SIGKILL of the agent at random instants in the middle of real work, then a restart (docs/testing.md §4).

systemd's Restart=always restarts a killed agent; the new one must converge from whatever the
old one left half done. Every seed picks one piece of work, waits for an *anchor* in it (a
transition in the trace, a VM.start reaching the simulator, the agent's first status), draws
a delay, kills the agent with SIGKILL (no handler, no cleanup) and starts a new one; about one
seed in three kills that new agent too, at a random instant of its own recovery. A kill in the
middle of a write is too rare to count on, so about a third of the kills also leave what it
would: a torn last trace line (no newline) and a half-written status temp file.

* boot (every other seed): the host reboots -- every VM halted, the SR's PBD detached, the
  host disabled with the firewall halted (locked out), sometimes still answering
  HOST_STILL_BOOTING, the mirrors gone from dom0 and the status file gone (/run is a tmpfs)
  -- and the agent is killed while it starts (interpreter, XAPI connect, early mirror),
  enables the host, starts the firewall, waits for and binds its bridge, routes, probes and
  plugs storage, or autostarts web (order 2) or db (order 10, during its start_delay);
* firewall-reboot, address-deleted, mirror-deleted, route-deleted, storage (lost, then back:
  killed while it is away or while it comes back): repairs from HEALTHY.

After every restart (tests/faults/invariants.py and more): HEALTHY with every configured
address, mirror and route, the planted foreign address and route intact, no traceback in the
log of any agent of the host (agent.log is appended to across restarts), the status file is
whole JSON written by the new process and no killed agent's temp file is left; the trace still
reads, each SIGKILL tore at most one line and the new agent's first transition is readable;
the simulator's power timeline shows no VM.start of a running VM (unless the lab itself
restarted that VM during the fault: a race XAPI settles with VM_BAD_POWER_STATE) and no VM
the agent started twice in one boot; web and db were autostarted in this boot, and db stays
halted once an operator stopped it (autostart is once per boot, also across restarts); the
host is enabled, the SR plugged.

Seeds: SSPN_FAULT_SEEDS (default 50) sets how many, e.g. 500 for a nightly run:
``SSPN_FAULT_SEEDS=500 pytest tests/faults/test_sigkill.py``. Ten seeds share one simulated
host, one after another (each ends converged and checked, so the faults stay independent).
A failure names its seed, what was killed where, and the tail of agent.log; rerun it with
``SSPN_FAULT_SEED=<n>`` (a comma-separated list runs several, in that order, on one host). A
seed fixes the fault, the anchor and the delays, not the scheduler: a race may need a few runs.
"""

import glob
import json
import os
import random
import shutil
import signal
import time

import pytest

from agent.report import trace
from agent.lab.harness import FIREWALL, Host
from tests.faults import invariants as inv
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 `ip` to create network namespaces")

SEEDS = int(os.environ.get("SSPN_FAULT_SEEDS", "50"))
ONLY = [int(s) for s in os.environ.get("SSPN_FAULT_SEED", "").split(",") if s.strip()]
PER_HOST = 10                     # seeds run one after another on one simulated host
PLAN = ("boot", "firewall-reboot", "boot", "address-deleted", "boot", "storage",
        "boot", "route-deleted", "boot", "mirror-deleted")       # by seed % 10
# Where in a boot the kill lands: an anchor, then a delay drawn from the seed. In order of the
# boot; boot seeds take them in turn (seed // 2), so 50 seeds cover each two or three times.
BOOT_ANCHORS = ("process",         # just spawned: interpreter, imports, first XAPI connect
                "status",          # its first status file: connecting, early mirror
                "MAINTENANCE",     # host.enable (retried while HOST_STILL_BOOTING)
                "start pfsense",   # VM.start of the firewall reached XAPI
                "WAITING_VM",      # waiting for the firewall's bridge
                "BINDING", "ROUTED",
                "SR_PROBING",      # probing the NFS server, PBD.plug
                "start web",       # autostart, order 2
                "start db")        # autostart, order 10, VM.start waits its start_delay
SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
AUTOSTART = ("web", "db")         # auto_poweron VMs of the lab's default host
NEVER_STARTED = ("scratch", "db before upgrade")   # no auto_poweron; a snapshot
DEADLINE = 60.0                   # bounds a failure only
SECOND_KILL = 0.3                 # the share of seeds that also kill the restarted agent
TORN_WRITES = 0.3                 # the share of kills that leave torn files behind (see kill)


def seed_groups():
    seeds = ONLY or list(range(SEEDS))
    return [seeds[i:i + PER_HOST] for i in range(0, len(seeds), PER_HOST)]


class Run(object):
    """One host's bookkeeping: what the checks expect, and the story of the current seed."""

    def __init__(self, host):
        self.host = host
        self.kills = 0
        self.scanned = 0                 # power timeline entries judged so far
        self.running, self.previous = {}, {}   # per VM, from the timeline
        self.starts = {}                 # VM -> how often the agent started it in this boot
        self.lab_restarted = set()       # VMs the lab itself restarted in this seed's fault
        self.db_stopped = False          # an operator stopped db after this boot's autostart
        self.story = []

    def say(self, text):
        self.story.append(text)


# --- acting ------------------------------------------------------------------------------------

def kill(run, rng=None):
    """SIGKILL the agent process and reap it; note the state it was killed in.

    With ``rng``, sometimes leave what a kill in the middle of a write leaves (a real one lands
    there too rarely to count on): the trace's last line cut short, without its newline, and
    the status file's temp file half written. The status file itself is only ever renamed.
    """
    host = run.host
    status = host.status()
    state = status.get("state", "?") if status.get("pid") == host.agent.pid else "no status yet"
    host.agent.send_signal(signal.SIGKILL)
    host.agent.wait(10)
    run.kills += 1
    run.say("killed (its last status: %s)" % state)
    if rng is not None and rng.random() < TORN_WRITES:
        with open(os.path.join(host.dir, "trace.jsonl"), "a") as f:
            f.write('{"cause": "kernel_changed: link_gone ifname=xa')
        with open(os.path.join(host.dir, "status.json.%d.tmp" % host.agent.pid), "w") as f:
            f.write('{\n "addresses": [\n  {\n   "address": "192.0')
        run.say("it left a torn trace line and a torn status temp file")


def restart(run):
    """What systemd's Restart=always does; returns the wall time just before the start."""
    started = time.time()
    run.host.start_agent(append=True)
    run.say("restarted as pid %d" % run.host.agent.pid)
    return started


def timeline(host):
    with host.sim.power.lock:
        return list(host.sim.power.timeline)


def set_start_delay(host, vm, seconds):
    host.sim.db.update("VM", host.sim.state()["vms"][vm]["ref"], start_delay=int(seconds))


def reboot(run, rng):
    """The host reboots and the agent starts (not waited for): see the module docstring."""
    host = run.host
    if host.agent is not None and host.agent.poll() is None:
        kill(run)                              # the reboot's own: any instant
    for vm in (FIREWALL,) + AUTOSTART:
        host.sim.vm_stop(vm)                   # the firewall's bridge, addresses, routes go with it
    host.sim.pbd_unplug(SR)
    host.sim.host_disable()
    booting = rng.choice((0.0, 0.0, 0.6))
    host.sim.boot_phase(booting)
    host.topology.ip("dom0", batch=["addr del %s dev %s" % (m, inv.MGMT) for m in inv.MIRRORS])
    for path in glob.glob(os.path.join(host.dir, "status.json*")):
        os.remove(path)                        # /run is a tmpfs
    assert not power_problems(run)             # judge the last boot's entries first
    run.starts = {}
    run.db_stopped = False
    run.say("host rebooted (locked out%s)" % (", HOST_STILL_BOOTING for %.1f s" % booting if booting else ""))
    host.start_agent(append=True)


def new_transitions(path, offset):
    """Transitions appended to the trace after byte ``offset``."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return []
    out = []
    for line in data.split(b"\n"):
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("type") == "transition":
            out.append(record)
    return out


def wait_anchor(run, anchor, trace_offset, mark):
    """Wait (deadline) for the anchor; give up on it if the agent is HEALTHY first."""
    host = run.host
    path = os.path.join(host.dir, "trace.jsonl")
    pid = host.agent.pid

    def reached():
        if host.agent.poll() is not None:
            raise RuntimeError("the agent exited (status %s) before the kill" % host.agent.returncode)
        if anchor == "process":
            return "anchor"
        status = host.status()
        if anchor == "status":
            return "anchor" if status.get("pid") == pid else None
        if anchor.startswith("start "):
            vm = anchor[len("start "):]
            if any(e["vm"] == vm and e["event"] == "start_requested" for e in timeline(host)[mark:]):
                return "anchor"
        elif any(r.get("to") == anchor for r in new_transitions(path, trace_offset)):
            return "anchor"
        if status.get("pid") == pid and status.get("state") == "HEALTHY":
            return "healthy"
        return None

    got = wait_until(reached, timeout=DEADLINE, interval=0.002, message="anchor %s" % anchor)
    run.say("anchor %s %s" % (anchor, "reached" if got == "anchor" else "missed: HEALTHY first"))


def trace_size(host):
    try:
        return os.path.getsize(os.path.join(host.dir, "trace.jsonl"))
    except OSError:
        return 0


def inject(run, phase, rng):
    """Start a repair in HEALTHY; returns what to do after the restart (or None)."""
    host = run.host
    bridge = inv.sspn_bridge(host)
    if phase == "firewall-reboot":
        run.lab_restarted.add(FIREWALL)
        host.sim.vm_reboot(FIREWALL)
    elif phase == "address-deleted":
        host.topology.ip("dom0", "addr", "del", rng.choice(inv.ADDRESSES), "dev", bridge)
    elif phase == "mirror-deleted":
        host.topology.ip("dom0", "addr", "del", rng.choice(inv.MIRRORS), "dev", inv.MGMT)
    elif phase == "route-deleted":
        gateway = rng.choice(inv.GATEWAYS)
        host.topology.ip("dom0", "-6" if ":" in gateway else "-4", "route", "del", "default",
                         "via", gateway, "dev", bridge)
    else:  # storage: lost, then back before the kill or after the restart
        host.topology.ip("lan", "route", "del", "default")
        host.sim.pbd_unplug(SR)
        host.wait(lambda st: st.get("state") != "HEALTHY", "the agent to see the PBD detached", DEADLINE)

        def back():
            host.topology.ip("lan", "route", "add", "default", "via", "198.51.100.1")
        if rng.random() < 0.5:
            run.say("storage lost, killed while it is away")
            return back
        back()
        run.say("storage lost and back")
        return None
    run.say(phase)
    return None


# --- checking ----------------------------------------------------------------------------------

def power_problems(run):
    """The simulator's power timeline since the last check: a VM.start of a running VM, or a VM
    the agent started more than once in this boot. One case is no fault of the agent: the lab
    itself restarted the VM during this seed's fault (``run.lab_restarted``) while the agent,
    having seen it halted, asked to start it -- XAPI refuses that (VM_BAD_POWER_STATE) and the
    agent takes it as done."""
    entries = timeline(run.host)
    out = []
    for i in range(run.scanned, len(entries)):
        vm, what = entries[i]["vm"], entries[i]["event"]
        if what == "start_requested" and run.running.get(vm):
            if vm in run.lab_restarted:
                run.say("VM.start %s lost a race with the lab's own restart (timeline entry %d)" % (vm, i))
            else:
                out.append("VM.start %s while it was running (timeline entry %d)" % (vm, i))
        elif what == "running":
            run.running[vm] = True
            if run.previous.get(vm) == "start_requested" and vm not in run.lab_restarted:
                run.starts[vm] = run.starts.get(vm, 0) + 1
        elif what == "halted":
            run.running[vm] = False
        run.previous[vm] = what
    run.scanned = len(entries)
    out += ["the agent started %s %d times in this boot" % (vm, n) for vm, n in sorted(run.starts.items()) if n > 1]
    return out


def check_after_restart(run, restarted_at, fault_mark):
    host = run.host
    host.wait(lambda st: st.get("pid") == host.agent.pid and st.get("state") == "HEALTHY",
              "the new agent's own status to show HEALTHY", DEADLINE)
    inv.assert_recovered(host, deadline=DEADLINE)     # kernel state, foreign state, tracebacks

    status_path = os.path.join(host.dir, "status.json")
    with open(status_path) as f:
        status = json.load(f)                         # whole JSON: written temp + rename
    assert status["pid"] == host.agent.pid
    stale = [p for p in glob.glob(status_path + ".*.tmp") if p != "%s.%d.tmp" % (status_path, host.agent.pid)]
    assert not stale, "temp files of killed agents left: %s" % stale

    trace_path = os.path.join(host.dir, "trace.jsonl")
    records = trace.read(trace_path)
    assert any(r.get("type") == "transition" and r.get("from") == "BOOTING"
               and r.get("time", 0) >= restarted_at - 0.01 for r in records), \
        "the new agent's first transition is not readable in the trace"
    with open(trace_path, "rb") as f:
        torn = [line for line in f.read().split(b"\n") if line.strip() and not _parses(line)]
    assert len(torn) <= run.kills, "%d unreadable trace lines after %d kills: %r" % (len(torn), run.kills, torn)

    problems = power_problems(run)
    assert not problems, "%s; the power timeline since the fault: %s" % (
        "; ".join(problems), ", ".join("%s %s" % (e["vm"], e["event"]) for e in timeline(host)[fault_mark:]))
    state = host.sim.state()
    power = dict((name, vm["power_state"]) for name, vm in state["vms"].items())
    assert power[FIREWALL] == "Running"
    assert power["web"] == "Running", "web was not autostarted in this boot"
    assert power["db"] == ("Halted" if run.db_stopped else "Running"), \
        ("autostart ran again after a restart: it started db, which an operator had stopped"
         if run.db_stopped else "db was not autostarted in this boot")
    for vm in NEVER_STARTED:
        assert power[vm] == "Halted", "%s (not to be autostarted) was started" % vm
    assert state["host"]["enabled"], "the host is still disabled"
    assert state["srs"][SR]["attached"], "the SR is not plugged"


def _parses(line):
    try:
        json.loads(line.decode("utf-8"))
        return True
    except ValueError:
        return False


def log_tail(host, lines=40):
    try:
        with open(os.path.join(host.dir, "agent.log")) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no agent.log)"


# --- one seed ----------------------------------------------------------------------------------

def run_seed(run, seed):
    host = run.host
    rng = random.Random(seed)
    phase = PLAN[seed % len(PLAN)]
    run.story = []
    run.lab_restarted = set()
    after_restart = None
    offset, mark = trace_size(host), len(timeline(host))
    if phase == "boot":
        anchor = BOOT_ANCHORS[(seed // 2) % len(BOOT_ANCHORS)]
        if anchor == "start db":
            set_start_delay(host, "db", 1)     # VM.start returns 1 s after db runs
        reboot(run, rng)
        wait_anchor(run, anchor, offset, mark)
        delay = rng.uniform(0.0, 1.0) if anchor in ("process", "start db") else 10 ** rng.uniform(-3.5, -0.5)
    else:
        after_restart = inject(run, phase, rng)
        delay = 10 ** rng.uniform(-3.5, -0.3)    # 0.3 ms to 0.5 s
    run.say("waited %.4f s" % delay)
    time.sleep(delay)                          # the injection instant, not a synchronisation
    kill(run, rng)
    restarted_at = restart(run)
    if after_restart is not None:
        after_restart()
    if rng.random() < SECOND_KILL:
        delay = rng.uniform(0.0, 1.0)
        run.say("waited %.4f s" % delay)
        time.sleep(delay)                      # a second instant, in the new agent's recovery
        kill(run, rng)
        restarted_at = restart(run)
    check_after_restart(run, restarted_at, mark)
    if phase == "boot":
        set_start_delay(host, "db", 0)
        host.sim.vm_stop("db")                 # an operator stops db: it must stay stopped
        run.db_stopped = True


@pytest.mark.parametrize("seeds", seed_groups(), ids=lambda g: "seeds-%d-%d" % (g[0], g[-1]))
def test_sigkill_at_random_instants_then_restart(seeds):
    with Host() as host:
        run = Run(host)
        inv.plant_foreign(host)
        host.sim.vm_start(FIREWALL)            # as xapi-autostart-vms would at the host's boot
        host.start_agent()
        host.wait_state("HEALTHY", deadline=DEADLINE)
        assert host.status().get("autostart_done")
        assert not power_problems(run)
        host.sim.vm_stop("db")
        run.db_stopped = True
        for seed in seeds:
            try:
                run_seed(run, seed)
            except (AssertionError, RuntimeError) as exc:
                raise AssertionError("seed %d (%s): %s\n  %s\nreproduce: SSPN_FAULT_SEED=%d pytest %s\n"
                                     "--- agent.log (tail) ---\n%s"
                                     % (seed, PLAN[seed % len(PLAN)], exc, "; ".join(run.story), seed,
                                        __file__, log_tail(host)))
