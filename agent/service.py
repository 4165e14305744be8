"""`agent run`: the real adapters around the decision loop, signals, systemd notify and watchdog.

SIGTERM/SIGINT stop deciding and leave every address and route in place (dom0 must stay
reachable). SIGHUP re-reads the config; an invalid file keeps the old config running and
says so. READY=1 is sent after the first decision; WATCHDOG=1 only from the decision loop,
so a stuck loop gets the agent restarted by systemd.
"""

import logging
import random
import signal
import time

from agent import config as cfgmod
from agent import events as ev
from agent import metrics
from agent import snapshot
from agent import status as status_mod
from agent.adapters.files import FileReport
from agent.core import Agent
from agent.idle_gc import IdleCollector
from agent.notify import Notifier
from agent.ports import Clock

log = logging.getLogger("sspn-agent")


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

    def _real_adapters(self, post):
        from agent.adapters.net import RtnlNet
        from agent.adapters.netwatch import NetlinkWatcher
        from agent.adapters.prober import IcmpProber
        from agent.adapters.xapi import XapiAdapter
        # Import on the main thread before any source thread starts: from a zip on Python < 3.10
        # (the bundle on dom0), zipimport lets a second thread see a module half-initialised.
        import icmplib  # noqa: F401
        import XenAPI  # noqa: F401
        return {"net": RtnlNet(), "watcher": NetlinkWatcher(), "prober": IcmpProber(post),
                "xapi": XapiAdapter(self.config, rng=self.rng, local_db_path=self.config.xapi.local_db)}

    def build(self):
        """Create the agent and its adapters (nothing starts yet)."""
        files = self.config.files
        report = FileReport(files.status, files.trace, files.trace_max_bytes, log)
        report = metrics.wrap(report, files.metrics, log)  # off unless [files] metrics is set
        self.agent = None
        posts = []

        def post(event):
            posts.append(event) if self.agent is None else self.agent.post(event)

        adapters = self._adapters or self._real_adapters(post)
        self.net, self.watcher = adapters["net"], adapters["watcher"]
        self.prober, self.xapi = adapters["prober"], adapters["xapi"]
        self.agent = Agent(self.config, self.net, self.xapi, self.prober, SystemClock(), report,
                           mgmt_bridge=management_bridge(self.config), rng=self.rng)
        carried = status_mod.carried_over(files.status)
        if any(carried.values()):
            for name, value in carried.items():
                setattr(self.agent.facts, name, value)
            log.info("taking over from the previous agent of this boot (%s): autostart done %s, "
                     "host re-enabled by the agent %s, uplink VMs seen up %s", files.status,
                     carried["autostart_done"], carried["host_fixed"], carried["uplinks_seen"])
        for event in posts:
            self.agent.post(event)
        if hasattr(self.prober, "post"):
            self.prober.post = self.agent.post
        self.agent.reload_config = self._reload_config
        agent = self.agent
        agent.persist = lambda: agent.report.status(snapshot.build(agent))
        return self.agent

    def _reload_config(self):
        """Re-read the config file for SIGHUP; keep the old one when the new one is invalid."""
        try:
            new = cfgmod.load_config(self.config.path)
        except cfgmod.ConfigError as e:
            log.error("reload refused, keeping the running config: %s", e)
            return None
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

    def run(self):
        """Start the sources, run the decision loop, stop cleanly; returns the exit status."""
        agent = self.build()
        self._signals()
        log.info("sspn-agent starting (config %s)", self.config.path)
        self.watcher.start(agent.post)
        self.xapi.start(agent.post)
        tick = self.notifier.watchdog_interval or 30.0
        self._gc.start()
        try:
            agent.run(after=self._after, tick=tick)
        finally:
            self._gc.stop()
            self.notifier.send("STOPPING=1")
            for closer in (self.xapi.stop, self.watcher.stop, self.prober.close, self.net.close):
                try:
                    closer()
                except Exception as e:  # stopping must never fail the shutdown
                    log.warning("while stopping: %s, ignoring", e)
            final = snapshot.build(agent)
            final["stopped"] = True
            agent.report.status(final)
            log.info("sspn-agent stopped in %s; addresses and routes left in place", agent.state)
        return 0
