"""The systemd side: the unit file verifies, and `agent run` speaks sd_notify as the unit expects.

The service protocol is checked against a fake NOTIFY_SOCKET: a Unix datagram socket this test
binds, as systemd would. `agent run` is the real command as its own process; its XAPI socket
does not exist and management.mirror is off, so it touches nothing in the kernel (no root
needed). The stuck-loop test runs the real Service in-process with in-memory adapters, one
of which blocks the decision loop on an Event the test controls.
"""

import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from agent.decision import events as ev
from agent.decision import schedule
from agent.adapters.memory import MemoryNet, MemoryProber, MemoryXapi
from agent.config import load_config
from agent.report.notify import Notifier
from agent.ports import NetWatcher
from agent.service import Service
from tests.ops.conftest import ROOT, example_config
from tests.waiting import wait_until

UNIT = os.path.join(ROOT, "agent", "lab", "systemd", "sspn-agent.service")
EXEC_START = ("/usr/bin/python3 /opt/sspn-agent/sspn-agent.pyz run "
              "--config /etc/sspn-agent/agent.toml")
WATCHDOG_USEC = 200000  # the agent pets every 0.1 s


def parse_unit(path):
    """{section: [(key, value)]} of a unit file (keys may repeat; comments dropped)."""
    sections, current = {}, None
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), [])
            else:
                key, _, value = line.partition("=")
                current.append((key.strip(), value.strip()))
    return sections


def unit_value(sections, section, key):
    """The one value of ``key`` in ``section``; fails if it is missing or repeated."""
    values = [v for k, v in sections.get(section, []) if k == key]
    assert len(values) == 1, "%s.%s set %d times" % (section, key, len(values))
    return values[0]


def test_unit_declares_what_the_service_protocol_needs():
    """Type=notify with the watchdog, reload by SIGHUP, restart with a start limit, ordering."""
    unit = parse_unit(UNIT)
    expected = {
        ("Unit", "After"): "xapi.service xcp-networkd.service",
        ("Unit", "Wants"): "xapi.service",
        ("Service", "Type"): "notify",
        ("Service", "NotifyAccess"): "main",
        ("Service", "ExecStart"): EXEC_START,
        ("Service", "ExecReload"): "/bin/kill -HUP $MAINPID",
        ("Service", "WatchdogSec"): "30",
        ("Service", "Restart"): "always",
        ("Service", "RestartSec"): "2",
        ("Service", "KillMode"): "mixed",
        ("Service", "TimeoutStopSec"): "10",
        ("Install", "WantedBy"): "multi-user.target",
    }
    for (section, key), value in expected.items():
        assert unit_value(unit, section, key) == value, (section, key)
    assert unit_value(unit, "Service", "StartLimitBurst") and unit_value(
        unit, "Service", "StartLimitInterval")


def test_unit_does_not_follow_the_toolstack():
    """No PartOf=/Requires=/BindsTo=: a toolstack restart must not stop the agent."""
    unit = parse_unit(UNIT)
    keys = [k for k, _ in unit["Unit"]]
    assert not set(keys) & {"PartOf", "Requires", "BindsTo", "Requisite"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (CI installs Debian's systemd)")
def test_unit_passes_systemd_analyze_verify(tmp_tree):
    """`systemd-analyze verify` finds nothing to say about the unit.

    verify checks that ExecStart's program exists, so it runs on a copy whose ExecStart is
    this interpreter and a file created here instead of /usr/bin/python3 and the .pyz;
    everything else is the unit as shipped.
    """
    program = os.path.join(tmp_tree, "sspn-agent.pyz")
    with open(program, "w") as handle:
        handle.write("")
    with open(UNIT) as handle:
        text = handle.read()
    assert EXEC_START in text
    python = os.path.realpath(sys.executable)
    text = text.replace(EXEC_START, "%s %s run --config /etc/sspn-agent/agent.toml"
                        % (python, program))
    copy = os.path.join(tmp_tree, "sspn-agent.service")
    with open(copy, "w") as handle:
        handle.write(text)
    proc = subprocess.Popen(["systemd-analyze", "verify", copy], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    out = proc.communicate(timeout=60)[0]
    # verify exits 0 even for unknown keys ("Unknown key ..., ignoring"): any line about our
    # unit is a finding.
    ours = [line for line in out.splitlines() if "sspn-agent" in line]
    assert proc.returncode == 0 and not ours, out


# --- the service protocol, against a fake NOTIFY_SOCKET --------------------------------------

class NotifyListener(object):
    """The systemd end of sd_notify: a bound Unix datagram socket collecting messages."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages = []  # each datagram as a list of KEY=value fields

    def drain(self):
        """Receive every datagram waiting; returns the messages so far."""
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return self.messages
            self.messages.append(data.decode("utf-8").split("\n"))

    def collect_for(self, seconds):
        """Every datagram that arrives within ``seconds`` (an observation window)."""
        start = len(self.drain())
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.02)
        try:
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(4096)
                except socket.timeout:
                    continue
                self.messages.append(data.decode("utf-8").split("\n"))
        finally:
            self.sock.setblocking(False)
        return self.messages[start:]

    def count(self, field, messages=None):
        """How many messages carry ``field`` (e.g. "WATCHDOG=1")."""
        return sum(1 for m in (self.drain() if messages is None else messages) if field in m)

    def first(self, field):
        """The first message carrying ``field``, or None."""
        return next((m for m in self.drain() if field in m), None)

    def statuses(self):
        """The STATUS= values in order."""
        return [f[len("STATUS="):] for m in self.drain() for f in m if f.startswith("STATUS=")]

    def close(self):
        self.sock.close()


@pytest.fixture
def listener(workdir):
    """A NotifyListener bound in the test's private directory (short enough for AF_UNIX)."""
    notify = NotifyListener(os.path.join(workdir, "notify"))
    yield notify
    notify.close()


FAST = [("backoff_base = 1.0", "backoff_base = 0.05"), ("backoff_cap = 60.0", "backoff_cap = 0.2"),
        ("retry_budget = 5", "retry_budget = 2"), ("mirror = true", "mirror = false")]


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def test_agent_run_speaks_the_service_protocol(workdir, listener):
    """READY=1 after the first decision, STATUS=<state>, WATCHDOG=1 pets, SIGHUP reloads (an
    invalid file is refused and the agent keeps running), SIGTERM -> STOPPING=1, exit 0, stopped."""
    config = example_config(workdir, replacements=FAST + [
        ('socket = "/var/lib/xcp/xapi"', 'socket = "%s/no-xapi"' % workdir)])
    status_path = os.path.join(workdir, "run", "status.json")
    log_path = os.path.join(workdir, "agent.log")
    env = dict(os.environ, NOTIFY_SOCKET=listener.path, WATCHDOG_USEC=str(WATCHDOG_USEC),
               PYTHONPATH=ROOT)
    for name in ("WATCHDOG_PID", "JOURNAL_STREAM"):
        env.pop(name, None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", config],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = wait_until(lambda: listener.first("READY=1"), 20, message="READY=1")
        # The status file is written before READY=1 is sent, after the first decision.
        assert os.path.exists(status_path)
        # BOOTING, unless both allowed XAPI failures were queued before the first drain.
        assert [f for f in ready if f.startswith("STATUS=")] in (["STATUS=BOOTING"],
                                                                 ["STATUS=DEGRADED"])
        wait_until(lambda: listener.count("WATCHDOG=1") >= 3, 20, message="three WATCHDOG=1")
        # XAPI never answers: after the watcher's fast window (agent/decision/schedule.py FAST_WINDOW,
        # one XapiLost per outage) the retry budget is spent and the new state is announced.
        wait_until(lambda: "DEGRADED" in listener.statuses(), schedule.FAST_WINDOW + 30,
                   message="STATUS=DEGRADED")

        with open(config, "a") as handle:
            handle.write("\n[timing\n")  # a TOML syntax error
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in _read(log_path), 20, message="reload refused")
        pets = listener.count("WATCHDOG=1")
        wait_until(lambda: listener.count("WATCHDOG=1") > pets, 20,
                   message="WATCHDOG=1 after the refused reload")
        assert proc.poll() is None

        example_config(workdir, replacements=FAST + [
            ('socket = "/var/lib/xcp/xapi"', 'socket = "%s/no-xapi"' % workdir),
            ("probe_interval = 5.0", "probe_interval = 7.0")])
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reloaded" in _read(log_path), 20, message="config reloaded")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, _read(log_path)
        assert listener.first("STOPPING=1") is not None
        with open(status_path) as handle:
            assert json.load(handle)["stopped"] is True
        assert "Traceback" not in _read(log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- a stuck decision loop stops the watchdog -------------------------------------------------

class GatedNet(MemoryNet):
    """A kernel model whose next read, once armed, blocks until the test releases it."""

    def __init__(self):
        MemoryNet.__init__(self)
        self.armed = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def read_view(self):
        if self.armed.is_set() and threading.current_thread().name == "sspn-test-loop":
            self.armed.clear()
            self.entered.set()
            self.release.wait(60)
        return MemoryNet.read_view(self)


class StaticWatcher(NetWatcher):
    """Posts one full kernel read at start, like the netlink watcher's first dump."""

    def __init__(self, net):
        self.net = net

    def start(self, post):
        post(ev.KernelResynced(self.net.read_view()))

    def stop(self):
        pass


def test_a_stuck_decision_loop_stops_the_watchdog(workdir, listener):
    """While the loop is blocked handling an event no WATCHDOG=1 is sent; pets resume after."""
    config = load_config(example_config(workdir))
    net = GatedNet()
    net.add_link("xenbr0")
    xapi = MemoryXapi(config, net)
    xapi.up = False  # XAPI down: the agent waits in BOOTING, the loop keeps ticking
    service = Service(config, adapters={"net": net, "watcher": StaticWatcher(net),
                                        "prober": MemoryProber(), "xapi": xapi},
                      notifier=Notifier({"NOTIFY_SOCKET": listener.path,
                                         "WATCHDOG_USEC": str(WATCHDOG_USEC)}))
    service._signals = lambda: None  # signal handlers belong to the main thread (as the lab does)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("exit", service.run()),
                              name="sspn-test-loop")
    thread.daemon = True
    thread.start()
    try:
        wait_until(lambda: listener.first("READY=1"), 10, message="READY=1")
        window = 5 * WATCHDOG_USEC / 2e6  # five watchdog intervals
        assert listener.count("WATCHDOG=1", listener.collect_for(window)) >= 2

        net.armed.set()
        service.agent.post(ev.TimerFired("reconcile"))  # handling it re-reads the kernel
        assert net.entered.wait(10), "the loop did not reach the blocking read"
        assert listener.count("WATCHDOG=1", listener.collect_for(window)) == 0

        pets = listener.count("WATCHDOG=1")
        net.release.set()
        wait_until(lambda: listener.count("WATCHDOG=1") > pets, 10,
                   message="WATCHDOG=1 once the loop runs again")
    finally:
        net.release.set()
        if service.agent is not None:
            service.agent.post(ev.StopRequested("SIGTERM"))
        thread.join(10)
    assert not thread.is_alive() and result.get("exit") == 0
    assert listener.first("STOPPING=1") is not None
    assert gc.isenabled()  # the service gives automatic collection back (agent/idle_gc.py)
