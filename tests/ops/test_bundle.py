"""Delivery: `agent bundle` builds one self-contained zipapp that runs on a bare Python 3.6.

The bundle is built once per session from PyPI (pip download of the 3.6 floor set; skipped
with the reason when PyPI cannot be reached) and run with pyenv's Python 3.6.15 in isolated
mode without site-packages (``-I -S``), so everything it imports must come from the archive.
Install and uninstall lay it out in a temporary root; as root, `agent lab` runs from it.
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import zipfile

import pytest

from agent import __version__

from agent.tools import bundle
from tests.ops.conftest import EXAMPLE, PY36, ROOT, needs_py36, netns_available

pytestmark = pytest.mark.bundle

FLOORS = {"transitions": "0.9.3", "xenapi": "26.21.1", "icmplib": "2.1.1",
          "attrs": "22.2.0", "tomli": "1.2.3", "six": "1.17.0"}


def run36(*args, **kwargs):
    """Run Python 3.6.15 isolated, without site-packages; returns (status, combined output)."""
    proc = subprocess.Popen([PY36, "-I", "-S"] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, cwd=kwargs.get("cwd"))
    out = proc.communicate(timeout=kwargs.get("timeout", 120))[0]
    return proc.returncode, out


def in_bundle(pyz, code):
    """Python source that runs ``code`` with the bundle first on sys.path."""
    return "import sys; sys.path.insert(0, %r)\n%s" % (pyz, code)


# --- what the archive holds -----------------------------------------------------------------

def test_bundle_holds_the_floor_set_and_our_packages(built):
    """The floor versions, only pure-Python wheels, agent + states + example + unit, no pyroute2
    (the tests' oracle), bytecode only as name.pyc beside name.py (compiled by Python 3.6)."""
    for name, version in FLOORS.items():
        assert built["wheels"].get(name) == version, built["wheels"]
    assert "pyroute2" not in built["wheels"]
    with zipfile.ZipFile(built["pyz"]) as archive:
        names = archive.namelist()
        main = archive.read("__main__.py").decode("utf-8")
    for required in ("agent/tools/cli.py", "states/__init__.py", "agent/agent.toml.example",
                     "agent/lab/systemd/sspn-agent.service", "agent/lab/xapi/datamodel.txt",
                     "agent/lab/hosts/default.toml", "XenAPI/__init__.py"):
        assert required in names, required
    assert not [n for n in names if n.startswith("pyroute2")]
    assert not [n for n in names if n.endswith((".pyo", ".so")) or "__pycache__" in n]
    assert not [n for n in names if n.endswith(".pyc") and n[:-1] not in names]
    if PY36 is not None:
        assert built["compiled"] > 100 and "agent/tools/cli.pyc" in names and "states/healthy.pyc" in names
    assert "from agent.tools.cli import main" in main
    with open(built["pyz"], "rb") as handle:
        assert handle.readline() == b"#!/usr/bin/python3\n"
    assert os.stat(built["pyz"]).st_mode & stat.S_IXUSR


def test_unit_and_checksum_sit_next_to_the_bundle(built):
    """The unit file is copied beside the .pyz, with a `sha256sum -c` line for the archive."""
    with open(built["unit"]) as a, open(os.path.join(ROOT, "agent", "lab", "systemd",
                                                     "sspn-agent.service")) as b:
        assert a.read() == b.read()
    with open(built["pyz"], "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    with open(built["pyz"] + ".sha256") as handle:
        assert handle.read() == "%s  sspn-agent.pyz\n" % digest


def test_bad_constraints_path_is_one_clear_error(tmp_tree, capsys):
    """`agent bundle --constraints MISSING` exits 1 naming the file, without a traceback."""
    missing = os.path.join(tmp_tree, "nope.txt")
    assert bundle.main_bundle(["--out", tmp_tree, "--constraints", missing]) == 1
    err = capsys.readouterr().err
    assert missing in err and "Traceback" not in err


# --- running it on Python 3.6 ---------------------------------------------------------------

@needs_py36
def test_bundle_runs_on_bare_python36(built):
    """--version, config validate and status work with nothing but the archive on the path."""
    code, out = run36(built["pyz"], "--version")
    assert code == 0 and out.strip() == "sspn-agent %s" % __version__, out
    code, out = run36(built["pyz"], "config", "validate", EXAMPLE)
    assert code == 0 and "valid" in out, out
    code, out = run36(built["pyz"], "status", "--file", os.path.join(ROOT, "no-such-status"))
    assert code == 3 and "Traceback" not in out, out


@needs_py36
def test_every_runtime_module_imports_from_the_bundle_on_python36(built):
    """The service's adapters and all their libraries import from the archive alone."""
    code, out = run36("-c", in_bundle(built["pyz"], (
        "import agent.service, agent.tools.check, agent.tools.install, agent.adapters.net\n"
        "import agent.adapters.netwatch, agent.adapters.prober, agent.adapters.xapi\n"
        "import agent.lab.runner, agent.lab.xapi\n"
        "import icmplib, XenAPI, transitions, attr, tomli\n"
        "assert XenAPI.__file__.startswith(sys.path[0]), XenAPI.__file__\n"
        "print('ok')\n")))
    assert code == 0 and out.strip() == "ok", out


CHECK_BYTECODE = """
import importlib.util, marshal, sys, zipfile, zlib
archive = zipfile.ZipFile(sys.argv[1])
names = set(archive.namelist())
checked = 0
for name in sorted(names):
    if not name.endswith(".pyc"):
        continue
    data, source = archive.read(name), archive.read(name[:-1])
    assert data[:4] == importlib.util.MAGIC_NUMBER, name
    assert int.from_bytes(data[4:8], "little") == zlib.crc32(source) & 0xFFFFFFFF, name
    assert archive.getinfo(name[:-1]).CRC == zlib.crc32(source) & 0xFFFFFFFF, name
    assert marshal.loads(data[12:]) == compile(source, "x", "exec", dont_inherit=True), name
    checked += 1
print(checked)
"""

USES_BYTECODE = """
import sys
main = __import__("zipfile").ZipFile(sys.argv[1]).read("__main__.py").decode("utf-8")
exec(main.split("from agent.tools.cli import main")[0], {"__name__": "bundle_main"})
sys.path.insert(0, sys.argv[1])
import builtins
compiled = []
real = builtins.compile
builtins.compile = lambda *a, **k: (str(a[1]).endswith(".py") and compiled.append(a[1])) or real(*a, **k)
import agent.tools.cli, agent.report.status, agent.config
builtins.compile = real
print(agent.tools.cli.__file__, len(compiled))
"""


@needs_py36
def test_bytecode_matches_its_source_and_is_what_python36_runs(built, tmp_tree):
    """Each .pyc is Python 3.6's code for the .py beside it (magic, CRC-32, code object), the
    archive's loader runs it without compiling; a .pyc that does not match its source (here:
    a source edited after the build) is ignored and the source compiled."""
    code, out = run36("-c", CHECK_BYTECODE, built["pyz"])
    assert code == 0 and int(out) == built["compiled"], out
    code, out = run36("-c", USES_BYTECODE, built["pyz"])
    assert code == 0 and out.split() == [os.path.join(built["pyz"], "agent", "tools", "cli.py"), "0"], out

    edited = os.path.join(tmp_tree, "edited.pyz")
    with zipfile.ZipFile(built["pyz"]) as src, zipfile.ZipFile(edited, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "agent/report/status.py":
                data += b"\nEDITED = True\n"
            dst.writestr(item, data)
    code, out = run36("-c", USES_BYTECODE.replace("print(", "assert agent.report.status.EDITED; print("),
                      edited)
    assert code == 0 and out.split()[1] == "1", out


SLOW_PACKAGE = (
    "import builtins\n"
    "builtins.sspn_started.set()\n"
    "builtins.sspn_go.wait(30)\n"
    "VALUE = 42\n")

RACE = """
import builtins, sys, threading, zipfile
archive, use_shim = sys.argv[1], sys.argv[2] == "1"
if use_shim:
    main = zipfile.ZipFile(archive).read("__main__.py").decode("utf-8")
    exec(main.split("from agent.tools.cli import main")[0], {"__name__": "bundle_main"})
sys.path.insert(0, archive)
builtins.sspn_started, builtins.sspn_go = threading.Event(), threading.Event()
result = {}

def first():
    import slowpkg
    result["first"] = slowpkg.VALUE

def second():
    try:
        from slowpkg import VALUE
        result["second"] = VALUE
    except ImportError:
        result["second"] = "half-initialised"

a = threading.Thread(target=first)
a.start()
assert builtins.sspn_started.wait(30)
b = threading.Thread(target=second)
b.start()
b.join(0.5)  # a correct import machinery keeps the second thread waiting on the module lock
builtins.sspn_go.set()
a.join(30)
b.join(30)
print(result["first"], result["second"])
"""


@needs_py36
@pytest.mark.parametrize("use_shim,expected", [("1", "42 42"), ("0", "42 half-initialised")])
def test_archive_main_makes_threaded_imports_safe_on_python36(tmp_tree, use_shim, expected):
    """With the archive's __main__.py a second thread waits for a module a first thread is
    importing; with plain zipimport (3.6) it gets the half-initialised module -- the hazard
    that crashed `agent run` from the archive ("cannot import name 'NetlinkError'")."""
    archive = os.path.join(tmp_tree, "race.pyz")
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("__main__.py", bundle.MAIN_PY)
        out.writestr("slowpkg/__init__.py", SLOW_PACKAGE)
    code, out = run36("-c", RACE, archive, use_shim, timeout=60)
    assert code == 0 and out.strip() == expected, out


# --- install and uninstall in a temporary root ------------------------------------------------

def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


INSTALL = "from agent.tools.install import main_install; sys.exit(main_install(sys.argv[1:]))"
UNINSTALL = "from agent.tools.install import main_uninstall; sys.exit(main_uninstall(sys.argv[1:]))"


@needs_py36
def test_install_and_uninstall_into_a_temporary_root(built, tmp_tree):
    """install: program, /etc/sspn-agent 0700, agent.toml 0600 from the example, the unit, the
    systemctl line; a second install keeps an edited config; uninstall keeps /etc/sspn-agent."""
    root = os.path.join(tmp_tree, "root")
    os.mkdir(root)
    code, out = run36("-c", in_bundle(built["pyz"], INSTALL), "--root", root)
    assert code == 0, out
    program = os.path.join(root, "opt", "sspn-agent", "sspn-agent.pyz")
    config_dir = os.path.join(root, "etc", "sspn-agent")
    config = os.path.join(config_dir, "agent.toml")
    unit = os.path.join(root, "etc", "systemd", "system", "sspn-agent.service")
    with open(program, "rb") as a, open(built["pyz"], "rb") as b:
        assert a.read() == b.read()
    assert _mode(program) == 0o755
    assert _mode(config_dir) == 0o700 and _mode(config) == 0o600
    assert _mode(os.path.join(root, "etc")) == 0o755  # parents are not made private
    with open(config) as a, open(EXAMPLE) as b:
        assert a.read() == b.read()
    with open(unit) as a, open(built["unit"]) as b:
        assert a.read() == b.read()
    assert "systemctl daemon-reload && systemctl enable --now sspn-agent" in out
    for name in ("agent", "sspn-agent"):
        command = os.path.join(root, "usr", "bin", name)
        assert _mode(command) == 0o755
        with open(command) as handle:
            text = handle.read()
        assert text.startswith("#!/bin/sh\n") and text.rstrip().endswith(
            'exec /usr/bin/python3 /opt/sspn-agent/sspn-agent.pyz "$@"'), text
    man = os.path.join(root, "usr", "share", "man", "man1", "agent.1")
    completion = os.path.join(root, "usr", "share", "bash-completion", "completions", "agent")
    with open(man) as handle:
        assert ".SH EXIT STATUS" in handle.read()
    with open(completion) as handle:
        assert "complete -o default -F _sspn_agent agent sspn-agent" in handle.read()

    with open(config, "a") as handle:
        handle.write("# edited by the operator\n")
    code, out = run36("-c", in_bundle(built["pyz"], INSTALL), "--root", root)
    assert code == 0 and "kept %s" % config in out, out
    with open(config) as handle:
        assert handle.read().endswith("# edited by the operator\n")

    wants = os.path.join(root, "etc", "systemd", "system", "multi-user.target.wants")
    os.makedirs(wants)
    os.symlink("/etc/systemd/system/sspn-agent.service", os.path.join(wants, "sspn-agent.service"))
    code, out = run36("-c", in_bundle(program, UNINSTALL), "--root", root)
    assert code == 0, out
    assert not os.path.exists(program) and not os.path.exists(unit)
    assert not os.path.lexists(os.path.join(wants, "sspn-agent.service"))
    assert not os.path.exists(os.path.join(root, "usr", "bin", "agent"))
    assert not os.path.exists(os.path.join(root, "usr", "bin", "sspn-agent"))
    assert not os.path.exists(man) and not os.path.exists(completion)
    assert os.path.isfile(config) and "kept %s" % config_dir in out


def test_install_leaves_a_foreign_agent_command_alone(tmp_tree, capsys):
    """A /usr/bin/agent that is not ours is kept (install says to use sspn-agent) and survives
    uninstall; our sspn-agent wrapper is written and removed."""
    from agent.tools import install
    root = os.path.join(tmp_tree, "root")
    bindir = os.path.join(root, "usr", "bin")
    os.makedirs(bindir)
    foreign = os.path.join(bindir, "agent")
    with open(foreign, "w") as handle:
        handle.write("#!/bin/sh\necho someone else's agent\n")
    said = []
    install.install_commands(root, said.append)
    assert any("kept %s" % foreign in line and "sspn-agent" in line for line in said), said
    assert install.is_our_command(os.path.join(bindir, "sspn-agent"))
    install.uninstall(root, say=said.append)
    assert os.path.exists(foreign) and not os.path.exists(os.path.join(bindir, "sspn-agent"))


def test_install_from_a_checkout_needs_a_bundle(tmp_tree, capsys):
    """Run from a source checkout, install says to build the bundle first (exit 1, no traceback)."""
    from agent.tools.install import main_install
    assert main_install(["--root", tmp_tree]) == 1
    err = capsys.readouterr().err
    assert "agent bundle" in err and "Traceback" not in err
    assert os.listdir(tmp_tree) == []


@needs_py36
def test_ops_commands_through_the_bundle_cli(built, tmp_tree):
    """Once agent/tools/cli.py wires install/uninstall/check, they work as `sspn-agent.pyz COMMAND`."""
    code, out = run36(built["pyz"], "--help")
    assert code == 0 and " install " in out and " check " in out, out
    assert " bundle " not in out and " diagram " not in out, out  # they need a checkout
    code, out = run36(built["pyz"], "bundle")
    assert code == 2 and "invalid choice" in out, out
    root = os.path.join(tmp_tree, "root")
    os.mkdir(root)
    code, out = run36(built["pyz"], "install", "--root", root)
    assert code == 0 and "enable --now sspn-agent" in out, out
    code, out = run36(built["pyz"], "uninstall", "--root", root)
    assert code == 0 and "kept" in out, out


# --- the rehearsal, from the archive ------------------------------------------------------------

@needs_py36
@pytest.mark.skipif(not netns_available(), reason="`agent lab` needs root and iproute2 `ip`")
def test_lab_runs_from_the_bundle_on_python36(built):
    """`python3.6 sspn-agent.pyz lab --scenario cold-boot` reaches HEALTHY and cleans up.

    The lab starts `python -m agent run` in dom0 with the archive on PYTHONPATH: that child
    does not go through the archive's __main__.py, so its threads must not be the first to
    import pyroute2, icmplib or XenAPI (Service must import them on the main thread), and the
    lab's ping helper needs the archive on its PYTHONPATH too.
    """
    code, out = run36(built["pyz"], "--help")
    if "lab" not in out:
        pytest.skip("agent lab is not part of the CLI")
    proc = subprocess.Popen([PY36, "-I", "-S", built["pyz"], "lab", "--scenario", "cold-boot",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, cwd=ROOT)
    out, err = proc.communicate(timeout=180)
    result = json.loads(out)
    runs = result.get("runs") or [result]
    errors = [r.get("error") or r.get("summary", {}).get("error") for r in runs]
    logs = [r.get("lab", {}).get("agent_log", "") for r in runs]
    detail = "\n".join(_tail(path) for path in logs if path)
    for path in logs:  # the lab keeps its work directory when a run fails
        if path:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    assert proc.returncode == 0, "%s\n%s\n%s" % (errors, err[-2000:], detail)


def _tail(path, lines=15):
    try:
        with open(path) as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def test_archive_main_compiles():
    """The archive's __main__.py, kept as text in agent/tools/bundle.py, is valid Python (3.6 in CI too)."""
    compile(bundle.MAIN_PY, "__main__.py", "exec")


def test_install_and_uninstall_leave_an_rpm_installed_agent_to_yum(tmp_tree, monkeypatch):
    """When rpm says the program belongs to a package, install and uninstall (on /) refuse and
    name the yum command; nothing is touched."""
    from agent.tools import install
    bindir = os.path.join(tmp_tree, "bin")
    os.mkdir(bindir)
    fake = os.path.join(bindir, "rpm")
    with open(fake, "w") as handle:
        handle.write("#!/bin/sh\necho sspn-agent-0.1.0-1.noarch\n")
    os.chmod(fake, 0o755)
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ["PATH"])
    assert install.rpm_owner("/") == "sspn-agent-0.1.0-1.noarch"
    assert install.rpm_owner(tmp_tree) is None  # a staging root is never the RPM's
    with pytest.raises(install.InstallError) as err:
        install.uninstall("/", force=True, say=lambda text: None)
    assert "yum remove sspn-agent" in str(err.value)
    pyz = os.path.join(tmp_tree, "x.pyz")
    open(pyz, "w").close()
    with pytest.raises(install.InstallError) as err:
        install.install("/", pyz=pyz, say=lambda text: None)
    assert "yum" in str(err.value)
