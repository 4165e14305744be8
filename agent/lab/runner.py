"""`agent lab`: rehearse the agent on a simulated host and print what it did, as a timeline.

One run = a fresh temp dir; the XAPI simulator in this process on a Unix socket there; the
dom0/fw/lan namespaces (agent/lab/netns.py); the *real* agent as its own process inside dom0
(``ip netns exec <dom0> python -m agent run --config <dir>/agent.toml``: the service's code path).
A scenario (agent/lab/scenarios.py) injects faults and waits on the agent's status file and
trace; then a ping must cross dom0 -> fw -> lan, the agent is stopped with SIGTERM and must
leave its addresses and routes in place, and everything is removed (also on failure, SIGINT,
SIGTERM). Storage reachability is real: the simulator's PBD.plug connects to the storage
server's service ports from dom0, through the firewall, as SM does.

Without root or ``ip netns`` the same scenario runs with the agent in this process on the
in-memory kernel model (agent/adapters/memory.py), still on the real simulator and the real
XAPI adapter; the output says so. The environments are in agent/lab/envs.py (namespaces: the
simulated host of agent/lab/simhost.py) and agent/lab/memenv.py (in-memory). Python 3.6.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import textwrap
import threading
import time

import attr

from agent.lab.envs import WAIT_TIMEOUT, NetnsUnavailable

SCENARIOS = ("cold-boot", "firewall-reboot", "toolstack-restart", "late-storage",
             "maintenance-lockout", "flush", "carp-failover", "one-firewall-down",
             "firewall-stops-later", "route-failover", "silent-gateway6", "gateway-falls-silent",
             "self-enable", "enable-refused", "evacuated",
             "autostart-race", "slow-plug", "nfs-late", "member-emergency")
FORCE_MEMORY_ENV = "SSPN_LAB_IN_MEMORY"   # "1": the in-memory kernel model even as root
EX_CONFIG = 78
EX_UNAVAILABLE = 69


class LabInterrupted(BaseException):
    """SIGTERM reached the lab: unwind (every finally cleans up), then exit 143."""


def run_one(name, plan, memory, timeout=WAIT_TIMEOUT, bridge=None):
    """Scenario ``name`` on a fresh lab; the run as a dict (ok, error, lab, timeline, summary).
    ``bridge``: the namespaces' bridge backend, "linux" or "ovs" (default ``$SSPN_BRIDGE``).

    The temp dir is removed after a success and kept (with agent.log) after a failure.
    """
    from agent.lab import scenarios, timeline
    from agent.lab.envs import NetnsEnv
    from agent.lab.simhost import private_dir
    from agent.lab.memenv import MemoryEnv
    plan = scenarios.plan_for_scenario(name, plan)
    lab = scenarios.Lab(plan, time.time(), timeout)
    workdir = private_dir("sspnlab")
    env = error = ping = stop = None
    finished = False
    try:
        env = MemoryEnv(plan, workdir, lab) if memory else NetnsEnv(plan, workdir, lab, bridge=bridge)
        lab.env, lab.sim = env, env.sim
        try:
            env.open()
            env.config = lab.config = scenarios.write_config(plan, workdir, env.sim)
            scenarios.SCENARIOS[name](lab)
            ping = env.ping(plan.ping_target)
            if not ping["ok"]:
                lab.fail("no answer from %s through the firewall" % plan.ping_target)
        except (scenarios.LabFailure, RuntimeError) as exc:  # TopologyError is a RuntimeError
            if isinstance(exc, NetnsUnavailable):
                raise
            error = str(exc)
        stop = env.stop_agent()
        if error is None and stop and (stop["exit"] != 0 or stop["missing"]):
            error = "the agent did not stop cleanly (%s): exit %s, missing after it: %s" % (
                stop["how"], stop["exit"], ", ".join(stop["missing"]) or "nothing")
        finished = True
    finally:
        if env is not None:
            env.close()
        if not finished:  # interrupted, or no namespaces: nothing in it to look at
            shutil.rmtree(workdir, ignore_errors=True)
    entries = lab.entries() if lab.config else []
    summary = timeline.summary(name, entries, lab, env.kind, error, ping, stop)
    info = env.info()
    info["workdir_kept"] = error is not None
    if error is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"scenario": name, "description": scenarios.describe(name), "kernel": env.kind,
            "ok": error is None, "error": error, "lab": info, "timeline": entries,
            "summary": summary}


HELP_EPILOG = """scenarios:
%s

--config FILE rehearses your own agent.toml: cold-boot, and the scenarios for several networks
that it can run (carp-failover with two VMs in a binding; one-firewall-down,
firewall-stops-later, route-failover with several bindings; silent-gateway6 with gateways of
both families). After validating it, the lab
builds a simulated host with your network and VM labels and SR uuids; the firewall namespace
takes your gateways (and an address in every binding subnet), the storage namespace your SR
probe targets; an SR without probe gets the lab's storage server %s as NFS server.
Your [xapi], [files] and management bridge are replaced by the lab's; bindings, route, SRs,
maintenance and timing stay yours. Limits: subnets overlapping the lab's own 203.0.113.0/24,
198.51.100.0/24 or 2001:db8:2::/64, and storage targets inside a binding's subnet, cannot be
rehearsed; cold-boot starts the first VM of each binding (and auto-power-on), every VM a
binding names gets its VIF when started; the simulated host has no other VMs for autostart.

Without root or `ip netns` (or with --in-memory, or %s=1) the agent runs in
this process on the in-memory kernel model, with the real XAPI simulator and adapter; the
output says so.
--bridge ovs builds dom0's bridges with Open vSwitch as on dom0 (a private ovsdb-server and
ovs-vswitchd inside the dom0 namespace, userspace datapath); it needs openvswitch-switch.
Exit status: 0 when every scenario ended HEALTHY, 1 when one failed, 78 for a config the lab
cannot use, 69 when Open vSwitch is asked for and missing, 130/143 when interrupted (the lab
is removed either way)."""


def build_parser():
    """The argument parser of `agent lab`."""
    from agent.lab import scenarios
    p = argparse.ArgumentParser(
        prog="agent lab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rehearse the agent: an embedded XAPI simulator, network namespaces (dom0, "
                    "firewall, storage LAN) with the real agent inside, a scenario, a timeline.",
        epilog=HELP_EPILOG % ("\n".join(textwrap.fill(
            scenarios.describe(n), 92, initial_indent="  %-21s" % n, subsequent_indent=" " * 23)
            for n in SCENARIOS), scenarios.LAN4_IP, FORCE_MEMORY_ENV))
    p.add_argument("--scenario", action="append", metavar="NAME", choices=SCENARIOS + ("all",),
                   help="scenario to run (default cold-boot); repeat it, or give 'all'")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--config", metavar="FILE", help="rehearse this agent.toml (cold-boot, and "
                   "the several-networks scenarios it can run)")
    p.add_argument("--keep-going", action="store_true",
                   help="with several scenarios, run the rest after one fails")
    p.add_argument("--in-memory", action="store_true",
                   help="use the in-memory kernel model even where namespaces are available")
    p.add_argument("--bridge", choices=("linux", "ovs"),
                   help="dom0's bridges: Linux bridges, or Open vSwitch (userspace datapath) as on "
                        "dom0 (default: $SSPN_BRIDGE, else linux)")
    p.add_argument("--fw-answer-delay", type=float, default=0.0, metavar="S",
                   help="the firewall answers S seconds after its VIF comes up (namespaces only)")
    p.add_argument("--storage-service-delay", type=float, default=0.0, metavar="S",
                   help="storage's service answers S seconds after its network (namespaces only)")
    return p


def _plan(config_path):
    """(HostPlan, None), or (None, exit status) after saying why the config cannot be used."""
    from agent import config as cfgmod
    from agent.lab import scenarios
    if not config_path:
        return scenarios.default_plan(), None
    try:
        return scenarios.plan_for(cfgmod.load_config(config_path), config_path), None
    except cfgmod.ConfigError as exc:
        print("agent lab: %s" % exc, file=sys.stderr)
    except scenarios.PlanError as exc:
        print("agent lab: cannot rehearse %s: %s" % (config_path, exc), file=sys.stderr)
    return None, EX_CONFIG


def _config_names_ok(names):
    """With --config: cold-boot, or scenarios for several networks (checked against the plan)."""
    from agent.lab import scenarios
    return all(n == "cold-boot" or n in scenarios.SEVERAL_SCENARIOS for n in names)


def netns_available():
    """True when this process may create network namespaces with `ip netns`."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def main(argv=None):
    """`agent lab`: run the scenarios, print timelines and summaries; 0 when all ended HEALTHY."""
    args = build_parser().parse_args(argv)
    names = args.scenario or ["cold-boot"]
    names = list(SCENARIOS) if "all" in names else names
    plan, code = (None, None) if args.config and not _config_names_ok(names) else _plan(args.config)
    if args.config and plan is not None:
        from agent.lab import scenarios
        extra = scenarios.applicable(plan.config)  # several bindings or VMs: those scenarios too
        if args.scenario is None:
            names = names + extra
        elif not all(n == "cold-boot" or n in extra for n in names):
            plan, code = None, None
    if args.config and plan is None and code is None:
        print("agent lab: --config rehearses cold-boot only (and, for a config with several "
              "bindings or VMs, the scenarios for them); leave out --scenario", file=sys.stderr)
        return 2
    if plan is None:
        return code
    plan = attr.evolve(plan, fw_answer_delay=args.fw_answer_delay,
                       storage_service_delay=args.storage_service_delay)
    forced = args.in_memory or os.environ.get(FORCE_MEMORY_ENV) == "1"
    memory = forced or not netns_available()
    from agent.lab import bridges
    if args.bridge is None and bridges.default_name() not in bridges.NAMES:
        print("agent lab: %s=%s is not a bridge backend; use one of: %s" % (
            bridges.BRIDGE_ENV, os.environ.get(bridges.BRIDGE_ENV), ", ".join(bridges.NAMES)), file=sys.stderr)
        return 2
    if args.bridge == "ovs" or (not memory and bridges.default_name() == "ovs"):
        from agent.lab import ovs
        problem = "--bridge ovs needs root and `ip netns` (not the in-memory model)" if memory else ovs.missing()
        if problem:
            print("agent lab: %s" % problem, file=sys.stderr)
            return EX_UNAVAILABLE
    if memory and not forced:
        print("agent lab: not root or no `ip netns`: the agent runs in-process on the in-memory "
              "kernel model (the XAPI simulator and adapter are real)", file=sys.stderr)
    timeout = WAIT_TIMEOUT
    if args.config:  # the operator's own timings: allow a few of their probe rounds and backoffs
        t = plan.config.timing
        timeout += 4 * (t.probe_interval + t.probe_timeout) + 2 * t.backoff_cap
    from agent.lab import timeline
    previous = _install_term_handler()
    runs = []
    try:
        for name in names:
            try:
                run = run_one(name, plan, memory, timeout, args.bridge)
            except NetnsUnavailable as exc:
                if (args.bridge or bridges.default_name()) == "ovs":  # the in-memory model has no OVS
                    print("agent lab: cannot build the lab on Open vSwitch bridges: %s" % exc,
                          file=sys.stderr)
                    return EX_UNAVAILABLE
                print("agent lab: cannot create network namespaces (%s): the agent runs in-process "
                      "on the in-memory kernel model" % exc, file=sys.stderr)
                memory = True
                run = run_one(name, plan, memory, timeout)
            runs.append(run)
            if not args.json:
                print(timeline.render_run(run) + "\n", flush=True)
            if not run["ok"] and not args.keep_going:
                break
    except (KeyboardInterrupt, LabInterrupted) as exc:
        print("agent lab: interrupted; the agent, the simulator and the namespaces were removed",
              file=sys.stderr)
        return 143 if isinstance(exc, LabInterrupted) else 130
    finally:
        _restore_term_handler(previous)
    ok = len(runs) == len(names) and all(run["ok"] for run in runs)
    if args.json:
        print(json.dumps({"ok": ok, "runs": runs}, indent=1, sort_keys=True))
    return 0 if ok else 1


def _install_term_handler():
    """SIGTERM unwinds the lab like Ctrl-C (netns.py's handler removes the namespaces first,
    then calls this one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_term(signum, _frame):
        raise LabInterrupted(signum)
    return signal.signal(signal.SIGTERM, on_term)


def _restore_term_handler(previous):
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
