"""The files a config names, read and judged safely: bounded, non-blocking, regular files only.

``read_config_bytes`` is how the agent reads agent.toml, the password file, the inventory,
xapi's local.db and a vif-ip-binder file: opened O_NONBLOCK (a FIFO or a device cannot block
the open), fstat must say a regular file, and the read stops past a size cap, so nothing can
hang the decision thread or exhaust memory. ``unsafe_directory`` says why a directory is not
fit for the root daemon's own files. docs/hostile.md; Python 3.6 compatible.
"""

import json
import os
import stat

MAX_CONFIG_BYTES = 1 << 20  # agent.toml.example is 5 KB; a bigger file is a mistake


def _error(message, path):
    from agent.config.model import ConfigError  # model imports this module
    return ConfigError(message, path=str(path))


def _reason(exc):
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _show(value):
    text = json.dumps(str(value), ensure_ascii=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _file_kind(mode):
    """"a FIFO", "a socket", ... for a mode that is not a regular file's, else None."""
    if stat.S_ISREG(mode):
        return None
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or
            stat.S_ISBLK(mode) else "not a regular file")


def read_config_bytes(path, limit=MAX_CONFIG_BYTES, what="the agent.toml file"):
    """The bytes of the regular file at ``path`` (at most ``limit``); ConfigError otherwise.

    Opened with O_NONBLOCK, so a FIFO or a device cannot block the open; fstat must then say
    a regular file (no FIFO, device, socket or directory is ever read), and the read stops
    after ``limit`` + 1 bytes, so a file that grows forever costs bounded time and memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError, TypeError) as exc:
        missing = isinstance(exc, FileNotFoundError)
        try:
            kind = _file_kind(os.stat(path).st_mode)  # a socket refuses open() with ENXIO
        except (OSError, ValueError, TypeError):
            kind = None
        if kind:
            raise _error("is %s, not a regular file; point the agent at %s itself"
                         % (kind, what), path) from None
        raise _error("cannot read the config file (%s); %s" % (
            _reason(exc), "create it from agent.toml.example" if missing else
            "check its path and permissions (the agent runs as root)"), path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _file_kind(info.st_mode)
            raise _error("is %s, not a regular file; point the agent at %s itself"
                         % (kind, what), path)
        if info.st_size > limit:
            raise _error("is %d bytes, more than the %d a config may have; is it the "
                         "right file?" % (info.st_size, limit), path)
        chunks, size = [], 0
        while size <= limit:
            try:
                chunk = os.read(fd, 65536)  # whole blocks: /proc files want aligned reads
            except BlockingIOError:
                raise _error("did not answer a read at once; point the agent at a regular "
                             "file", path) from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise _error("grew past the %d bytes a config may have while being read; is "
                         "it the right file?" % limit, path)
        return b"".join(chunks)
    except OSError as exc:
        raise _error("cannot read the config file (%s); check its path and permissions"
                     % _reason(exc), path) from None
    finally:
        os.close(fd)


def _ancestors(directory):
    while True:
        yield directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return
        directory = parent


def unsafe_directory(path):
    """Why the directory of ``path`` is unsafe for the root daemon's files, or "" when safe.

    The directory itself (or, when it does not exist yet, its nearest existing parent, where
    the agent creates it) must belong to root (or to the user running the agent) and not be
    writable by group or others; every parent above must belong to root too and, if others
    may write to it, carry the sticky bit (like /tmp), so nobody can move our directory away.
    A link on the way must belong to root as well (whoever owns a link can repoint it)."""
    me = os.geteuid()
    try:
        for directory in _ancestors(os.path.dirname(os.path.abspath(path))):
            try:
                info = os.lstat(directory)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(info.st_mode) and info.st_uid not in (0, me):
                return "%s is a link owned by uid %d, not root" % (directory, info.st_uid)
        first = True
        for directory in _ancestors(os.path.realpath(os.path.dirname(os.path.abspath(path)))):
            try:
                info = os.stat(directory)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(info.st_mode):
                return "%s is not a directory" % directory
            if info.st_uid not in (0, me):
                return "%s belongs to uid %d, not root" % (directory, info.st_uid)
            writable = info.st_mode & 0o022
            if first and writable:
                return "%s is writable by %s (mode %04o)" % (
                    directory, "others" if writable & 0o002 else "its group",
                    stat.S_IMODE(info.st_mode))
            if writable and not info.st_mode & stat.S_ISVTX:
                return "its parent %s is writable by group or others without the sticky " \
                       "bit (mode %04o)" % (directory, stat.S_IMODE(info.st_mode))
            first = False
    except (OSError, ValueError) as exc:
        return "cannot inspect the directory of %s (%s)" % (_show(path), _reason(exc))
    return ""
