"""How the root daemon touches its own files: never through a link, never a guessable temp name.

docs/hostile.md: every file the agent writes (status, trace, their temp files, the instance
lock) is opened with O_NOFOLLOW (a planted link fails with ELOOP instead of steering the
write), must be a regular file (fstat), and gets its mode by fchmod, whatever the umask.
A replaced file is written to a temp file with a random name (O_CREAT|O_EXCL) in the same
directory, then renamed over the old one (rename never follows a link either). Readers
(`agent status`, `agent trace`) open with O_NONBLOCK and read a bounded amount.
Python 3.6 compatible; no import beyond the standard library.
"""

import errno
import os
import stat

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class UnsafeFile(OSError):
    """A path the agent refuses to write or read: a link, not a regular file, too large."""


def ensure_dir(directory, mode=0o755):
    """Create ``directory`` (and parents) with ``mode`` whatever the umask; existing ones are kept."""
    if not directory or os.path.isdir(directory):
        return
    ensure_dir(os.path.dirname(directory), 0o755)
    try:
        os.mkdir(directory, mode)
    except FileExistsError:
        pass
    else:
        os.chmod(directory, mode)


def _regular(fd, path):
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafeFile(errno.EINVAL, "not a regular file", path)
    return info


def _open(path, flags, mode):
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(errno.ELOOP, "is a symbolic link; refusing to follow it", path)
        raise


def open_append(path, mode=0o640, create=True):
    """A read-write fd appending to ``path`` (created with ``mode``), never through a link."""
    fd = _open(path, os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0), mode)
    info = _regular(fd, path)
    if stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)
    return fd


def open_lock(path, mode=0o644):
    """A read-write fd of the lock file ``path``, never through a link."""
    fd = _open(path, os.O_RDWR | os.O_CREAT, mode)
    info = _regular(fd, path)
    if stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)
    return fd


def write_all(fd, data):
    """os.write until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def temp_name(path):
    """``<path>.<pid>.<random>.tmp``: the pid lets a successor remove a dead writer's file."""
    return "%s.%d.%s.tmp" % (path, os.getpid(), os.urandom(6).hex())


def write_atomic(path, data, mode=0o644):
    """Replace ``path`` by ``data`` (bytes): random temp name, O_EXCL|O_NOFOLLOW, fchmod, rename."""
    tmp = temp_name(path)
    fd = _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            write_all(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_bounded(path, limit):
    """(bytes of the regular file ``path``, truncated flag): at most ``limit`` bytes from its
    start; O_NONBLOCK so that a FIFO cannot hang the reader; UnsafeFile if not regular."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        _regular_keep(fd, path)
        data = _read_upto(fd, limit + 1)
    finally:
        os.close(fd)
    return data[:limit], len(data) > limit


def read_tail(path, limit):
    """(the last ``limit`` bytes at most of the regular file ``path``, its size)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        size = _regular_keep(fd, path).st_size
        start = max(0, size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        return _read_upto(fd, limit), size
    finally:
        os.close(fd)


def _regular_keep(fd, path):
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(errno.EINVAL, "not a regular file", path)
    return info


def _read_upto(fd, limit):
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(1 << 16, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
