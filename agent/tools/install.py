"""`agent install` / `agent uninstall`: lay the zipapp, the config and the unit out on a dom0.

Run from the bundle (``python3 sspn-agent.pyz install``): the running .pyz is copied to
/opt/sspn-agent/, /etc/sspn-agent/ (0700) gets agent.toml (0600) from agent.toml.example only
when there is none -- an operator's config is never overwritten -- and the unit goes to
/etc/systemd/system/; the command ``agent`` (and its alias ``sspn-agent``) goes to /usr/bin as a
two-line shell wrapper that runs the .pyz with /usr/bin/python3. Nothing is started: the
commands to do so are printed. Uninstall removes the program, the unit and the commands (only
wrappers it wrote) and keeps /etc/sspn-agent. ``--root DIR`` lays everything out below
DIR instead of / (staging trees, tests). Python 3.6 compatible.
"""

import argparse
import os
import pkgutil
import shutil
import stat
import subprocess
import sys
import tempfile

from agent import __version__

PROGRAM_DIR = "/opt/sspn-agent"
PYZ_NAME = "sspn-agent.pyz"
CONFIG_DIR = "/etc/sspn-agent"
CONFIG_NAME = "agent.toml"
UNIT_DIR = "/etc/systemd/system"
UNIT_NAME = "sspn-agent.service"
WANTS_LINK = "/etc/systemd/system/multi-user.target.wants/sspn-agent.service"
START = "systemctl daemon-reload && systemctl enable --now sspn-agent"
COMMAND_DIR = "/usr/bin"
COMMANDS = ("agent", "sspn-agent")  # the second one for hosts where another `agent` exists
COMMAND_MARK = "# sspn-agent command wrapper"
# Generated at build time into the bundle (agent bundle: agent/share/), installed beside the
# commands: {installed path: file in agent/share/}; each starts with a line naming sspn-agent.
DOCS = {"/usr/share/man/man1/agent.1": "agent.1",
        "/usr/share/bash-completion/completions/agent": "agent.bash",
        "/usr/share/bash-completion/completions/sspn-agent": "agent.bash"}
DOC_MARK = b"sspn-agent"


class InstallError(Exception):
    """Installing or uninstalling cannot go on: the message says why and what to do."""


def under(root, path):
    """``path`` (absolute) inside the tree ``root``."""
    return os.path.join(root, path.lstrip("/")) if root and root != "/" else path


def running_zipapp():
    """Path of the .pyz this code was imported from, or None (a source checkout)."""
    import agent
    archive = getattr(getattr(agent, "__loader__", None), "archive", None)  # zipimporter
    return archive if archive and os.path.isfile(archive) else None


def example_config():
    """agent.toml.example: the copy packed into the bundle, else the checkout's file (bytes)."""
    try:
        data = pkgutil.get_data("agent", "agent.toml.example")
    except OSError:
        data = None
    if data is None:
        import agent
        root = os.path.dirname(os.path.dirname(os.path.abspath(agent.__file__)))
        try:
            with open(os.path.join(root, "agent.toml.example"), "rb") as handle:
                data = handle.read()
        except OSError:
            raise InstallError("agent.toml.example is neither in this build nor in %s; install "
                               "from the bundle (agent bundle builds it)" % root)
    return data


def unit_file():
    """The systemd unit shipped in agent/lab/systemd/ (bytes)."""
    data = pkgutil.get_data("agent.lab", "systemd/" + UNIT_NAME)
    if data is None:
        raise InstallError("the unit file is missing from this build; rebuild the bundle")
    return data


def _write_atomic(path, data, mode):
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, chmod, rename."""
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".sspn-agent-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _copy_atomic(source, path, mode):
    """Copy ``source`` to ``path`` atomically (the bundle is a few MiB: read whole).

    rename() keeps the old inode alive for whoever has it open; but zipimport re-opens the
    archive by path for each later import, so a running agent must be restarted after this.
    """
    with open(source, "rb") as f:
        _write_atomic(path, f.read(), mode)


def command_wrapper():
    """The text of /usr/bin/agent: run the installed .pyz with dom0's python3 (bytes)."""
    return ("#!/bin/sh\n%s (from the sspn-agent RPM or `sspn-agent.pyz install`)\n"
            "exec /usr/bin/python3 %s/%s \"$@\"\n" % (COMMAND_MARK, PROGRAM_DIR, PYZ_NAME)).encode()


def is_our_command(path):
    """True when ``path`` is a wrapper this installer wrote (never a link: those are not ours)."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as handle:
            return COMMAND_MARK.encode() in handle.read(4096)
    except OSError:
        return False


def install_commands(root="/", say=print):
    """Write /usr/bin/agent and /usr/bin/sspn-agent; leave a foreign file of that name alone."""
    command_dir = under(root, COMMAND_DIR)
    _makedirs(command_dir)
    for name in COMMANDS:
        path = os.path.join(command_dir, name)
        if os.path.lexists(path) and not is_our_command(path):
            say("kept %s: it is not sspn-agent's; use `sspn-agent` instead of `agent`" % path)
            continue
        _write_atomic(path, command_wrapper(), 0o755)
        say("installed %s" % path)


def install_docs(root="/", say=print):
    """The man page and the bash completion from the bundle; a foreign file is left alone."""
    for target, name in sorted(DOCS.items()):
        try:
            data = pkgutil.get_data("agent", "share/" + name)
        except OSError:
            data = None
        if data is None:
            say("note: this build has no %s (a bundle built without packaging/): skipped" % name)
            continue
        path = under(root, target)
        if os.path.lexists(path) and not _is_ours(path):
            say("kept %s: it is not sspn-agent's" % path)
            continue
        _makedirs(os.path.dirname(path))
        _write_atomic(path, data, 0o644)
        say("installed %s" % path)


def _is_ours(path):
    """True when ``path`` is a regular file whose first line names sspn-agent (what we write)."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    with open(path, "rb") as handle:
        return DOC_MARK in handle.readline()


def _makedirs(path, mode=0o755):
    if not os.path.isdir(path):
        os.makedirs(path, mode)
        return True
    return False


def install(root="/", pyz=None, say=print):
    """Install below ``root``, reporting each step through ``say``."""
    pyz = pyz or running_zipapp()
    if not pyz:
        raise InstallError("agent install copies the running sspn-agent.pyz, but this runs from "
                           "a source checkout; build it (agent bundle), then run "
                           "python3 sspn-agent.pyz install (or pass --pyz FILE)")
    if not os.path.isfile(pyz):
        raise InstallError("%s does not exist; pass the bundle's path with --pyz" % pyz)
    owner = rpm_owner(root)
    if owner:
        raise InstallError("%s is installed by the RPM %s; upgrade with yum (yum install "
                           "./sspn-agent-<version>.noarch.rpm) instead" % (PROGRAM_DIR, owner))
    program_dir, config_dir = under(root, PROGRAM_DIR), under(root, CONFIG_DIR)
    unit_dir = under(root, UNIT_DIR)
    program = os.path.join(program_dir, PYZ_NAME)
    config = os.path.join(config_dir, CONFIG_NAME)
    unit = os.path.join(unit_dir, UNIT_NAME)

    _makedirs(program_dir)
    upgrade = os.path.exists(program)
    if upgrade and os.path.samefile(pyz, program):
        say("kept %s: it is the running program" % program)
        upgrade = False
    else:
        _copy_atomic(pyz, program, 0o755)
        say("installed %s (sspn-agent %s)" % (program, __version__))

    if not os.path.isdir(config_dir):
        # Parents 0755 (Python 3.6's makedirs would give them the leaf's mode), the leaf 0700
        # whatever the umask.
        _makedirs(os.path.dirname(config_dir))
        os.mkdir(config_dir, 0o700)
        os.chmod(config_dir, 0o700)
        say("created %s (mode 0700)" % config_dir)
    else:
        mode = stat.S_IMODE(os.stat(config_dir).st_mode)
        if mode & 0o077:
            say("note: %s has mode %04o; chmod 700 %s" % (config_dir, mode, config_dir))
    _install_config(config, say)

    _makedirs(unit_dir)
    _write_atomic(unit, unit_file(), 0o644)
    say("installed %s" % unit)
    install_commands(root, say)
    install_docs(root, say)
    say("next: check the config against this host, then start the agent:")
    say("  agent check")
    say("  %s" % START)
    if upgrade:
        say("  systemctl restart sspn-agent   (a running agent keeps the replaced program until "
            "restarted)")


def rpm_owner(root="/"):
    """The RPM package that owns the installed program (e.g. "sspn-agent-0.1.0-1.noarch"), or None."""
    if (root and root != "/") or shutil.which("rpm") is None:
        return None
    proc = subprocess.Popen(["rpm", "-qf", os.path.join(PROGRAM_DIR, PYZ_NAME)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
    out = proc.communicate()[0].strip()
    return out if proc.returncode == 0 and out else None


def _install_config(config, say):
    """agent.toml from the example, only when there is none (or only the empty file an older
    failed install left): written in full to a temp file, then linked into place (link fails
    if a config appeared meanwhile), so a failure never leaves an empty or partial config."""
    try:
        info = os.lstat(config)
    except FileNotFoundError:
        info = None
    if info is not None and not (stat.S_ISREG(info.st_mode) and info.st_size == 0):
        say("kept %s (an existing config is never overwritten)" % config)
        return
    data = example_config()  # before anything is created: a missing example leaves nothing
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(config), prefix=".agent.toml-")
    try:
        with os.fdopen(handle, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if info is not None:  # the empty leftover: replace it (rename is atomic)
            os.rename(tmp, config)
            say("replaced the empty %s (left by an earlier failed install) from "
                "agent.toml.example: edit it for this host" % config)
            return
        try:
            os.link(tmp, config)
        except FileExistsError:
            say("kept %s (an existing config is never overwritten)" % config)
            return
        say("created %s (mode 0600) from agent.toml.example: edit it for this host" % config)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def agent_is_active():
    """True when systemd says sspn-agent is active (False without systemctl)."""
    if shutil.which("systemctl") is None:
        return False
    return subprocess.call(["systemctl", "is-active", "--quiet", "sspn-agent"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def uninstall(root="/", force=False, say=print):
    """Remove the program, the unit and our commands below ``root``; keep the config directory."""
    if (not root or root == "/") and not force and agent_is_active():
        raise InstallError("sspn-agent is running; stop it first: systemctl disable --now "
                           "sspn-agent (its addresses and routes stay in place), or pass --force")
    owner = rpm_owner(root)
    if owner:
        raise InstallError("%s is installed by the RPM %s; remove it with yum remove sspn-agent"
                           % (PROGRAM_DIR, owner))
    program_dir = under(root, PROGRAM_DIR)
    removed = []
    for path in (os.path.join(program_dir, PYZ_NAME), under(root, UNIT_DIR + "/" + UNIT_NAME)):
        if os.path.lexists(path):
            os.unlink(path)
            removed.append(path)
    link = under(root, WANTS_LINK)
    if os.path.islink(link):  # what `systemctl disable` removes; dangling once the unit is gone
        os.unlink(link)
        removed.append(link)
    for name in COMMANDS:
        path = os.path.join(under(root, COMMAND_DIR), name)
        if is_our_command(path):
            os.unlink(path)
            removed.append(path)
    for target in sorted(DOCS):
        path = under(root, target)
        if _is_ours(path):
            os.unlink(path)
            removed.append(path)
    if os.path.isdir(program_dir) and not os.listdir(program_dir):
        os.rmdir(program_dir)
        removed.append(program_dir)
    for path in removed:
        say("removed %s" % path)
    if not removed:
        say("nothing to remove: sspn-agent is not installed below %s" % (root or "/"))
    config_dir = under(root, CONFIG_DIR)
    if os.path.isdir(config_dir):
        say("kept %s (your config; remove it yourself when no longer needed)" % config_dir)
    say("kept every address and route the agent added (it never removes them)")
    if removed:
        say("next: systemctl daemon-reload")


def _parser(prog, description):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--root", default="/", help="install below this directory (default /)")
    return parser


def _run(action):
    try:
        action()
    except InstallError as e:
        print("%s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("cannot write %s (%s); run it as root" % (e.filename or "", e.strerror or e),
              file=sys.stderr)
        return 1
    return 0


def main_install(argv=None):
    """`agent install [--root DIR] [--pyz FILE]`: program, config (if absent) and unit; 0 or 1."""
    parser = _parser("agent install", "Install the running sspn-agent.pyz, a config (only if "
                     "absent), the systemd unit and the agent / sspn-agent commands in /usr/bin; "
                     "prints how to start it (nothing is started).")
    parser.add_argument("--pyz", help="the bundle to install (default: the running one)")
    args = parser.parse_args(argv)
    return _run(lambda: install(args.root, args.pyz))


def main_uninstall(argv=None):
    """`agent uninstall [--root DIR] [--force]`: remove program, unit, commands; keep the config; 0 or 1."""
    parser = _parser("agent uninstall", "Remove the program, the systemd unit and the agent / "
                     "sspn-agent commands; keep "
                     "/etc/sspn-agent.")
    parser.add_argument("--force", action="store_true",
                        help="uninstall even while systemd says the agent is active")
    args = parser.parse_args(argv)
    return _run(lambda: uninstall(args.root, args.force))
