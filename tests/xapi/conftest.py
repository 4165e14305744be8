"""Fixtures for the XAPI adapter tests: the simulator fixtures, configs for it, running adapters.

The simulator fixtures (``sim``, ``sim_factory``, ``xenapi_session``) are re-exported from
tests/sim/conftest.py; pytest only shares fixtures down a directory tree, not across siblings.
"""

import os
import queue
import shutil
import tempfile
import time

import pytest

from agent.adapters.xapi import XapiAdapter
from agent.config import parse_config
from tests.sim.conftest import default_host_text, make_socket_dir, sim, sim_factory, xenapi_session  # noqa: F401

NFS_SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"

# Short timings so the suite stays fast: event.from returns every second, backoff 0.05..0.5 s.
TIMING = dict(call_timeout=2.0, event_timeout=1.0, backoff_base=0.05, backoff_cap=0.5)

CONFIG = """
[xapi]
{xapi}
call_timeout = {call_timeout}

[[binding]]
network = "sspn"
vms = {vms}
addresses = ["192.0.2.2/24", "2001:db8:1::2/64"]

[route]
gateway4 = "192.0.2.1"

{srs}

[timing]
event_timeout = {event_timeout}
backoff_base = {backoff_base}
backoff_cap = {backoff_cap}
"""


def toml_list(values):
    return "[" + ", ".join('"%s"' % v for v in values) + "]"


def make_config(sim=None, socket=None, url=None, password_file=None, vms=("pfsense",),
                srs=(NFS_SR,), **timing):
    """A validated Config (agent.config.parse_config) for ``sim``, like agent.toml.example."""
    values = dict(TIMING)
    values.update(timing)
    if url:
        xapi = 'url = "%s"\nusername = "root"\npassword_file = "%s"' % (url, password_file)
    else:
        xapi = 'socket = "%s"' % (socket or sim.socket_path)
    sr_text = "\n".join('[[sr]]\nuuid = "%s"' % uuid for uuid in srs)
    return parse_config(CONFIG.format(xapi=xapi, vms=toml_list(vms), srs=sr_text, **values))


class Recorder(object):
    """The adapter's ``post``: keeps every event, and waits (with a deadline) for one that matches.

    ``wait_for`` takes the first matching event not taken yet; events it skips stay available
    to later waits (an ActionDone and the PbdChanged it causes may arrive in either order).
    """

    def __init__(self):
        self.queue = queue.Queue()
        self.seen = []       # every event received, in order
        self._pending = []   # received, not taken by a wait yet

    def __call__(self, event):
        self.queue.put(event)

    def _receive(self, event):
        self.seen.append(event)
        self._pending.append(event)

    def wait_for(self, predicate, timeout=10.0, what="event"):
        """The first event not yet taken matching ``predicate``; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self._pending):
                if predicate(event):
                    del self._pending[index]
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no %s within %.0f s; saw: %s" % (
                    what, timeout, ", ".join(e.describe()[:120] for e in self.seen[-12:])))
            try:
                self._receive(self.queue.get(timeout=remaining))
            except queue.Empty:
                continue

    def wait_kind(self, kind, timeout=10.0, **fields):
        """The next event of ``kind`` ("xapi_connected", ...) whose attributes equal ``fields``."""
        def match(event):
            return event.kind == kind and all(
                _get(event, name) == value for name, value in fields.items())
        what = kind + (" %s" % fields if fields else "")
        return self.wait_for(match, timeout, what)

    def drain(self):
        """Receive every queued event without waiting; returns them."""
        out = []
        while True:
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                return out
            self._receive(event)
            out.append(event)


def _get(event, dotted):
    value = event
    for part in dotted.split("__"):
        value = getattr(value, part)
    return value


@pytest.fixture
def start_adapter_for():
    """``start_adapter_for(sim, config=None, **timing)`` -> (adapter, recorder); stopped after."""
    made = []

    def start(simulator, config=None, **timing):
        config = config or make_config(simulator, **timing)
        adapter = XapiAdapter(config, local_db_path=simulator.local_db_path)
        recorder = Recorder()
        adapter.start(recorder)
        made.append(adapter)
        return adapter, recorder
    yield start
    for adapter in made:
        adapter.stop()


@pytest.fixture
def start_adapter(sim, start_adapter_for):
    """``start_adapter(config=None, **timing)`` -> (adapter, recorder) for ``sim``."""
    def start(config=None, **timing):
        return start_adapter_for(sim, config, **timing)
    return start


@pytest.fixture
def connected(start_adapter):
    """An adapter on the Unix socket past its first XapiConnected: (adapter, recorder, world)."""
    adapter, recorder = start_adapter()
    world = recorder.wait_kind("xapi_connected").world
    return adapter, recorder, world


@pytest.fixture
def scenario_file():
    """``scenario_file(replace)`` -> path of the default scenario with text replacements applied."""
    made = []

    def write(*replacements):
        text = default_host_text(*replacements)
        directory = tempfile.mkdtemp(prefix="sspn-scn-")
        made.append(directory)
        path = os.path.join(directory, "scenario.toml")
        with open(path, "w") as handle:
            handle.write(text)
        return path
    yield write
    for directory in made:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def scratch_dir():
    """A private temporary directory (removed afterwards) whose path has no '_'."""
    directory = make_socket_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
