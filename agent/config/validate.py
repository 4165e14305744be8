"""Checks the decoded file section by section into a Config."""

import os
import stat
from urllib.parse import urlsplit

from agent.config.messages import _closest, _reason, _show
from agent.config.model import (_IFNAME, _SECTIONS, ENABLE_HOST_CHOICES, MAX_PROBES, MAX_SRS,
                                MIN_TRACE_BYTES, PROBE_MODES, Config, FilesConfig,
                                MaintenanceConfig, ManagementConfig, RouteConfig, SrConfig,
                                TimingConfig, XapiConfig)
from agent.config.netcheck import _UUID, _check_bindings, _check_gateway, parse_ip


def _check_xapi(ck, raw):
    at = ("xapi",)
    if raw["url"]:
        try:
            parts = urlsplit(raw["url"])
            good = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            good = False
        if not good:
            ck.fail(at + ("url",), "%s is not an http:// or https:// URL; write e.g. "
                    'url = "https://192.0.2.10/", or leave it empty for the local socket'
                    % _show(raw["url"]))
        if not raw["username"]:
            ck.fail(at + ("username",), 'is empty but a remote url needs a login; set '
                    'username = "root"')
        if not raw["password_file"]:
            ck.fail(at + ("password_file",), "is empty but url is set and a remote XAPI needs a "
                    'password; set password_file = "/etc/sspn-agent/xapi.password" (chmod 600 '
                    'it), or set url = "" to use the local socket')
        _check_password_file(ck, raw["password_file"])
    else:
        ck.absolute(at + ("socket",), raw["socket"], "/var/lib/xcp/xapi")
        if raw["password_file"]:
            ck.fail(at + ("password_file",), "is set without url: the local socket is "
                    "pre-authenticated for root and needs no password; remove password_file "
                    "(and shred the file)")
    ck.seconds(at + ("call_timeout",), raw["call_timeout"])
    ck.absolute(at + ("local_db",), raw["local_db"], "/var/lib/xcp/local.db")
    return XapiConfig(**raw)


def _check_password_file(ck, name):
    at = ("xapi", "password_file")
    ck.absolute(at, name, "/etc/sspn-agent/xapi.password")
    try:
        info = os.stat(name)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            ck.fail(at, "%s does not exist; create it holding the password and run chmod 600 %s"
                    % (name, name))
        ck.fail(at, "cannot read %s (%s); fix its path or permissions" % (name, _reason(exc)))
    except ValueError as exc:
        ck.fail(at, "cannot read %s (%s); fix its path" % (_show(name), exc))
    if not stat.S_ISREG(info.st_mode):
        ck.fail(at, "%s is not a regular file; point it at the file holding the password" % name)
    if info.st_mode & 0o077:
        ck.fail(at, "%s is readable or writable by group or others (mode %04o); run chmod 600 %s"
                % (name, stat.S_IMODE(info.st_mode), name))


def _check_prefer(ck, labels, bindings):
    networks = [b.network for b in bindings]
    for j, label in enumerate(labels or ()):
        if label not in networks:
            near = _closest(label, networks)
            ck.fail(("route", "prefer", j), "%s is not the network of any [[binding]]; %s" % (
                _show(label), "did you mean %s?" % _show(near) if near else
                "list binding networks, e.g. prefer = [%s]" % ", ".join(_show(n) for n in networks)),
                needle=label)
        if list(labels).index(label) != j:
            ck.fail(("route", "prefer", j), "%s is listed twice; remove one" % _show(label),
                    needle=label)
    return tuple(labels or ())


def _check_shared_gateways(ck, route, bindings):
    """[route] gatewayN and the binding that holds it must not name two gateways."""
    probe = Config(bindings=bindings)
    for key in ("gateway4", "gateway6"):
        shared = getattr(route, key)
        index = probe.binding_for_gateway(shared) if shared is not None else None
        own = getattr(bindings[index], key) if index is not None else None
        if own is not None and own != shared:
            ck.fail(("route", key), "%s and binding[%d].%s (%s) both name network %s's gateway; "
                    "keep one of them" % (shared, index, key, own, _show(bindings[index].network)))


def _check_srs(ck, raws):
    ck.capped(("sr",), raws, MAX_SRS, "[[sr]] tables")
    srs, seen = [], {}
    for i, raw in enumerate(raws):
        at = ("sr", i)
        if raw["uuid"] is None:
            ck.fail(at + ("uuid",), 'missing; add uuid = "..." (xe sr-list name-label=... '
                    'params=uuid)')
        uuid = raw["uuid"].strip().lower()
        if not _UUID.match(uuid):
            ck.fail(at + ("uuid",), "%s is not an SR uuid; copy it from xe sr-list params=uuid "
                    "(8-4-4-4-12 hex digits)" % _show(raw["uuid"]))
        if uuid in seen:
            ck.fail(at + ("uuid",), "%s is listed twice (also sr[%d]); keep one [[sr]] per SR"
                    % (uuid, seen[uuid]))
        seen[uuid] = i
        probes = []
        ck.capped(at + ("probe",), raw["probe"] or (), MAX_PROBES, "addresses")
        for j, text in enumerate(raw["probe"] or ()):
            try:
                target = parse_ip(text)
            except ValueError as exc:
                ck.fail(at + ("probe", j), "%s %s; give the storage server's IP address, e.g. "
                        '"198.51.100.5"' % (_show(text), exc), needle=text)
            if target.is_unspecified or target.is_multicast:
                ck.fail(at + ("probe", j), "%s cannot answer a ping; give the storage server's "
                        "address" % target, needle=text)
            if target in probes:
                ck.fail(at + ("probe", j), "%s is listed twice; remove one" % target, needle=text)
            probes.append(target)
        mode = raw["probe_mode"]
        if mode not in PROBE_MODES:
            near = _closest(mode, PROBE_MODES)
            ck.fail(at + ("probe_mode",), '%s is not "tcp" (connect to the storage service\'s '
                    'port, as SM does) or "icmp" (ping); %s' % (
                        _show(mode), 'did you mean "%s"?' % near if near else "pick one"))
        ports = list(raw["probe_ports"] or ())
        for j, port in enumerate(ports):
            if not 1 <= port <= 65535:
                ck.fail(at + ("probe_ports", j), "%d is not a TCP port; use 1-65535, e.g. 2049 "
                        "(NFS), 445 (SMB), 3260 (iSCSI)" % port)
        if ports and mode == "icmp":
            ck.fail(at + ("probe_ports",), 'ports are not pinged; remove probe_ports or set '
                    'probe_mode = "tcp"')
        srs.append(SrConfig(uuid, probes, mode, ports))
    return srs


def _check_timing(ck, raw):
    at = ("timing",)
    for key in ("event_timeout", "probe_interval", "probe_timeout", "backoff_base",
                "backoff_cap"):
        ck.seconds(at + (key,), raw[key])
    if raw["backoff_cap"] < raw["backoff_base"]:
        ck.fail(at + ("backoff_cap",), "%r is below backoff_base (%r); make backoff_cap at least "
                "backoff_base" % (raw["backoff_cap"], raw["backoff_base"]))
    if raw["retry_budget"] < 1:
        ck.fail(at + ("retry_budget",), "%d is below 1; allow at least one attempt, e.g. "
                "retry_budget = 5" % raw["retry_budget"])
    ck.bounded(at + ("retry_budget",), raw["retry_budget"], "attempts")
    return TimingConfig(**raw)


def _check(top, ck):
    known = [name for name, _, _, _ in _SECTIONS]
    for key in top:
        if key not in known:
            near = _closest(key, known + ["bindings", "srs"])
            near = {"bindings": "binding", "srs": "sr"}.get(near, near)
            ck.fail((key,), "unknown section; %s" % (
                "did you mean [%s]?" % near if near else "known: " + ", ".join(known)))
    raw = {}
    for name, cls, is_array, keys in _SECTIONS:
        raw[name] = (ck.array if is_array else ck.section)(top, name, cls, keys)
    xapi = _check_xapi(ck, raw["xapi"])
    bindings = _check_bindings(ck, raw["binding"])
    route = RouteConfig(_check_gateway(ck, "gateway4", raw["route"]["gateway4"], 4, bindings),
                        _check_gateway(ck, "gateway6", raw["route"]["gateway6"], 6, bindings),
                        raw["route"]["probe"], _check_prefer(ck, raw["route"]["prefer"], bindings))
    _check_shared_gateways(ck, route, bindings)
    mgmt = raw["management"]
    if mgmt["bridge"] and (not _IFNAME.match(mgmt["bridge"]) or mgmt["bridge"] in (".", "..")):
        ck.fail(("management", "bridge"), "%s is not a bridge name (1-15 letters, digits, '.', "
                "'-', '_'); use e.g. \"xenbr0\", or leave it empty for MANAGEMENT_INTERFACE"
                % _show(mgmt["bridge"]))
    ck.absolute(("management", "inventory"), mgmt["inventory"], "/etc/xensource-inventory")
    srs = _check_srs(ck, raw["sr"])
    maint = raw["maintenance"]
    if maint["enable_host"] not in ENABLE_HOST_CHOICES:
        near = _closest(maint["enable_host"], ENABLE_HOST_CHOICES)
        ck.fail(("maintenance", "enable_host"), "%s is not one of %s; %s" % (
            _show(maint["enable_host"]), ", ".join('"%s"' % c for c in ENABLE_HOST_CHOICES),
            'did you mean "%s"?' % near if near else "pick one"))
    files = raw["files"]
    ck.absolute(("files", "status"), files["status"], "/run/sspn-agent/status.json")
    ck.absolute(("files", "trace"), files["trace"], "/var/log/sspn-agent/trace.jsonl")
    if files["trace_max_bytes"] < MIN_TRACE_BYTES:
        ck.fail(("files", "trace_max_bytes"), "%d is too small; use at least %d (e.g. 1048576)"
                % (files["trace_max_bytes"], MIN_TRACE_BYTES))
    ck.bounded(("files", "trace_max_bytes"), files["trace_max_bytes"], "bytes")
    if os.path.abspath(files["status"]) == os.path.abspath(files["trace"]):
        ck.fail(("files", "trace"), "is the status file too; give each its own path")
    ck.private_path(("files", "status"), files["status"])
    ck.private_path(("files", "trace"), files["trace"])
    if files["metrics"]:
        ck.absolute(("files", "metrics"), files["metrics"],
                    "/var/lib/node_exporter/textfile_collector/sspn_agent.prom")
        ck.private_path(("files", "metrics"), files["metrics"])
    return Config(xapi=xapi, bindings=bindings, route=route, management=ManagementConfig(**mgmt),
                  srs=srs, maintenance=MaintenanceConfig(**maint), timing=_check_timing(ck, raw[
                      "timing"]), files=FilesConfig(**files), path=ck.path)
