"""What a lab leaves on the machine, who owns it, and the sweep that removes a dead lab's leftovers.

Each topology keeps a state directory ``/run/sspn-lab/<prefix>/`` (mode 0700) holding its
owner record (pid, that process's start time, the pid namespace it ran in, and the run
directory of the lab using it, if any) and, with Open vSwitch bridges, the private
ovsdb/vswitchd files (agent/lab/ovs.py). A lab killed with SIGKILL cannot clean up: the next
lab's sweep removes what such a lab left, but only when its
owner is provably dead -- the record is readable, was written in this very pid namespace
(``/proc/self/ns/pid``), and its pid no longer runs the process that wrote it (gone, a
zombie, or reused by a process that started later). Namespaces with no record, or whose
owner ran in another pid namespace (a container sharing ``/run/netns``), are left alone.
Before a dead lab's namespaces are deleted, its daemons are stopped by their pid files
(vswitchd keeps a namespace busy), each checked to be the daemon of that directory. Its run
directory goes last, and only while it is still what the lab made: a directory of ours, mode
0700, not a link.
"""

import errno
import json
import logging
import os
import re
import shutil
import signal
import stat
import time

log = logging.getLogger(__name__)

STATE_ROOT = "/run/sspn-lab"
OWNER = "owner.json"
STOP_WAIT = 5.0          # seconds for a daemon to leave after SIGTERM, then SIGKILL
_PREFIX_RE = re.compile(r"^sspn-[0-9]+-[0-9a-f]+$")


def pid_namespace():
    """This process's pid namespace id, as ``/proc/self/ns/pid`` names it (``pid:[4026531836]``)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (state first), or None when gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except (OSError, ValueError):
        return None
    return text[text.rfind(")") + 2:].split()


def start_time(pid):
    """The start time of process ``pid`` in clock ticks since boot (/proc/PID/stat field 22), or None."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def process_gone(pid, started=None):
    """True when ``pid`` runs no process, only a zombie (PID 1 may reap late), or a process that
    is not the one started at ``started`` (the pid was reused)."""
    fields = _stat_fields(pid)
    if not fields:
        return True
    if fields[0] in ("Z", "X"):
        return True
    return started is not None and len(fields) > 19 and int(fields[19]) != started


def cmdline(pid):
    """The command line of ``pid`` as one string ("" when gone or unreadable)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def stop_by_pidfile(path, marker, wait=STOP_WAIT):
    """SIGTERM the process named in pid file ``path`` if its command line contains ``marker``;
    SIGKILL it after ``wait`` s. True when it is gone (or was never there)."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return True
    if pid <= 1 or process_gone(pid) or marker not in cmdline(pid):
        return True  # gone, or the pid now belongs to someone else: not ours to signal
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, signum)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return True
            raise
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if process_gone(pid):
                return True
            time.sleep(0.01)
        if signum == signal.SIGTERM:
            log.warning("%s (pid %d) did not stop within %.0f s, killing it", path, pid, wait)
    return process_gone(pid)


def stop_pids(pids, where, wait=STOP_WAIT):
    """SIGTERM the processes ``pids`` (found inside a dead lab's namespace ``where``), SIGKILL
    those left after ``wait`` s. True when all are gone (zombies count as gone)."""
    started = dict((pid, start_time(pid)) for pid in pids if pid > 1)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        left = [pid for pid, t in started.items() if not process_gone(pid, t)]
        if not left:
            return True
        if signum == signal.SIGKILL:
            log.warning("pids %s in %s did not stop within %.0f s, killing them", left, where, wait)
        for pid in left:
            try:
                os.kill(pid, signum)
            except OSError:
                pass  # gone meanwhile
        end = time.monotonic() + wait
        while time.monotonic() < end and any(not process_gone(p, started[p]) for p in left):
            time.sleep(0.01)
    return all(process_gone(pid, t) for pid, t in started.items())


def _root():
    """STATE_ROOT, made 0700 if missing; refused when it is a link, not a directory or not ours."""
    try:
        os.mkdir(STATE_ROOT, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
    st = os.lstat(STATE_ROOT)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OSError(errno.EPERM, "%s is not a directory owned by uid %d and writable by it alone"
                      % (STATE_ROOT, os.geteuid()))
    return STATE_ROOT


def claim(prefix, workdir=None):
    """Make ``prefix``'s state directory and write its owner record there, naming the lab's
    run directory ``workdir`` (if any) for the sweep; its path."""
    path = os.path.join(_root(), prefix)
    os.mkdir(path, 0o700)
    me = os.getpid()
    record = {"pid": me, "start": start_time(me), "pidns": pid_namespace()}
    if workdir is not None:
        record["workdir"] = os.path.abspath(workdir)
    fd = os.open(os.path.join(path, OWNER), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return path


def release(path):
    """Remove a state directory (after its namespaces and daemons are gone)."""
    shutil.rmtree(path, ignore_errors=True)


def _owner_record(path):
    with open(os.path.join(path, OWNER)) as f:
        return json.load(f)


def owner_dead(path):
    """(True, why) when the lab that wrote ``path``'s owner record is provably dead, else (False, why)."""
    try:
        record = _owner_record(path)
        pid, started, pidns = int(record["pid"]), record.get("start"), str(record["pidns"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, "no readable owner record (%s)" % exc
    if not pidns or pidns != pid_namespace():
        return False, "its owner ran in another pid namespace (%s)" % pidns
    if not process_gone(pid, started if isinstance(started, int) else None):
        return False, "its owner (pid %d) still runs" % pid
    return True, "its owner (pid %d) no longer runs" % pid


def remove_workdir(path):
    """Remove the run directory named by the owner record in ``path`` (a dead lab's agent.toml,
    agent.log, simulator socket) while it is a directory of ours, mode 0700 as the lab made it,
    and not a link; anything else is left alone. Returns the directory removed, or None."""
    try:
        workdir = _owner_record(path).get("workdir")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(workdir, str) or not os.path.isabs(workdir) \
            or os.path.normpath(workdir) in ("/", os.path.normpath(path)):
        return None
    try:
        st = os.lstat(workdir)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        log.warning("left %s alone: no longer the lab's private run directory", workdir)
        return None
    shutil.rmtree(workdir, ignore_errors=True)  # fd-based: never follows a link inside
    return workdir


def sweep(delete_namespaces):
    """Remove what dead labs left: for every state directory whose owner is provably dead,
    stop its daemons (``ovs/*.pid``), call ``delete_namespaces(prefix)``, remove its run
    directory (``remove_workdir``) and the state directory. Returns the prefixes removed."""
    try:
        names = sorted(os.listdir(STATE_ROOT))
    except OSError:
        return []
    removed = []
    for prefix in names:
        path = os.path.join(STATE_ROOT, prefix)
        if not _PREFIX_RE.match(prefix) or os.path.islink(path) or not os.path.isdir(path):
            continue
        dead, why = owner_dead(path)
        if not dead:
            continue
        from agent.lab import ovs
        ovs.stop_daemons(path)
        delete_namespaces(prefix)
        remove_workdir(path)
        release(path)
        log.warning("removed lab %s: %s", prefix, why)
        removed.append(prefix)
    return removed
