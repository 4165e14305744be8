"""`agent check`: preflight a host against the live XAPI and kernel; a checklist with one fix per problem.

Run it before rebooting into a NIC-less setup (README.md, "Install on dom0"). It reads XAPI through the same
code the agent's watcher resyncs with (``XapiConnection`` + ``read_world``), then asks XAPI a
few more questions only to explain what did not resolve (which label was meant, whose uuid
to rename). Kernel items use the agent's own adapters: ``RtnlNet`` for the management
bridge, icmplib's raw sockets as the prober opens them. Nothing is changed on the host except
that missing status and trace directories are created, as the agent itself would.

Exit status: 0 nothing blocks, 1 something does, 78 (EX_CONFIG) the config is invalid.
Python 3.6 compatible.
"""

import argparse
import difflib
import os
import stat
import sys
import tempfile

import attr

from agent import config as cfgmod

DEFAULT_CONFIG = "/etc/sspn-agent/agent.toml"
EXIT_OK = 0
EXIT_BLOCKED = 1
EX_CONFIG = cfgmod.EX_CONFIG

# SR types whose storage is reached over the network, i.e. through the firewall once dom0 has
# no NIC: NFS and SMB/CIFS VHD SRs, and ISO libraries (NFS or CIFS; a local one is refused below).
NETWORK_SR_TYPES = ("nfs", "cifs", "smb", "iso")
ORIGINATOR = "sspn-agent-check"
LOGOUT_TIMEOUT = 1.0

UNICODE_MARKS = {True: "\u2713", False: "\u2717", None: "-"}
ASCII_MARKS = {True: "[ok]  ", False: "[FAIL]", None: "[skip]"}


@attr.s(frozen=True, slots=True)
class Item(object):
    """One line of the checklist: ``ok`` True (passed), False (blocks; ``fix`` says how), None (not checked)."""

    ok = attr.ib()
    text = attr.ib()
    fix = attr.ib(default="")


def passed(text):
    """A passed item."""
    return Item(True, text)


def failed(text, fix):
    """A blocking item with its one-line fix."""
    return Item(False, text, fix)


def skipped(text, why):
    """An item that was not checked, and why."""
    return Item(None, "%s (not checked: %s)" % (text, why))


def _near(word, choices):
    match = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return match[0] if match else None


# --- the config --------------------------------------------------------------------------------

def check_config(path):
    """(Config or None, items): the file parses and validates; it is not writable by others."""
    try:
        config = cfgmod.load_config(path)
    except cfgmod.ConfigError as e:
        return None, [failed("config %s is invalid" % path,
                             "%s (re-check with: agent config validate %s)" % (e, path))]
    items = [passed("config %s is valid: %d binding(s), %d SR(s), enable_host=%s"
                    % (path, len(config.bindings), len(config.srs),
                       config.maintenance.enable_host))]
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:  # read a moment ago; a race with an editor is not worth a failure
        return config, items
    if mode & 0o022:
        # The agent runs as root and does what this file says: nobody else may change it.
        items.append(failed("config %s is writable by group or others (mode %04o)" % (path, mode),
                            "chmod 600 %s" % path))
    return config, items


# --- XAPI --------------------------------------------------------------------------------------

def check_xapi(config, local_db_path=None):
    """Items for XAPI: it answers; labels resolve once; VMs have a VIF on their network; SRs fit."""
    from agent.adapters.xapi_transport import XapiConnection, describe_error, endpoint_of
    from agent.adapters.xapi_world import read_world

    endpoint = endpoint_of(config.xapi)
    conn = XapiConnection(config.xapi, originator=ORIGINATOR)
    try:
        try:
            conn.login()
            # The watcher's full resync (xapi_world.read_world): what the agent would see.
            watched = read_world(conn, config, local_db_path or config.xapi.local_db)
        except cfgmod.ConfigError as e:  # an unreadable password file
            return [failed("XAPI login at %s" % endpoint, str(e))] + _xapi_skipped(config)
        except Exception as e:
            return [failed("XAPI does not answer at %s: %s" % (endpoint, describe_error(e, endpoint)),
                           _xapi_fix(config))] + _xapi_skipped(config)
        host = watched.host
        items = [passed("XAPI answers at %s: this host is %s (%s)%s"
                        % (endpoint, host.name_label or "?", host.uuid,
                           "" if host.enabled else ", currently disabled"))]
        try:
            items += _check_bindings(conn, config, watched)
            items += _check_srs(conn, config, watched)
        except Exception as e:  # XAPI went away half-way: say so, keep what was found
            items.append(failed("XAPI stopped answering during the check: %s"
                                % describe_error(e, endpoint), "run agent check again"))
        return items
    finally:
        conn.logout(timeout=min(LOGOUT_TIMEOUT, conn.call_timeout))


def _xapi_fix(config):
    if config.xapi.is_local:
        return ("start the toolstack (systemctl start xapi, or xe-toolstack-restart) and check "
                "[xapi] socket = \"%s\"" % config.xapi.socket)
    return "check [xapi] url, username and password_file, and that %s answers" % config.xapi.url


def _xapi_skipped(config):
    why = "XAPI did not answer"
    items = [skipped("binding[%d] network '%s' and its VMs" % (i, b.network), why)
             for i, b in enumerate(config.bindings)]
    items += [skipped("sr[%d] %s" % (i, sr.uuid), why) for i, sr in enumerate(config.srs)]
    return items


def _is_real_vm(record):
    """Not a template, snapshot or dom0 (snapshots carry their VM's name_label too)."""
    def flag(key):
        value = record.get(key)
        return value is True or str(value).lower() == "true"
    return not (flag("is_a_template") or flag("is_a_snapshot") or flag("is_control_domain"))


def _check_bindings(conn, config, watched):
    networks = dict((label, ref) for ref, label in watched.network_labels.items())
    vms = dict((label, ref) for ref, label in watched.vm_labels.items())
    items = []
    for i, binding in enumerate(config.bindings):
        where = "binding[%d]" % i
        network = networks.get(binding.network)
        if network is None:
            items.append(_unresolved_network(conn, where, binding.network))
        else:
            items.append(passed("%s network '%s' is bridge %s in dom0" % (
                where, binding.network, watched.network_bridges.get(network) or "?")))
        for j, label in enumerate(binding.vms):
            vm = vms.get(label)
            if vm is None:
                items.append(_unresolved_vm(conn, "%s.vms[%d]" % (where, j), label))
                continue
            view = watched.vms[vm]
            items.append(passed("%s VM '%s' is %s (%s)" % (where, label, view.uuid,
                                                           view.power_state.lower())))
            what = "VM '%s' has a VIF on network '%s'" % (label, binding.network)
            if network is None:
                items.append(skipped(what, "the network did not resolve"))
            elif network in view.network_refs:
                items.append(passed(what))
            else:
                items.append(_missing_vif(conn, label, view, binding.network, network))
    return items


def _unresolved_network(conn, where, label):
    refs = conn.call("network.get_by_name_label", label)
    if refs:
        uuids = [conn.call("network.get_uuid", ref) for ref in refs]
        return failed("%s network '%s' names %d networks (%s)" % (where, label, len(refs),
                                                                  ", ".join(uuids)),
                      "rename all but one: xe network-param-set uuid=%s name-label=<new name>"
                      % uuids[-1])
    labels = [r.get("name_label", "") for r in conn.call("network.get_all_records").values()]
    near = _near(label, labels)
    return failed("%s network '%s': no network has this name_label" % (where, label),
                  'did you mean "%s"? set network = "%s"' % (near, near) if near else
                  "create it (xe network-create name-label=%s) or fix network = ... "
                  "(xe network-list params=name-label)" % label)


def _unresolved_vm(conn, where, label):
    refs = conn.call("VM.get_by_name_label", label)
    real = []
    for ref in refs:
        record = conn.call("VM.get_record", ref)
        if _is_real_vm(record):
            real.append(record.get("uuid", ref))
    if real:
        return failed("%s VM '%s' names %d VMs (%s): the agent cannot tell which is the uplink"
                      % (where, label, len(real), ", ".join(real)),
                      "rename all but one: xe vm-param-set uuid=%s name-label=<new name>" % real[-1])
    records = conn.call("VM.get_all_records_where", 'field "is_a_template"="false" and '
                        'field "is_a_snapshot"="false" and field "is_control_domain"="false"')
    near = _near(label, [r.get("name_label", "") for r in records.values()])
    note = " (only a template or snapshot has it)" if refs else ""
    return failed("%s VM '%s': no VM has this name_label%s" % (where, label, note),
                  'did you mean "%s"? list it in vms' % near if near else
                  "fix the label in vms (xe vm-list params=name-label)")


def _missing_vif(conn, label, view, network_label, network):
    network_uuid = conn.call("network.get_uuid", network)
    devices = []
    for vif in conn.call("VM.get_VIFs", view.ref):
        try:
            devices.append(int(conn.call("VIF.get_device", vif)))
        except ValueError:
            continue
    device = next(n for n in range(len(devices) + 1) if n not in devices)
    # The bridge of a PIF-less network exists only while a VIF on it is plugged (docs/xapi-behaviour.md §8).
    return failed("VM '%s' has no VIF on network '%s': its bridge would never appear"
                  % (label, network_label),
                  "xe vif-create vm-uuid=%s network-uuid=%s device=%d, then restart the VM "
                  "(or xe vif-plug)" % (view.uuid, network_uuid, device))


def check_routes(config):
    """Items for the gateways: each falls in a binding's subnet (or is v6 link-local)."""
    items = []
    for family, gateway in config.gateways():
        key = "route.gateway%d %s" % (family, gateway)
        index = config.binding_for_gateway(gateway)
        if index is None:  # validation refuses this; kept so a checklist never lies
            items.append(failed("%s is outside every binding's subnet" % key,
                                "use the firewall's address in a binding's subnet"))
        elif family == 6 and gateway.is_link_local:
            items.append(passed("%s is link-local, reached on binding[%d]'s bridge" % (key, index)))
        else:
            subnet = next(iface.network for iface in config.bindings[index].addresses
                          if iface.version == family and gateway in iface.network)
            items.append(passed("%s is in binding[%d]'s subnet %s" % (key, index, subnet)))
    if not items:
        items.append(skipped("default gateways", "none configured: default routes are left alone"))
    return items


def _check_srs(conn, config, watched):
    from agent.decision.desired import storage_targets

    srs = dict((uuid, ref) for ref, uuid in watched.sr_uuids.items())
    pbds = dict((view.sr_uuid, view) for view in watched.pbds.values())
    items = []
    for i, sr in enumerate(config.srs):
        where = "sr[%d]" % i
        ref = srs.get(sr.uuid)
        if ref is None:
            items.append(_unknown_sr(conn, where, sr.uuid))
            continue
        name = conn.call("SR.get_name_label", ref)
        sr_type = watched.srs.get(sr.uuid, ("", True))[0]
        pbd = pbds.get(sr.uuid)
        what = "%s %s is SR '%s'" % (where, sr.uuid, name)
        location = dict(pbd.device_config).get("location", "") if pbd else ""
        if sr_type not in NETWORK_SR_TYPES:
            items.append(failed("%s of type %s: local storage, not reached through the firewall"
                                % (what, sr_type or "?"),
                                "remove this [[sr]]: only network SRs (%s) need re-plugging"
                                % ", ".join(NETWORK_SR_TYPES)))
        elif sr_type == "iso" and location.startswith("/") and not location.startswith("//"):
            items.append(failed("%s, a local ISO library (location %s)" % (what, location),
                                "remove this [[sr]]: only network SRs need re-plugging"))
        else:
            items.append(passed("%s, network storage (type %s)" % (what, sr_type)))
        if pbd is None:
            items.append(failed(
                "%s '%s' has no PBD on this host: there is nothing to plug" % (where, name),
                "create one (xe pbd-create host-uuid=%s sr-uuid=%s device-config:...) and plug it "
                "(xe pbd-plug), or remove this [[sr]]" % (watched.host.uuid, sr.uuid)))
            continue
        items.append(passed("%s '%s' has a PBD on this host (%s)" % (
            where, name, "attached" if pbd.attached else "detached")))
        items.append(_probe_target(where, sr, pbd, storage_targets(sr, pbd)))
    return items


def _unknown_sr(conn, where, uuid):
    network_srs = ["%s (%s)" % (r.get("name_label", ""), r.get("uuid", ""))
                   for r in conn.call("SR.get_all_records").values()
                   if r.get("type") in NETWORK_SR_TYPES]
    hint = ("; network SRs here: %s" % ", ".join(sorted(network_srs)[:3])) if network_srs else ""
    return failed("%s uuid %s: no SR has this uuid" % (where, uuid),
                  "copy the uuid from xe sr-list params=uuid,name-label,type%s" % hint)


def _probe_target(where, sr, pbd, targets):
    source = "[[sr]] probe" if sr.probe else "the PBD's device_config"
    if not targets:
        return failed("%s: no storage target to probe (%s names no server)" % (where, source),
                      'add probe = ["<storage server IP>"] to this [[sr]]')
    from agent.decision.sm_targets import is_address, split_target
    names = sorted(set(h for h, _port in map(split_target, targets) if not is_address(h)))
    if names:
        # resolved at each probe (agent/adapters/tcp_probe.py): SR_PROBING runs once dom0 is
        # routed, so DNS through the firewall, or /etc/hosts, can answer by then
        source += "; %s resolved at each probe" % ", ".join(names)
    return passed("%s probes %s (from %s)" % (where, ", ".join(targets), source))


# --- the kernel and the disk -------------------------------------------------------------------

def open_icmp_socket(family):
    """Open and close a raw ICMP socket as the prober does; None, or why it failed."""
    from icmplib import ICMPv4Socket, ICMPv6Socket
    from icmplib.exceptions import ICMPLibError, SocketPermissionError

    try:
        sock = (ICMPv4Socket if family == 4 else ICMPv6Socket)(privileged=True)
    except SocketPermissionError:
        return "permission denied"
    except (ICMPLibError, OSError) as e:
        return str(e) or type(e).__name__
    sock.close()
    return None


def _icmp_families(config):
    """IP versions the agent will probe: gateways (when route.probe) and storage targets."""
    families = set()
    if config.route.probe:
        families.update(family for family, _ in config.gateways())
    for sr in config.srs:
        # Without [[sr]] probe the target is the PBD's server: assume IPv4, the usual case.
        families.update([target.version for target in sr.probe] or [4])
    return sorted(families)


def check_kernel(config, net=None, open_icmp=open_icmp_socket):
    """Items for the kernel: the management bridge exists; raw ICMP sockets can be opened."""
    from agent.ports import NetError

    items = []
    if not config.management.mirror:
        items.append(skipped("management bridge", "management.mirror = false"))
    else:
        try:
            bridge = cfgmod.management_bridge(config)
        except cfgmod.ConfigError as e:
            bridge = None
            problem, _, fix = e.message.partition("; ")  # config messages are "problem; fix"
            items.append(failed("management bridge: %s" % problem, fix or (
                'set management.bridge = "<bridge>" (the one holding the management address) '
                "or management.mirror = false")))
        if bridge:
            if net is None:
                from agent.adapters.net import RtnlNet
                net = RtnlNet()
            try:
                exists = net.link_exists(bridge)
                items.append(passed("management bridge %s exists" % bridge) if exists else failed(
                    "management bridge %s does not exist in the kernel" % bridge,
                    'set management.bridge to the bridge holding the management address '
                    "(ip -br addr), or management.mirror = false"))
            except NetError as e:
                items.append(failed("cannot read the kernel's interfaces: %s" % e,
                                    "run agent check as root, as the agent runs"))
            finally:
                net.close()
    families = _icmp_families(config)
    if not families:
        items.append(skipped("raw ICMP sockets", "route.probe = false and no [[sr]]"))
    for family in families:
        error = open_icmp(family)
        what = "raw ICMPv%d socket" % family
        if error is None:
            items.append(passed("%s can be opened (probes)" % what))
        else:
            items.append(failed("%s cannot be opened: %s" % (what, error),
                                "run as root (the agent does, under systemd) or give it "
                                "CAP_NET_RAW%s" % (
                                    "; is IPv6 disabled in the kernel?" if family == 6 else "")))
    return items


def check_files(config):
    """Items for the status and trace directories: present (created if missing) and writable."""
    items = []
    seen = []
    for key, path in (("files.status", config.files.status), ("files.trace", config.files.trace)):
        directory = os.path.dirname(path) or "/"
        if directory in seen:
            continue
        seen.append(directory)
        created = False
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
                created = True
            handle, probe = tempfile.mkstemp(dir=directory, prefix=".sspn-agent-check-")
            os.close(handle)
            os.unlink(probe)
        except OSError as e:
            items.append(failed("%s directory %s is not writable: %s"
                                % (key, directory, e.strerror or e),
                                "mkdir -p %s as root, or point %s elsewhere" % (directory, key)))
            continue
        items.append(passed("%s directory %s is writable%s"
                            % (key, directory, " (created)" if created else "")))
    return items


# --- output ------------------------------------------------------------------------------------

def marks_for(stream):
    """Check marks the stream can encode: ✓ ✗, or [ok] [FAIL] on an ASCII terminal."""
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        "".join(UNICODE_MARKS.values()).encode(encoding)
    except (UnicodeError, LookupError):
        return ASCII_MARKS
    return UNICODE_MARKS


def render(items, stream):
    """Write the checklist, each failure followed by its fix; return the number of failures."""
    marks = marks_for(stream)
    for item in items:
        stream.write("%s %s\n" % (marks[item.ok], item.text))
        if item.ok is False:
            stream.write("    fix: %s\n" % item.fix)
    failures = sum(1 for item in items if item.ok is False)
    if failures:
        stream.write("%d problem%s block%s: fix %s, then run agent check again\n" % (
            failures, "" if failures == 1 else "s", "s" if failures == 1 else "",
            "it" if failures == 1 else "them"))
    else:
        stream.write("nothing blocks: %d checks passed\n" % sum(1 for i in items if i.ok))
    return failures


def run_checks(config_path, stream=None, kernel=True):
    """Check everything and print the checklist; returns the exit status (0, 1 or 78)."""
    stream = stream or sys.stdout
    config, items = check_config(config_path)
    if config is None:
        render(items, stream)
        return EX_CONFIG
    items += check_routes(config)
    items += check_xapi(config)
    if kernel:
        items += check_kernel(config)
    items += check_files(config)
    failures = render(items, stream)
    stream.flush()
    return EXIT_BLOCKED if failures else EXIT_OK


def main_check(argv=None):
    """`agent check [--config PATH]`: the preflight checklist; exit 0, 1 (blocked) or 78."""
    parser = argparse.ArgumentParser(
        prog="agent check", description="Preflight this host against the live XAPI and kernel: "
        "labels resolve, VMs are on their networks, SRs fit, bridge and ICMP work.")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="config file (default %s)" % DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    return run_checks(args.config)
