"""Monitoring: status exit codes (tests/test_cli.py), the metrics file, the XAPI messages."""

import os
import sys

import pytest

from agent.report import metrics, notify
from agent.decision.world import RaiseMessage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from memworld import BRIDGE, SR, MemWorld  # noqa: E402


def _messages(world):
    return [c[0] for c in world.xapi.calls if isinstance(c[0], RaiseMessage)]


def test_recovered_message_follows_the_degraded_one_once():
    """DEGRADED raises SSPN_AGENT_DEGRADED; HEALTHY afterwards raises SSPN_AGENT_RECOVERED
    naming the old reason, once; another drift through HEALTHY raises nothing more."""
    w = MemWorld()
    w.xapi.plug_failures[SR] = 5
    w.settle(max_time=4)
    assert w.agent.state == "DEGRADED"
    w.settle_until("HEALTHY")
    names = [m.name for m in _messages(w)]
    assert names == [notify.DEGRADED, notify.RECOVERED], names
    recovered = _messages(w)[1]
    assert "sr:" + SR in recovered.body and "HEALTHY again" in recovered.body
    assert recovered.priority == 4 and " on this host " in recovered.body
    w.net.remove_address(BRIDGE, "192.0.2.2/24")
    w.settle_until("HEALTHY")
    assert [m.name for m in _messages(w)] == names


def test_no_recovered_message_without_a_degraded_one():
    """A cold boot straight to HEALTHY raises no XAPI message at all."""
    w = MemWorld()
    w.settle_until("HEALTHY")
    assert _messages(w) == []


def test_degraded_message_says_what_happens_next_and_has_no_empty_reason():
    """The alert body names the host, the reasons and that the agent keeps retrying."""
    class Host(object):
        name_label, uuid = "xcp1", "u-1"
    text = notify.degraded_message(Host(), "gateway: 192.0.2.1 does not answer").body
    assert "xcp1" in text and "192.0.2.1" in text and "keeps retrying" in text
    assert "no reason recorded" in notify.degraded_message(Host(), "").body


# --- the metrics file -------------------------------------------------------------------------

def _parse(text):
    """{(name, frozenset(labels)): value} of a Prometheus text file; checks every line's form."""
    import re
    sample = re.compile(r'^([a-z_]+)(\{([a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*)\})? (-?[0-9.]+)$')
    values, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        match = sample.match(line)
        assert match, line
        assert match.group(1) in typed, "sample before its TYPE: %s" % line
        labels = frozenset(re.findall(r'([a-z_]+)="([^"]*)"', match.group(3) or ""))
        values[(match.group(1), labels)] = float(match.group(5))
    return values


def test_metrics_count_what_a_run_did():
    """State gauge, time in state, transitions by trigger, repairs by kind, probe failures and
    the bind delay, from the records a real (in-memory) run produced."""
    w = MemWorld(storage_up=False)
    w.settle(max_time=30)
    m = metrics.Metrics(started=0.0)
    for record in w.report.transitions:
        m.transition(record)
    for record in w.report.effects:
        m.effect(record)
    values = _parse(m.render(w.agent.state, w.agent.since, now=w.agent.since + 12.5))
    assert values[("sspn_agent_state", frozenset([("state", w.agent.state)]))] == 1
    assert sum(v for (name, _), v in values.items() if name == "sspn_agent_state") == 1
    assert values[("sspn_agent_state_seconds", frozenset())] == 12.5
    assert values[("sspn_agent_transitions_total",
                   frozenset([("trigger", "addresses_bound"), ("to", "ROUTED")]))] == 1
    assert values[("sspn_agent_repairs_total", frozenset([("kind", "address")]))] >= 2
    assert values[("sspn_agent_repairs_total", frozenset([("kind", "route")]))] >= 1
    assert values[("sspn_agent_probe_failures_total", frozenset([("kind", "storage")]))] >= 2
    assert values[("sspn_agent_last_bind_delay_seconds", frozenset())] >= 0


def test_metrics_report_writes_atomically_and_only_when_configured(tmp_path):
    """wrap() is a no-op without a path; with one, each status update rewrites the file (no
    temp file left), and a directory that cannot be written is logged once, not each time."""
    from agent.adapters.memory import MemoryReport
    inner = MemoryReport()
    assert metrics.wrap(inner, "", None) is inner
    path = str(tmp_path / "sspn_agent.prom")
    logged = []

    class Log(object):
        def warning(self, *args):
            logged.append(args)

        def info(self, *args):
            logged.append(args)
    report = metrics.wrap(inner, path, Log())
    report.transition({"time": 1.0, "from": "BOOTING", "to": "BINDING", "trigger": "xapi_answered",
                       "cause": "x", "effects": [{"what": "add 192.0.2.2/24 on xapi0",
                                                  "result": "added", "ok": True}]})
    report.status({"state": "BINDING", "since": 1.0})
    values = _parse(open(path).read())
    assert values[("sspn_agent_repairs_total", frozenset([("kind", "address")]))] == 1
    assert os.listdir(str(tmp_path)) == ["sspn_agent.prom"]
    report.path = str(tmp_path / "missing" / "m.prom")
    report.status({"state": "BINDING", "since": 1.0})
    report.status({"state": "BINDING", "since": 1.0})
    assert len(logged) == 1 and "retrying" in logged[0][0]


@pytest.mark.parametrize("what,kind", [("add 192.0.2.2/24 on xapi0", "address"),
                                       ("default via 192.0.2.1 dev xapi0", "route"),
                                       ("PBD.plug sr:5f8c", "pbd_plug"), ("VM.start web", "vm_start"),
                                       ("host.enable", "host_enable"), ("probe gateway 192.0.2.1", None)])
def test_repair_kinds(what, kind):
    """Effect descriptions map to a bounded set of repair kinds (label cardinality)."""
    assert metrics.repair_kind(what) == kind


def test_metrics_path_must_be_absolute(tmp_path):
    """[files] metrics: empty is off, a relative path is refused naming the key."""
    from agent import config
    example = open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "agent.toml.example")).read()
    path = tmp_path / "agent.toml"
    path.write_text(example)
    assert config.load_config(str(path)).files.metrics == ""
    path.write_text(example.replace('metrics = ""', 'metrics = "m.prom"'))
    with pytest.raises(config.ConfigError) as err:
        config.load_config(str(path))
    assert "files.metrics" in str(err.value)


def test_the_service_writes_the_metrics_file_it_is_configured_with(workdir):
    """`agent run`'s Service wires [files] metrics: the file appears with the current state
    and is kept up to date until the agent stops."""
    import threading
    from agent.adapters.memory import MemoryNet, MemoryProber, MemoryXapi
    from agent.config import load_config
    from agent.service import Service
    from tests.ops.conftest import example_config
    from tests.ops.test_systemd import StaticWatcher
    from tests.waiting import wait_until
    from agent.decision import events as ev

    path = os.path.join(workdir, "sspn_agent.prom")
    config = load_config(example_config(workdir, replacements=[
        ('metrics = ""', 'metrics = "%s"' % path)]))
    net = MemoryNet()
    net.add_link("xenbr0")
    xapi = MemoryXapi(config, net)
    xapi.up = False  # the agent waits in BOOTING; enough to see the file written
    service = Service(config, adapters={"net": net, "watcher": StaticWatcher(net),
                                        "prober": MemoryProber(), "xapi": xapi})
    service._signals = lambda: None
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("exit", service.run()))
    thread.daemon = True
    thread.start()
    try:
        wait_until(lambda: os.path.exists(path), 10, message="the metrics file")
        values = _parse(open(path).read())
        assert values[("sspn_agent_state", frozenset([("state", "BOOTING")]))] == 1
    finally:
        if service.agent is not None:
            service.agent.post(ev.StopRequested("SIGTERM"))
        thread.join(10)
    assert result.get("exit") == 0
