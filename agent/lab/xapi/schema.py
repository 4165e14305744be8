"""The XAPI datamodel the simulator serves: classes, fields, defaults and value forms.

Records are kept in their XML-RPC wire form, as xapi sends them (mirage/ocaml-rpc ``Xmlrpc``): API ints are
decimal strings, refs are ``OpaqueRef:<uuid>`` strings (``OpaqueRef:NULL`` when unset), enums are
their exact constant names, sets are lists and maps are dicts of strings, datetimes are
``xmlrpc.client.DateTime``. The field tables live in ``datamodel.txt`` next to this module.
"""

import collections
import pkgutil
import xmlrpc.client

NULL_REF = "OpaqueRef:NULL"
EPOCH = "19700101T00:00:00Z"

# Classes whose rows produce events (datamodel gen_events = true), in event/table order.
EVENT_CLASSES = ("pool", "host", "VM", "VIF", "network", "PIF", "SR", "PBD", "VBD", "VDI", "task")

# DB column names join a namespaced field's parts with "__" (Db_names.name_label = "name__label",
# seen in db_cache_impl.ml db_get_by_name_label); get_all_records_where compares these columns.
_NAMESPACES = {
    "name": ("label", "description"),
    "API_version": ("major", "minor", "vendor", "vendor_implementation"),
    "memory": ("static_max", "dynamic_max", "dynamic_min", "static_min", "target"),
    "VCPUs": ("params", "max", "at_startup"),
    "actions": ("after_softreboot", "after_shutdown", "after_reboot", "after_crash"),
    "PV": ("bootloader", "kernel", "ramdisk", "args", "bootloader_args", "legacy_args"),
    "HVM": ("boot_policy", "boot_params", "shadow_multiplier"),
}

Field = collections.namedtuple("Field", "name kind writable")


def _load_fields():
    """Parse datamodel.txt into {class: OrderedDict(field name -> Field)}."""
    text = pkgutil.get_data(__name__.rsplit(".", 1)[0], "datamodel.txt").decode("utf-8")
    classes = collections.OrderedDict()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cls, name, kind, access = line.split()
        classes.setdefault(cls, collections.OrderedDict())[name] = Field(name, kind, access == "rw")
    return classes


FIELDS = _load_fields()
CLASSES = tuple(FIELDS)
_BY_LOWER = dict((cls.lower(), cls) for cls in CLASSES)


def class_of(name):
    """The datamodel class for a case-insensitive name ("vm" -> "VM"), or None if unknown."""
    return _BY_LOWER.get(str(name).lower())


def default_value(kind):
    """The value a field of this kind has in a freshly created row."""
    if kind == "string":
        return ""
    if kind == "int":
        return "0"
    if kind == "bool":
        return False
    if kind == "float":
        return 0.0
    if kind == "datetime":
        return xmlrpc.client.DateTime(EPOCH)
    if kind == "map":
        return {}
    if kind == "set" or kind.startswith("refset:"):
        return []
    if kind.startswith("ref:"):
        return NULL_REF
    if kind.startswith("enum:"):
        return kind[len("enum:"):]
    raise ValueError("unknown field kind %r in datamodel.txt" % kind)


def default_record(cls):
    """A full record of ``cls`` with every field at its default."""
    return dict((f.name, default_value(f.kind)) for f in FIELDS[cls].values())


def copy_value(value):
    """A copy of a wire value that shares no mutable list or dict with the original."""
    if isinstance(value, dict):
        return dict((k, copy_value(v)) for k, v in value.items())
    if isinstance(value, list):
        return [copy_value(v) for v in value]
    return value


def wire_value(cls, field, value):
    """Coerce a Python value given by the simulator into the wire form of ``cls.field``."""
    kind = FIELDS[cls][field].kind
    if kind == "int":
        return str(int(value))
    if kind == "bool":
        return bool(value)
    if kind == "float":
        return float(value)
    if kind == "map":
        return dict((str(k), str(v)) for k, v in dict(value).items())
    if kind == "set" or kind.startswith("refset:"):
        return [str(v) for v in value]
    if kind == "datetime" and not isinstance(value, xmlrpc.client.DateTime):
        return xmlrpc.client.DateTime(value)
    return value if kind == "datetime" else str(value)


def db_column(field):
    """The DB column name of an API field ("name_label" -> "name__label")."""
    for space, members in _NAMESPACES.items():
        prefix = space + "_"
        if field.startswith(prefix) and field[len(prefix):] in members:
            return space + "__" + field[len(prefix):]
    return field


_COLUMNS = dict((cls, dict((db_column(name), name) for name in fields))
                for cls, fields in FIELDS.items())


def api_field(cls, column):
    """The API field stored in DB column ``column`` of ``cls``, or None if there is none."""
    return _COLUMNS[cls].get(column)


def _sexpr_atom(text):
    return "'" + str(text).replace("\\", "\\\\").replace("'", "\\'") + "'"


def db_string(value):
    """The DB string form of a wire value, which where-expressions compare (db_filter.ml).

    Bools are "true"/"false", ints decimal, enums and refs as they are; sets and maps use the
    S-expression form of xapi's String_marshall_helper: ('a' 'b') and (('k' 'v')).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "(" + " ".join(_sexpr_atom(v) for v in value) + ")"
    if isinstance(value, dict):
        return "(" + " ".join(
            "(" + _sexpr_atom(k) + " " + _sexpr_atom(v) + ")" for k, v in value.items()) + ")"
    if isinstance(value, xmlrpc.client.DateTime):
        return value.value
    if isinstance(value, float):
        return "%.16g" % value
    return str(value)
