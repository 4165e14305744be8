"""Config paths that are not regular files, never end or are too large (docs/hostile.md).

Each is planted as agent.toml and handed to `config validate`, `status`, `trace` and `run`
(real subprocesses): one line naming the problem, exit 78, and the command finishes (a FIFO
used to hang all of them). SIGHUP reload of such a file is in test_lab_hostile.py; here the
reload function itself is checked to return at once and keep the running config.
"""

import logging
import os
import socket
import threading

import pytest

from agent import config as cfgmod
from tests.hostile.conftest import ROOT, one_clean_line, read, run_agent


def _fifo(d):
    path = os.path.join(d, "agent.toml")
    os.mkfifo(path)
    return path


def _socket(d):
    path = os.path.join(d, "agent.toml")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.close()
    return path


def _directory(d):
    path = os.path.join(d, "agent.toml")
    os.mkdir(path)
    return path


def _huge(d):
    path = os.path.join(d, "agent.toml")
    with open(path, "wb") as f:
        f.truncate(50 << 20)  # 50 MB (sparse): refused by size, never read
    return path


def _link_to(target):
    def plant(d):
        path = os.path.join(d, "agent.toml")
        os.symlink(target, path)
        return path
    return plant


PLANTS = {
    "fifo": (_fifo, "FIFO"),
    "socket": (_socket, "socket"),
    "directory": (_directory, "directory"),
    "huge file": (_huge, "bytes"),
    "/dev/zero (endless device)": (_link_to("/dev/zero"), "device"),
    "/dev/null (device)": (_link_to("/dev/null"), "device"),
    "/proc/self/pagemap (regular, size 0, endless)": (_link_to("/proc/self/pagemap"), "bytes"),
    "link to a FIFO": (lambda d: _link_to(_fifo_elsewhere(d))(d), "FIFO"),
}


def _fifo_elsewhere(d):
    path = os.path.join(d, "elsewhere.fifo")
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_every_command_refuses_an_irregular_config_at_once(tmp_path, kind):
    plant, word = PLANTS[kind]
    path = plant(str(tmp_path))
    for args in (("config", "validate", path), ("status", "--config", path),
                 ("trace", "--config", path), ("run", "--config", path)):
        code, out, err = run_agent(*args)
        assert code == 78, (args, code, out, err)
        assert one_clean_line(err) and word in err, (args, err)


@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_load_config_refuses_without_blocking(tmp_path, kind):
    """In-process, from a thread with a deadline: a ConfigError, never a hang or MemoryError."""
    plant, word = PLANTS[kind]
    path = plant(str(tmp_path))
    outcome = []

    def load():
        try:
            cfgmod.load_config(path)
        except Exception as exc:  # noqa: BLE001 -- the test names what came out
            outcome.append(exc)
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "load_config blocked on %s" % kind
    assert len(outcome) == 1 and isinstance(outcome[0], cfgmod.ConfigError), outcome
    assert word in str(outcome[0]) and "\n" not in str(outcome[0])


def test_a_file_at_the_cap_is_read_and_one_above_is_refused(tmp_path):
    good = read(os.path.join(ROOT, "agent.toml.example"), binary=True)
    path = str(tmp_path / "agent.toml")
    with open(path, "wb") as f:
        f.write(good + b"#" * (cfgmod.MAX_CONFIG_BYTES - len(good)))
    assert cfgmod.load_config(path).bindings
    with open(path, "ab") as f:
        f.write(b"#")
    with pytest.raises(cfgmod.ConfigError) as info:
        cfgmod.load_config(path)
    assert "%d" % cfgmod.MAX_CONFIG_BYTES in str(info.value)


def test_reload_of_a_fifo_returns_at_once_and_keeps_the_running_config(tmp_path):
    """Service._reload_config (what SIGHUP runs on the decision thread) with the config
    replaced by a FIFO: None (keep the old config) and one error line."""
    from agent.service import Service
    example = os.path.join(cfgmod.__file__.rsplit("/agent/", 1)[0], "agent.toml.example")
    running = cfgmod.load_config(example)
    path = _fifo(str(tmp_path))
    service = Service(running.__class__(**dict(
        (a.name, getattr(running, a.name)) for a in running.__attrs_attrs__ if a.name != "path"),
        path=path))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("sspn-agent").addHandler(handler)
    outcome = []
    try:
        thread = threading.Thread(target=lambda: outcome.append(service._reload_config()),
                                  daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "the reload blocked on a FIFO"
    finally:
        logging.getLogger("sspn-agent").removeHandler(handler)
    assert outcome == [None]
    assert [r.getMessage() for r in records if "reload refused" in r.getMessage() and
            "FIFO" in r.getMessage()]


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero (endless device)", "huge file"])
def test_the_other_files_the_agent_reads_are_bounded_too(tmp_path, kind):
    """The vif-ip-binder file (import-legacy), the inventory (read at start and on SIGHUP) and
    xapi's local.db (read at each resync): the same bounded, non-blocking read."""
    from agent.adapters.xapi_world import read_auto_enable
    plant, _word = PLANTS[kind]
    path = plant(str(tmp_path))
    code, out, err = run_agent("config", "import-legacy", path)
    assert code == 78 and one_clean_line(err) and out == "", err
    outcome = []

    def read_them():
        try:
            cfgmod.read_inventory(path)
        except cfgmod.ConfigError as exc:
            outcome.append(str(exc))
        outcome.append(read_auto_enable(path))
    thread = threading.Thread(target=read_them, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "a read blocked on %s" % kind
    assert len(outcome) == 2 and "management.inventory" in outcome[0] and outcome[1] is True
