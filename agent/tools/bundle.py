"""`agent bundle`: one self-contained zipapp for an offline dom0, built from the Python 3.6 floor set.

dom0 has Python 3.6 and often no internet. The bundle is built on a machine that
has both: pip downloads pure-Python wheels for Python 3.6 (constraints: .ci/floors.txt without
the test tools), they are unpacked next to our ``agent`` and ``states`` packages, and
``zipapp`` turns the directory into ``sspn-agent.pyz`` (``#!/usr/bin/python3``, entry point
``agent.tools.cli:main``). The unit file is copied beside it. Nothing is downloaded on the target.

Dependencies are resolved here, wheel by wheel (``pip download --no-deps``), with markers
evaluated for dom0's Python 3.6 -- not by pip, which evaluates dependency markers for the
interpreter running it (``--python-version`` only selects wheels). A 3.11 build machine
therefore bundles what a 3.6 install would, and the same set as a 3.6 build machine. pyroute2
is not among them: it is the tests' oracle (the ``test`` extra), the agent speaks rtnetlink itself.

Everything runs from inside the zip: every dependency is pure Python and reads no data file
through ``__file__`` (checked for transitions 0.9.3, icmplib 2.1.1, XenAPI, attrs, tomli,
six); our own data (datamodel.txt, the simulated hosts, the unit, agent.toml.example) is read
with ``pkgutil.get_data``, which works from a zip. Every module is also compiled at build time
by a Python 3.6 (``--python``; COMPILE_PY) into ``name.pyc`` beside ``name.py``, stamped with
the source's CRC-32: MAIN_PY's loader runs that bytecode only when it matches the interpreter
and the source, so `agent status` on dom0 does not compile anything (docs/performance.md).

One thing does not work from a zip on Python < 3.10: zipimport's legacy ``load_module`` lets a
second thread see a module half-initialised while a first thread imports it (measured on
3.6-3.9). The archive's ``__main__.py`` (MAIN_PY) therefore serves the archive's modules
through the PEP 451 loader API, whose module locks make the second thread wait.
Python 3.6 compatible.
"""

import argparse
import configparser
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipapp
import zipfile

PYZ_NAME = "sspn-agent.pyz"
UNIT_NAME = "sspn-agent.service"
INTERPRETER = "/usr/bin/python3"
PACKAGES = ("agent", "states")
TARGET_PYTHON = "3.6"
# dom0's python3 on XCP-ng 8.3 / XenServer 8 (CentOS 7 userland, docs/architecture.md §8).
TARGET_ENVIRONMENT = {
    "python_version": "3.6", "python_full_version": "3.6.8", "implementation_name": "cpython",
    "implementation_version": "3.6.8", "platform_python_implementation": "CPython",
    "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
    "platform_machine": "x86_64", "extra": ""}
TEST_ONLY = ("pytest", "hypothesis", "pyroute2")  # .ci/floors.txt pins the test tools too
PIP_TIMEOUT = 600
_SKIPPED_SUFFIXES = (".pyc", ".pyo")

# The archive's __main__.py (its docstring says why it exists; tests/ops/test_bundle.py races two
# threads importing a slow package from the archive on Python 3.6 to prove it, and checks that
# the bytecode it loads matches the source).
MAIN_PY = r'''# -*- coding: utf-8 -*-
"""Entry point of sspn-agent.pyz (written by `agent bundle`): run `agent` from this archive.

Python < 3.10 imports from a zip through zipimporter.load_module(), the legacy loader API,
which puts a module in sys.modules before running it without marking it as initialising:
a second thread importing the same module meanwhile gets it half-built ("cannot import name
'NetlinkError'"). The agent's threads import icmplib and XenAPI lazily, so this archive's
entries are served through the PEP 451 loader API instead, whose module locks make the other
thread wait (importlib._bootstrap._load_unlocked).

The same loader runs the bytecode `agent bundle` compiled for the target interpreter
(``name.pyc`` beside ``name.py``): used only when its magic number is this interpreter's and
the CRC-32 it records is the one the zip directory holds for ``name.py``; else the source is
compiled, as zipimport would (its own check, by DOS timestamp, depends on the time zone).
"""

import sys


def _pep451_zip_imports():
    import _imp
    import importlib.machinery
    import marshal
    import os
    import zipimport

    from importlib._bootstrap_external import MAGIC_NUMBER as magic

    class ZipLoader(object):
        """Runs one module of the archive: its checked bytecode, else its compiled source."""

        def __init__(self, importer, files, entry):
            self._importer, self._files, self._entry = importer, files, entry

        def create_module(self, spec):
            return None

        def get_code(self, fullname=None):
            origin = os.path.join(self._importer.archive, self._entry)
            pyc = self._entry[:-3] + ".pyc"
            if pyc in self._files:
                data = self._importer.get_data(pyc)
                crc = self._files[self._entry][7] & 0xFFFFFFFF
                if data[:4] == magic and int.from_bytes(data[4:8], "little") == crc:
                    code = marshal.loads(data[12:])
                    _imp._fix_co_filename(code, origin)
                    return code
            return compile(self._importer.get_data(self._entry), origin, "exec", dont_inherit=True)

        def exec_module(self, module):
            exec(self.get_code(), module.__dict__)

        def __getattr__(self, name):  # archive, prefix, get_data, get_source, is_package...
            return getattr(self._importer, name)

    class ZipFinder(object):
        """Path entry finder for paths inside a zip archive (a path hook)."""

        def __init__(self, path):
            self._importer = zipimport.zipimporter(path)  # ZipImportError: not ours
            self._files = zipimport._zip_directory_cache[self._importer.archive]
            self.path = path

        def find_spec(self, fullname, target=None):
            base = self._importer.prefix + fullname.rpartition(".")[2]
            for entry, package in ((base + "/__init__.py", True), (base + ".py", False)):
                if entry in self._files:
                    archive = self._importer.archive
                    spec = importlib.machinery.ModuleSpec(
                        fullname, ZipLoader(self._importer, self._files, entry),
                        origin=os.path.join(archive, entry), is_package=package)
                    spec.has_location = True
                    if package:
                        spec.submodule_search_locations = [os.path.join(archive, base)]
                    return spec
            loader, portions = self._importer.find_loader(fullname)
            if loader is None and portions:
                spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
                spec.submodule_search_locations = list(portions)
                return spec
            return None if loader is None else importlib.machinery.ModuleSpec(fullname, loader)

        def invalidate_caches(self):
            pass

        def iter_modules(self, prefix=""):
            import pkgutil
            return pkgutil.iter_zipimport_modules(self._importer, prefix)

    sys.path_hooks.insert(0, ZipFinder)
    sys.path_importer_cache.clear()


if sys.version_info < (3, 10):
    _pep451_zip_imports()

from agent.tools.cli import main  # noqa: E402

sys.exit(main())
'''

# Run by the target interpreter at build time: writes name.pyc beside every name.py of the stage
# (magic, CRC-32 of the source, its size, the marshalled code), as MAIN_PY expects.
COMPILE_PY = r'''
import importlib.util, marshal, os, sys, zlib
stage, count, failed = sys.argv[1], 0, []
for directory, _dirs, files in os.walk(stage):
    for name in sorted(files):
        if not name.endswith(".py") or (directory == stage and name == "__main__.py"):
            continue
        path = os.path.join(directory, name)
        with open(path, "rb") as handle:
            source = handle.read()
        try:
            code = compile(source, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as e:
            failed.append("%s (%s)" % (os.path.relpath(path, stage), e))
            continue
        header = importlib.util.MAGIC_NUMBER + (zlib.crc32(source) & 0xFFFFFFFF).to_bytes(4, "little")
        with open(path[:-3] + ".pyc", "wb") as out:
            out.write(header + (len(source) & 0xFFFFFFFF).to_bytes(4, "little") + marshal.dumps(code))
        count += 1
print(count)
for line in failed:
    print(line)
'''


class BundleError(Exception):
    """The bundle cannot be built: the message says why and what to do."""


def canonical(name):
    """PEP 503 normalised project name ("XenAPI" -> "xenapi", "typing_extensions" -> "typing-extensions")."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _packaging():
    """(Requirement, Marker) from packaging, else pip's vendored copy (pip is needed anyway)."""
    try:
        from packaging.markers import Marker
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.markers import Marker
        from pip._vendor.packaging.requirements import Requirement
    return Requirement, Marker


# --- inputs from the checkout ---------------------------------------------------------------

def _is_checkout(root):
    return all(os.path.exists(os.path.join(root, name))
               for name in ("setup.cfg", "agent.toml.example", "states", "agent"))


def checkout_root():
    """The source checkout to bundle: the one the ``agent`` package was imported from, else the
    current directory (an installed `agent`, e.g. .venv/bin/agent, run inside the checkout);
    BundleError when neither is one."""
    import agent
    root = os.path.dirname(os.path.dirname(os.path.abspath(agent.__file__)))
    for candidate in (root, os.getcwd()):
        if _is_checkout(candidate):
            return candidate
    raise BundleError("agent bundle builds from a source checkout, but neither %s nor the current "
                      "directory is one; run it inside the repository" % root)


def target_python(explicit=None):
    """A Python 3.6 to compile the bundle's bytecode with: ``explicit``, $PY36, pyenv's 3.6.15,
    or python3.6 on PATH; None when there is none."""
    candidates = [explicit, os.environ.get("PY36")]
    try:
        pyenv = subprocess.check_output(["pyenv", "root"], stderr=subprocess.DEVNULL,
                                        universal_newlines=True).strip()
        candidates.append(os.path.join(pyenv, "versions", "3.6.15", "bin", "python3.6"))
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates.append(shutil.which("python3.6"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
        if candidate and candidate == explicit:
            raise BundleError("--python %s is not an executable interpreter" % explicit)
    return None


def compile_bytecode(stage, python, log):
    """Compile every module of the stage with ``python`` (must be Python %s); returns the count."""
    try:
        version = subprocess.check_output([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                          universal_newlines=True).strip()
        if version != TARGET_PYTHON:
            raise BundleError("%s is Python %s, the bundle targets %s; pass --python with a %s "
                              "interpreter" % (python, version, TARGET_PYTHON, TARGET_PYTHON))
        out = subprocess.check_output([python, "-I", "-S", "-c", COMPILE_PY, stage],
                                      universal_newlines=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise BundleError("compiling the bytecode with %s failed (%s); pass --python or "
                          "--no-bytecode" % (python, e))
    lines = out.strip().splitlines()
    for line in lines[1:]:
        log("  not compiled (kept as source): %s" % line)
    return int(lines[0])


def runtime_requirements(root):
    """install_requires of setup.cfg whose markers hold on dom0's Python 3.6, as strings."""
    Requirement, _ = _packaging()
    parser = configparser.ConfigParser()
    parser.read(os.path.join(root, "setup.cfg"))
    lines = parser.get("options", "install_requires", fallback="").splitlines()
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(TARGET_ENVIRONMENT):
            requirement.marker = None
            out.append(str(requirement))
    return out


def read_constraints(path):
    """The pins of a constraints file without the test-only tools: {canonical name: line}."""
    Requirement, _ = _packaging()
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError as e:
        raise BundleError("cannot read the constraints %s (%s); pass --constraints FILE"
                          % (path, e.strerror or e))
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = canonical(Requirement(line).name)
        if name not in TEST_ONLY:
            pins[name] = line
    return pins


# --- wheels -----------------------------------------------------------------------------------

def wheel_metadata(path):
    """(canonical name, version, [Requires-Dist], is pure) of a wheel file."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        info = next((n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")),
                    None)
        wheel = next((n for n in names if n.count("/") == 1 and n.endswith(".dist-info/WHEEL")),
                     None)
        if info is None or wheel is None:
            raise BundleError("%s is not a wheel (no .dist-info/METADATA)" % path)
        metadata = archive.read(info).decode("utf-8", "replace")
        wheel_text = archive.read(wheel).decode("utf-8", "replace")
    fields = _header_fields(metadata)
    pure = "root-is-purelib: true" in wheel_text.lower()
    return (canonical(fields.get("name", [""])[0]), fields.get("version", [""])[0],
            fields.get("requires-dist", []), pure)


def _header_fields(text):
    """RFC 822 header fields of METADATA (up to the first blank line): {lower name: [values]}."""
    fields = {}
    for line in text.split("\n"):
        if not line.strip():
            break
        if line[:1] in " \t" or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), []).append(value.strip())
    return fields


def _pip_download(requirements, dest, constraints_file, find_links=None):
    """`pip download --no-deps` of pure wheels for Python 3.6 into ``dest``."""
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
               "--no-deps", "--only-binary=:all:", "--python-version", TARGET_PYTHON,
               "--implementation", "py", "--abi", "none", "--platform", "any",
               "-d", dest, "-c", constraints_file]
    if find_links:
        command += ["--no-index", "--find-links", find_links]
    proc = subprocess.Popen(command + list(requirements), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    try:
        out = proc.communicate(timeout=PIP_TIMEOUT)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BundleError("pip download took more than %d s; check the network" % PIP_TIMEOUT)
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in out.strip().splitlines()[-4:])
        raise BundleError("pip download of %s failed (exit %d): %s; it needs PyPI (or --wheels "
                          "DIR with the wheels) and pure-Python wheels for Python %s"
                          % (", ".join(requirements), proc.returncode, tail, TARGET_PYTHON))


def resolve_wheels(requirements, pins, dest, find_links=None):
    """Download the closure of ``requirements`` for Python 3.6: {canonical name: wheel path}.

    Each round downloads the requirements not yet present, reads their Requires-Dist, keeps
    those whose markers hold on Python 3.6 (no extras), and goes again until nothing is new.
    Every requirement must be met by the chosen version, and every wheel must be pure Python.
    """
    Requirement, _ = _packaging()
    constraints_file = os.path.join(dest, "constraints.txt")
    with open(constraints_file, "w") as handle:
        handle.write("\n".join(pins[name] for name in sorted(pins)) + "\n")
    wanted = [Requirement(r) for r in requirements]
    wheels, metadata, seen = {}, {}, set()
    while True:
        todo = [r for r in wanted if canonical(r.name) not in wheels]
        names = sorted(set(canonical(r.name) for r in todo))
        if not names:
            break
        if seen.issuperset(names):
            raise BundleError("pip did not download %s" % ", ".join(names))
        seen.update(names)
        # One line per name, all its specifiers together (constraints pin the floors).
        lines = []
        for name in names:
            specifiers = ",".join(str(r.specifier) for r in todo
                                  if canonical(r.name) == name and str(r.specifier))
            lines.append(name + specifiers)
        _pip_download(lines, dest, constraints_file, find_links)
        for filename in sorted(os.listdir(dest)):
            if not filename.endswith(".whl"):
                continue
            path = os.path.join(dest, filename)
            name, version, requires, pure = wheel_metadata(path)
            if name in wheels:
                continue
            if not (pure and filename.endswith("-none-any.whl")):
                raise BundleError("%s is not a pure-Python wheel: the bundle must run on any "
                                  "dom0; pin a pure release in the constraints" % filename)
            wheels[name] = path
            metadata[name] = version
            for text in requires:
                requirement = Requirement(text)
                if requirement.marker is None or requirement.marker.evaluate(TARGET_ENVIRONMENT):
                    wanted.append(requirement)
    for requirement in wanted:
        version = metadata[canonical(requirement.name)]
        if version not in requirement.specifier:
            raise BundleError("%s %s does not satisfy %s; adjust the constraints"
                              % (requirement.name, version, requirement))
    return wheels, metadata


# --- staging and the archive --------------------------------------------------------------------

def _unpack_wheel(path, stage, owners):
    """Unpack one wheel into ``stage`` (purelib .data merged at the top); refuses clashes."""
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            name = member.filename
            if name.endswith("/"):
                continue
            parts = name.split("/")
            if parts[0].endswith(".data"):
                if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
                    name = "/".join(parts[2:])
                else:
                    continue  # scripts, headers, data: not importable, not needed in the zip
            if name.endswith(_SKIPPED_SUFFIXES) or "__pycache__/" in name:
                continue
            if name in owners and owners[name] != path:
                raise BundleError("%s and %s both ship %s" % (os.path.basename(owners[name]),
                                                               os.path.basename(path), name))
            owners[name] = path
            target = os.path.join(stage, *name.split("/"))
            if not os.path.isdir(os.path.dirname(target)):
                os.makedirs(os.path.dirname(target))
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)


def _copy_package(root, package, stage):
    def ignore(_directory, names):
        return [n for n in names if n == "__pycache__" or n.endswith(_SKIPPED_SUFFIXES)]
    shutil.copytree(os.path.join(root, package), os.path.join(stage, package), ignore=ignore)


SHARE_FILES = {"agent.1": "man", "agent.bash": "completion"}  # agent/share/ in the archive


def write_docs(root, directory):
    """agent(1) and the bash completion, generated from the parser by the checkout's
    packaging/clidoc.py (a build-time tool: not in the archive), into ``directory``."""
    import importlib.util
    path = os.path.join(root, "packaging", "clidoc.py")
    if not os.path.isfile(path):
        raise BundleError("%s is missing; bundle from a complete checkout" % path)
    spec = importlib.util.spec_from_file_location("sspn_clidoc", path)
    clidoc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clidoc)
    if not os.path.isdir(directory):
        os.makedirs(directory)
    for name, what in SHARE_FILES.items():
        with open(os.path.join(directory, name), "w") as handle:
            handle.write(clidoc.manpage() if what == "man" else clidoc.completion())


def sha256_of(path):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def build(out_dir, constraints=None, find_links=None, root=None, log=None, python=None,
          bytecode=True):
    """Build ``out_dir``/sspn-agent.pyz (+ the unit, + a .sha256); returns a summary dict.

    ``python``: the Python 3.6 that compiles the bytecode (default: target_python()); without
    one, or with ``bytecode=False``, the archive holds sources only (each start compiles them).
    """
    log = log or (lambda text: None)
    root = root or checkout_root()
    pins = read_constraints(constraints or os.path.join(root, ".ci", "floors.txt"))
    requirements = runtime_requirements(root)
    work = tempfile.mkdtemp(prefix="sspn-bundle-")
    try:
        wheel_dir = os.path.join(work, "wheels")
        stage = os.path.join(work, "stage")
        os.makedirs(wheel_dir)
        os.makedirs(stage)
        log("resolving %s for Python %s" % (", ".join(requirements), TARGET_PYTHON))
        wheels, versions = resolve_wheels(requirements, pins, wheel_dir, find_links)
        owners = {}
        for name in sorted(wheels):
            log("  %s %s" % (name, versions[name]))
            _unpack_wheel(wheels[name], stage, owners)
        for package in PACKAGES:
            if os.path.exists(os.path.join(stage, package)):
                raise BundleError("a dependency ships a top-level %r package" % package)
            _copy_package(root, package, stage)
        write_docs(root, os.path.join(stage, "agent", "share"))
        compiled = 0
        python = target_python(python) if bytecode else None
        if python:
            compiled = compile_bytecode(stage, python, log)
            log("compiled %d modules with %s" % (compiled, python))
        elif bytecode:
            log("note: no Python %s found (--python, $PY36, pyenv): the bundle holds no bytecode "
                "and every start compiles its sources" % TARGET_PYTHON)
        # `agent install` reads it with pkgutil.get_data("agent", "agent.toml.example").
        shutil.copy(os.path.join(root, "agent.toml.example"),
                    os.path.join(stage, "agent", "agent.toml.example"))
        if not os.path.isdir(out_dir):
            os.makedirs(out_dir)
        target = os.path.join(out_dir, PYZ_NAME)
        partial = target + ".part"
        # Our own __main__.py rather than create_archive(main="agent.tools.cli:main"): it first makes imports from
        # the archive thread-safe on Python < 3.10 (MAIN_PY), then calls agent.tools.cli:main.
        with open(os.path.join(stage, "__main__.py"), "w") as handle:
            handle.write(MAIN_PY)
        options = dict(interpreter=INTERPRETER)
        if sys.version_info >= (3, 7):
            options["compressed"] = True  # create_archive has no `compressed` on 3.6
        zipapp.create_archive(stage, partial, **options)
        os.chmod(partial, 0o755)
        os.rename(partial, target)
        unit = os.path.join(out_dir, UNIT_NAME)
        shutil.copy(os.path.join(root, "agent", "lab", "systemd", UNIT_NAME), unit)
        digest = sha256_of(target)
        with open(target + ".sha256", "w") as handle:
            handle.write("%s  %s\n" % (digest, PYZ_NAME))  # `sha256sum -c` on the host
        return {"pyz": target, "unit": unit, "sha256": digest, "bytes": os.path.getsize(target),
                "compiled": compiled,
                "wheels": dict((name, versions[name]) for name in sorted(versions))}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main_bundle(argv=None):
    """`agent bundle [--out DIR]`: build sspn-agent.pyz for an offline dom0; 0, or 1 with why."""
    parser = argparse.ArgumentParser(
        prog="agent bundle", description="Build one self-contained sspn-agent.pyz (Python 3.6, "
        "pure-Python dependencies inside) and copy the systemd unit next to it.")
    parser.add_argument("--out", default="dist", help="output directory (default: dist)")
    parser.add_argument("--constraints", help="pins (default: .ci/floors.txt of the checkout)")
    parser.add_argument("--wheels", metavar="DIR",
                        help="take the wheels from DIR instead of PyPI (offline builds)")
    parser.add_argument("--python", metavar="PYTHON3.6",
                        help="the Python 3.6 that compiles the bytecode (default: $PY36, pyenv's "
                        "3.6.15, python3.6 on PATH)")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="ship sources only (each start on dom0 compiles them: slower)")
    args = parser.parse_args(argv)
    try:
        summary = build(args.out, args.constraints, args.wheels,
                        log=lambda text: print(text, file=sys.stderr), python=args.python,
                        bytecode=not args.no_bytecode)
    except BundleError as e:
        print("agent bundle: %s" % e, file=sys.stderr)
        return 1
    print("built %s (%d bytes, sha256 %s)" % (summary["pyz"], summary["bytes"], summary["sha256"]))
    print("      %s" % summary["unit"])
    print("copy both to the host, then as root: python3 %s install   (then: agent check)"
          % PYZ_NAME)
    return 0
