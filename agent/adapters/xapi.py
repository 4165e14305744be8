"""The real Xapi port: a watcher thread follows event.from, worker lanes run the actions.

Each thread has its own XenAPI session (the client is not thread-safe, docs/xapi-behaviour.md §1) over
a transport with a timeout on every call (agent/adapters/xapi_transport.py). The watcher
connects with capped, jittered backoff, posting XapiLost once per failed attempt; after every
(re)connect it reads the whole world the config names (agent/adapters/xapi_world.py) and posts
XapiConnected, then long-polls ``event.from`` on object-scoped subscriptions and posts
HostChanged / VmChanged / PbdChanged. Anything odd (a relogin after SESSION_INVALID, a garbage
reply, a watched object deleted or renamed) leads to a full resync, never to a dead thread or a
busy loop. Actions run on lanes (agent/adapters/xapi_lanes.py): ``control`` (host.enable,
state, messages, the autostart list), ``start`` (VM.start) and one ``plug:<sr>`` per SR
(``Async.PBD.plug`` followed as a task, cancelled at its deadline): a slow call never holds up
another. Each action gets exactly one ActionDone.

XenAPI is imported lazily by the transport module, so importing this module costs nothing.
Python 3.6 compatible.
"""

import logging
import random
import threading

from agent.adapters.xapi_transport import (LOCAL_USER, XapiConnection, describe_error,
                                           endpoint_of, error_details, is_transport_error)
from agent.adapters.xapi_lanes import STOP, Answered, Lane, await_task
from agent.adapters.xapi_world import (LOCAL_DB, GarbageReply, ResyncNeeded, events_of,
                                       list_autostart, read_world)
from agent.decision.events import ActionDone, XapiConnected, XapiLost
from agent.ports import UNSENT, Xapi
from agent.decision.schedule import ReconnectSchedule
from agent.decision import world as w
from agent.report import text

log = logging.getLogger(__name__)

_ACTIONS = (w.EnableHost, w.StartVm, w.PlugPbd, w.ListAutostart, w.PublishState, w.RaiseMessage)
_UNLIMITED = 1 << 30

# VM.start returns only after the VM runs *plus* its start_delay (docs/xapi-behaviour.md §6), and booting
# a firewall VM with passed-through NICs takes tens of seconds; PBD.plug of a dead NFS server
# takes at least NFSSR's 5 s TCP probe (docs/xapi-behaviour.md §7). Those two calls get this many call
# timeouts (plus the start_delay) before they count as failed.
SLOW_CALL_FACTOR = 6
# stop() waits at most this long for each thread; both are daemon threads.
JOIN_TIMEOUT = 3.0
# Logout at stop is best effort and must not hold up the shutdown.
LOGOUT_TIMEOUT = 1.0


class XapiError(Exception):
    """A one-shot XAPI read failed: the text says what; ``details`` is the ErrorDescription."""

    def __init__(self, message, details=None):
        Exception.__init__(self, message)
        self.details = details


def resolve_once(config, local_db_path=LOCAL_DB):
    """Connect, read the XapiWorld the config names (the watcher's resync path), log out.

    For ``agent check``. Raises XapiError (or ConfigError for an unreadable password file).
    """
    conn = XapiConnection(config.xapi, originator="sspn-agent-check")
    try:
        conn.login()
        return read_world(conn, config, local_db_path).world
    except Exception as exc:
        if type(exc).__name__ == "ConfigError":
            raise
        raise XapiError("cannot read XAPI at %s: %s" % (conn.endpoint,
                                                      describe_error(exc, conn.endpoint)),
                        details=error_details(exc))
    finally:
        conn.logout(timeout=min(LOGOUT_TIMEOUT, conn.call_timeout))


class XapiAdapter(Xapi):
    """ports.Xapi over the real XenAPI client: one watcher thread and worker lanes."""

    def __init__(self, config, rng=None, local_db_path=LOCAL_DB):
        self._config = config
        self._rng = rng or random.Random()
        self._local_db_path = local_db_path
        self._endpoint = endpoint_of(config.xapi)
        self._post = None
        self._stopping = threading.Event()
        self._threads = []
        self._lanes = {}            # lane name -> Lane, created on first use
        self._lanes_lock = threading.Lock()
        self._conns = {}            # "watcher"/lane name -> XapiConnection (for abort at stop)
        self._conns_lock = threading.Lock()
        self._lost = None           # the watcher's last error while XAPI is unreachable
        self._async_plug = None     # None: not tried yet; False: the server has no Async.PBD.plug

    # --- the port ---------------------------------------------------------------------------

    def start(self, post):
        """Start the watcher and the lanes (logging in at once); events go to ``post``."""
        self._post = post
        thread = threading.Thread(target=self._watch, name="xapi-watcher")
        thread.daemon = True
        thread.start()
        self._threads.append(thread)
        for name in ["control", "start"] + ["plug:" + sr.uuid for sr in self._config.srs]:
            self._lane(name)

    def request(self, action):
        """Queue an action on its lane; exactly one ActionDone follows."""
        self._lane(lane_of(action)).put(action)

    def stop(self):
        """Stop every thread promptly (interrupting a long poll or a slow call), log out."""
        self._stopping.set()
        with self._lanes_lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.put(STOP)
        with self._conns_lock:
            conns = list(self._conns.values())
        for conn in conns:
            conn.abort()
        for thread in self._threads + [lane.thread for lane in lanes]:
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                log.warning("%s did not stop within %.0f s, leaving it (daemon thread)",
                            thread.name, JOIN_TIMEOUT)

    @property
    def running(self):
        """True while the watcher or a lane thread is alive."""
        with self._lanes_lock:
            lanes = list(self._lanes.values())
        return any(t.is_alive() for t in self._threads + [lane.thread for lane in lanes])

    def _lane(self, name):
        """The lane ``name``, started on first use."""
        with self._lanes_lock:
            lane = self._lanes.get(name)
            if lane is None:
                lane = Lane(name, self._connection, self._run, self._emit, self._stopping)
                self._lanes[name] = lane
                if self._stopping.is_set():
                    lane.put(STOP)
                lane.start()
            return lane

    # --- shared helpers ---------------------------------------------------------------------

    def _connection(self, role):
        """A new connection for ``role``, registered so stop() can abort it."""
        conn = XapiConnection(self._config.xapi)
        with self._conns_lock:
            self._conns[role] = conn
            if self._stopping.is_set():
                conn.abort()
        return conn

    def _wait(self, seconds):
        """Sleep until the backoff deadline or stop(); True when stopping."""
        return self._stopping.wait(seconds)

    def _emit(self, event):
        if not self._stopping.is_set():
            self._post(event)

    # --- watcher ----------------------------------------------------------------------------

    def _watch(self):
        timing = self._config.timing
        retry = ReconnectSchedule(timing.backoff_base, timing.backoff_cap, _UNLIMITED, self._rng)
        conn = self._connection("watcher")
        try:
            while not self._stopping.is_set():
                try:
                    watched = self._resync(conn, retry)
                    if watched is not None:
                        self._follow(conn, watched, retry)
                except Exception:  # a bug in our own code: say so, never let the thread die
                    log.exception("XAPI watcher failed unexpectedly, resyncing")
                    self._wait(retry.failed("internal error"))
        finally:
            conn.logout(timeout=min(LOGOUT_TIMEOUT, conn.call_timeout))

    def _resync(self, conn, retry):
        """Log in if needed and read the whole world; on failure post XapiLost and back off."""
        try:
            conn.ensure_login()
            watched = read_world(conn, self._config, self._local_db_path)
            # A relogin during the read (SESSION_INVALID after a restart) is covered by this
            # very read, whose last call is the event.from dump: do not resync again for it.
            conn.relogged()
        except Exception as exc:
            if self._stopping.is_set():
                return None
            text = _error_text(exc, conn.endpoint)
            if (error_details(exc) or [""])[0] in EMERGENCY_HINTS and self._config.xapi.is_local \
                    and in_emergency_mode(self._config.xapi):
                text = EMERGENCY_TEXT % text
            untold = self._lost is None   # an outage that began with a cut event.from reply
            self._lost = text
            delay = retry.failed(text, fast=is_transport_error(exc))
            log.log(logging.WARNING if retry.loud or untold else logging.DEBUG,
                    "XAPI unavailable (%s), retrying in %.1f s", text, delay)
            if retry.loud or untold:  # the fast attempts right after a loss say nothing new
                self._emit(XapiLost(text))
            self._wait(delay)
            return None
        if self._lost is not None:
            log.info("XAPI reachable again at %s", conn.endpoint)
        self._lost = None
        self._emit(XapiConnected(watched.world))
        return watched

    def _follow(self, conn, watched, retry):
        """Long-poll event.from until something calls for a resync (returns) or stop()."""
        timing = self._config.timing
        subs = watched.subscriptions()
        healthy = False  # an event.from of this follow returned a valid result
        while not self._stopping.is_set():
            try:
                result = conn.call("event.from", subs, watched.token, float(timing.event_timeout),
                                   timeout=conn.call_timeout + float(timing.event_timeout))
                if conn.relogged():
                    # SESSION_INVALID (xapi restarted, session GC'd): the client logged in again
                    # and re-issued the call; XAPI may have changed meanwhile (docs/xapi-behaviour.md §4).
                    raise ResyncNeeded("XAPI session was renewed")
                events = events_of(result)
                retry.succeeded()
                healthy = True
                for event in events:
                    for out in watched.translate(conn, event):
                        self._emit(out)
                watched.token = result["token"]
                if not events and watched.world.missing:
                    watched = self._recheck_missing(conn, watched)
                    subs = watched.subscriptions()
            except ResyncNeeded as exc:
                for out in exc.events:
                    self._emit(out)
                if isinstance(exc, GarbageReply):
                    self._back_off(retry, "%s" % exc)
                elif healthy:
                    log.info("resyncing with XAPI: %s", exc)  # a real change: resync at once
                else:
                    # No good event.from since the last resync (e.g. a relogin on every call):
                    # back off so that repeated resyncs never busy-loop.
                    delay = retry.failed(str(exc))
                    log.info("resyncing with XAPI in %.1f s: %s", delay, exc)
                    self._wait(delay)
                return
            except Exception as exc:
                if self._stopping.is_set():
                    return
                text = _error_text(exc, conn.endpoint)
                if is_transport_error(exc):
                    self._lost = text
                    self._emit(XapiLost(text))
                self._back_off(retry, text, fast=is_transport_error(exc))
                return

    def _back_off(self, retry, text, fast=False):
        delay = retry.failed(text, fast=fast) if fast else retry.failed(text)
        log.warning("XAPI event stream failed (%s), resyncing in %.1f s", text, delay)
        self._wait(delay)

    def _recheck_missing(self, conn, watched):
        """While a label is unresolved, re-read once per event timeout; post a changed world."""
        fresh = read_world(conn, self._config, self._local_db_path)
        if fresh.world != watched.world:
            log.info("XAPI world changed while labels were missing, now missing: %s",
                     ", ".join(fresh.world.missing) or "nothing")
            self._emit(XapiConnected(fresh.world))
        return fresh

    # --- lanes ------------------------------------------------------------------------------

    def _run(self, conn, action):
        """Run one action: (its ActionDone, the error for the actions queued behind it or None).

        The second is set after a transport error: those actions would meet the same dead
        connection and are failed unsent.
        """
        if self._stopping.is_set():
            return ActionDone(action, False, ["agent stopping"]), None
        if not isinstance(action, _ACTIONS):
            return ActionDone(action, False, ["unknown XAPI action %r" % (action,)]), None
        lost = self._lost
        if lost is not None:
            # The watcher cannot reach XAPI: fail at once rather than hold actions (they are
            # retried by the machine after the next XapiConnected).
            return ActionDone(action, False, ["%s: %s" % (UNSENT, lost)]), None
        try:
            conn.ensure_login()
            value = self._execute(conn, action)
        except Answered:
            return None, None  # answered at its deadline (a task still ran then)
        except Exception as exc:
            error = error_details(exc) or [_error_text(exc, conn.endpoint)]
            log.debug("%s failed: %s", getattr(action, "kind", action), " ".join(error))
            unsent = None
            if is_transport_error(exc):
                # The queued actions get "XAPI unreachable", as when the watcher has lost XAPI,
                # never this call's own error (else the trace showed a PBD.plug timing out that
                # never reached XAPI: the PublishState queued before it had).
                unsent = ["%s: %s" % (UNSENT, " ".join(error))]
            return ActionDone(action, False, error), unsent
        return ActionDone(action, True, (), value), None

    def _execute(self, conn, action):
        """The XAPI calls of one action; returns the ActionDone value."""
        slow = conn.call_timeout * SLOW_CALL_FACTOR
        if isinstance(action, w.EnableHost):
            conn.call("host.enable", action.host_ref)
            return None
        if isinstance(action, w.StartVm):
            delay = _int(conn.call("VM.get_start_delay", action.vm_ref))
            conn.call("VM.start", action.vm_ref, False, False, timeout=slow + delay)
            return None
        if isinstance(action, w.PlugPbd):
            return self._plug(conn, action, slow)
        if isinstance(action, w.ListAutostart):
            return list_autostart(conn)
        if isinstance(action, w.PublishState):
            for key, value in action.values:
                # remove first: add_to_other_config fails MAP_DUPLICATE_KEY on an existing key.
                conn.call("host.remove_from_other_config", action.host_ref, key)
                conn.call("host.add_to_other_config", action.host_ref, key,
                          text.clean(str(value), 500))  # XAPI strings are data (docs/hostile.md)
            return None
        host_uuid = action.host_uuid  # RaiseMessage, the last of _ACTIONS
        if not host_uuid:
            host = conn.call("session.get_this_host", conn.session.handle)
            host_uuid = conn.call("host.get_uuid", host)
        return conn.call("message.create", action.name, int(action.priority), "Host",
                         host_uuid, text.clean(action.body, 2000))


    def _plug(self, conn, action, slow):
        """PBD.plug as a task (cancelled after ``slow`` s); the plain call where the server has
        no Async.PBD.plug (the lab's simulator without tasks)."""
        if self._async_plug is not False:
            try:
                task = conn.call("Async.PBD.plug", action.pbd_ref)
            except Exception as exc:
                if (error_details(exc) or [""])[0] != "MESSAGE_METHOD_UNKNOWN":
                    raise
                log.info("XAPI has no Async.PBD.plug, plugging with the plain call")
                self._async_plug = False
            else:
                self._async_plug = True
                await_task(conn, task, slow, lambda error: self._emit(ActionDone(action, False, error)),
                           self._stopping, linger=slow)
                return self._attached(conn, action)
        conn.call("PBD.plug", action.pbd_ref, timeout=slow)
        return self._attached(conn, action)

    @staticmethod
    def _attached(conn, action):
        """currently_attached read after the plug: the reply's value. An unplug between the plug
        and this reply reaches the agent as an event *before* the reply (event.from coalesces
        the plug's and the unplug's mods), so the reply must not claim attached blindly."""
        value = conn.call("PBD.get_currently_attached", action.pbd_ref)
        return value if isinstance(value, bool) else str(value).lower() == "true"


def lane_of(action):
    """The lane an action runs on: its SR's plug lane, the start lane, or the control lane."""
    if isinstance(action, w.PlugPbd):
        return "plug:" + (action.sr_uuid or action.pbd_ref)
    if isinstance(action, w.StartVm):
        return "start"
    return "control"


# What a pool member's xapi answers to a login while it cannot reach its master (xen-api
# ocaml/xapi/xapi.ml member start-up; api_server.ml refuses every non-emergency call with it).
EMERGENCY_HINTS = ("HOST_HAS_NO_MANAGEMENT_IP", "HOST_STILL_BOOTING",
                   "HOST_MASTER_CANNOT_TALK_BACK", "INTERNAL_ERROR")
EMERGENCY_TEXT = ("pool member in emergency mode, its master unreachable (%s): XAPI refuses "
                  "every call but a few until the master answers, VM.start included; dom0's "
                  "addresses and routes stay as they are")


def in_emergency_mode(xapi_config):
    """Ask xapi ``host.is_in_emergency_mode`` over a host-local session
    (``session.slave_local_login_with_password``, both on xen-api's emergency call list);
    False when it cannot be asked. A throwaway connection: the watcher's keeps its login."""
    probe = XapiConnection(xapi_config, originator="sspn-agent-emergency")
    try:
        probe.session.slave_local_login_with_password(LOCAL_USER, "")
        try:
            return bool(probe.call("host.is_in_emergency_mode"))
        finally:
            try:
                probe.call("session.local_logout")
            except Exception:  # noqa: BLE001 -- best effort
                pass
    except Exception:  # noqa: BLE001 -- no verdict: the plain error is reported
        return False
    finally:
        probe.transport.close()


def _int(value):
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _error_text(exc, endpoint):
    """Short text for XapiLost and the log; a ConfigError (password file) speaks for itself."""
    if type(exc).__name__ == "ConfigError" or isinstance(exc, ResyncNeeded):
        return str(exc)
    return describe_error(exc, endpoint)
