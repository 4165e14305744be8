"""Fixtures for the operator-facing pieces: `agent check`, the systemd unit, the zipapp bundle.

The simulator fixtures (``sim``, ``sim_factory``, ``xenapi_session``) are re-exported from
tests/sim/conftest.py (pytest shares fixtures down a directory tree only). ``netns`` is one
throwaway network namespace, root only, removed even on failure.
"""

import os
import random
import shutil
import subprocess
import tempfile

import pytest

from tests.sim.conftest import default_host_text, make_socket_dir, sim, sim_factory, xenapi_session  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "agent.toml.example")
NFS_SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
NETNS_REASON = "needs root and iproute2 `ip` to create a network namespace"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "bundle: builds the zipapp (pip download from PyPI); required in CI, not slow")


def _python36():
    """pyenv's Python 3.6.15 (dom0's python3 is 3.6), or None."""
    candidates = [os.environ.get("PY36", "")]
    try:
        root = subprocess.check_output(["pyenv", "root"], stderr=subprocess.DEVNULL,
                                       universal_newlines=True).strip()
        candidates.append(os.path.join(root, "versions", "3.6.15", "bin", "python3.6"))
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates.append(os.path.expanduser("~/.pyenv/versions/3.6.15/bin/python3.6"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


PY36 = _python36()
needs_py36 = pytest.mark.skipif(PY36 is None, reason="pyenv's Python 3.6.15 is not installed "
                                "(set PY36=/path/to/python3.6)")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The bundle, built once per session: {"pyz", "unit", "sha256", "bytes", "wheels", "compiled"}."""
    from agent.tools import bundle
    out = str(tmp_path_factory.mktemp("bundle"))
    try:
        return bundle.build(out, python=PY36)
    except bundle.BundleError as e:
        if str(e).startswith("pip download"):
            pytest.skip("cannot download the wheels from PyPI: %s" % e)
        raise


def netns_available():
    """True when this process may create network namespaces with `ip netns`."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def example_config(directory, sim=None, replacements=(), extra=""):
    """Write agent.toml.example with ``replacements`` (old, new) applied; files go to ``directory``.

    With ``sim``, [xapi] points at the simulator's socket and local.db. Returns the path (0600).
    """
    with open(EXAMPLE) as handle:
        text = handle.read()
    edits = [('status = "/run/sspn-agent/status.json"',
              'status = "%s/run/status.json"' % directory),
             ('trace = "/var/log/sspn-agent/trace.jsonl"',
              'trace = "%s/log/trace.jsonl"' % directory),
             ('bridge = ""', 'bridge = "xenbr0"')]
    if sim is not None:
        edits += [('socket = "/var/lib/xcp/xapi"', 'socket = "%s"' % sim.socket_path),
                  ('local_db = "/var/lib/xcp/local.db"', 'local_db = "%s"' % sim.local_db_path)]
    for old, new in edits + list(replacements):
        assert old in text, old
        text = text.replace(old, new, 1)
    path = os.path.join(directory, "agent.toml")
    with open(path, "w") as handle:
        handle.write(text + extra)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def workdir():
    """A private temporary directory whose path has no '_' (safe for socket paths); removed after."""
    directory = make_socket_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def scenario_with(workdir):
    """``scenario_with((old, new), ...)`` -> path of the default scenario with text replaced."""
    def write(*replacements):
        text = default_host_text(*replacements)
        path = os.path.join(workdir, "scenario.toml")
        with open(path, "w") as handle:
            handle.write(text)
        return path
    return write


def _ip(*args):
    subprocess.check_call(("ip",) + args, stdout=subprocess.DEVNULL)


@pytest.fixture
def netns():
    """A fresh network namespace (``sspn-ops-<pid>-<hex>``), deleted afterwards; root only."""
    if not netns_available():
        pytest.skip(NETNS_REASON)
    name = "sspn-ops-%d-%06x" % (os.getpid(), random.getrandbits(24))
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.call(["ip", "netns", "del", name])
    out = subprocess.check_output(["ip", "netns", "list"], universal_newlines=True)
    assert name not in out.split(), "namespace %s was left behind" % name


@pytest.fixture
def tmp_tree():
    """A temporary directory for install trees and configs (removed afterwards)."""
    directory = tempfile.mkdtemp(prefix="sspn-ops-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
