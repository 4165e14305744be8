"""The simulator's database: rows with generations, deletions, sessions, messages and events.

Modelled on xapi's DB cache (ocaml/database/db_cache_types.ml): one global generation counter bumps on every
write; each row remembers the generation it was created and last modified at; deletions are
kept per table in a bounded list (grows to 512, trimmed to the newest 256, as in
``db_cache_types.ml`` Table.remove), so ``del`` events for very old tokens can be lost, as in
xapi. Messages are not DB rows: they have their own generation (the token's second half).
"""

import collections
import threading

from . import expr, schema
from .errors import XapiError


class _Row(object):
    """A record in wire form plus the generations it was created and last modified at."""

    __slots__ = ("record", "created", "modified")

    def __init__(self, record, generation):
        self.record = record
        self.created = generation
        self.modified = generation


def _subscription(text):
    """Parse an event.from class string: "*", "<class>" or "<class>/<ref>"
    (xapi_event.ml ``Subscription.of_string``)."""
    text = str(text)
    if text == "*":
        return ("all",)
    if "/" in text:
        cls, ref = text.split("/", 1)
        return ("object", cls.lower(), ref)
    return ("class", text.lower())


def _matches(subs, lclass, ref):
    for sub in subs:
        if sub[0] == "all" or (sub[1] == lclass and (sub[0] == "class" or sub[2] == ref)):
            return True
    return False


def parse_token(token):
    """Split an event.from token into (generation, message generation); "" means (0, 0)."""
    if token == "":
        return 0, 0
    parts = str(token).split(",")
    try:
        if len(parts) != 2:
            raise ValueError(token)
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise XapiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token)


class Database(object):
    """Tables of rows keyed by ref, guarded by one lock whose condition wakes event waiters."""

    def __init__(self, new_uuid):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.generation = 0
        self.message_generation = 0
        self.tables = collections.OrderedDict(
            (cls, collections.OrderedDict()) for cls in schema.CLASSES if cls != "message")
        self.deleted = dict((cls, []) for cls in self.tables)
        self.messages = collections.OrderedDict()   # ref -> (message generation, record)
        self.sessions = collections.OrderedDict()   # ref -> session details
        self.new_uuid = new_uuid

    # --- rows ------------------------------------------------------------------------------

    def new_ref(self):
        """A fresh ``OpaqueRef:<uuid>``."""
        return "OpaqueRef:" + self.new_uuid()

    def _bump(self):
        self.generation += 1
        self.changed.notify_all()
        return self.generation

    def create(self, cls, **fields):
        """Insert a row of ``cls`` with defaults plus ``fields``; returns its new ref."""
        with self.lock:
            record = schema.default_record(cls)
            record["uuid"] = fields.pop("uuid", None) or self.new_uuid()
            for name, value in fields.items():
                record[name] = schema.wire_value(cls, name, value)
            ref = self.new_ref()
            self.tables[cls][ref] = _Row(record, self._bump())
            return ref

    def _row(self, cls, ref):
        row = self.tables[cls].get(ref)
        if row is None:
            raise XapiError("HANDLE_INVALID", cls, ref)
        return row

    def exists(self, cls, ref):
        """Whether ``ref`` is a live row of ``cls``."""
        with self.lock:
            return ref in self.tables[cls]

    def update(self, cls, ref, **fields):
        """Set fields of one row; bumps the generation once if anything changed."""
        with self.lock:
            row = self._row(cls, ref)
            changed = False
            for name, value in fields.items():
                value = schema.wire_value(cls, name, value)
                if row.record[name] != value:
                    row.record[name] = value
                    changed = True
            if changed:
                row.modified = self._bump()
            return changed

    def mutate(self, cls, ref, change):
        """Apply ``change(record)`` (which edits maps/sets in place) and bump the generation."""
        with self.lock:
            row = self._row(cls, ref)
            change(row.record)
            row.modified = self._bump()

    def delete(self, cls, ref):
        """Remove a row, remembering the deletion for ``del`` events."""
        with self.lock:
            row = self._row(cls, ref)
            del self.tables[cls][ref]
            deleted = self.deleted[cls]
            deleted.append((ref, row.created, self._bump()))
            if len(deleted) > 512:
                del deleted[:-256]

    def get(self, cls, ref, field):
        """A copy of one field of one row."""
        with self.lock:
            return schema.copy_value(self._row(cls, ref).record[field])

    def record(self, cls, ref):
        """A copy of one full record."""
        with self.lock:
            return schema.copy_value(self._row(cls, ref).record)

    def refs(self, cls):
        """Every ref of ``cls``, in creation order."""
        with self.lock:
            return list(self.tables[cls])

    def records(self, cls):
        """{ref: record copy} of every row of ``cls``."""
        with self.lock:
            return dict((ref, schema.copy_value(row.record))
                        for ref, row in self.tables[cls].items())

    def find(self, cls, **equal):
        """Refs of ``cls`` whose fields equal all of ``equal`` (wire form), in creation order."""
        with self.lock:
            return [ref for ref, row in self.tables[cls].items()
                    if all(row.record.get(k) == v for k, v in equal.items())]

    def by_uuid(self, cls, uuid):
        """The ref with this uuid; UUID_INVALID [class, uuid] if there is none."""
        refs = self.find(cls, uuid=uuid)
        if not refs:
            raise XapiError("UUID_INVALID", cls, uuid)
        return refs[0]

    def where(self, cls, text):
        """{ref: record} of rows matching a get_all_records_where expression (db_cache_impl.ml)."""
        try:
            tree = expr.parse(text)
        except expr.ExprError as exc:
            raise XapiError("INVALID_VALUE", text, str(exc))
        result = {}
        with self.lock:
            for ref, row in self.tables[cls].items():
                def lookup(column, record=row.record):
                    name = schema.api_field(cls, column)
                    if name is None:
                        # Row.find -> DBCache_NotFound("missing field", ...) -> INTERNAL_ERROR.
                        raise XapiError("INTERNAL_ERROR", "missing field", column, "")
                    return schema.db_string(record[name])
                if expr.evaluate(tree, lookup):
                    result[ref] = schema.copy_value(row.record)
        return result

    # --- messages --------------------------------------------------------------------------

    def add_message(self, **fields):
        """Store a message (not a DB row: own generation, xapi_message.ml); returns its ref."""
        with self.lock:
            record = schema.default_record("message")
            record["uuid"] = self.new_uuid()
            for name, value in fields.items():
                record[name] = schema.wire_value("message", name, value)
            ref = self.new_ref()
            self.message_generation += 1
            self.messages[ref] = (self.message_generation, record)
            self.changed.notify_all()
            return ref

    # --- sessions --------------------------------------------------------------------------

    def create_session(self, **details):
        """Register a new session and return its ref (a random ``OpaqueRef``, Ref.make_secret)."""
        with self.lock:
            ref = self.new_ref()
            details["uuid"] = self.new_uuid()
            self.sessions[ref] = details
            return ref

    def check_session(self, ref):
        """Raise SESSION_INVALID [ref] unless ``ref`` is a live session."""
        with self.lock:
            if not isinstance(ref, str) or ref not in self.sessions:
                raise XapiError("SESSION_INVALID", ref if isinstance(ref, str) else "")

    def destroy_session(self, ref):
        """End one session; an event.from blocked on it wakes with SESSION_INVALID."""
        with self.lock:
            self.sessions.pop(ref, None)
            self.changed.notify_all()

    def destroy_all_sessions(self):
        """End every session (toolstack restart: the Session table is not persisted)."""
        with self.lock:
            self.sessions.clear()
            self.changed.notify_all()

    # --- events ----------------------------------------------------------------------------

    def token(self):
        """The current event.from token, ``%020d,%020d`` (xapi_event.ml ``Token``)."""
        with self.lock:
            return "%020d,%020d" % (self.generation, self.message_generation)

    def valid_ref_counts(self):
        """Row counts of every table, lowercase names, as ints (sent as <i4>)."""
        with self.lock:
            counts = dict((cls.lower(), len(rows)) for cls, rows in self.tables.items())
            counts["session"] = len(self.sessions)
            return counts

    def collect(self, classes, since, since_messages):
        """(events, last, message generation) newer than the token; caller holds the lock.

        As xen-api ``xapi_event.ml`` ``collect_events`` / ``from_inner``: an object created
        after ``since`` is an ``add`` whose id is its *creation* generation, else one ``mod``
        (id: last modification) with the latest snapshot; a ``del`` (no snapshot) for rows
        created before and deleted after ``since``. The list is not sorted by generation:
        messages first, then adds, mods, dels. ``last`` is the newest generation among the
        *matching* objects (``since`` if none), so a timed-out call hands back the caller's
        token; the message half is 0 unless messages are subscribed.
        """
        subs = [_subscription(c) for c in classes]
        creates, mods, deletes = [], [], []
        last = since
        for cls in schema.EVENT_CLASSES:
            lclass = cls.lower()
            for ref, row in self.tables[cls].items():
                if row.modified > since and _matches(subs, lclass, ref):
                    last = max(last, row.modified)
                    if row.created > since:
                        creates.append((row.created, lclass, "add", ref,
                                        schema.copy_value(row.record)))
                    else:
                        mods.append((row.modified, lclass, "mod", ref,
                                     schema.copy_value(row.record)))
            for ref, created, deleted in self.deleted[cls]:
                if deleted > since and _matches(subs, lclass, ref):
                    last = max(last, deleted)
                    if created <= since:
                        deletes.append((deleted, lclass, "del", ref, None))
        events = []
        message_generation = 0
        if any(sub[0] == "all" or sub[1] == "message" for sub in subs):
            message_generation = self.message_generation
            for ref, (gen, record) in self.messages.items():
                if gen > since_messages and _matches(subs, "message", ref):
                    events.append(_event("0", "message", "add", ref, schema.copy_value(record)))
        for gen, lclass, op, ref, snap in creates + mods + deletes:
            events.append(_event(str(gen), lclass, op, ref, snap))
        return events, last, message_generation


def _event(ident, lclass, operation, ref, snapshot):
    """One event struct, members in Event_types order; ``snapshot`` omitted for del."""
    event = collections.OrderedDict()
    event["id"] = ident
    event["timestamp"] = "0.0"   # event.from always sends ts = "0.0" (xapi_event.ml ``from_inner``)
    event["class"] = lclass
    event["operation"] = operation
    event["ref"] = ref
    if snapshot is not None:
        event["snapshot"] = snapshot
    return event
