"""Turn a Scenario into database rows: pool, host, dom0, networks/PIFs, SRs/PBDs, VMs/VIFs/disks."""

from . import localdb
from .schema import NULL_REF

# XCP-ng 8.3 ships xapi 26.1.4 with API 2.21 (xcp-ng-rpms/xapi SPECS/xapi.spec).
API_VERSION_MAJOR = "2"
API_VERSION_MINOR = "21"
SOFTWARE_VERSION = {
    "product_version": "8.3.0", "product_version_text": "8.3", "product_brand": "XCP-ng",
    "platform_name": "XCP", "platform_version": "3.4.0", "xapi": "26.1.4",
    "xapi_build": "26.1.4", "xen": "4.17.5", "linux": "4.19.0+1", "hostname": "localhost",
    "date": "2025-01-01", "dbv": "2025.0101",
}
VM_ALLOWED_HALTED = ["start", "start_on", "clone", "copy", "export", "destroy", "snapshot"]
VM_ALLOWED_RUNNING = ["clean_shutdown", "clean_reboot", "hard_shutdown", "hard_reboot",
                      "pause", "suspend", "snapshot"]


class Index(object):
    """Refs of the scenario's objects by name, plus simulator-side facts about them."""

    def __init__(self):
        self.pool = None
        self.host = None
        self.dom0 = None
        self.vms = {}            # name_label -> VM ref
        self.networks = {}       # name_label -> network ref
        self.srs = {}            # SR uuid -> SR ref
        self.sr_labels = {}      # SR name_label -> SR ref
        self.pbds = {}           # SR uuid -> this host's PBD ref
        self.reachable = {}      # SR uuid -> is the storage target reachable (sim.set_storage_reachable)
        self.storage_state = {}  # SR uuid -> an sm.OUTCOMES override (sim.set_storage_state)
        self.vm_srs = {}         # VM ref -> [SR uuid] its disks live on
        self.extra_vms = []      # refs of VMs added by sim.add_vms (the "unrelated" ones)


def choose_bridge_name(db):
    """``xapi<N>`` with the smallest N not used by any network (xapi_network.ml choose_bridge_name)."""
    used = set(rec["bridge"] for rec in db.records("network").values())
    counter = 0
    while "xapi%d" % counter in used:
        counter += 1
    return "xapi%d" % counter


def mac_address(rng):
    """A random locally administered unicast MAC, as xapi generates for VIFs."""
    octets = [rng.randrange(256) for _ in range(6)]
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join("%02x" % o for o in octets)


def _append(db, cls, ref, field, item):
    db.mutate(cls, ref, lambda rec: rec[field].append(item))


def build(db, scenario, rng, local_db_values):
    """Create every object of ``scenario`` in ``db``; returns the Index of what was made.

    ``local_db_values`` (a dict) receives the host's Localdb keys (host_auto_enable).
    """
    index = Index()
    spec = scenario.host
    index.host = db.create(
        "host", uuid=spec.uuid or None, name_label=spec.name_label,
        hostname=spec.hostname or spec.name_label, address=spec.address, enabled=spec.enabled,
        API_version_major=API_VERSION_MAJOR, API_version_minor=API_VERSION_MINOR,
        API_version_vendor="XenSource", software_version=SOFTWARE_VERSION,
        other_config={"MAINTENANCE_MODE": "true"} if spec.maintenance_mode else {},
        allowed_operations=["provision", "evacuate", "reboot", "shutdown", "vm_start"],
        capabilities=["xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_64"],
        sched_policy="credit", edition="xcp-ng", memory_overhead="0")
    local_db_values[localdb.HOST_AUTO_ENABLE] = "true" if spec.auto_enable else "false"
    if spec.disabled_until_reboot:
        local_db_values[localdb.HOST_DISABLED_UNTIL_REBOOT] = "true"
    if spec.pending_guidances:
        db.update("host", index.host, pending_guidances=list(spec.pending_guidances))
    master = index.host
    if spec.pool_member:
        # The pool's master is another host: only its row exists here.
        master = db.create(
            "host", name_label=spec.name_label + "-master", hostname=spec.name_label + "-master",
            address=spec.master_address, enabled=True, API_version_major=API_VERSION_MAJOR,
            API_version_minor=API_VERSION_MINOR, API_version_vendor="XenSource",
            software_version=SOFTWARE_VERSION, edition="xcp-ng")
    index.pool = db.create(
        "pool", name_label=scenario.pool.name_label, master=master,
        ha_enabled=scenario.pool.ha_enabled,
        other_config={"auto_poweron": "true" if scenario.pool.auto_poweron else "false"})
    index.dom0 = db.create(
        "VM", name_label="Control domain on host: %s" % spec.name_label,
        name_description="The domain which manages physical devices and manages other domains",
        is_control_domain=True, power_state="Running", domid=0, resident_on=index.host,
        domain_type="pv", memory_static_max=4294967296, memory_dynamic_max=4294967296,
        memory_target=4294967296, VCPUs_max=4, VCPUs_at_startup=4,
        allowed_operations=[], other_config={})
    db.update("host", index.host, control_domain=index.dom0, resident_VMs=[index.dom0])
    _build_networks(db, scenario, index, rng)
    _build_srs(db, scenario, index)
    for vm in scenario.vms:
        _build_vm(db, scenario, index, vm, rng)
    default_sr = next((index.sr_labels[s.name_label] for s in scenario.srs if s.shared),
                      NULL_REF)
    db.update("pool", index.pool, default_SR=default_sr)
    return index


def _build_networks(db, scenario, index, rng):
    for spec in scenario.networks:
        bridge = spec.bridge or (choose_bridge_name(db) if spec.pif is None else "")
        if not bridge:
            bridge = "xenbr%s" % spec.pif.device.replace("eth", "")
        ref = db.create("network", name_label=spec.name_label, bridge=bridge,
                        MTU=spec.mtu, other_config=dict(spec.other_config), managed=True)
        index.networks[spec.name_label] = ref
        pif = spec.pif
        if pif is None:
            continue  # internal network: PIFs = [] (xapi_network.ml ``create``)
        pif_ref = db.create(
            "PIF", device=pif.device, network=ref, host=index.host,
            MAC=pif.mac or mac_address(rng), MTU=spec.mtu, VLAN=-1, physical=True,
            currently_attached=pif.currently_attached, management=pif.management,
            ip_configuration_mode=pif.ip_configuration_mode, IP=pif.ip, netmask=pif.netmask,
            gateway=pif.gateway, managed=True)
        _append(db, "network", ref, "PIFs", pif_ref)
        _append(db, "host", index.host, "PIFs", pif_ref)


def _build_srs(db, scenario, index):
    for spec in scenario.srs:
        ref = db.create("SR", uuid=spec.uuid or None, name_label=spec.name_label,
                        type=spec.type, shared=spec.shared, content_type="user",
                        physical_size=107374182400, physical_utilisation=10737418240,
                        virtual_allocation=10737418240)
        uuid = db.get("SR", ref, "uuid")
        index.srs[uuid] = ref
        index.sr_labels[spec.name_label] = ref
        index.reachable[uuid] = spec.reachable
        pbd = db.create("PBD", host=index.host, SR=ref, device_config=dict(spec.device_config),
                        currently_attached=spec.attached)
        index.pbds[uuid] = pbd
        _append(db, "SR", ref, "PBDs", pbd)
        _append(db, "host", index.host, "PBDs", pbd)


def create_vm(db, index, name_label, rng, networks=(), sr_refs=(), auto_poweron=False,
              order=0, start_delay=0, uuid=None, other_config=None):
    """Create a halted VM with VIFs on ``networks`` (refs) and one VDI+VBD per SR ref."""
    other = dict(other_config or {})
    if auto_poweron:
        other["auto_poweron"] = "true"
    vm = db.create("VM", uuid=uuid, name_label=name_label, power_state="Halted", domid=-1,
                   order=order, start_delay=start_delay, other_config=other,
                   domain_type="hvm", memory_static_max=1073741824,
                   memory_dynamic_max=1073741824, memory_dynamic_min=1073741824,
                   memory_static_min=1073741824, memory_target=1073741824,
                   VCPUs_max=1, VCPUs_at_startup=1, HVM_boot_policy="BIOS order",
                   HVM_boot_params={"order": "cd"}, allowed_operations=VM_ALLOWED_HALTED,
                   user_version=1, hardware_platform_version=2)
    for device, network in enumerate(networks):
        vif = db.create("VIF", device=str(device), network=network, VM=vm, MAC=mac_address(rng),
                        MTU=1500, MAC_autogenerated=True, currently_attached=False)
        _append(db, "VM", vm, "VIFs", vif)
        _append(db, "network", network, "VIFs", vif)
    srs = []
    for position, sr in enumerate(sr_refs):
        vdi = db.create("VDI", name_label="%s disk %d" % (name_label, position), SR=sr,
                        virtual_size=10737418240, physical_utilisation=1073741824,
                        managed=True, location=db.new_uuid())
        vbd = db.create("VBD", VM=vm, VDI=vdi, device="xvd" + "abcdefgh"[position % 8],
                        userdevice=str(position), bootable=position == 0, unpluggable=True,
                        currently_attached=False)
        _append(db, "SR", sr, "VDIs", vdi)
        _append(db, "VDI", vdi, "VBDs", vbd)
        _append(db, "VM", vm, "VBDs", vbd)
        srs.append(db.get("SR", sr, "uuid"))
    index.vm_srs[vm] = srs
    return vm


def _build_vm(db, scenario, index, spec, rng):
    sr_refs = []
    for key in spec.srs:
        sr = scenario.sr_by_ref(key)
        sr_refs.append(index.sr_labels[sr.name_label])
    vm = create_vm(db, index, spec.name_label, rng,
                   networks=[index.networks[n] for n in spec.networks], sr_refs=sr_refs,
                   auto_poweron=spec.auto_poweron, order=spec.order,
                   start_delay=spec.start_delay, uuid=spec.uuid or None,
                   other_config=dict(spec.other_config))
    index.vms[spec.name_label] = vm
    if spec.ha_protected:
        db.update("VM", vm, ha_always_run=True, ha_restart_priority="restart")
    if spec.is_a_template or spec.snapshot_of:
        # A snapshot is also a template in xapi (is_a_template and is_a_snapshot both true);
        # it keeps the original's other_config, auto_poweron included.
        db.update("VM", vm, is_a_template=True, allowed_operations=["clone", "copy", "export"])
    if spec.snapshot_of:
        original = index.vms[spec.snapshot_of]
        db.update("VM", vm, is_a_snapshot=True, snapshot_of=original,
                  snapshot_time="20250101T00:00:00Z")
        db.mutate("VM", original, lambda rec: rec["snapshots"].append(vm))
