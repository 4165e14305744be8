"""Bench: end to end with default timings, the agent beside a model of its predecessor.

Method. One simulated host (agent.lab.harness.Host with fast=False: the agent runs with the
default [timing]; the XAPI simulator, namespaces dom0/fw/lan, the real `agent run` in dom0).
The predecessor is bench/predecessor_model.py, run in dom0 in the same way. Rounds alternate
(agent, model, agent, ...) so both meet the same machine load; only one of them runs at a
time. Every time is CLOCK_MONOTONIC, shared by all processes. Measured:

  fw_ping     firewall VM started (the simulator's power hook, before the bridge is made)
              -> first answer to a 10 ms pinger in dom0 aimed at the storage server
  fw_plug     firewall VM started -> PBD.plug answered with success (the PBD was detached)
  storage     the storage server back after 20-25 s away (AWAY plus a draw, the same for
              both sides of a round pair; it leaves once the firewall has confirmed its
              address, as on a LAN in use: Topology.storage_in_use; its link went down; it
              returns with its addresses and routes, then announces them with a gratuitous
              ARP: agent/lab/netns.py
              storage_back, as the lab's storage_up) -> PBD.plug success. The model runs its
              SR step from the moment storage goes (--replug; the predecessor itself never
              replugs storage that returns later)
  xapi        toolstack restart (5 s down) -> listeners accept again -> login answered
  start       process started (`ip netns exec`) -> first event.from reaches the simulator;
              a third side, "floor", runs FLOOR: the least the agent has to do before its
              first event.from, and nothing else -- read agent.toml with the agent's TOML
              reader, parse its addresses, set up logging, log in, make the calls that find
              what it watches (host, pool, network, VMs, SR, PBDs), call event.from
Realistic variant (agent and model alike):
  r_fw_ping   the firewall's end answers only 3 s after its bridge appears (its VIF is up,
              its addresses come later: agent/lab/netns.py fw_answer_delay); from the moment
              its addresses are added -> first pinger answer through it
  r_fw_plug   from the same moment -> PBD.plug success (and -> PBD.plug requested)
  r_service   storage's service answers 3 s after its network (its TCP ports refuse until
              then: PBD.plug fails, as SM's connect to port 2049 would) -> PBD.plug success;
              agent only: the predecessor's one plug fails and it never tries again

The agent runs as an installed agent does: with ``--pyz`` from the bundle (`make bundle`;
its bytecode is Python 3.6's, so use it with 3.6, as dom0 runs it), else from this checkout
with its modules compiled before the first round (an interpreter that may not write
bytecode, PYTHONDONTWRITEBYTECODE, would otherwise compile every module at every start:
about 55 ms of it, docs/performance.md "As installed").

    python bench/end_to_end.py [--rounds 5] [--json] [--pyz dist/sspn-agent.pyz]
"""

import argparse
import compileall
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stats import percentile  # noqa: E402
from agent.lab.harness import FIREWALL, NFS_SERVER, Host  # noqa: E402
from agent.lab.netns import MGMT_BRIDGE  # noqa: E402
from agent.lab.simhost import SimulatedHost  # noqa: E402

SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
AWAY = 20.0
# The outage lasts AWAY plus a draw from [0, AWAY_JITTER) s, the same for the agent's and the
# model's round of a pair: a fixed 20 s is a multiple of the model's 5 s echo timeout, which
# put its echo 0.1 s after storage's return in every round (seen in a capture, 2026-12-05).
# What notices storage first should be how often a side asks, not how its phase meets ours.
AWAY_JITTER = 5.0
RESTART_DOWN = 5.0
FW_ANSWER_DELAY = 3.0
SERVICE_DELAY = 3.0
DEADLINE = 60.0

PINGER = r"""
import os, select, socket, struct, sys, time
target, limit = sys.argv[1], time.monotonic() + float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident, seq = os.getpid() & 0xFFFF, 0
def packet(seq):
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    data = head + b"e2e-bench!"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF); total += total >> 16
    return struct.pack("!BBHHH", 8, 0, ~total & 0xFFFF, ident, seq) + b"e2e-bench!"
print("ready", flush=True)
while time.monotonic() < limit:
    seq = (seq + 1) & 0xFFFF
    try:
        s.sendto(packet(seq), (target, 0))
    except OSError:
        pass
    end = time.monotonic() + 0.01
    while True:
        left = end - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        data = s.recv(2048)
        off = (data[0] & 0x0F) * 4
        if data[off] == 0 and struct.unpack("!H", data[off + 4:off + 6])[0] == ident:
            print("%.6f" % time.monotonic(), flush=True)
            sys.exit(0)
print("none", flush=True)
"""

FLOOR = r"""
import ipaddress, logging, sys
try:
    import tomllib
except ImportError:
    import tomli as tomllib
with open(sys.argv[1], "rb") as f:
    config = tomllib.load(f)
logging.basicConfig(level=logging.INFO)
for binding in config["binding"]:
    [ipaddress.ip_interface(a) for a in binding["addresses"]]
import XenAPI
path = config["xapi"]["socket"]
session = XenAPI.Session("http://%s/" % path.replace("/", "_"), transport=XenAPI.UDSTransport())
session.xenapi.login_with_password("root", "", "1.0", "floor")
x = session.xenapi
x.session.get_this_host(session._session)
x.pool.get_master(x.pool.get_all()[0])
for binding in config["binding"]:
    x.network.get_by_name_label(binding["network"])
    for name in binding["vms"]:
        x.VM.get_record(x.VM.get_by_name_label(name)[0])
for sr in config.get("sr", []):
    for pbd in x.SR.get_PBDs(x.SR.get_by_uuid(sr["uuid"])):
        x.PBD.get_host(pbd)
getattr(x, "event.from")(["VM"], "", 0.0)
"""


class Calls(object):
    """Every wire call the simulator answers: (start, end, method, ok)."""

    def __init__(self, sim):
        self.rows = []
        self.lock = threading.Lock()
        dispatch = sim.dispatch

        def noting(method, params, ctx=None):
            start = time.monotonic()
            answer = dispatch(method, params, ctx)
            with self.lock:
                self.rows.append((start, time.monotonic(), method, answer.get("Status") == "Success"))
            return answer
        sim.dispatch = noting
        # PBD.plug's work itself, as row "plug": the agent calls Async.PBD.plug (its reply is
        # a task, at once), the model PBD.plug; both end when SM's attach ends here
        plug = sim.plugger.plug

        def noting_plug(pbd, task):
            start, ok = time.monotonic(), False
            try:
                result = plug(pbd, task)
                ok = True
                return result
            finally:
                with self.lock:
                    self.rows.append((start, time.monotonic(), "plug", ok))
        sim.plugger.plug = noting_plug

    def first(self, method, after, ok=True, deadline=DEADLINE, end=True):
        """The first call of ``method`` starting after ``after`` (its end time, or start); waits."""
        limit = time.monotonic() + deadline
        while time.monotonic() < limit:
            with self.lock:
                for start, stop, m, good in self.rows:
                    if m == method and start >= after and (good or not ok):
                        return stop if end else start
            time.sleep(0.005)
        return None


class Dom0Process(object):
    """A child in dom0 whose stdout lines are collected with their arrival."""

    def __init__(self, host, argv):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(["ip", "netns", "exec", host.topology.ns("dom0"), sys.executable] + argv,
                                     stdout=subprocess.PIPE, stderr=self.err,
                                     universal_newlines=True, env=_env())
        self.lines = []
        self.thread = threading.Thread(target=self._read)
        self.thread.daemon = True
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_line(self, predicate, deadline=DEADLINE):
        limit = time.monotonic() + deadline
        while time.monotonic() < limit:
            for line in list(self.lines):
                if predicate(line):
                    return line
            if self.proc.poll() is not None and not self.thread.is_alive():
                return None
            time.sleep(0.005)
        return None

    def stderr(self):
        """What the child wrote to stderr (its traceback, when it died)."""
        self.err.seek(0)
        return self.err.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _env():
    import icmplib
    site = os.path.dirname(os.path.dirname(os.path.abspath(icmplib.__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, site]))


def model(host, replug=False):
    argv = [os.path.join(ROOT, "bench", "predecessor_model.py"), "--socket", host.sim.socket_path,
            "--vm", FIREWALL, "--network", "sspn", "--address", "192.0.2.2/24",
            "--gateway", "192.0.2.1", "--sr", "%s=%s" % (SR, NFS_SERVER),
            "--management-bridge", MGMT_BRIDGE]
    return Dom0Process(host, argv + (["--replug"] if replug else []))


def model_event(proc, what):
    line = proc.wait_line(lambda text: '"what": "%s"' % what in text)
    return json.loads(line)["t"] if line else None


class Bench(object):
    def __init__(self, host):
        self.host = host
        self.sim = host.sim
        self.calls = Calls(host.sim)
        self.vm_started = []
        host.sim.power.hooks.insert(0, self._on_power)
        self.frontend_up = []
        start = host.sim.frontend.start

        def noting_start():
            start()
            self.frontend_up.append(time.monotonic())
        host.sim.frontend.start = noting_start
        self.agent_on = False

    def _on_power(self, vm_name, record, domid, bridges, old, new):
        if vm_name == FIREWALL and new == "Running":
            self.vm_started.append(time.monotonic())

    # --- who runs -------------------------------------------------------------------------

    def agent(self, on):
        if on and not self.agent_on:
            self.host.start_agent(append=True)
            self.host.wait(lambda st: st.get("state") in ("WAITING_VM", "HEALTHY", "SR_PROBING", "ROUTED"),
                           "the agent to start", DEADLINE)
        elif not on and self.agent_on:
            self.host.stop_agent()
        self.agent_on = on

    def fw_down(self):
        self.sim.vm_stop(FIREWALL)
        if self.agent_on:
            self.host.wait_state("WAITING_VM", DEADLINE)

    def pbd_detach(self):
        if self.sim.state()["srs"][SR]["attached"]:
            self.sim.pbd_unplug(SR)

    # --- rounds ---------------------------------------------------------------------------

    def fw_round(self, ours, delay=0.0):
        """Firewall VM starts: (T0 -> first ping, T0 -> plugged, T0 -> plug requested),
        T0 the VM start, or with ``delay`` the moment the firewall's addresses are added."""
        self.agent(ours)
        self.fw_down()
        self.pbd_detach()
        pred = None
        if not ours:
            pred = model(self.host)
            if model_event(pred, "event_from") is None:
                raise RuntimeError("the predecessor model did not reach event.from")
        self.host.topology.fw_answer_delay = delay
        self.host.topology.fw_answering_from = None
        pinger = Dom0Process(self.host, ["-c", PINGER, NFS_SERVER, str(DEADLINE)])
        pinger.wait_line(lambda text: text == "ready")
        time.sleep(0.05)
        self.sim.vm_start(FIREWALL)
        t0 = self.vm_started[-1]
        if delay:
            limit = time.monotonic() + DEADLINE
            while self.host.topology.fw_answering_from is None and time.monotonic() < limit:
                time.sleep(0.005)
            t0 = self.host.topology.fw_answering_from
        plugged = self.calls.first("plug", self.vm_started[-1])
        requested = self.calls.first("plug", self.vm_started[-1], end=False)
        line = pinger.wait_line(lambda text: text != "ready")
        pinger.stop()
        if pred is not None:
            pred.stop()
        self.host.topology.fw_answer_delay = 0.0
        ping = float(line) if line and line != "none" else None
        if ping is None:  # say why on stderr: the row only counts it as "never"
            sys.stderr.write("fw round: the pinger got no answer (%s); its stderr: %s\n"
                             % (line or "no line", pinger.stderr().strip() or "empty"))
        return tuple(None if t is None else t - t0 for t in (ping, plugged, requested))

    def storage_round(self, ours, away=AWAY):
        """Storage away ``away`` s, then back: back -> PBD.plug success."""
        self.agent(ours)
        if self.sim.state()["vms"][FIREWALL]["power_state"] != "Running":
            self.sim.vm_start(FIREWALL)
        if ours:
            self.host.wait_state("HEALTHY", DEADLINE)
        topo = self.host.topology
        # both sides meet the same firewall: its entry for the server confirmed, as storage in
        # use keeps it. Without this the model's outage began while the entry was unconfirmed
        # since the agent's round had just ended, and its echo waited in the next entry for
        # the server's announcement (docs/performance.md, "storage back")
        topo.storage_in_use()
        topo.storage_away()
        self.pbd_detach()
        pred = model(self.host, replug=True) if not ours else None
        time.sleep(away)
        t0 = time.monotonic()
        topo.storage_back()
        plugged = self.calls.first("plug", t0)
        if pred is not None:
            pred.stop()
        return None if plugged is None else plugged - t0

    def service_round(self):
        """Storage's service answers SERVICE_DELAY s after its network: up -> plugged (agent)."""
        self.agent(True)
        if self.sim.state()["vms"][FIREWALL]["power_state"] != "Running":
            self.sim.vm_start(FIREWALL)
        self.host.wait_state("HEALTHY", DEADLINE)
        # the storage server stays on the network (it answers ping) while its service ports
        # refuse connections, as an nfsd that starts late: what SM's plug and the agent's
        # probe both connect to (agent/lab/storage.py)
        self.host.storage.stop()
        self.pbd_detach()
        time.sleep(SERVICE_DELAY)
        self.host.storage.start()
        t0 = time.monotonic() - (time.time() - self.host.storage.up_at)  # listening since
        plugged = self.calls.first("plug", t0)
        requested = self.calls.first("plug", t0, end=False)
        return tuple(None if t is None else t - t0 for t in (plugged, requested))

    def xapi_round(self, ours):
        """Toolstack restart: listeners up again -> login answered."""
        self.agent(ours)
        pred = None
        if not ours:
            pred = model(self.host)
            model_event(pred, "event_from")
        else:
            self.host.wait(lambda st: st.get("xapi", {}).get("up", True) is not False, "XAPI up", DEADLINE)
        time.sleep(0.2)
        self.sim.toolstack_restart(RESTART_DOWN)
        limit = time.monotonic() + DEADLINE
        count = len(self.frontend_up)
        while len(self.frontend_up) == count and time.monotonic() < limit:
            time.sleep(0.005)
        t0 = self.frontend_up[-1]
        logged = self.calls.first("session.login_with_password", t0)
        if pred is not None:
            pred.stop()
        time.sleep(0.5)
        return None if logged is None else logged - t0

    def start_round(self, who):
        """Process start -> first event.from at the simulator; ``who``: agent, predecessor
        or floor. The agent.toml is written before the clock starts."""
        self.agent(False)
        config = self.host.write_config()
        t0 = time.monotonic()
        if who == "agent":
            SimulatedHost.start_agent(self.host, config, append=True)
            self.agent_on = True
            first = self.calls.first("event.from", t0, ok=False, end=False)
        else:
            proc = model(self.host) if who == "predecessor" else \
                Dom0Process(self.host, ["-c", FLOOR, config])
            first = self.calls.first("event.from", t0, ok=False, end=False)
            proc.stop()
        return None if first is None else first - t0


def stats(values):
    got = [v * 1000.0 for v in values if v is not None]
    missing = len(values) - len(got)
    if not got:
        return {"runs": len(values), "never": missing}
    out = {"runs": len(values), "p50_ms": round(percentile(got, 50), 1),
           "p90_ms": round(percentile(got, 90), 1), "max_ms": round(max(got), 1),
           "ms": [round(v, 1) for v in sorted(got)]}
    if missing:
        out["never"] = missing
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", action="append", default=[],
                        choices=["fw", "storage", "xapi", "start", "realistic", "service"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--pyz", help="run this bundle (as on dom0) instead of the checkout")
    args = parser.parse_args()
    if args.pyz and not os.path.isfile(args.pyz):
        parser.error("--pyz %s: no such file; build it with `make bundle`" % args.pyz)
    if not args.pyz:
        for package in ("agent", "states"):
            compileall.compile_dir(os.path.join(ROOT, package), quiet=1)
    only = set(args.only or ["fw", "storage", "xapi", "start", "realistic", "service"])
    res = {}

    def add(name, who, value):
        res.setdefault(name, {}).setdefault(who, []).append(value)

    load_before = os.getloadavg()
    with Host(fast=False) as host:
        if args.pyz:
            host.agent_argv = [sys.executable, os.path.abspath(args.pyz)]
        bench = Bench(host)
        for number in range(args.rounds):
            away = AWAY + random.Random(number).uniform(0.0, AWAY_JITTER)
            for ours in (True, False):
                who = "agent" if ours else "predecessor"
                if "fw" in only:
                    ping, plugged, requested = bench.fw_round(ours)
                    add("fw_ping", who, ping)
                    add("fw_plug", who, plugged)
                if "realistic" in only:
                    ping, plugged, requested = bench.fw_round(ours, delay=FW_ANSWER_DELAY)
                    add("r_fw_ping", who, ping)
                    add("r_fw_plug", who, plugged)
                    add("r_fw_plug_requested", who, requested)
                if "xapi" in only:
                    add("xapi", who, bench.xapi_round(ours))
                if "start" in only:
                    add("start", who, bench.start_round(who))
                if "storage" in only:
                    add("storage", who, bench.storage_round(ours, away))
            if "start" in only:
                add("start", "floor", bench.start_round("floor"))
            if "service" in only:
                plugged, requested = bench.service_round()
                add("r_service", "agent", plugged)
                add("r_service_requested", "agent", requested)
        bench.agent(False)
    result = {"rows": dict((name, dict((who, stats(v)) for who, v in by.items())) for name, by in res.items()),
              "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()],
              "rounds": args.rounds, "python": sys.version.split()[0],
              "agent": os.path.abspath(args.pyz) if args.pyz else "checkout, compiled"}
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        for name in sorted(result["rows"]):
            for who, s in sorted(result["rows"][name].items()):
                print("%-22s %-12s %s" % (name, who, json.dumps(s, sort_keys=True)))
        print("load %s -> %s" % (result["load_before"], result["load_after"]))


if __name__ == "__main__":
    main()
