"""What SM does when xapi plugs a PBD (SR.attach): which check fails, how fast, with what code.

Follows xcp-ng/sm (drivers/, read at HEAD 62ed4ad1):

- ``NFSSR.attach``: ``util._testHost(server, 2049, 'NFSTarget')`` resolves the name
  (``socket.getaddrinfo``; failure -> ``DNSError`` 140 at once) and makes one TCP connect with
  a 5 s timeout (refused -> 108 at once, no answer -> 108 after 5 s); then ``check_server``
  runs ``rpcinfo -s`` against rpcbind (port 111) for NFSv3 (failure -> ``NFSVersion`` 72), then
  the mount (a stalled mount -> ``NFSMount`` 73 once the soft mount gives up).
- ``SMBSR``: no pre-check; a failed ``mount.cifs`` -> ``SMBMount`` 111.
- ``BaseISCSI.attach``: ``util._testHost(target, port or 3260, 'ISCSITarget')`` -> 141.
- ``ISOSR`` with an NFS ``location`` (``host:/path`` or ``nfs://host/path``) tests 2049 like
  NFSSR; with ``//host/share`` it mounts CIFS (445).

Errors reach the client as ``SR_BACKEND_FAILURE_<code> ["", description, ""]``
(xen-api ``ocaml/xapi/sm_exec.ml`` ``exec_xmlrpc`` / ``storage_utils.ml``
``transform_storage_exn``). Descriptions are those of ``drivers/XE_SR_ERRORCODES.xml``.

Storage outcomes the simulator knows (``OUTCOMES``): ``up``; ``down`` (no answer: the connect
times out); ``refused`` (host up, port closed: RST); ``unresolvable`` (name does not resolve);
``stalled`` (the port answers but the mount hangs); ``no-rpcbind`` (NFSv3 only: 2049 answers,
111 does not).
"""

import re
import socket

from agent.adapters.rtnl import call_in_netns

OUTCOMES = ("up", "down", "refused", "unresolvable", "stalled", "no-rpcbind")

# code, description (drivers/XE_SR_ERRORCODES.xml)
NFS_TARGET = (108, "Unable to detect an NFS service on this target.")
NFS_VERSION = (72, "Required NFS server version unsupported")
NFS_MOUNT = (73, "NFS mount error")
SMB_MOUNT = (111, "SMB mount error")
DNS_ERROR = (140, "Incorrect DNS name, unable to resolve.")
ISCSI_TARGET = (141, "Unable to connect to ISCSI service on target")

NFS_PORT = 2049
RPCBIND_PORT = 111
SMB_PORT = 445
ISCSI_PORT = 3260
CONNECT_TIMEOUT = 5.0    # util._testHost: timeout = 5


def service_of(device_config, sr_type="nfs"):
    """(kind, host, [ports]) SM checks for this PBD's device_config; host "" if none is named.

    kind is "nfs", "smb" or "iscsi"; NFS ports are 2049 then 111 unless ``nfsversion`` is 4.
    """
    dc = dict(device_config)
    sr_type = str(sr_type).lower()
    if sr_type in ("lvmoiscsi", "iscsi", "gfs2") or "target" in dc:
        target = dc.get("target", "").split(",")[0]
        return "iscsi", target, [int(dc.get("port") or ISCSI_PORT)]
    if sr_type in ("smb", "cifs"):
        return "smb", dc.get("server", "").lstrip("/").split("/")[0], [SMB_PORT]
    location = dc.get("location", "")
    if location.startswith("//"):
        return "smb", location[2:].split("/")[0], [SMB_PORT]
    host = dc.get("server", "")
    if not host and location:
        match = re.match(r"^(?:nfs://)?\[?([^\]/:]+)\]?[:/]", location)
        host = match.group(1) if match else ""
    ports = [NFS_PORT]
    if not str(dc.get("nfsversion", "3")).startswith("4"):
        ports.append(RPCBIND_PORT)
    return "nfs", host, ports


def failure_of(kind, outcome):
    """(code, description) of the SM error for ``outcome`` on a ``kind`` SR; None if it plugs."""
    if outcome == "up":
        return None
    if outcome == "unresolvable":
        return DNS_ERROR
    if kind == "iscsi":
        return ISCSI_TARGET if outcome in ("down", "refused") else None
    if kind == "smb":
        return SMB_MOUNT
    if outcome in ("down", "refused"):
        return NFS_TARGET
    if outcome == "no-rpcbind":
        return NFS_VERSION
    return NFS_MOUNT   # stalled


def _connect(host, port, timeout):
    """SM's _testHost: resolve, then one TCP connect; returns an outcome."""
    try:
        info = socket.getaddrinfo(host, int(port), 0, socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        return "unresolvable"
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(info[4])
        sock.send(b"\n")   # "Fix for MS storage server bug", as _testHost does
        return "up"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, OSError):
        return "down"
    finally:
        sock.close()


class TcpProbe(object):
    """A ``Simulator.storage_probe`` asking what SM asks: name resolution, then a TCP connect
    to each service port (NFS 2049 and 111 for v3, SMB 445, iSCSI 3260), optionally from
    inside network namespace ``netns`` (the lab's dom0). Returns an outcome string.

    ``timeout`` is the connect timeout (SM: 5 s). The probe takes as long as the real connect.
    """

    def __init__(self, netns=None, timeout=CONNECT_TIMEOUT, sr_type="nfs"):
        self.netns = netns
        self.timeout = float(timeout)
        self.sr_type = sr_type

    def __call__(self, device_config, sr_type=None):
        kind, host, ports = service_of(device_config, sr_type or self.sr_type)
        if not host:
            return "up"    # nothing to check (e.g. local storage)
        if self.netns is None:
            return self._check(host, ports)
        # a thread of its own enters the namespace; the simulator's threads stay where they are
        return call_in_netns(self.netns, self._check, host, ports)

    def _check(self, host, ports):
        for position, port in enumerate(ports):
            outcome = _connect(host, port, self.timeout)
            if outcome != "up":
                if position > 0 and outcome in ("down", "refused"):
                    return "no-rpcbind"   # 2049 answered, rpcbind did not
                return outcome
        return "up"
