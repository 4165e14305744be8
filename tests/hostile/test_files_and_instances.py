"""Files the root daemon writes, one instance, honest status, install (docs/hostile.md).

Unit level against the real file code (agent/report/safefile.py, trace, status, FileReport,
service.take_lock) on the real file system; the lab test drives the same through a running
agent. Each plant is checked for its outcome and for what must not change (the victim file).
"""

import logging
import os
import stat
import subprocess
import sys
import time

import pytest

from agent import config as cfgmod
from agent.tools import install
from agent.report import safefile, status, trace
from agent.adapters.files import FileReport
from agent.service import AlreadyRunning, release_lock, take_lock
from tests.hostile.conftest import ROOT, read


@pytest.fixture
def victim(tmp_path):
    """A root-only file that planted links point at: it must never change."""
    path = tmp_path / "victim"
    path.write_bytes(b"precious\n")
    os.chmod(str(path), 0o600)
    return path


def _unchanged(victim):
    info = os.stat(str(victim))
    return victim.read_bytes() == b"precious\n" and stat.S_IMODE(info.st_mode) == 0o600


def _log():
    records = []
    logger = logging.getLogger("hostile-files")
    handler = logging.Handler()
    handler.emit = records.append
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, records


def test_a_link_planted_as_the_trace_is_never_followed(tmp_path, victim):
    path = str(tmp_path / "trace.jsonl")
    os.symlink(str(victim), path)
    log, records = _log()
    report = FileReport(str(tmp_path / "status.json"), path, 1 << 20, log)  # no exception
    for _ in range(3):
        report.effect({"what": "x", "result": "y", "ok": True, "time": 1.0, "state": "HEALTHY"})
    assert _unchanged(victim) and os.path.islink(path)
    assert len([r for r in records if "link" in r.getMessage()]) == 1  # said once, not 3 times
    os.unlink(path)
    report.effect({"what": "x", "result": "y", "ok": True, "time": 1.0, "state": "HEALTHY"})
    assert len(trace.read(path)) == 1 and any("written again" in r.getMessage() for r in records)


def test_links_at_the_status_path_and_at_guessable_temp_names_are_never_followed(tmp_path, victim):
    path = str(tmp_path / "status.json")
    os.symlink(str(victim), path)
    for pid in range(os.getpid() - 5, os.getpid() + 5):  # the old predictable name
        os.symlink(str(victim), "%s.%d.tmp" % (path, pid))
    status.write_atomic(path, {"state": "HEALTHY"})
    assert _unchanged(victim)
    assert not os.path.islink(path) and status.read(path) == {"state": "HEALTHY"}
    leftovers = [n for n in os.listdir(str(tmp_path)) if n.endswith(".tmp")
                 and not os.path.islink(str(tmp_path / n))]
    assert leftovers == []


def test_a_link_planted_as_the_rotated_trace_is_replaced_not_followed(tmp_path, victim):
    path = str(tmp_path / "trace.jsonl")
    os.symlink(str(victim), path + ".1")
    writer = trace.TraceFile(path, 4096)
    for n in range(100):
        writer.append({"n": n, "pad": "x" * 100})
    assert _unchanged(victim) and not os.path.islink(path + ".1")


def test_modes_are_fixed_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        report = FileReport(str(tmp_path / "run" / "status.json"),
                            str(tmp_path / "log" / "trace.jsonl"), 1 << 20, _log()[0])
        report.status({"state": "HEALTHY"})
        report.effect({"what": "x", "result": "y"})
        fd = take_lock(str(tmp_path / "run" / "status.json"))
        assert status.lock_holder(str(tmp_path / "run" / "status.json")) == os.getpid()
        release_lock(fd, str(tmp_path / "run" / "status.json"))
    finally:
        os.umask(old)
    modes = dict((name, stat.S_IMODE(os.stat(str(tmp_path / name)).st_mode)) for name in (
        "run", "log", "run/status.json", "log/trace.jsonl", "run/" + status.LOCK_NAME))
    assert modes == {"run": 0o755, "log": 0o750, "run/status.json": 0o644,
                     "log/trace.jsonl": 0o640, "run/" + status.LOCK_NAME: 0o644}


def _files_config(status_path, trace_path):
    example = read(os.path.join(ROOT, "agent.toml.example"))
    example = example.replace('status = "/run/sspn-agent/status.json"',
                              "status = %s" % cfgmod.toml_string(status_path))
    return example.replace('trace = "/var/log/sspn-agent/trace.jsonl"',
                           "trace = %s" % cfgmod.toml_string(trace_path))


def test_files_in_a_directory_others_can_write_or_own_are_refused(tmp_path):
    safe = tmp_path / "safe"
    safe.mkdir()
    os.chmod(str(safe), 0o755)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(str(open_dir), 0o777)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(str(sticky), 0o1777)
    group = tmp_path / "group"
    group.mkdir()
    os.chmod(str(group), 0o775)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chmod(str(foreign), 0o755)
    os.chown(str(foreign), 65534, 65534)
    link = tmp_path / "link"
    os.symlink(str(safe), str(link))
    os.lchown(str(link), 65534, 65534)
    good = str(safe / "trace.jsonl")
    refused = {
        str(open_dir / "status.json"): "writable by others",
        str(open_dir / "new" / "status.json"): "writable by others",   # it would create it there
        str(sticky / "status.json"): "writable by others",
        str(group / "status.json"): "its group",
        str(foreign / "status.json"): "uid 65534",
        str(link / "status.json"): "link owned by uid 65534",
        "/tmp/sspn-hostile-test/status.json": "writable by others",
    }
    for path, why in sorted(refused.items()):
        with pytest.raises(cfgmod.ConfigError) as info:
            cfgmod.parse_config(_files_config(path, good))
        assert info.value.key == "files.status" and why in str(info.value), (path, info.value)
    for path in (str(safe / "status.json"), str(safe / "new" / "deeper" / "status.json"),
                 str(sticky / "private-subdir-not-yet-made" / "x" / "status.json")):
        if "sticky" in path:
            continue  # its nearest existing parent is the sticky one: refused above
        assert cfgmod.parse_config(_files_config(path, good)).files.status == path


HOLDER = """
import sys, time
sys.path.insert(0, %r)
from agent.service import take_lock
fd = take_lock(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def other_agent(tmp_path):
    """A process holding the instance lock, as a running agent does."""
    path = str(tmp_path / "status.json")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER % ROOT, path], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"locked"
    yield path, proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


def test_a_second_instance_is_refused_and_status_knows_the_first(other_agent):
    path, proc = other_agent
    with pytest.raises(AlreadyRunning) as info:
        take_lock(path)
    assert "pid %d" % proc.pid in str(info.value) and "exiting" in str(info.value)
    assert status.lock_holder(path) == proc.pid
    # a file written by an agent that stopped meanwhile: the lock says the other one runs
    status.write_atomic(path, {"state": "WAITING_VM", "pid": 999999, "stopped": True,
                               "updated": time.time()})
    data, running, code, note = status.verdict(path)
    assert running and code == status.EXIT_STALE and "STALE" in note
    # the live agent's file, current: running
    status.write_atomic(path, {"state": "HEALTHY", "pid": proc.pid, "updated": time.time()})
    assert status.verdict(path)[1:3] == (True, status.EXIT_RUNNING)
    # the live agent's file, not rewritten for long (its writes fail): stale, not "not running"
    status.write_atomic(path, {"state": "HEALTHY", "pid": proc.pid, "heartbeat": 30,
                               "updated": time.time() - 3600})
    data, running, code, note = status.verdict(path)
    assert running and code == status.EXIT_STALE and "STALE" in note
    os.unlink(path)
    data, running, code, note = status.verdict(path)
    assert data is None and running and code == status.EXIT_STALE and "pid %d" % proc.pid in note
    proc.kill()
    proc.wait()
    assert status.lock_holder(path) == 0 and status.verdict(path)[1] is False
    release_lock(take_lock(path), path)  # free again once the holder is gone: no stale lock


def test_a_failing_status_write_is_retried_and_reported(tmp_path):
    path = tmp_path / "status.json"
    log, records = _log()
    report = FileReport(str(path), str(tmp_path / "trace.jsonl"), 1 << 20, log)
    path.mkdir()  # rename() onto a directory fails (as on a full or read-only /run)
    for _ in range(3):
        report.status({"state": "WAITING_VM"})
    assert report.failing and report.failures == 3
    assert len([r for r in records if "retrying every" in r.getMessage()]) == 1
    path.rmdir()
    report.status({"state": "WAITING_VM"})  # the same snapshot: written since the last failed
    assert not report.failing and status.read(str(path))["state"] == "WAITING_VM"
    assert any("written again after 3 failed" in r.getMessage() for r in records)


def test_install_never_leaves_an_empty_config(tmp_path, monkeypatch):
    pyz = tmp_path / "sspn-agent.pyz"
    pyz.write_bytes(b"PK")
    root = str(tmp_path / "root")
    config = os.path.join(root, "etc", "sspn-agent", "agent.toml")

    def broken():
        raise install.InstallError("agent.toml.example is neither in this build nor in x")
    monkeypatch.setattr(install, "example_config", broken)
    monkeypatch.setattr(install, "unit_file", lambda: b"[Unit]\n")
    with pytest.raises(install.InstallError):
        install.install(root=root, pyz=str(pyz), say=lambda *_: None)
    assert not os.path.lexists(config)
    assert [n for n in os.listdir(os.path.dirname(config))] == []
    # an empty config an older install left behind is replaced, a real one kept
    open(config, "w").close()
    monkeypatch.setattr(install, "example_config", lambda: b"# the example\n")
    said = []
    install.install(root=root, pyz=str(pyz), say=said.append)
    assert read(config, binary=True) == b"# the example\n" and any("empty" in s for s in said)
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    with open(config, "w") as f:
        f.write("# mine\n")
    install.install(root=root, pyz=str(pyz), say=lambda *_: None)
    assert read(config) == "# mine\n"


def test_safefile_refuses_irregular_files(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    with pytest.raises(safefile.UnsafeFile):
        safefile.open_append(fifo)
    with pytest.raises(safefile.UnsafeFile):
        safefile.read_bounded(fifo, 10)
    with pytest.raises(safefile.UnsafeFile):
        safefile.read_tail(str(tmp_path), 10)
