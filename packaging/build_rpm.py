"""Build-time only: the noarch RPM for dom0 from a built bundle (`make rpm`).

Takes dist/sspn-agent.pyz and dist/sspn-agent.service (`agent bundle`), the man page and bash
completion from inside that archive (agent/share/, so the RPM ships exactly what the bundle
does), the /usr/bin/agent wrapper from agent/tools/install.py and agent.toml.example, fills in
packaging/sspn-agent.spec.in and runs rpmbuild. The payload is gzip-compressed and the file
digests SHA-256, which dom0's rpm 4.11 (CentOS 7 userland) reads.

    python packaging/build_rpm.py [--bundle dist] [--out dist]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from agent import __version__  # noqa: E402

from agent.tools import install

NAME = "sspn-agent"
DEFINES = {
    "_unitdir": "/usr/lib/systemd/system",
    "_binary_payload": "w9.gzdio",
    "_source_payload": "w9.gzdio",
    "_binary_filedigest_algorithm": "8",  # SHA-256
    "_build_id_links": "none",
    "__os_install_post": "%{nil}",          # no brp-* scripts: nothing to strip or byte-compile
    "_build_name_fmt": "%%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
}


class RpmError(Exception):
    """The RPM cannot be built: the message says why and what to do."""


def rpm_name(version=__version__):
    """The file name `make rpm` produces."""
    return "%s-%s-1.noarch.rpm" % (NAME, version)


def _sources(bundle_dir, sources):
    pyz = os.path.join(bundle_dir, "sspn-agent.pyz")
    unit = os.path.join(bundle_dir, "sspn-agent.service")
    for path in (pyz, unit):
        if not os.path.isfile(path):
            raise RpmError("%s is missing; build the bundle first (make bundle)" % path)
    shutil.copy(pyz, sources)
    shutil.copy(unit, sources)
    with zipfile.ZipFile(pyz) as archive:
        for name in ("agent.1", "agent.bash"):
            try:
                data = archive.read("agent/share/" + name)
            except KeyError:
                raise RpmError("%s has no agent/share/%s; rebuild it with this checkout's "
                               "agent bundle" % (pyz, name))
            with open(os.path.join(sources, name), "wb") as handle:
                handle.write(data)
    with open(os.path.join(sources, "agent"), "wb") as handle:
        handle.write(install.command_wrapper())
    shutil.copy(os.path.join(ROOT, "agent.toml.example"), sources)


def build(bundle_dir, out_dir, log=None):
    """Build ``out_dir``/sspn-agent-<version>-1.noarch.rpm; returns its path."""
    log = log or (lambda text: None)
    rpmbuild = shutil.which("rpmbuild")
    if rpmbuild is None:
        raise RpmError("rpmbuild is not installed (Debian/Ubuntu: apt-get install -y rpm; "
                       "Fedora/EL: dnf install rpm-build)")
    top = tempfile.mkdtemp(prefix="sspn-rpm-")
    try:
        sources = os.path.join(top, "SOURCES")
        os.makedirs(sources)
        _sources(bundle_dir, sources)
        with open(os.path.join(ROOT, "packaging", "sspn-agent.spec.in")) as handle:
            spec_text = handle.read().replace("@VERSION@", __version__)
        spec = os.path.join(top, "sspn-agent.spec")
        with open(spec, "w") as handle:
            handle.write(spec_text)
        if not os.path.isdir(out_dir):
            os.makedirs(out_dir)
        command = [rpmbuild, "-bb", "--quiet", "--define", "_topdir %s" % top,
                   "--define", "_sourcedir %s" % sources, "--define", "_rpmdir %s" % os.path.abspath(out_dir),
                   "--define", "_tmppath %s" % os.path.join(top, "tmp")]
        for key, value in sorted(DEFINES.items()):
            command += ["--define", "%s %s" % (key, value)]
        log("rpmbuild -bb %s" % spec)
        proc = subprocess.Popen(command + [spec], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True)
        out = proc.communicate()[0]
        if proc.returncode != 0:
            raise RpmError("rpmbuild failed (exit %d): %s" % (proc.returncode, out.strip()[-1500:]))
        path = os.path.join(out_dir, rpm_name())
        if not os.path.isfile(path):
            raise RpmError("rpmbuild succeeded but %s is missing: %s" % (path, out.strip()[-500:]))
        return path
    finally:
        shutil.rmtree(top, ignore_errors=True)


def main(argv=None):
    """`build_rpm.py [--bundle DIR] [--out DIR]`: 0 and the RPM's path, or 1 and why."""
    parser = argparse.ArgumentParser(description="Build the sspn-agent noarch RPM from a bundle.")
    parser.add_argument("--bundle", default="dist", help="where agent bundle put sspn-agent.pyz "
                        "and the unit (default: dist)")
    parser.add_argument("--out", default="dist", help="output directory (default: dist)")
    args = parser.parse_args(argv)
    try:
        path = build(args.bundle, args.out, log=lambda text: print(text, file=sys.stderr))
    except RpmError as e:
        print("build_rpm: %s" % e, file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
