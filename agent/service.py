"""`agent run`: the real adapters around the decision loop, signals, systemd notify and watchdog.

SIGTERM/SIGINT stop deciding and leave every address and route in place (dom0 must stay
reachable). SIGHUP re-reads the config (a bounded read of a regular file: it cannot block
the decision thread); an invalid file keeps the old config running and says so, and keys
that only a restart applies ([files]) are named. READY=1 is sent after the first decision;
WATCHDOG=1 only from the decision loop, so a stuck loop gets the agent restarted by systemd.
One agent per status directory: a second `agent run` exits at once with EXIT_ALREADY_RUNNING.

Start-up order: the instance lock, then the XAPI port (its login and first ``event.from`` go
out while the decision core, the reports and the kernel adapters are still being imported and
built; its events wait in a buffer until the agent exists), then everything else. Until then
this module imports only what the lock and the XAPI port need (docs/performance.md, "start").
"""

import errno
import fcntl
import logging
import os
import random
import signal
import struct
import threading
import time

from agent import config as cfgmod
from agent.decision import events as ev
from agent.report import safefile
from agent.report import status as status_mod
from agent.adapters.files import STATUS_RETRY, FileReport
from agent.idle_gc import IdleCollector
from agent.report.notify import Notifier
from agent.ports import Clock

log = logging.getLogger("sspn-agent")

EXIT_ALREADY_RUNNING = 75  # sysexits.h EX_TEMPFAIL: another agent holds the instance lock
RESTART_ONLY = ("files",)  # config sections a SIGHUP cannot apply to a running agent


class AlreadyRunning(Exception):
    """Another agent holds the instance lock (its pid, when known, is in the message)."""


def take_lock(status_path):
    """Hold the instance lock (a POSIX write lock on status.lock_path) for this process's
    life; returns its fd. AlreadyRunning when another process holds it."""
    path = status_mod.lock_path(status_path)
    if os.path.abspath(path) in status_mod.HELD:
        raise AlreadyRunning("this process already holds the lock %s, exiting" % path)
    safefile.ensure_dir(os.path.dirname(path), 0o755)
    fd = safefile.open_lock(path, 0o644)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(status_mod.FLOCK, fcntl.F_WRLCK, 0, 0, 0, 0))
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        holder = status_mod.lock_holder(status_path)
        raise AlreadyRunning("another sspn-agent%s already runs for %s (lock %s); stop it "
                             "first (systemctl stop sspn-agent), exiting"
                             % (" (pid %d)" % holder if holder else "", status_path, path))
    os.ftruncate(fd, 0)
    safefile.write_all(fd, b"%d\n" % os.getpid())
    status_mod.HELD.add(os.path.abspath(path))
    return fd


def release_lock(fd, status_path):
    """Give the instance lock up (tests; the agent holds it until it exits)."""
    status_mod.HELD.discard(os.path.abspath(status_mod.lock_path(status_path)))
    os.close(fd)


class SystemClock(Clock):
    """The real clocks."""

    def monotonic(self):
        return time.monotonic()

    def wall(self):
        return time.time()


def management_bridge(config):
    """The configured management bridge, else MANAGEMENT_INTERFACE from the inventory."""
    try:
        return cfgmod.management_bridge(config)
    except cfgmod.ConfigError as e:
        log.warning("%s; the management mirror is off until it is known", e)
        return ""


class Service(object):
    """Builds the agent with real adapters and runs it until a stop signal."""

    def __init__(self, config, adapters=None, notifier=None):
        self.config = config
        self.notifier = notifier or Notifier()
        self.rng = random.Random()
        self._adapters = adapters  # tests and the lab may inject; default: the real ones
        self._ready = False
        self._last_pet = 0.0
        self._last_status_state = None
        self._gc = IdleCollector()
        self.agent = None
        self._early = []        # events posted before the agent exists, in order
        self._early_lock = threading.Lock()
        self._xapi_started = False

    def _post(self, event):
        """Where the sources post: buffered until the agent exists, then straight to it."""
        with self._early_lock:
            if self.agent is None:
                self._early.append(event)
                return
        self.agent.post(event)

    def start_xapi(self):
        """Start the real XAPI port now, before the rest is built (``run``): its login and
        first event.from overlap the imports below. Its events wait for the agent."""
        from agent.adapters.xapi import XapiAdapter
        # Import on the main thread before any source thread starts: from a zip on Python < 3.10
        # (the bundle on dom0), zipimport lets a second thread see a module half-initialised.
        import XenAPI  # noqa: F401
        self.xapi = XapiAdapter(self.config, rng=self.rng, local_db_path=self.config.xapi.local_db)
        self.xapi.start(self._post)
        self._xapi_started = True

    def _real_adapters(self):
        from agent.adapters.net import RtnlNet
        from agent.adapters.netwatch import NetlinkWatcher
        from agent.adapters.prober import IcmpProber
        import icmplib  # noqa: F401  (main thread, as above)
        adapters = {"net": RtnlNet(), "watcher": NetlinkWatcher(), "prober": IcmpProber(self._post)}
        if not self._xapi_started:
            from agent.adapters.xapi import XapiAdapter
            import XenAPI  # noqa: F401
            adapters["xapi"] = XapiAdapter(self.config, rng=self.rng,
                                           local_db_path=self.config.xapi.local_db)
        return adapters

    def build(self):
        """Create the agent and its adapters (nothing starts yet, but an early XAPI port)."""
        from agent.decision.core import Agent
        from agent.report import metrics, snapshot
        files = self.config.files
        report = FileReport(files.status, files.trace, files.trace_max_bytes, log)
        report = metrics.wrap(report, files.metrics, log)  # off unless [files] metrics is set
        adapters = self._adapters or self._real_adapters()
        self.net, self.watcher, self.prober = adapters["net"], adapters["watcher"], adapters["prober"]
        if not self._xapi_started:
            self.xapi = adapters["xapi"]
        agent = Agent(self.config, self.net, self.xapi, self.prober, SystemClock(), report,
                      mgmt_bridge=management_bridge(self.config), rng=self.rng)
        carried = status_mod.carried_over(files.status)
        if any(carried.values()):
            for name, value in carried.items():
                setattr(agent.facts, name, value)
            log.info("taking over from the previous agent of this boot (%s): autostart done %s, "
                     "host re-enabled by the agent %s, uplink VMs seen up %s", files.status,
                     carried["autostart_done"], carried["host_fixed"], carried["uplinks_seen"])
        if hasattr(self.prober, "post"):
            self.prober.post = agent.post
        agent.reload_config = self._reload_config
        agent.persist = lambda: agent.report.status(snapshot.build(agent))
        with self._early_lock:   # the buffered events first, in order; then the sources post directly
            for event in self._early:
                agent.post(event)
            self._early = []
            self.agent = agent
        return agent

    def _reload_config(self):
        """Re-read the config file for SIGHUP; keep the old one when the new one is invalid."""
        try:
            new = cfgmod.load_config(self.config.path)
        except cfgmod.ConfigError as e:
            log.error("reload refused, keeping the running config: %s", e)
            return None
        kept = [name for name in RESTART_ONLY if getattr(new, name) != getattr(self.config, name)]
        if kept:
            import attr
            new = attr.evolve(new, **dict((name, getattr(self.config, name)) for name in kept))
            log.warning("config reloaded from %s, but [%s] changed and applies only at the next "
                        "start: the running agent keeps the old values until `systemctl restart "
                        "sspn-agent`", self.config.path, "], [".join(kept))
        else:
            log.info("config reloaded from %s", self.config.path)
        self.xapi.stop()
        self.config = new
        self.xapi = self._new_xapi(new)
        self.agent.xapi = self.xapi
        self.agent.mgmt_bridge = management_bridge(new)
        self.xapi.start(self.agent.post)
        return new

    def _new_xapi(self, config):
        if self._adapters and "xapi_factory" in self._adapters:
            return self._adapters["xapi_factory"](config)
        from agent.adapters.xapi import XapiAdapter
        return XapiAdapter(config, rng=self.rng, local_db_path=config.xapi.local_db)

    def _signals(self):
        def stop(signum, _frame):
            self.agent.post_from_signal(ev.StopRequested(signal.Signals(signum).name))

        def reload(_signum, _frame):
            self.agent.post_from_signal(ev.ReloadRequested())
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _after(self, drained):
        """After each wake-up of the loop: watchdog when due; status and STATUS= when drained."""
        now = time.monotonic()
        interval = self.notifier.watchdog_interval
        if interval and now - self._last_pet >= interval:
            self.notifier.send("WATCHDOG=1")
            self._last_pet = now
        if not drained:
            return
        from agent.report import snapshot
        agent = self.agent
        agent.report.status(snapshot.build(agent))
        if not self._ready:
            self._ready = True
            self.notifier.send("READY=1", "STATUS=%s" % agent.state)
            self._last_status_state = agent.state
        elif agent.state != self._last_status_state:
            self.notifier.send("STATUS=%s" % agent.state)
            self._last_status_state = agent.state
        self._gc.collect()

    def _tick(self):
        """The longest the loop may sleep: shorter while the status file cannot be written."""
        tick = self.notifier.watchdog_interval or 30.0
        return min(tick, STATUS_RETRY) if self.agent.report.failing else tick

    def run(self):
        """Start the sources, run the decision loop, stop cleanly; returns the exit status
        (EXIT_ALREADY_RUNNING at once when another agent holds the instance lock)."""
        try:
            self._lock = take_lock(self.config.files.status)
        except AlreadyRunning as e:
            log.error("%s", e)
            return EXIT_ALREADY_RUNNING
        except OSError as e:
            log.error("cannot take the instance lock %s: %s; fix [files] status, exiting",
                      status_mod.lock_path(self.config.files.status), e)
            return cfgmod.EX_CONFIG
        log.info("sspn-agent starting (config %s)", self.config.path)
        if self._adapters is None:
            self.start_xapi()
        agent = self.build()
        self._signals()
        self.watcher.start(agent.post)
        if not self._xapi_started:
            self.xapi.start(agent.post)
        self._gc.start()
        try:
            agent.run(after=self._after, tick=self._tick)
        finally:
            self._gc.stop()
            self.notifier.send("STOPPING=1")
            for closer in (self.xapi.stop, self.watcher.stop, self.prober.close, self.net.close):
                try:
                    closer()
                except Exception as e:  # stopping must never fail the shutdown
                    log.warning("while stopping: %s, ignoring", e)
            from agent.report import snapshot
            final = snapshot.build(agent)
            final["stopped"] = True
            agent.report.status(final)
            log.info("sspn-agent stopped in %s; addresses and routes left in place", agent.state)
        return 0
