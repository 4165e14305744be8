"""The XAPI simulator: a scenario's objects served to the unchanged XenAPI client.

Typical use::

    sim = Simulator("/tmp/sspn-lab/xapi", port=0).start()
    session = sim.client()                      # XenAPI.Session over the Unix socket
    session.xenapi.login_with_password("root", "", "1.0", "lab")
    sim.vm_start("pfsense"); sim.toolstack_restart(2.0); sim.stop()
"""

import logging
import os
import random
import threading
import time
import uuid as uuidlib

from . import build, localdb, wire
from .api import Api, Context
from .control import Controls, dispatch_control
from .db import Database
from .errors import Disconnect, XapiError
from .member import PoolMember
from .plug import Plugger
from .power import Power
from .scenario import Scenario, load_scenario
from .server import Frontend, check_socket_path
from .startup import Startup
from .tasks import Tasks

LOG = logging.getLogger(__name__)

# Durations and switches of xapi's and SM's behaviour (see docs/xapi-fidelity.md). The defaults
# keep tests fast; XAPI_TIMINGS are the values of a real host. Change them with the
# ``settings`` argument, a scenario's [simulator] table, or sim.set_setting(name, value).
DEFAULT_SETTINGS = {
    "vm_start_seconds": 0.0,       # VM.start: domain build until Running (current_operations holds it)
    "plug_seconds": 0.0,           # PBD.plug that succeeds: SM attach time
    "plug_connect_timeout": 0.0,   # PBD.plug to a target that does not answer (SM: 5 s) -> 108
    "plug_stall_seconds": 0.0,     # PBD.plug whose NFS mount hangs (90 s and more) -> 73
    "autostart_vms": False,        # run xapi-autostart-vms after start-up (xapi-domains.service)
    "init_completes": True,        # False: "init complete" never comes (mgmt bridge without a port)
    "init_wait_seconds": 300.0,    # xapi-wait-init-complete's timeout before xapi-domains runs
    "startup_plugs": False,        # xapi plugs unattached PBDs at start-up (create_storage.ml)
    "sr_stat_interval": 0.0,       # periodic SR.stat (xapi: 120 s); 0 = off
    "bridge_after_halted": 0.0,    # > 0: the bridge goes this long after the Halted event
    "reboot_keeps_bridge": False,  # a VM reboot keeps its bridge (only the vif is swapped)
    "empty_db_seconds": 0.0,       # after (re)start, calls answer from an empty DB this long
}
XAPI_TIMINGS = {"plug_connect_timeout": 5.0, "plug_stall_seconds": 90.0,
                "init_wait_seconds": 300.0, "sr_stat_interval": 120.0}


class Simulator(Startup, PoolMember, Controls):
    """One simulated single-host pool listening on a Unix socket (and optionally TCP).

    ``scenario`` is a Scenario, a TOML path, or None for the default scenario. ``port`` None
    means no TCP listener, 0 a free port (see ``.port`` after ``start()``). ``clock`` is the
    monotonic clock used for boot phases and the timeline. ``seed`` makes refs, uuids and MACs
    reproducible. ``event_from_delay`` is xapi's 50 ms batching delay; ``auth_failure_delay``
    the pause before SESSION_AUTHENTICATION_FAILED (xapi: 5 s; default 0 to keep tests fast).
    ``settings`` overrides DEFAULT_SETTINGS (after the scenario's [simulator] table).
    """

    def __init__(self, socket_path, port=None, scenario=None, clock=time.monotonic, seed=None,
                 event_from_delay=0.05, auth_failure_delay=0.0, local_db_path=None,
                 settings=None):
        check_socket_path(socket_path)
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        self.scenario = scenario
        self.socket_path = socket_path
        self.local_db_path = local_db_path or os.path.join(
            os.path.dirname(os.path.abspath(socket_path)), "local.db")
        self.clock = clock
        self.rng = random.Random(seed)
        self.event_from_delay = float(event_from_delay)
        self.auth_failure_delay = float(auth_failure_delay)
        self.latency = 0.0
        # fn(device_config dict) -> bool or an sm.OUTCOMES string (e.g. sm.TcpProbe(netns=...))
        self.storage_probe = None
        self.settings = dict(DEFAULT_SETTINGS)
        self.settings.update(dict(scenario.settings))
        for name, value in dict(settings or {}).items():
            self.set_setting(name, value)
        self.local_db = {}
        self.db = Database(self._new_uuid)
        self.index = build.build(self.db, scenario, self.rng, self.local_db)
        self.power = Power(self.db, self.index, clock)
        self.power.settings = self.settings
        self.tasks = Tasks(self.db, self.index.host)
        self.plugger = Plugger(self)
        self.api = Api(self)
        self._init_startup()
        self._init_member()
        self.frontend = Frontend(socket_path, port, self._handle)
        self._control_lock = threading.RLock()
        self._plug_failures = {}
        self._garbage_left = 0
        self._garbage_sent = 0
        self._outage = threading.Event()
        self._restart_timer = None
        self._boot_timer = None
        self._booting_until = 0.0
        self._started = False
        self._stopped = False

    # --- life cycle ------------------------------------------------------------------------

    def start(self):
        """Write local.db, report initially running VMs to the hooks, listen; returns self."""
        localdb.write(self.local_db_path, self.local_db)
        for name, ref in self.index.vms.items():
            spec = next(vm for vm in self.scenario.vms if vm.name_label == name)
            if spec.power_state in ("Running", "Paused"):
                with self.power.lock:
                    if self.db.get("VM", ref, "power_state") == "Halted":
                        self.power.start(ref, paused=spec.power_state == "Paused")
        self._start_boot(self.scenario.host.boot_seconds, first=True)
        self.frontend.start()
        self._started = True
        return self

    def stop(self):
        """Stop listening, cancel timers and remove the socket file (local.db stays)."""
        with self._control_lock:
            self._stopped = True
            for timer in (self._restart_timer, self._boot_timer):
                if timer is not None:
                    timer.cancel()
            self._restart_timer = self._boot_timer = None
            self._stop_startup_timers()
            self._outage.set()
        self.frontend.stop(remove_socket=True)
        self.db.destroy_all_sessions()

    def __enter__(self):
        return self.start() if not self._started else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        """The TCP port (None when there is no TCP listener)."""
        return self.frontend.port

    @property
    def is_up(self):
        """Whether the listeners accept connections (False during a toolstack restart)."""
        return self.frontend.up

    @property
    def unix_url(self):
        """The XenAPI URL of the Unix socket: every '/' of the path becomes '_' (XenAPI.py ``UDSHTTPConnection``)."""
        return "http://%s/" % self.socket_path.replace("/", "_")

    @property
    def tcp_url(self):
        """``http://127.0.0.1:PORT/``, or None without a TCP listener."""
        return None if self.port is None else "http://127.0.0.1:%d/" % self.port

    def client(self, tcp=False):
        """A new (not logged in) XenAPI.Session to this simulator."""
        import XenAPI
        if tcp:
            return XenAPI.Session(self.tcp_url)
        return XenAPI.Session(self.unix_url, transport=XenAPI.UDSTransport())

    def add_vm_power_hook(self, fn):
        """Call ``fn(vm_name, vm_record, domid, bridges, old_state, new_state)`` on every start and
        stop, synchronously, after the domid is chosen and before the new state is committed."""
        self.power.hooks.append(fn)

    def remove_vm_power_hook(self, fn):
        """Stop calling a hook added with add_vm_power_hook."""
        self.power.hooks.remove(fn)

    # --- request handling ------------------------------------------------------------------

    def _handle(self, body, transport):
        """Server callback: one request body in, (response bytes, after-actions) out."""
        ctx = Context(transport)
        try:
            method, params = wire.parse_call(body)
        except ValueError as exc:
            return wire.response(wire.failure(["INTERNAL_ERROR", str(exc)])), []
        return wire.response(self.dispatch(method, params, ctx)), ctx.after

    def dispatch(self, method, params, ctx=None):
        """Answer one call as the wire would (the Status envelope); may raise Disconnect."""
        ctx = ctx or Context("unix")
        if method.startswith("sim.") or method.startswith("sim_"):
            return dispatch_control(self, "sim." + method[4:], params, ctx)
        if self.latency > 0:
            self.wait_or_disconnect(self.latency)
        return self.api.call(method, params, ctx)

    @property
    def outage(self):
        """Whether xapi is down (a toolstack restart in progress)."""
        return self._outage.is_set()

    def wait_or_disconnect(self, seconds):
        """Sleep ``seconds``; raise Disconnect if a toolstack restart happens meanwhile."""
        if self._outage.wait(seconds):
            raise Disconnect()

    # --- state used by the API -------------------------------------------------------------

    def _new_uuid(self):
        return str(uuidlib.UUID(int=self.rng.getrandbits(128), version=4))

    def put_local_db(self, key, value):
        """Set a Localdb key and rewrite local.db, as Localdb.put does."""
        with self._control_lock:
            if self.local_db.get(key) != value:
                self.local_db[key] = value
                localdb.write(self.local_db_path, self.local_db)

    def forget_vm(self, vm_ref):
        """Drop a destroyed VM from the simulator's index."""
        for name, ref in list(self.index.vms.items()):
            if ref == vm_ref:
                del self.index.vms[name]
        self.index.vm_srs.pop(vm_ref, None)
        if vm_ref in self.index.extra_vms:
            self.index.extra_vms.remove(vm_ref)

    def assert_storage_reachable(self, sr_uuid, device_config):
        """SM's attach of this SR now: waits as SM would, raises its SR_BACKEND_FAILURE_<n>
        (plug.py, sm.py); sim.plug_failures forces the next plugs to fail with 108."""
        with self._control_lock:
            failures = self._plug_failures.get(sr_uuid, 0)
            if failures > 0:
                self._plug_failures[sr_uuid] = failures - 1
        if failures > 0:
            # NFSSR.attach -> util._testHost(server, 2049, 'NFSTarget') -> SM error 108, mapped by
            # sm_exec.ml to [SR_BACKEND_FAILURE_<code>, "", description, stderr].
            raise XapiError("SR_BACKEND_FAILURE_108", "",
                            "Unable to detect an NFS service on this target.", "")
        self.plugger.attach(sr_uuid, device_config)

    def set_setting(self, name, value):
        """Change one of DEFAULT_SETTINGS (INVALID_VALUE for an unknown name or bad value)."""
        if name not in DEFAULT_SETTINGS:
            raise XapiError("INVALID_VALUE", "setting", name, "known: " + ", ".join(
                sorted(DEFAULT_SETTINGS)))
        default = DEFAULT_SETTINGS[name]
        if isinstance(default, bool):
            value = value if isinstance(value, bool) else str(value).lower() == "true"
        else:
            value = float(value)
        self.settings[name] = value
        return value
