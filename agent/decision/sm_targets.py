"""What SM connects to when it plugs an SR: TCP service ports derived from a PBD's device_config.

A PBD.plug succeeds only when the storage *service* answers, not when the server pings: SM's
NFSSR attach first checks TCP 2049 (xcp-ng/sm drivers/util.py ``_testHost``, 5 s connect
timeout) and, for NFS v3 (drivers/nfs.py ``DEFAULT_NFSVERSION = '3'``), asks the portmapper on
111 (``rpcinfo``); SMB/CIFS mounts use 445; iSCSI logs in on the ``target``'s port (3260 unless
device_config ``port`` says otherwise). So the agent probes those ports and plugs when they
accept a connection (docs/xapi-fidelity.md, "Agent-side behaviours").

Targets are text: ``host:port`` (``[v6]:port``) is a TCP connect, a bare host is an ICMP echo.
Host names are kept as names and resolved when probed (agent/adapters/tcp_probe.py).
"""

import ipaddress
import re

NFS_PORT = 2049
PORTMAPPER_PORT = 111
SMB_PORT = 445
ISCSI_PORT = 3260

_UNC = re.compile(r"^(?://|\\\\)\[?([^/\\\]]+)")          # //host/share, \\host\share
_NFS_URL = re.compile(r"^nfs://\[?([^/\]]+?)\]?(?::\d+)?(?:/|$)", re.IGNORECASE)
_HOST_PATH = re.compile(r"^\[?([^\[\]/]+?)\]?:/")          # host:/path, [v6]:/path


def tcp_target(host, port):
    """``host:port`` text, with an IPv6 address in brackets."""
    host = host.strip("[]")
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def split_target(text):
    """(host, port) of a TCP target text, (host, None) of an ICMP one."""
    text = str(text)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if sep and rest.startswith(":") and rest[1:].isdigit():
            return host, int(rest[1:])
        return text.strip("[]"), None
    if text.count(":") == 1:
        host, port = text.split(":")
        if port.isdigit():
            return host, int(port)
    return text, None


def nfs_ports(device_config):
    """2049, and the portmapper's 111 unless the SR is NFS v4 (device_config nfsversion)."""
    version = str(device_config.get("nfsversion", "") or "3")
    return [NFS_PORT] if version.startswith("4") else [NFS_PORT, PORTMAPPER_PORT]


def service_endpoints(sr_type, device_config):
    """[(host, [ports])] SM would connect to for this SR; ports [] when the service is unknown
    (then only the host can be pinged); [] when the device_config names no server."""
    dc = dict(device_config or {})
    kind = (sr_type or "").lower()
    if kind in ("lvmoiscsi", "iscsi", "gfs2") or "target" in dc and "targetIQN" in dc:
        port = int(dc["port"]) if str(dc.get("port", "")).isdigit() else ISCSI_PORT
        hosts = [h.strip() for h in str(dc.get("target", "")).split(",") if h.strip()]
        return [(h, [port]) for h in hosts]
    server = str(dc.get("server", "") or "")
    location = str(dc.get("location", "") or "")
    if kind in ("smb", "cifs") or (kind == "iso" and dc.get("type") == "cifs"):
        match = _UNC.match(server or location)
        host = match.group(1) if match else server
        return [(host, [SMB_PORT])] if host else []
    if kind == "nfs" or kind == "iso":
        if server and kind == "nfs":
            return [(server, nfs_ports(dc))]
        for pattern, ports in ((_NFS_URL, nfs_ports(dc)), (_UNC, [SMB_PORT]),
                               (_HOST_PATH, nfs_ports(dc))):
            match = pattern.match(location)
            if match:
                return [(match.group(1), ports)]
    if server:
        match = _UNC.match(server)
        return [(match.group(1) if match else server, [])]
    match = _UNC.match(location)
    return [(match.group(1), [])] if match else []


def targets_for(sr_type, device_config, mode="tcp", hosts=(), ports=()):
    """Probe target texts: TCP ``host:port`` for each service port in ``mode`` "tcp" (a host
    whose service is unknown is pinged), bare hosts in "icmp". ``hosts`` (the config's probe
    addresses) replace the device_config's servers; ``ports`` replace the derived ports."""
    endpoints = service_endpoints(sr_type, device_config)
    if hosts:
        derived = []
        for _host, endpoint_ports in endpoints:
            derived.extend(p for p in endpoint_ports if p not in derived)
        endpoints = [(str(h), derived) for h in hosts]
    out = []
    for host, derived in endpoints:
        use = list(ports) or derived
        if mode == "icmp" or not use:
            texts = [host.strip("[]")]
        else:
            texts = [tcp_target(host, p) for p in use]
        out.extend(t for t in texts if t not in out)
    return out


def is_address(host):
    """True when ``host`` is an IP address literal (not a name to resolve)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        return False
