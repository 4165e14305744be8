"""`agent lab`: every scenario on a simulated host ends HEALTHY and leaves nothing behind.

Real parts: the XAPI simulator over a Unix socket, the real agent as its own process inside
the dom0 namespace, real bridges, addresses, routes and ICMP in throwaway namespaces.
"""

import io
import json
import os
import shutil
import subprocess

import pytest

from agent.lab import runner

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 `ip` to create network namespaces")


def _namespaces():
    out = subprocess.check_output(["ip", "netns", "list"]).decode()
    return set(line.split()[0] for line in out.splitlines() if line.strip())


@pytest.mark.parametrize("scenario", runner.SCENARIOS)
def test_scenario_ends_healthy_and_cleans_up(scenario):
    """The scenario reaches HEALTHY, a ping crosses the firewall, and no namespace is left."""
    before = _namespaces()
    out = io.StringIO()
    code = runner.rehearse(scenario, as_json=True, out=out)
    result = json.loads(out.getvalue())
    summary = result["summary"]
    assert code == 0, summary["error"]
    assert summary["ok"] and summary["ping_through_firewall"] and summary["agent_exit"] == 0
    assert summary["srs_plugged"] == 1 and summary["vms_started"] == ["web", "db"]
    assert any("HEALTHY" in line["text"] for line in result["timeline"])
    assert _namespaces() - before == set()


def test_toolstack_restart_repeats_no_effect():
    """After xapi restarts, the agent reconnects and runs no effect again (nothing re-added)."""
    out = io.StringIO()
    assert runner.rehearse("toolstack-restart", as_json=True, out=out) == 0
    assert json.loads(out.getvalue())["summary"]["effects_after_last_lab_action"] == 0


def test_text_timeline_names_states_and_causes():
    """The human timeline shows elapsed time, transitions with their causes, and a summary."""
    out = io.StringIO()
    assert runner.rehearse("cold-boot", out=out) == 0
    text = out.getvalue()
    assert "WAITING_VM  -> BINDING" in text and "cause:" in text and "summary:" in text
