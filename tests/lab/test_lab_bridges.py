"""`agent lab --bridge`: the rehearsal on Open vSwitch bridges as on dom0, and what it says without them.

Real parts: `agent lab` itself (runner.main), the XAPI simulator, with root the real agent in
dom0 on a private ovsdb-server and ovs-vswitchd inside the dom0 namespace.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from agent.lab import orphans, ovs, runner
from agent.lab.netns import sweep_orphans
from tests.kernel.labhelp import backends, namespaces_with_prefix, ovs_missing
from tests.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NETNS = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                           reason="needs root and iproute2 `ip` to create network namespaces")


def _processes_naming(text):
    """Pids of the running processes (zombies excluded) whose command line contains ``text``."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and text in orphans.cmdline(int(p))
            and not orphans.process_gone(int(p))]


@NETNS
@pytest.mark.skipif(ovs_missing() is not None, reason=ovs_missing() or "")
def test_cold_boot_on_open_vswitch_ends_healthy_and_leaves_no_daemon(capsys):
    """`agent lab --bridge ovs`: cold boot ends HEALTHY with a ping through the firewall; the run
    says which bridges it used; no namespace, OVS daemon or state directory of it is left."""
    code = runner.main(["--bridge", "ovs", "--json"])
    doc = json.loads(capsys.readouterr().out)
    run = doc["runs"][0]
    assert code == 0, run["error"]
    assert run["summary"]["ping"]["ok"] and run["lab"]["bridges"] == ovs.OvsBridges.description
    out = subprocess.check_output(["ip", "netns", "list"]).decode()
    assert not set(run["lab"]["namespaces"]) & set(line.split()[0] for line in out.splitlines() if line)
    state = os.path.join(orphans.STATE_ROOT, run["lab"]["namespaces"][0][:-len("-dom0")])
    assert _processes_naming(state + "/") == [] and not os.path.exists(state)


def test_without_open_vswitch_it_says_how_to_install_it(monkeypatch, capsys):
    """No ovs-vswitchd: one line naming the package and the exit status 69, no traceback, no lab."""
    monkeypatch.setattr(runner, "netns_available", lambda: True)
    monkeypatch.setattr(ovs, "missing", lambda: ovs.INSTALL_HINT)
    assert runner.main(["--bridge", "ovs"]) == runner.EX_UNAVAILABLE
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "apt-get install" in err and "openvswitch-switch" in err and "Traceback" not in err


def test_open_vswitch_is_refused_on_the_in_memory_model(capsys):
    """--bridge ovs with --in-memory: one line saying it needs namespaces."""
    assert runner.main(["--bridge", "ovs", "--in-memory"]) == runner.EX_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs root and `ip netns`" in err


def _running_lab(pid):
    """(state directory, pids inside its dom0, run directory) of the lab process ``pid`` once its
    agent runs in dom0 (the run directory holds the agent.toml on the agent's command line)."""
    for prefix in os.listdir(orphans.STATE_ROOT):
        try:
            with open(os.path.join(orphans.STATE_ROOT, prefix, orphans.OWNER)) as f:
                if json.load(f)["pid"] != pid:
                    continue
        except (OSError, ValueError, KeyError):
            continue
        out = subprocess.Popen(["ip", "netns", "pids", prefix + "-dom0"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL).communicate()[0].decode()
        inside = [int(p) for p in out.split()]
        for line in [orphans.cmdline(p) for p in inside]:
            if "agent run" in line:
                config = line.split("--config ", 1)[1].split()[0]
                return os.path.join(orphans.STATE_ROOT, prefix), inside, os.path.dirname(config)
    return None


@NETNS
@pytest.mark.parametrize("bridge", backends())
def test_sigkilled_lab_leaves_nothing_after_the_sweep(bridge):
    """`agent lab` killed with SIGKILL mid-scenario leaves its namespaces, its agent, its run
    directory and (on Open vSwitch) its daemons behind; the next sweep stops every process in
    them and removes them all."""
    proc = subprocess.Popen([sys.executable, "-m", "agent", "lab", "--bridge", bridge, "--scenario",
                             "toolstack-restart"], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workdir = None
    try:
        state, inside, workdir = wait_until(lambda: _running_lab(proc.pid), timeout=30,
                                            message="the lab's agent running in its dom0 namespace")
        prefix = os.path.basename(state)
        proc.kill()
        proc.wait()
        assert len(namespaces_with_prefix(prefix + "-")) == 3
        assert [p for p in inside if not orphans.process_gone(p)], "nothing was left to sweep"
        assert os.path.isfile(os.path.join(workdir, "agent.toml"))
        removed = sweep_orphans()
        assert sorted(removed) == sorted(prefix + "-" + role for role in ("dom0", "fw", "lan"))
        assert [p for p in inside if not orphans.process_gone(p)] == []
        assert _processes_naming(state + "/") == [] and not os.path.exists(state)
        assert not os.path.exists(workdir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def test_an_unknown_backend_in_the_environment_is_one_line(monkeypatch, capsys):
    """SSPN_BRIDGE naming no backend: one line with the choices, exit 2, no traceback."""
    monkeypatch.setenv("SSPN_BRIDGE", "vde")
    assert runner.main(["--in-memory"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "linux, ovs" in err and "Traceback" not in err
