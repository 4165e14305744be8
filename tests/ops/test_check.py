"""`agent check`: every misconfiguration is reported with its fix, against the XAPI simulator.

Real parts: the PyPI XenAPI client over the simulator's Unix socket (the agent's own
XapiConnection + read_world), and -- as root, in a throwaway namespace -- the real kernel
for the management bridge and raw ICMP sockets. Without root the kernel items are checked
with an injected in-memory Net, which only proves how a missing bridge is reported.
"""

import io
import os
import subprocess
import sys

import pytest

from agent.tools import check
from agent import config as cfgmod
from agent.adapters.memory import MemoryNet
from tests.ops.conftest import NETNS_REASON, NFS_SR, ROOT, example_config, netns_available


def _items(config_path):
    """The XAPI items of `agent check` for a config file."""
    return check.check_xapi(cfgmod.load_config(config_path))


def _failed(items, *words):
    """The one failed item whose text contains every word; fails the test otherwise."""
    found = [i for i in items if i.ok is False and all(w in i.text for w in words)]
    assert len(found) == 1, "no single failure with %s in:\n%s" % (words, _show(items))
    return found[0]


def _show(items):
    return "\n".join("%s %s | %s" % (i.ok, i.text, i.fix) for i in items)


def _no_failures(items):
    assert not [i for i in items if i.ok is False], _show(items)


def test_a_matching_host_passes_every_xapi_item(sim, workdir):
    """The example config on the default scenario: XAPI answers, labels resolve, VIF and SR fit."""
    items = _items(example_config(workdir, sim))
    _no_failures(items)
    texts = "\n".join(i.text for i in items)
    assert "network 'sspn' is bridge xapi" in texts
    assert "VM 'pfsense' has a VIF on network 'sspn'" in texts
    assert "network storage (type nfs)" in texts and "has a PBD on this host" in texts
    assert "probes 198.51.100.10" in texts


def test_unknown_network_label_suggests_the_close_one(sim, workdir):
    """A typo in binding.network is reported, and the fix names the label that exists."""
    path = example_config(workdir, sim, [('network = "sspn"', 'network = "sspm"')])
    item = _failed(_items(path), "network 'sspm'", "no network has this name_label")
    assert 'did you mean "sspn"' in item.fix


def test_unknown_network_without_a_near_label_says_how_to_create_it(sim, workdir):
    """A network label far from every existing one: the fix is xe network-create or the list."""
    path = example_config(workdir, sim, [('network = "sspn"', 'network = "storage-backbone"')])
    item = _failed(_items(path), "network 'storage-backbone'")
    assert "xe network-create name-label=storage-backbone" in item.fix


def test_unknown_vm_is_reported_with_its_fix(sim, workdir):
    """A VM label that names no VM: reported, the VIF check for it is not attempted."""
    path = example_config(workdir, sim, [('vms = ["pfsense"]', 'vms = ["opnsense-fw"]')])
    items = _items(path)
    item = _failed(items, "VM 'opnsense-fw'", "no VM has this name_label")
    assert "xe vm-list params=name-label" in item.fix or "did you mean" in item.fix
    assert not any("has a VIF" in i.text for i in items)


def test_a_second_vm_with_the_uplink_label_does_not_win(sim, workdir, xenapi_session):
    """Two VMs named like the uplink: the one with a VIF on the binding's network is the
    uplink (docs/hostile.md, identity), the other is reported in the journal, not picked."""
    api = xenapi_session.xenapi
    firewall = api.VM.get_uuid(api.VM.get_by_name_label("pfsense")[0])
    scratch = api.VM.get_by_name_label("scratch")[0]
    api.VM.set_name_label(scratch, "pfsense")
    items = _items(example_config(workdir, sim))
    assert any(i.ok and "VM 'pfsense' is %s" % firewall in i.text for i in items), _show(items)


def test_snapshots_and_templates_do_not_count_as_a_second_vm(sim, workdir):
    """The default scenario has a snapshot of "db": listing "db" resolves to the one real VM."""
    path = example_config(workdir, sim, [('vms = ["pfsense"]', 'vms = ["pfsense", "db"]')])
    items = _items(path)
    assert not any("names 2 VMs" in i.text for i in items), _show(items)
    assert any(i.ok and "VM 'db' has a VIF on network 'sspn'" in i.text for i in items)


def test_vm_without_a_vif_on_the_network_is_reported_with_vif_create(sim, workdir, xenapi_session):
    """An uplink VM with no VIF on the binding's network: its bridge would never appear."""
    api = xenapi_session.xenapi
    vm_uuid = api.VM.get_uuid(api.VM.get_by_name_label("scratch")[0])
    net_uuid = api.network.get_uuid(api.network.get_by_name_label("sspn")[0])
    path = example_config(workdir, sim, [('vms = ["pfsense"]', 'vms = ["scratch"]')])
    item = _failed(_items(path), "VM 'scratch' has no VIF on network 'sspn'")
    assert "xe vif-create vm-uuid=%s network-uuid=%s device=0" % (vm_uuid, net_uuid) in item.fix


def test_unknown_sr_uuid_lists_the_network_srs_that_exist(sim, workdir):
    """An [[sr]] uuid that names no SR: the fix shows where uuids come from and the NFS SR's uuid."""
    wrong = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a99"
    path = example_config(workdir, sim, [(NFS_SR, wrong)])
    item = _failed(_items(path), "sr[0] uuid %s" % wrong, "no SR has this uuid")
    assert "xe sr-list" in item.fix and NFS_SR in item.fix


def test_sr_of_a_local_type_is_refused(sim_factory, scenario_with, workdir):
    """An LVM SR is local storage: nothing to re-plug through the firewall, so check blocks."""
    local = "0b8f0b6e-1d2a-4c3b-8e4f-5a6b7c8d9e0f"
    simulator = sim_factory(scenario=scenario_with(
        ('name_label = "Local storage"\ntype = "ext"',
         'name_label = "Local storage"\nuuid = "%s"\ntype = "lvm"' % local)))
    path = example_config(workdir, simulator, [(NFS_SR, local)])
    item = _failed(_items(path), "Local storage", "type lvm", "local storage")
    assert "remove this [[sr]]" in item.fix


def test_sr_without_a_pbd_on_this_host_is_reported(sim, workdir, xenapi_session):
    """The SR exists but only another pool member has a PBD of it: nothing here to plug."""
    api = xenapi_session.xenapi
    this_host = api.session.get_this_host(xenapi_session.handle)
    host_uuid = api.host.get_uuid(this_host)
    other = sim.db.create("host", name_label="other-member")  # a second pool member
    for pbd in api.SR.get_PBDs(api.SR.get_by_uuid(NFS_SR)):
        sim.db.update("PBD", pbd, host=other)
    item = _failed(_items(example_config(workdir, sim)), "has no PBD on this host")
    assert "xe pbd-create host-uuid=%s sr-uuid=%s" % (host_uuid, NFS_SR) in item.fix


def test_sr_whose_server_is_a_name_is_probed_by_name(sim_factory, scenario_with, workdir):
    """The PBD names its NFS server by host name: a valid target, resolved at each probe."""
    simulator = sim_factory(scenario=scenario_with(
        ('server = "198.51.100.10"', 'server = "nas.example.net"')))
    items = _items(example_config(workdir, simulator))
    assert [i for i in items if i.ok and "probes nas.example.net:2049" in i.text
            and "nas.example.net resolved at each probe" in i.text]


def test_unreachable_xapi_blocks_and_skips_the_xapi_items(workdir):
    """No XAPI socket: one failure with the fix, and the bindings and SRs are marked not checked."""
    path = example_config(workdir, replacements=[
        ('socket = "/var/lib/xcp/xapi"', 'socket = "%s/no-xapi"' % workdir)])
    items = _items(path)
    item = _failed(items, "XAPI does not answer", "no-xapi")
    assert "systemctl start xapi" in item.fix
    assert [i.ok for i in items[1:]] == [None, None]


def test_missing_management_bridge_is_reported_with_its_fix(workdir):
    """The kernel has no management bridge (injected, empty Net): the fix names management.bridge."""
    config = cfgmod.load_config(example_config(workdir))
    items = check.check_kernel(config, net=MemoryNet(), open_icmp=lambda family: None)
    item = _failed(items, "management bridge xenbr0 does not exist")
    assert "management.bridge" in item.fix and "management.mirror = false" in item.fix


def test_icmp_permission_failure_says_run_as_root(workdir):
    """A raw ICMP socket that cannot be opened blocks, with the privilege fix."""
    net = MemoryNet()
    net.add_link("xenbr0")
    config = cfgmod.load_config(example_config(workdir))
    items = check.check_kernel(config, net=net, open_icmp=lambda family: "permission denied")
    item = _failed(items, "raw ICMPv4 socket cannot be opened")
    assert "root" in item.fix and "CAP_NET_RAW" in item.fix
    assert any(i.ok and "management bridge xenbr0 exists" in i.text for i in items)


def test_status_and_trace_directories_are_created(workdir):
    """Missing status and trace directories are created and found writable."""
    config = cfgmod.load_config(example_config(workdir))
    items = check.check_files(config)
    assert [i.ok for i in items] == [True, True]
    assert os.path.isdir(os.path.join(workdir, "run")) and os.path.isdir(os.path.join(workdir, "log"))


def test_checklist_falls_back_to_ascii_marks():
    """On a stream that cannot encode ✓, the marks are [ok] and [FAIL]; each failure has its fix."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    failures = check.render([check.passed("fine"), check.failed("broken", "do this")], stream)
    stream.flush()
    text = raw.getvalue().decode("ascii")
    assert failures == 1
    assert "[ok]   fine" in text and "[FAIL] broken" in text and "    fix: do this" in text


def test_checklist_uses_check_marks_on_utf8():
    """On a UTF-8 stream the marks are ✓ and ✗."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8")
    check.render([check.passed("fine"), check.failed("broken", "do this")], stream)
    stream.flush()
    text = raw.getvalue().decode("utf-8")
    assert "\u2713 fine" in text and "\u2717 broken" in text


def test_invalid_config_exits_78_with_its_fix(workdir):
    """An invalid config: exit 78 (EX_CONFIG), one ✗ line naming the key and a fix line."""
    path = example_config(workdir, replacements=[('gateway4 = "192', 'gatway4 = "192')])
    out = io.StringIO()
    assert check.run_checks(path, out) == check.EX_CONFIG
    text = out.getvalue()
    assert "is invalid" in text and "route.gatway4" in text and "fix:" in text


def test_config_writable_by_others_blocks(workdir):
    """A config others can write would let them steer a root agent: check blocks with chmod 600."""
    path = example_config(workdir)
    os.chmod(path, 0o666)
    _, items = check.check_config(path)
    item = _failed(items, "writable by group or others")
    assert item.fix == "chmod 600 %s" % path


# --- as root: the whole command in a throwaway namespace, real kernel ----------------------------

def _run_check_in(netns, config_path):
    """`agent check --config PATH` (main_check) inside ``netns``; (status, stdout)."""
    code = "import sys; from agent.tools.check import main_check; sys.exit(main_check(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONIOENCODING="utf-8")
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", code,
                             "--config", config_path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    out = proc.communicate(timeout=60)[0].decode("utf-8")
    return proc.returncode, out


@pytest.mark.skipif(not netns_available(), reason=NETNS_REASON)
def test_whole_check_in_a_namespace_without_then_with_the_bridge(sim, workdir, netns):
    """Real kernel: no xenbr0 -> exit 1 with the bridge fix; with xenbr0 -> exit 0, all ✓."""
    path = example_config(workdir, sim)
    code, out = _run_check_in(netns, path)
    assert code == 1, out
    assert "\u2717 management bridge xenbr0 does not exist" in out
    assert "fix: set management.bridge" in out
    assert "\u2713 raw ICMPv4 socket can be opened" in out
    subprocess.check_call(["ip", "-n", netns, "link", "add", "xenbr0", "type", "bridge"])
    code, out = _run_check_in(netns, path)
    assert code == 0, out
    assert "\u2717" not in out and "nothing blocks" in out


def test_unreadable_inventory_names_management_bridge_as_the_fix(workdir):
    """management.bridge empty and no inventory file: blocked, the fix names the two keys."""
    path = example_config(workdir, replacements=[
        ('bridge = "xenbr0"', 'bridge = ""'),
        ('inventory = "/etc/xensource-inventory"', 'inventory = "%s/inventory"' % workdir)])
    items = check.check_kernel(cfgmod.load_config(path), net=MemoryNet(),
                               open_icmp=lambda family: None)
    item = _failed(items, "management bridge: cannot read %s/inventory" % workdir)
    assert "management.inventory" in item.fix and "management.bridge" in item.fix


def test_management_bridge_from_the_inventory(workdir):
    """management.bridge empty: MANAGEMENT_INTERFACE of the inventory is the bridge checked."""
    with open(os.path.join(workdir, "inventory"), "w") as handle:
        handle.write("MANAGEMENT_INTERFACE='xenbr7'\n")
    path = example_config(workdir, replacements=[
        ('bridge = "xenbr0"', 'bridge = ""'),
        ('inventory = "/etc/xensource-inventory"', 'inventory = "%s/inventory"' % workdir)])
    net = MemoryNet()
    net.add_link("xenbr7")
    items = check.check_kernel(cfgmod.load_config(path), net=net, open_icmp=lambda family: None)
    assert any(i.ok and i.text == "management bridge xenbr7 exists" for i in items), _show(items)
