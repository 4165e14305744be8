"""PBD.plug as xapi and SM do it: SR marking, one SM attach per SR at a time, SM's checks.

Follows xen-api v26.1.4 and xcp-ng/sm:

- ``message_forwarding.ml`` ``PBD.plug``: ``SR.with_sr_marked ~op:`plug`` adds
  ``{task: "plug"}`` to the SR's ``current_operations`` for the whole call. ``plug`` is the one
  SR operation that is *safe to parallelise* (``xapi_sr_operations.ml``
  ``check_parallel_ops``), so a second plug of the same SR is admitted, not refused with
  OTHER_OPERATION_IN_PROGRESS; against any other SR operation in progress xapi retries the
  lock for up to 2 h (``Helpers.retry_with_global_lock``, ``Repeat_with_uniform_backoff``
  ``standard``) rather than fail.
- ``storage_smapiv1_wrapper.ml`` ``SR.attach``: ``with_sr sr`` serialises attaches of one SR;
  an SR already attached by the first plug makes the second one return at once
  ("Operation is idempotent"); a failed first attach leaves the second to run SM again.
- ``xapi_pbd.ml`` ``plug``: an attached PBD is a no-op; there is no host-enabled check, so a
  plug on a disabled host is allowed; after SM's attach ``currently_attached`` is set. Then
  (master PBD) ``message_forwarding.ml`` runs the initial SR scan / ``SR.stat``, which updates
  the SR's sizes: the SR gets a ``mod`` event after every plug.
- SM's checks, codes and durations: see ``sm.py``. Cancelling the plug's task does not stop
  SM's attach: SMAPIv1 runs it as a subprocess, and ``Storage_access.task_cancel`` only
  cancels storage tasks of its own (not verified against a running host).

The durations are simulator settings (``Simulator.settings``): ``plug_connect_timeout`` (SM:
5 s) for a target that does not answer, ``plug_stall_seconds`` for a mount that hangs (a
half-answering NAS; 90 s and more, not measured), ``plug_seconds`` for a plug that succeeds.
"""

import collections
import threading

from . import sm
from .errors import XapiError


class Plugger(object):
    """Runs PBD.plug for one simulator; counts plugs per SR for tests (``in_flight``)."""

    def __init__(self, sim):
        self.sim = sim
        self.db = sim.db
        self._lock = threading.Lock()
        self._sr_locks = collections.defaultdict(threading.Lock)
        self.in_flight = collections.Counter()       # SR uuid -> plugs inside xapi now
        self.most_in_flight = collections.Counter()  # SR uuid -> the most seen at once
        self.started = collections.Counter()         # SR uuid -> PBD.plug calls that did work

    def plug(self, pbd, task):
        """PBD.plug(pbd); returns "" or raises the SM failure."""
        record = self.db.record("PBD", pbd)      # HANDLE_INVALID ["PBD", ref]
        if record["currently_attached"]:
            return ""
        sr = record["SR"]
        sr_uuid = self.db.get("SR", sr, "uuid")
        task = task or self.db.new_ref()
        # Helpers.retry (taking the SR lock) marks the task cancellable; nothing later checks.
        self.sim.tasks.set_cancellable(task)
        self.db.mutate("SR", sr, lambda rec: rec["current_operations"].__setitem__(task, "plug"))
        with self._lock:
            self.in_flight[sr_uuid] += 1
            self.started[sr_uuid] += 1
            self.most_in_flight[sr_uuid] = max(self.most_in_flight[sr_uuid],
                                               self.in_flight[sr_uuid])
        try:
            with self._sr_locks[sr_uuid]:
                if self.db.get("PBD", pbd, "currently_attached"):
                    return ""   # the other plug attached it: idempotent
                self.sim.assert_storage_reachable(sr_uuid, record["device_config"])
                self.db.update("PBD", pbd, currently_attached=True)
            self.sim.sr_stat(sr)
            return ""
        finally:
            with self._lock:
                self.in_flight[sr_uuid] -= 1
            if self.db.exists("SR", sr):
                self.db.mutate("SR", sr, lambda rec: rec["current_operations"].pop(task, None))

    def outcome(self, sr_uuid, device_config):
        """(outcome, already waited) for an SM attach of this SR now (see sm.OUTCOMES)."""
        sim = self.sim
        state = sim.index.storage_state.get(sr_uuid)
        if state:
            return state, False
        probe = sim.storage_probe
        if probe is None:
            return ("up" if sim.index.reachable.get(sr_uuid, True) else "down"), False
        answer = probe(dict(device_config))
        if isinstance(answer, bool):
            return ("up" if answer else "down"), False
        if answer not in sm.OUTCOMES:
            raise XapiError("INTERNAL_ERROR", "storage_probe answered %r; expected a bool or "
                            "one of %s" % (answer, ", ".join(sm.OUTCOMES)))
        return answer, answer == "down"   # a real TCP probe has already waited its timeout

    def attach(self, sr_uuid, device_config):
        """SM's SR.attach: wait as SM would, then raise its failure (or return)."""
        sim = self.sim
        outcome, waited = self.outcome(sr_uuid, device_config)
        settings = sim.settings
        if outcome == "down" and not waited:
            seconds = settings["plug_connect_timeout"]
        elif outcome == "stalled":
            seconds = settings["plug_stall_seconds"]
        elif outcome == "up":
            seconds = settings["plug_seconds"]
        else:
            seconds = 0.0   # refused, unresolvable, no-rpcbind: SM fails at once
        if float(seconds) > 0:
            sim.wait_or_disconnect(float(seconds))
        sr_type = self.db.get("SR", sim.index.srs[sr_uuid], "type") \
            if sr_uuid in sim.index.srs else "nfs"
        kind = sm.service_of(device_config, sr_type)[0]
        failure = sm.failure_of(kind, outcome)
        if failure is not None:
            code, description = failure
            # sm_exec.ml: an SM error becomes [SR_BACKEND_FAILURE_<code>, "", description, stderr]
            raise XapiError("SR_BACKEND_FAILURE_%d" % code, "", description, "")
