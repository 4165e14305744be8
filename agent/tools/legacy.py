"""Turns vif-ip-binder's JSON config into commented agent.toml text, with notes on what changed.

The predecessor (SkyDubh/vif-ip-binder, vif-ip-binder.py) read /root/vif-ip-binder.json: keys user, password, vmName,
sspnName, brName (its *management* bridge, where it put the /32 mirror, step 2), address,
gateway, netSRs ([{sr_uuid: ping_ip}]), timeout (event.from seconds) and ipBinary. Its
published sample carries /* */ comments that plain JSON rejects; we accept them.
Errors are ConfigError naming the JSON key; nothing else escapes for any input text.
"""

import json
import textwrap

from agent.config import (ConfigError, decode_text, parse_config, parse_ip, read_config_bytes,
                          render_config, toml_value)

REQUIRED = ("vmName", "sspnName", "address")
LOCAL_SOCKET = "/var/lib/xcp/xapi"

_JSON_HINTS = (
    ("property name", "keys need double quotes, and no comma may come before }"),
    ("',' delimiter", "a comma is missing between two entries (or a string is not closed)"),
    ("':' delimiter", "put a colon between the key and its value"),
    ("Expecting value", "a value is missing, or a comma comes right before ] or }; text needs "
                        "double quotes"),
    ("Unterminated string", "close the string with a double quote"),
    ("control character", "a string holds a raw tab or line break; write \\t or \\n instead"),
    ("escape", "a backslash in a string must be doubled (\\\\)"),
    ("Extra data", "there is text after the closing }; remove it"),
)


def _quote(text):
    shown = json.dumps(text, ensure_ascii=True)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _line_of(text, offset):
    return text.count("\n", 0, offset) + 1


def strip_json_comments(text, source="<string>"):
    """``text`` with /* */ and // comments outside strings blanked; newlines kept for error lines."""
    out, i, n = list(text), 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ConfigError("JSON: a /* comment opened here is never closed; add */ after "
                                  "it", line=_line_of(text, i), path=source)
            for j in range(i, end + 2):
                if out[j] != "\n":
                    out[j] = " "
            i = end + 2
            continue
        i += 1
    return "".join(out)


def _decode_json(text, source):
    duplicates = []

    def pairs(items):
        seen = {}
        for key, value in items:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:
        data = json.loads(strip_json_comments(text, source), object_pairs_hook=pairs)
    except ValueError as exc:  # json.JSONDecodeError
        msg = getattr(exc, "msg", str(exc))
        hint = next((h for word, h in _JSON_HINTS if word in msg), "fix the JSON there")
        raise ConfigError("JSON syntax: %s (column %s); %s" % (msg, getattr(exc, "colno", "?"),
                                                                hint),
                          line=getattr(exc, "lineno", None), path=source) from None
    except RecursionError:
        raise ConfigError("JSON syntax: lists or objects nest too deeply", path=source) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object { ... } at the top, got %s; wrap the keys in "
                          "{ }" % type(data).__name__, line=1, path=source)
    return data, duplicates


def _key_line(text, key):
    """Best-effort line of ``"key":`` in the JSON text."""
    needle = json.dumps(key)
    offset = text.find(needle)
    return _line_of(text, offset) if offset >= 0 else None


class _Importer(object):
    """Maps one decoded vif-ip-binder object to agent.toml sections, collecting notes."""

    def __init__(self, text, source):
        self.text, self.source = text, source
        self.notes = []
        self.sr_keys = []  # sr index -> legacy key, for error messages

    def fail(self, key, problem):
        """Raise the ConfigError for a vif-ip-binder key, at the line where it appears."""
        root = key.split("[", 1)[0]
        raise ConfigError(problem, key=key, line=_key_line(self.text, root), path=self.source)

    def string(self, data, key, required=False):
        """The string value of ``key`` (None when absent and not required)."""
        value = data.get(key)
        if (value is not None or required) and not isinstance(value, str):
            self.fail(key, "expected a string in double quotes, got %s" % _quote(value))
        return value

    def convert(self, data):
        """TOML-shaped dict of the settings in ``data``."""
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            self.fail(missing[0], "required key%s missing: %s; add %s (see vif-ip-binder.json."
                      "sample)" % ("s" if len(missing) > 1 else "", ", ".join(missing),
                                   "them" if len(missing) > 1 else "it"))
        vm, network, address = (self.string(data, k, required=True) for k in REQUIRED)
        if "/" not in address:
            self.fail("address", "%s has no prefix length; write it like \"192.0.2.2/24\" (the "
                      "firewall subnet's prefix)" % _quote(address))
        out = {"binding": [{"network": network, "vms": [vm], "addresses": [address]}],
               "route": {}, "management": {"bridge": self.string(data, "brName") or ""},
               "sr": self.srs(data.get("netSRs"))}
        gateway = self.string(data, "gateway")
        if gateway:
            try:
                out["route"]["gateway%d" % parse_ip(gateway).version] = gateway
            except ValueError as exc:
                self.fail("gateway", "%s %s; write it like \"192.0.2.1\"" % (_quote(gateway),
                                                                             exc))
        else:
            self.notes.append("gateway: none given, so the agent leaves the default routes "
                              "alone")
        if "timeout" in data:
            timeout = data["timeout"]
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                self.fail("timeout", "expected a number of seconds, got %s; write e.g. 30.0"
                          % _quote(timeout))
            out["timing"] = {"event_timeout": timeout}
        if not out["management"]["bridge"]:
            self.notes.append("brName: not given, so management.bridge stays empty and the "
                              "agent uses MANAGEMENT_INTERFACE from /etc/xensource-inventory")
        self.dropped(data)
        return out

    def srs(self, value):
        """[[sr]] tables from netSRs; a repeated uuid has its ping addresses merged."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail("netSRs", "expected a list like [{\"<sr uuid>\": \"<ping ip>\"}], got %s"
                      % _quote(value))
        srs, by_uuid = [], {}
        for i, entry in enumerate(value):
            key = "netSRs[%d]" % i
            if not isinstance(entry, dict) or not entry:
                self.fail(key, "expected {\"<sr uuid>\": \"<ping ip>\"}, got %s" % _quote(entry))
            for uuid, target in entry.items():
                if not isinstance(target, str):
                    self.fail(key, "the ping address of %s must be a string, got %s"
                              % (_quote(uuid), _quote(target)))
                probe = [target] if target.strip() else []
                if not probe:
                    self.notes.append("%s: no ping address for SR %s, so the agent probes the "
                                      "server in its PBD's device_config" % (key, _quote(uuid)))
                if uuid.lower() in by_uuid:
                    sr = srs[by_uuid[uuid.lower()]]
                    sr["probe"] += [t for t in probe if t not in sr["probe"]]
                    self.notes.append("%s: SR %s is listed again; its ping addresses are merged"
                                      % (key, _quote(uuid)))
                    continue
                by_uuid[uuid.lower()] = len(srs)
                srs.append({"uuid": uuid, "probe": probe})
                self.sr_keys.append(key)
        return srs

    def dropped(self, data):
        """Notes for the keys that have no equivalent, and for changed behaviour."""
        if "password" in data:
            self.notes.append(
                "password: dropped; the agent talks to the local socket %s, which XAPI "
                "pre-authenticates for root, so no password is stored. The old file holds the "
                "root password in plain text: delete it (shred -u %s)"
                % (LOCAL_SOCKET, self.source if self.source != "<string>" else "FILE"))
        if "user" in data:
            self.notes.append("user: dropped; the local socket needs no login")
        if "ipBinary" in data:
            self.notes.append("ipBinary: dropped; the agent sets addresses and routes through "
                              "netlink, not the ip command")
        known = set(REQUIRED) | {"user", "password", "brName", "gateway", "netSRs", "timeout",
                                 "ipBinary"}
        for key in data:
            if key not in known:
                self.notes.append("%s: unknown vif-ip-binder key, ignored" % _quote(key))
        self.notes.append('maintenance.enable_host = "when-locked-out": vif-ip-binder re-enabled '
                          "a disabled host on every start, even one disabled on purpose; set "
                          '"always" to keep that')
        self.notes.append("maintenance.require_pool_auto_poweron = true: like XAPI's own "
                          "autostart, VMs start only when the pool has auto_poweron=true "
                          "(vif-ip-binder ignored it); set false to keep the old behaviour")

    def legacy_key(self, error):
        """The JSON key behind a ConfigError of the converted file."""
        key = error.key or ""
        if key.startswith("sr["):
            index = int(key[3:key.index("]")])
            return self.sr_keys[index] if index < len(self.sr_keys) else "netSRs"
        for prefix, legacy in (("binding[0].network", "sspnName"), ("binding[0].vms", "vmName"),
                               ("binding[0].addresses", "address"), ("route.", "gateway"),
                               ("management.", "brName"), ("timing.", "timeout")):
            if key.startswith(prefix):
                return legacy
        return key or None


def _toml_sections(data):
    lines = []
    for name, value in data.items():
        for item in (value if isinstance(value, list) else [value]):
            lines.append(("[[%s]]" if isinstance(value, list) else "[%s]") % name)
            lines.extend("%s = %s" % (k, toml_value(v)) for k, v in item.items())
    return "\n".join(lines) + "\n"


_SECTION_COMMENTS = {
    "xapi": ["XAPI through the local socket: pre-authenticated for root, no password stored."],
    "binding": ["From sspnName / vmName / address."],
    "route": ["From gateway (empty: that family's default route is left alone)."],
    "management": ["From brName: the bridge that gets the /32 (/128) mirror."],
    "sr": ["From netSRs: {sr_uuid: ping_ip}."],
    "timing": ["event_timeout from timeout."],
}


def import_legacy(text, source="<string>"):
    """(agent.toml text, notes) for vif-ip-binder JSON ``text``; ConfigError naming the key."""
    try:
        text = decode_text(text, source)
        data, duplicates = _decode_json(text, source)
        importer = _Importer(text, source)
        for key in duplicates:
            importer.notes.append("%s appears more than once; the last value is used, as "
                                  "vif-ip-binder did" % _quote(key))
        sections = importer.convert(data)
        try:
            config = parse_config(_toml_sections(sections), source)
        except ConfigError as exc:
            key = importer.legacy_key(exc)
            raise ConfigError(exc.message, key=key, path=source,
                              line=_key_line(text, (key or "").split("[", 1)[0])) from None
        notes = [" ".join(note.split()) for note in importer.notes]  # one line each
        header = ["sspn-agent configuration, generated by `agent config import-legacy` from %s."
                  % " ".join(source.splitlines()),
                  "Review it, install it as /etc/sspn-agent/agent.toml, then run `agent check`.",
                  "", "Notes from the conversion:"]
        for note in notes:
            header.extend(textwrap.wrap(note, 94, initial_indent="  - ", subsequent_indent="    ",
                                        break_on_hyphens=False, break_long_words=False))
        body = render_config(config, _SECTION_COMMENTS)
        return "\n".join("#" + (" " + h if h else "") for h in header) + "\n\n" + body, notes
    except ConfigError:
        raise
    except Exception as exc:  # the contract: nothing but ConfigError escapes
        raise ConfigError("internal error while converting (%s); please report it with the file"
                          % type(exc).__name__, path=source) from exc


def load_legacy(path):
    """import_legacy of the file at ``path``; unreadable or non-UTF-8 files are ConfigErrors."""
    try:  # a FIFO, a device or a huge file: one line, never a hang (docs/hostile.md)
        data = read_config_bytes(path, what="the vif-ip-binder JSON file")
    except ConfigError as exc:
        raise ConfigError("cannot read the vif-ip-binder file (%s); check the path "
                          "(it used to live at /root/vif-ip-binder.json)"
                          % exc.message, path=str(path)) from None
    return import_legacy(data, str(path))
