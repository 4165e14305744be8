"""A model of the predecessor's observable behaviour (vif-ip-binder, fb08084), for the benches.

Not the predecessor itself (Python 2, a config file with a root password): what it does, in
order, with the same clients -- the XenAPI client over the local socket and forked ``ip``
commands -- so that a bench can run it in dom0 beside the agent, round by round:

* once at process start, on the management bridge (``--management-bridge``): ``ip addr del``
  of the address with its prefix, then ``ip addr add`` of it as a /32 (/128), codes unchecked;
* log in; on any failure wait 3 s and try again, forever;
* read host.get_enabled, find the firewall VM by name and its VIF on the SSPN by label;
* ``event.from(["VM"], "", 30)`` and on, from token "" (an already running VM is seen);
* on an add/mod event of that VM while it runs, for its VIF's bridge: ``ip addr show dev``,
  and when no IPv4 address is there ``ip addr add``, ``ip route del default``, ``ip route add
  default via <gateway>`` (return codes unchecked);
* only when the address had to be added: per SR, serially, one ICMP echo with a 5 s
  timeout, up to 30 times, and on the first answer ``PBD.plug`` of each unattached PBD;
* a transport error or a XAPI failure drops the session and starts over with the login.

It prints one JSON line per step ({"t": time.monotonic(), "what": ...}; CLOCK_MONOTONIC is
shared by every process), which the bench reads. ``--replug`` skips the VM part and runs the
SR step at once, as if the address had just been added (a generous reading: the predecessor
itself never replugs storage that comes back later).

    ip netns exec <dom0> python bench/predecessor_model.py --socket PATH --vm pfsense \
        --network sspn --address 192.0.2.2/24 --gateway 192.0.2.1 --sr UUID=198.51.100.10
"""

import argparse
import json
import re
import socket
import subprocess
import sys
import time
import xmlrpc.client

LOGIN_RETRY = 3.0
PING_TIMEOUT = 5.0
PING_TRIES = 30
EVENT_TIMEOUT = 30.0


class LoginFailed(Exception):
    """The login did not succeed (XAPI down, refused)."""


def say(what, **extra):
    extra.update(t=time.monotonic(), what=what)
    sys.stdout.write(json.dumps(extra) + "\n")
    sys.stdout.flush()


def ip(*args):
    """Fork ``ip`` as the predecessor did (spopen + communicate), output text, codes unchecked."""
    proc = subprocess.Popen(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    return proc.communicate()[0]


def ping(target, timeout):
    import icmplib
    try:
        return icmplib.ping(target, count=1, timeout=timeout, privileged=True).is_alive
    except Exception:   # the predecessor swallowed send errors: a failed try, at once
        return False


def session_for(path):
    import XenAPI
    return XenAPI.Session("http://%s/" % path.replace("/", "_"), transport=XenAPI.UDSTransport())


def replug(x, srs):
    """The SR step: serial pings, PBD.plug on the first answer."""
    for sr_uuid, target in srs:
        for _ in range(PING_TRIES):
            if ping(target, PING_TIMEOUT):
                say("storage_answered", sr=sr_uuid)
                sr = x.SR.get_by_uuid(sr_uuid)
                for pbd in x.SR.get_PBDs(sr):
                    if not x.PBD.get_currently_attached(pbd):
                        x.PBD.plug(pbd)
                        say("plugged", sr=sr_uuid)
                break
        else:
            say("gave_up", sr=sr_uuid)


def rebind(bridge, address, gateway):
    """True when the address had to be added (then the default route was replaced)."""
    if re.search(r"inet \d+\.\d+\.\d+\.\d+/", ip("addr", "show", "dev", bridge)):
        return False
    ip("addr", "add", address, "dev", bridge)
    ip("route", "del", "default")
    ip("route", "add", "default", "via", gateway)
    say("bound", bridge=bridge)
    return True


def management_mirror(bridge, address):
    """The start-up step on the management bridge: the address off with its prefix, on as a host
    address (the predecessor's own comment: "the same ip we use to reach the dom0")."""
    host = address.split("/")[0]
    ip("addr", "del", address, "dev", bridge)
    ip("addr", "add", "%s/%d" % (host, 128 if ":" in host else 32), "dev", bridge)


def one_session(args, srs):
    session = session_for(args.socket)
    try:
        session.xenapi.login_with_password("root", "", "1.0", "predecessor-model")
    except Exception as e:
        raise LoginFailed(str(e))
    say("logged_in")
    x = session.xenapi
    try:
        if args.replug:
            replug(x, srs)
            return True
        host = x.host.get_all()[0]
        x.host.get_enabled(host)
        vm = x.VM.get_by_name_label(args.vm)[0]
        bridges = []
        for vif in x.VM.get_VIFs(vm):
            net = x.VIF.get_network(vif)
            if x.network.get_name_label(net) == args.network:
                bridges.append(net)
        token = ""
        first = True
        while True:
            if first:
                say("event_from")
                first = False
            result = getattr(x.event, "from")(["VM"], token, EVENT_TIMEOUT)
            token = result["token"]
            for event in result["events"]:
                if event.get("ref") != vm or event.get("operation") not in ("add", "mod"):
                    continue
                if x.VM.get_power_state(vm) != "Running":
                    continue
                for net in bridges:
                    if rebind(x.network.get_bridge(net), args.address, args.gateway):
                        replug(x, srs)
    finally:
        try:
            session.xenapi.session.logout()
        except Exception:
            pass


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True)
    p.add_argument("--vm", default="pfsense")
    p.add_argument("--network", default="sspn")
    p.add_argument("--address", default="192.0.2.2/24")
    p.add_argument("--gateway", default="192.0.2.1")
    p.add_argument("--sr", action="append", default=[], metavar="UUID=TARGET")
    p.add_argument("--replug", action="store_true")
    p.add_argument("--management-bridge", default="", help="its brName; none: the step is skipped")
    args = p.parse_args()
    srs = [tuple(s.split("=", 1)) for s in args.sr]
    say("started")
    if args.management_bridge:
        management_mirror(args.management_bridge, args.address)
    while True:
        try:
            if one_session(args, srs):
                return
        except KeyboardInterrupt:
            return
        except LoginFailed as e:     # 3 s between login attempts, forever
            say("login_failed", error=str(e)[:100])
            time.sleep(LOGIN_RETRY)
        except (socket.error, OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError) as e:
            say("lost", error=str(e)[:100])    # drop the session, log in again at once
        except Exception as e:       # XenAPI.Failure: the session ends, the loop starts over
            say("failure", error=str(e)[:100])


if __name__ == "__main__":
    main()
