"""Fixtures for tests that talk to the XAPI simulator with the real XenAPI client.

``sim``            a started Simulator (default scenario, Unix socket + TCP port) on a temp path
                   without '_' (XenAPI maps '_' to '/'); stopped and removed afterwards.
``sim_factory``    make more simulators: ``sim_factory(scenario=..., start=True, **kwargs)``.
``xenapi_session`` a XenAPI.Session logged in over ``sim``'s Unix socket (empty password).
``raw_call``       ``raw_call(sim, method, *params)`` -> the raw XML text of the reply.
``wait_until``     ``wait_until(predicate, timeout=5.0, what="...")`` polls with short waits.
``sim_login``      ``sim_login(sim, tcp=False, user="root", password="")`` -> logged-in Session.
``sim_rpc``        ``sim_rpc(sim)`` -> xmlrpc ServerProxy over TCP (raw Status dicts, no relogin).
``background``     ``background(fn, *args)`` runs a call in a thread (``.join()``, ``.result``,
                   ``.error``, ``.done``).
Helpers are fixtures (not imports) so these tests do not depend on how conftests are named.
"""

import http.client
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
import xmlrpc.client

import pytest

try:
    import agent  # noqa: F401  (tests/conftest.py normally puts the repo on sys.path)
except ImportError:  # pragma: no cover - only when run without the lead's tests/conftest.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))))

from agent.lab.xapi import Simulator  # noqa: E402

# Fast batching keeps the suite quick; the semantics do not depend on it.
FAST = dict(event_from_delay=0.005)


DEFAULT_HOST = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "agent", "lab", "hosts", "default.toml")


def default_host_text(*replacements):
    """The default simulated host's TOML with each (old, new) replaced once (old must occur)."""
    with open(DEFAULT_HOST) as handle:
        text = handle.read()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def make_socket_dir():
    """A fresh private directory whose path contains no '_' (mkdtemp's suffix may)."""
    base = tempfile.gettempdir()
    if "_" in base:
        base = "/tmp"
    for _ in range(100):
        path = os.path.join(base, "sspn-sim-%d-%06x" % (os.getpid(), random.getrandbits(24)))
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise RuntimeError("could not create a socket directory under %s" % base)


@pytest.fixture
def sim_factory():
    """Build and start simulators; all are stopped and their directories removed at the end."""
    made = []

    def factory(scenario=None, port=0, start=True, **kwargs):
        directory = make_socket_dir()
        options = dict(FAST)
        options.update(kwargs)
        simulator = Simulator(os.path.join(directory, "xapi"), port=port, scenario=scenario,
                              **options)
        made.append((simulator, directory))
        return simulator.start() if start else simulator
    yield factory
    for simulator, directory in made:
        try:
            simulator.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def sim(sim_factory):
    """A started simulator of the default scenario, listening on a Unix socket and TCP."""
    return sim_factory()


def login(simulator, tcp=False, user="root", password=""):
    """A XenAPI.Session logged in to ``simulator``."""
    session = simulator.client(tcp=tcp)
    session.xenapi.login_with_password(user, password, "1.0", "sspn-tests")
    return session


@pytest.fixture
def xenapi_session(sim):
    """A XenAPI.Session logged in over the simulator's Unix socket with an empty password."""
    session = login(sim)
    yield session
    try:
        session.xenapi.session.logout()
    except Exception:
        pass   # the test may have restarted or stopped the simulator


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        http.client.HTTPConnection.__init__(self, "localhost")
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def raw_xml(simulator, method, *params):
    """POST one XML-RPC call over the Unix socket; returns the reply body as text."""
    body = xmlrpc.client.dumps(tuple(params), method, allow_none=True).encode("utf-8")
    connection = _UnixHTTPConnection(simulator.socket_path)
    try:
        connection.request("POST", "/", body, {"Content-Type": "text/xml"})
        reply = connection.getresponse()
        assert reply.status == 200
        return reply.read().decode("utf-8")
    finally:
        connection.close()


@pytest.fixture
def raw_call():
    """``raw_call(sim, method, *params)`` -> raw reply XML (no client-side parsing)."""
    return raw_xml


def rpc(simulator):
    """A plain xmlrpc ServerProxy over TCP: replies stay raw Status dicts (no auto-relogin)."""
    return xmlrpc.client.ServerProxy(simulator.tcp_url, allow_none=True)


def wait_for(predicate, timeout=5.0, what="condition", message=None):
    """Poll ``predicate`` with short waits until true; fail naming ``what`` at the deadline.

    ``message`` is accepted as another name for ``what`` (as in tests/waiting.py).
    """
    what = message or what
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(0.01)


@pytest.fixture
def wait_until():
    """The ``wait_for`` helper as a fixture."""
    return wait_for


class Background(object):
    """Run a callable in a thread, keeping its result or exception."""

    def __init__(self, fn, *args):
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(fn,) + args)
        self.thread.daemon = True
        self.thread.start()

    def _run(self, fn, *args):
        try:
            self.result = fn(*args)
        except BaseException as exc:  # handed to the test thread
            self.error = exc

    def join(self, timeout=10.0):
        """Wait for the call to finish; fails the test if it does not within ``timeout``."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background call did not finish in %.0f s" % timeout
        return self

    @property
    def done(self):
        return not self.thread.is_alive()


@pytest.fixture
def sim_login():
    """The ``login`` helper as a fixture."""
    return login


@pytest.fixture
def sim_rpc():
    """The ``rpc`` helper as a fixture."""
    return rpc


@pytest.fixture
def background():
    """The ``Background`` runner as a fixture."""
    return Background
