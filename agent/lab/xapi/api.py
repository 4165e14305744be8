"""XAPI method dispatch: wire names, arity, sessions, generic class methods, session and event.

Dispatch follows xapi's generated server (docs/xapi-behaviour.md §1): every message answers to
``Class.method`` and ``Class_method``; a wrong number of parameters gives
``MESSAGE_PARAMETER_COUNT_MISMATCH [method, expected, received]`` (counts exclude the session);
the session is checked next (``SESSION_INVALID [ref]``); an unknown name whose first parameter
is a session is session-checked and then answered ``MESSAGE_METHOD_UNKNOWN [name]``.

Not simulated: ``Async.*`` (no task objects), answered ``MESSAGE_METHOD_UNKNOWN [name]``.
"""

import collections
import logging
import math
import time

from . import db as dbmod
from . import ops, schema, wire
from .errors import Disconnect, XapiError

LOG = logging.getLogger(__name__)
# A negative, NaN or huge event.from timeout means xapi's default of 24 h (docs/xapi-behaviour.md §3).
DEFAULT_EVENT_TIMEOUT = 86400.0


class Context(object):
    """Facts about one request: which listener it came in on, and what to do after replying."""

    def __init__(self, transport):
        self.transport = transport      # "unix" (pre-authenticated) or "tcp"
        self.after = []                 # callables run once the response has been written


class Registry(object):
    """Methods by canonical wire name, with their alternative ``Class_method`` names."""

    def __init__(self):
        self.methods = collections.OrderedDict()
        self.aliases = {}

    def add(self, name, fn, nargs, optional=0, session=True):
        """Register ``fn(ctx, [session,] *args)`` taking nargs params, the last ``optional`` optional."""
        self.methods[name] = (fn, nargs - optional, nargs, session)
        self.aliases[name] = name
        self.aliases[name.replace(".", "_", 1)] = name

    def wire_names(self):
        """Every accepted wire name, as system.listMethods returns them."""
        return sorted(self.aliases) + ["system.listMethods"]


class Api(object):
    """The XAPI methods of one simulator."""

    def __init__(self, sim):
        self.sim = sim
        self.db = sim.db
        self.registry = Registry()
        self.waiting = 0    # event.from calls blocked right now (guarded by db.lock)
        self._register_generic()
        self._register_session()
        self.registry.add("event.from", self.event_from, 3)
        ops.register(self.registry, sim)

    # --- dispatch --------------------------------------------------------------------------

    def call(self, name, params, ctx):
        """Run one call; returns the value to send (the Status envelope, or the raw listMethods)."""
        if name == "system.listMethods":
            return self.registry.wire_names()   # sent without the Status wrapper, like xapi
        try:
            return wire.success(self._call(name, params, ctx))
        except XapiError as exc:
            return wire.failure(exc.details)
        except Disconnect:
            raise
        except Exception as exc:  # any other exception is INTERNAL_ERROR in xapi (ExnHelper)
            LOG.exception("xapi simulator: %s failed", name)
            return wire.failure(["INTERNAL_ERROR", "%s: %s" % (type(exc).__name__, exc)])

    def _call(self, name, params, ctx):
        if name.startswith("Async.") or name.startswith("InternalAsync."):
            raise XapiError("MESSAGE_METHOD_UNKNOWN", name)
        canonical = self.registry.aliases.get(name)
        if canonical is None:
            if params:
                self.db.check_session(params[0])
            raise XapiError("MESSAGE_METHOD_UNKNOWN", name)
        fn, least, most, needs_session = self.registry.methods[canonical]
        received = len(params) - 1 if needs_session else len(params)
        if not least <= received <= most:
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", canonical, most, received)
        if needs_session:
            self.db.check_session(params[0])
        return fn(ctx, *params)

    # --- generic per-class messages ---------------------------------------------------------

    def _register_generic(self):
        for cls in schema.CLASSES:
            if cls != "message":
                self._register_class(cls)

    def _register_class(self, cls):
        db, add = self.db, self.registry.add
        add(cls + ".get_all", lambda ctx, s: db.refs(cls), 0)
        add(cls + ".get_all_records", lambda ctx, s: db.records(cls), 0)
        add(cls + ".get_all_records_where", lambda ctx, s, text: db.where(cls, str(text)), 1)
        add(cls + ".get_record", lambda ctx, s, ref: db.record(cls, ref), 1)
        add(cls + ".get_by_uuid", lambda ctx, s, uuid: db.by_uuid(cls, uuid), 1)
        if "name_label" in schema.FIELDS[cls]:
            add(cls + ".get_by_name_label",
                lambda ctx, s, label: db.find(cls, name_label=label), 1)
        for field in schema.FIELDS[cls].values():
            self._register_field(cls, field)

    def _register_field(self, cls, field):
        db, add, name = self.db, self.registry.add, field.name
        add("%s.get_%s" % (cls, name), lambda ctx, s, ref: db.get(cls, ref, name), 1)
        if not field.writable:
            return

        def setter(ctx, s, ref, value):
            db.update(cls, ref, **{name: value})
            return ""
        add("%s.set_%s" % (cls, name), setter, 2)
        if field.kind == "map":
            add("%s.add_to_%s" % (cls, name),
                lambda ctx, s, ref, key, value: self._add_to_map(cls, ref, name, key, value), 3)
            add("%s.remove_from_%s" % (cls, name),
                lambda ctx, s, ref, key: self._remove_from_map(cls, ref, name, key), 2)
        elif field.kind == "set":
            add("%s.add_%s" % (cls, name),
                lambda ctx, s, ref, value: self._add_to_set(cls, ref, name, value), 2)
            add("%s.remove_%s" % (cls, name),
                lambda ctx, s, ref, value: self._remove_from_set(cls, ref, name, value), 2)

    def _add_to_map(self, cls, ref, field, key, value):
        with self.db.lock:
            if str(key) in self.db.get(cls, ref, field):
                # Db_exn.Duplicate_key (tbl, fld, objref, key) -> MAP_DUPLICATE_KEY (ExnHelper).
                raise XapiError("MAP_DUPLICATE_KEY", cls, schema.db_column(field), ref, key)
            self.db.mutate(cls, ref, lambda rec: rec[field].__setitem__(str(key), str(value)))
        return ""

    def _remove_from_map(self, cls, ref, field, key):
        with self.db.lock:
            if str(key) in self.db.get(cls, ref, field):
                self.db.mutate(cls, ref, lambda rec: rec[field].pop(str(key), None))
            else:
                self.db.record(cls, ref)  # still HANDLE_INVALID for a bad ref
        return ""

    def _add_to_set(self, cls, ref, field, value):
        with self.db.lock:
            if str(value) not in self.db.get(cls, ref, field):
                self.db.mutate(cls, ref, lambda rec: rec[field].append(str(value)))
        return ""

    def _remove_from_set(self, cls, ref, field, value):
        with self.db.lock:
            if str(value) in self.db.get(cls, ref, field):
                self.db.mutate(cls, ref, lambda rec: rec[field].remove(str(value)))
        return ""

    # --- session ---------------------------------------------------------------------------

    def _register_session(self):
        add = self.registry.add
        add("session.login_with_password", self.login_with_password, 4, optional=2,
            session=False)
        add("session.slave_local_login_with_password", self.slave_local_login, 2, session=False)
        add("session.logout", self.logout, 0)
        add("session.local_logout", self.logout, 0)
        add("session.get_this_host", self.get_this_host, 1)
        add("session.get_uuid", self.get_session_uuid, 1)

    def _authenticate(self, ctx, uname, password):
        if ctx.transport == "unix":
            # Context.preauth: calls on the main Unix socket are pre-authenticated; neither the
            # user name nor the password is checked (docs/xapi-behaviour.md §2).
            return
        scenario = self.sim.scenario
        if uname != scenario.username or password != scenario.password:
            if self.sim.auth_failure_delay:
                time.sleep(self.sim.auth_failure_delay)   # xapi waits 5 s (docs/xapi-behaviour.md §2)
            raise XapiError("SESSION_AUTHENTICATION_FAILED", uname, "Authentication failure")

    def login_with_password(self, ctx, uname, password, version="1.0", originator=""):
        """session.login_with_password(uname, pwd[, version[, originator]]) -> session ref."""
        self._authenticate(ctx, uname, password)
        return self.db.create_session(uname=uname, originator=originator,
                                      transport=ctx.transport, local=False)

    def slave_local_login(self, ctx, uname, password):
        """session.slave_local_login_with_password(uname, pwd) -> a host-local session."""
        self._authenticate(ctx, uname, password)
        return self.db.create_session(uname=uname, originator="", transport=ctx.transport,
                                      local=True)

    def logout(self, ctx, session):
        """session.logout: the session ends; calls blocked on it wake with SESSION_INVALID."""
        self.db.destroy_session(session)
        return ""

    def _session_arg(self, ref):
        with self.db.lock:
            details = self.db.sessions.get(ref)
        if details is None:
            raise XapiError("HANDLE_INVALID", "session", ref)
        return details

    def get_this_host(self, ctx, session, self_ref):
        """session.get_this_host(session, self) -> this host's ref."""
        self._session_arg(self_ref)
        return self.sim.index.host

    def get_session_uuid(self, ctx, session, self_ref):
        """session.get_uuid(session, self)."""
        return self._session_arg(self_ref)["uuid"]

    # --- event.from ------------------------------------------------------------------------

    def event_from(self, ctx, session, classes, token, timeout):
        """event.from(classes, token, timeout): block until a matching event or the timeout."""
        garbage = self.sim.take_event_garbage()
        if garbage is not None:
            return garbage
        since, since_messages = dbmod.parse_token(token)
        if isinstance(classes, str):
            classes = [classes]
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise XapiError("INTERNAL_ERROR", "timeout must be a float: %r" % (timeout,))
        if math.isnan(timeout) or timeout < 0 or timeout > 1e9:
            timeout = DEFAULT_EVENT_TIMEOUT
        deadline = time.monotonic() + timeout
        db = self.db
        while True:
            remaining = deadline - time.monotonic()
            delay = self.sim.event_from_delay
            if delay > 0 and remaining > 0:
                # event_from_delay: let a burst of changes land in one batch (docs/xapi-behaviour.md §3).
                time.sleep(min(delay, remaining))
            with db.lock:
                db.check_session(session)   # logout / restart while blocked -> SESSION_INVALID
                events = db.collect(classes, since, since_messages)
                remaining = deadline - time.monotonic()
                if events or remaining <= 0:
                    result = collections.OrderedDict()
                    result["events"] = events
                    result["valid_ref_counts"] = db.valid_ref_counts()
                    result["token"] = db.token()
                    return result
                self.waiting += 1
                try:
                    db.changed.wait(remaining)
                finally:
                    self.waiting -= 1
