"""Checks the network values: binding addresses and networks, route gateways."""

import ipaddress
import re

import attr

from agent.config.messages import _show, dotted
from agent.config.model import MAX_ADDRESSES, MAX_BINDINGS, MAX_LABEL, MAX_VMS, Binding

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def parse_ip(text, what="address"):
    """ipaddress.ip_address / ip_interface of ``text`` with the same verdict on 3.6 and 3.11."""
    if "%" in text:  # scope ids parse on 3.9+ only; the agent names the bridge itself
        raise ValueError("has a scope id (%); leave it out, the agent routes via the bridge")
    head = text.split("/", 1)[0]
    if ":" not in head and any(len(p) > 1 and p.startswith("0") for p in head.split(".")):
        # 3.6 accepts some leading zeros, 3.9.5+ none (CVE-2021-29921): refuse them everywhere
        raise ValueError("has a leading zero in an octet")
    parse = ipaddress.ip_interface if what == "interface" else ipaddress.ip_address
    try:
        return parse(text)
    except ValueError:
        raise ValueError("is not an IP %s" % ("address with a prefix" if what == "interface"
                                              else "address")) from None


def _check_bindings(ck, raws):
    if not raws:
        ck.fail(("binding",), "no [[binding]]; add one: [[binding]] network = \"sspn\" "
                'vms = ["pfsense"] addresses = ["192.0.2.2/24"]')
    ck.capped(("binding",), raws, MAX_BINDINGS, "[[binding]] tables")
    bindings, seen_ip, seen_net = [], {}, {}
    for i, raw in enumerate(raws):
        at = ("binding", i)
        for key in ("network", "vms", "addresses"):
            if raw[key] is None:
                example = {"network": '"sspn"', "vms": '["pfsense"]',
                           "addresses": '["192.0.2.2/24"]'}[key]
                ck.fail(at + (key,), "missing; add %s = %s to this [[binding]]" % (key, example))
        if not raw["network"].strip():
            ck.fail(at + ("network",), "is empty; give the name_label of the internal network")
        if raw["network"] in seen_net:
            ck.fail(at + ("network",), "%s is already bound by binding[%d]; put all its addresses"
                    " in one [[binding]]" % (_show(raw["network"]), seen_net[raw["network"]]))
        seen_net[raw["network"]] = i
        if not raw["vms"]:
            ck.fail(at + ("vms",), 'is empty; list the uplink VM name_labels, e.g. vms = '
                    '["pfsense"]')
        ck.capped(at + ("vms",), raw["vms"], MAX_VMS, "VMs")
        ck.capped(at + ("addresses",), raw["addresses"] or (), MAX_ADDRESSES, "addresses")
        ck.short(at + ("network",), raw["network"], MAX_LABEL)
        for j, vm in enumerate(raw["vms"]):
            if _UUID.match(vm.strip().lower()):
                vm = raw["vms"][j] = vm.strip().lower()  # a uuid pins that VM, whatever its label
            if not vm.strip():
                ck.fail(at + ("vms", j), "is empty; give the name_label of a VM", needle=vm)
            if raw["vms"].index(vm) != j:
                ck.fail(at + ("vms", j), "%s is listed twice; remove one" % _show(vm), needle=vm)
        if not raw["addresses"]:
            ck.fail(at + ("addresses",), 'is empty; give dom0 an address with its prefix, e.g. '
                    'addresses = ["192.0.2.2/24"]')
        ifaces = [_check_address(ck, at + ("addresses", j), text)
                  for j, text in enumerate(raw["addresses"])]
        for j, iface in enumerate(ifaces):
            where = at + ("addresses", j)
            if iface.ip in seen_ip:
                ck.fail(where, "%s is listed twice (also %s); remove one"
                        % (iface.ip, dotted(seen_ip[iface.ip])), needle=raw["addresses"][j])
            seen_ip[iface.ip] = where
            for other in bindings:
                clash = next((o for o in other.addresses if o.version == iface.version
                              and o.network.overlaps(iface.network)), None)
                if clash is not None:
                    ck.fail(where, "%s overlaps %s of network %s; each binding needs its own "
                            "subnet" % (iface, clash, _show(other.network)),
                            needle=raw["addresses"][j])
        binding = Binding(raw["network"], raw["vms"], ifaces)
        gateways = dict((key, _check_gateway(ck, key, raw.get(key), int(key[-1]), [binding],
                                             at=at + (key,)))
                        for key in ("gateway4", "gateway6"))
        bindings.append(attr.evolve(binding, **gateways))
    return bindings


def _check_address(ck, at, text):
    example = "192.0.2.2/24" if ":" not in text else "2001:db8:1::2/64"
    try:
        iface = parse_ip(text, "interface")
    except ValueError as exc:
        ck.fail(at, "%s %s; write it like %s" % (_show(text), exc, example), needle=text)
    ip, full = iface.ip, iface.max_prefixlen
    if "/" not in text or iface.network.prefixlen == full:
        ck.fail(at, "%s has no subnet: dom0 needs the prefix of the firewall's subnet to reach "
                "the gateway; write it like %s" % (_show(text), example), needle=text)
    if iface.network.prefixlen == 0:
        ck.fail(at, "%s has prefix /0, which would send all traffic to the bridge; use the "
                "subnet's prefix, e.g. %s" % (_show(text), example), needle=text)
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        ck.fail(at, "%s is not a unicast host address; use dom0's address on the firewall "
                "subnet, e.g. %s" % (_show(text), example), needle=text)
    if ip.version == 4 and iface.network.prefixlen < 31 and ip in (
            iface.network.network_address, iface.network.broadcast_address):
        ck.fail(at, "%s is the network or broadcast address of %s; pick a host address in it"
                % (ip, iface.network), needle=text)
    return iface


def _check_gateway(ck, key, text, family, bindings, at=None):
    at = at or ("route", key)
    if not text:
        return None
    try:
        gw = parse_ip(text)
    except ValueError as exc:
        ck.fail(at, "%s %s; write it like %s" % (_show(text), exc,
                                                 "192.0.2.1" if family == 4 else "2001:db8:1::1"))
    if gw.version != family:
        ck.fail(at, "%s is an IPv%d address; put it in gateway%d" % (gw, gw.version, gw.version))
    own = [iface for b in bindings for iface in b.addresses if iface.version == family]
    which = "every binding's" if at[0] == "route" else "this binding's"
    if not own:
        ck.fail(at, "%s an IPv%d address, so dom0 cannot reach %s; add an IPv%d address to %s, "
                "or remove %s" % ("no [[binding]] has" if at[0] == "route" else
                                  "this [[binding]] has no", family, gw, family,
                                  "a binding" if at[0] == "route" else "it", key))
    if gw.is_unspecified or gw.is_multicast or gw.is_loopback:
        ck.fail(at, "%s is not a unicast address; give the firewall's address" % gw)
    if any(gw == iface.ip for iface in own):
        ck.fail(at, "%s is dom0's own address; give the firewall's address on that subnet" % gw)
    if family == 6 and gw.is_link_local:
        return gw  # fe80::/10 is on every v6 link; binding_for_gateway picks the first v6 one
    holders = [iface for iface in own if gw in iface.network]
    if not holders:
        ck.fail(at, "%s is outside %s subnet (%s); use the firewall's address in "
                "one of them, or fix the address prefix" % (gw, which, ", ".join(
                    sorted(set(str(i.network) for i in own)))))
    net = holders[0].network
    if family == 4 and net.prefixlen < 31 and gw in (net.network_address, net.broadcast_address):
        ck.fail(at, "%s is the network or broadcast address of %s; give the firewall's address"
                % (gw, net))
    return gw
