"""Build-time only: check a built sspn-agent RPM (CI runs it after `make rpm`; tests/ops/test_rpm.py too).

1. contents (`rpm -qlp`): exactly the expected files, agent.toml a %config(noreplace) 0600 in a
   0700 /etc/sspn-agent;
2. scriptlets (`rpm -qp --scripts`), run with sh against a stand-in `systemctl` that records
   its arguments: install only reloads systemd (never starts or enables the agent), upgrade
   restarts a running agent (try-restart), removal disables and stops it;
3. a scratch root (`rpm --root DIR -i --nodeps --noscripts`; the scratch root has no /bin/sh for
   scriptlets, step 2 runs them): the files land with their modes, an edited config survives a
   reinstall, `rpm -e` removes the program and keeps the edited config as .rpmsave.

    python packaging/check_rpm.py dist/sspn-agent-<version>-1.noarch.rpm
"""

import os
import shutil
import subprocess
import sys
import tempfile

EXPECTED = {
    "/etc/sspn-agent": 0o700,
    "/etc/sspn-agent/agent.toml": 0o600,
    "/opt/sspn-agent": 0o755,
    "/opt/sspn-agent/sspn-agent.pyz": 0o755,
    "/usr/bin/agent": 0o755,
    "/usr/bin/sspn-agent": 0o755,
    "/usr/lib/systemd/system/sspn-agent.service": 0o644,
    "/usr/share/bash-completion/completions/agent": 0o644,
    "/usr/share/bash-completion/completions/sspn-agent": 0o644,
    "/usr/share/doc/sspn-agent/agent.toml.example": 0o644,
    "/usr/share/man/man1/agent.1": 0o644,
}
FAKE_SYSTEMCTL = '#!/bin/sh\necho "$*" >> "%s"\n'


def _rpm(*args):
    return subprocess.check_output(("rpm",) + args, universal_newlines=True,
                                   stderr=subprocess.STDOUT)


def check_contents(package):
    """Problems with the file list, modes and config flags (empty: none)."""
    problems = []
    listed = set(_rpm("-qlp", package).split())
    if listed != set(EXPECTED):
        problems.append("files: missing %s, unexpected %s" % (sorted(set(EXPECTED) - listed),
                                                              sorted(listed - set(EXPECTED))))
    rows = _rpm("-qp", "--qf", "[%{FILEMODES:octal} %{FILEFLAGS:fflags} %{FILENAMES}\n]", package)
    for line in rows.splitlines():
        mode, flags, path = (line.split(" ", 2) + ["", ""])[:3]
        if path in EXPECTED and int(mode, 8) & 0o7777 != EXPECTED[path]:
            problems.append("%s has mode %s, expected %04o" % (path, mode, EXPECTED[path]))
        if path == "/etc/sspn-agent/agent.toml" and not ("c" in flags and "n" in flags):
            problems.append("%s is not %%config(noreplace) (flags %r)" % (path, flags))
    return problems


def scriptlets(package):
    """{"post": text, "preun": text, "postun": text} of the package."""
    out = {}
    for key, tag in (("pre", "PREIN"), ("post", "POSTIN"), ("preun", "PREUN"), ("postun", "POSTUN")):
        text = _rpm("-qp", "--qf", "%%{%s}" % tag, package)
        out[key] = "" if text.strip() == "(none)" else text
    return out


def run_scriptlet(text, argument, work):
    """Run one scriptlet with sh ($1 = ``argument``) against a recording systemctl, as if
    systemd ran the host; returns the systemctl command lines it ran."""
    bindir = os.path.join(work, "bin")
    systemd = os.path.join(work, "run-systemd-system")
    log = os.path.join(work, "systemctl.log")
    for directory in (bindir, systemd):
        if not os.path.isdir(directory):
            os.makedirs(directory)
    with open(os.path.join(bindir, "systemctl"), "w") as handle:
        handle.write(FAKE_SYSTEMCTL % log)
    os.chmod(os.path.join(bindir, "systemctl"), 0o755)
    if os.path.exists(log):
        os.unlink(log)
    script = text.replace("/run/systemd/system", systemd)
    env = dict(os.environ, PATH="%s:/usr/bin:/bin" % bindir)
    subprocess.check_call(["sh", "-e", "-c", script, "scriptlet", str(argument)], env=env)
    if not os.path.exists(log):
        return []
    with open(log) as handle:
        return handle.read().splitlines()


def check_scriptlets(package, work):
    """Problems with what the scriptlets do on install, upgrade and removal."""
    problems = []
    scripts = scriptlets(package)
    if scripts["pre"]:
        problems.append("a %%pre scriptlet exists: %r" % scripts["pre"])
    install = run_scriptlet(scripts["post"], 1, work)
    if install != ["daemon-reload"]:
        problems.append("install ran systemctl %s; expected only daemon-reload" % install)
    for name, text in scripts.items():
        for word in ("systemctl start", "systemctl enable", "systemctl restart"):
            if word in text:
                problems.append("%%%s runs %r" % (name, word))
    upgrade = run_scriptlet(scripts["preun"], 1, work) + run_scriptlet(scripts["postun"], 1, work)
    if upgrade != ["daemon-reload", "try-restart sspn-agent.service"]:
        problems.append("upgrade ran systemctl %s" % upgrade)
    erase = run_scriptlet(scripts["preun"], 0, work) + run_scriptlet(scripts["postun"], 0, work)
    if erase != ["--no-reload disable --now sspn-agent.service", "daemon-reload"]:
        problems.append("removal ran systemctl %s" % erase)
    return problems


def _quiet(command):
    """Run ``command``; its output only matters when it fails (then it is the error)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    out = proc.communicate()[0]
    if proc.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (" ".join(command), proc.returncode, out))


def check_scratch_install(package, work):
    """Problems installing, reinstalling and erasing the package in a scratch root."""
    problems = []
    root = os.path.join(work, "root")
    os.makedirs(root)
    base = ["rpm", "--root", root, "--nodeps", "--noscripts"]
    _quiet(base + ["-i", package])
    for path, mode in sorted(EXPECTED.items()):
        full = root + path
        if not os.path.exists(full):
            problems.append("not installed: %s" % path)
        elif os.stat(full).st_mode & 0o7777 != mode:
            problems.append("installed %s with mode %04o" % (path, os.stat(full).st_mode & 0o7777))
    with open(root + "/usr/bin/agent") as handle:
        if "/opt/sspn-agent/sspn-agent.pyz" not in handle.read():
            problems.append("/usr/bin/agent does not run /opt/sspn-agent/sspn-agent.pyz")
    config = root + "/etc/sspn-agent/agent.toml"
    with open(config, "a") as handle:
        handle.write("# edited on this host\n")
    _quiet(base + ["-U", "--replacepkgs", package])
    with open(config) as handle:
        if not handle.read().endswith("# edited on this host\n"):
            problems.append("reinstalling replaced the edited %s" % config)
    _quiet(base + ["-e", "sspn-agent"])
    for path in ("/opt/sspn-agent/sspn-agent.pyz", "/usr/bin/agent", "/usr/bin/sspn-agent"):
        if os.path.exists(root + path):
            problems.append("rpm -e left %s" % path)
    if not os.path.exists(config + ".rpmsave"):
        problems.append("rpm -e did not keep the edited config as agent.toml.rpmsave")
    return problems


def check(package):
    """Every problem found with ``package`` (empty: it is good)."""
    work = tempfile.mkdtemp(prefix="sspn-rpmcheck-")
    try:
        return (check_contents(package) + check_scriptlets(package, work)
                + check_scratch_install(package, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    """`check_rpm.py PACKAGE`: 0 when every check passes, else 1 with one line per problem."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: check_rpm.py PACKAGE.rpm", file=sys.stderr)
        return 2
    problems = check(argv[0])
    for problem in problems:
        print("check_rpm: %s" % problem, file=sys.stderr)
    if not problems:
        print("%s: contents, scriptlets and a scratch-root install are as expected" % argv[0])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
