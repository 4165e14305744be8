"""Lanes for XAPI actions: one worker thread, connection and queue each, so a slow call never
holds up another; and waiting on an XAPI task with a deadline and a cancel.

The XAPI adapter (agent/adapters/xapi.py) runs host.enable, state publishing, messages and
the autostart list on the ``control`` lane, VM.start on the ``start`` lane and each SR's
PBD.plug on a lane of its own (``plug:<sr uuid>``): a PBD.plug that SM takes 90 s over (a
half-answering NFS server; docs/xapi-fidelity.md) delays neither host.enable, nor the
firewall's VM.start, nor another SR. Within a lane actions run in order, so the agent never has
two plugs of one SR in flight. Each lane has its own XenAPI session: the client is not
thread-safe (agent/adapters/xapi_transport.py).

``await_task`` follows an ``Async.*`` call's task (xen-api ocaml/xapi/xapi_task.ml: status
pending/success/failure/cancelled, ``get_result``, ``get_error_info``, ``cancel``, ``destroy``):
at the deadline it cancels the task and answers the action at once, then keeps the lane until
the task has really ended (bounded), so that no second call of the same kind starts while XAPI
is still running the first. Python 3.6 compatible.
"""

import logging
import queue
import threading
import time

log = logging.getLogger(__name__)

STOP = object()
# Poll a task's status at growing gaps: quick calls are seen quickly, slow ones cost little.
POLL_FIRST = 0.05
POLL_MAX = 1.0


class Answered(Exception):
    """The action was already answered (its deadline passed); the lane posts nothing more."""


class Lane(object):
    """One worker thread with its own connection and queue; ``run(conn, action)`` -> (ActionDone
    or None when already answered, error for the actions queued behind it or None)."""

    def __init__(self, name, connect, run, emit, stopping):
        self.name = name
        self.queue = queue.Queue()
        self._connect = connect      # role -> XapiConnection (registered for abort at stop)
        self._run = run
        self._emit = emit            # posts unless the adapter is stopping
        self._stopping = stopping
        self.thread = threading.Thread(target=self._work, name="xapi-" + name)
        self.thread.daemon = True

    def start(self):
        """Start the lane's thread."""
        self.thread.start()

    def put(self, item):
        """Queue an action (or STOP) for this lane."""
        self.queue.put(item)

    def _work(self):
        from agent.decision.events import ActionDone
        conn = self._connect(self.name)
        try:
            try:
                conn.ensure_login()  # now, so that a first action is not held up by a login
            except Exception as exc:  # noqa: BLE001 -- the first action logs in again and says why
                log.debug("lane %s: login failed (%s), logging in with the first action",
                          self.name, exc)
            while True:
                action = self.queue.get()
                if action is STOP:
                    break
                done, unsent = self._run(conn, action)
                # Actions queued behind this one would meet the same dead connection: fail them
                # unsent, answered after this one (one ActionDone per request, in order).
                behind = self._take_queued() if unsent is not None else []
                if done is not None:
                    self._emit(done)
                for other in behind:
                    if other is STOP:
                        self.queue.put(STOP)
                    else:
                        self._emit(ActionDone(other, False, unsent))
        finally:
            conn.logout(timeout=min(1.0, conn.call_timeout))
            for other in self._take_queued():
                if other is not STOP and not self._stopping.is_set():
                    self._emit(ActionDone(other, False, ["agent stopping"]))

    def _take_queued(self):
        pending = []
        while True:
            try:
                pending.append(self.queue.get_nowait())
            except queue.Empty:
                return pending


def await_task(conn, task, timeout, on_timeout, stopping, linger):
    """The result of XAPI task ``task``; raises XenAPI.Failure with its error info on failure.

    After ``timeout`` seconds: ``task.cancel``, ``on_timeout(error)`` answers the caller, and
    the task is still followed for up to ``linger`` seconds (then Answered is raised; also when
    it ends meanwhile). The task is destroyed once it has ended.
    """
    import XenAPI  # already imported by the connection
    state = {"answered_at": None}
    try:
        return _follow(conn, task, timeout, on_timeout, stopping, linger, state, XenAPI)
    except Answered:
        raise
    except Exception:
        if state["answered_at"] is not None:  # already answered: one ActionDone per action
            log.warning("following XAPI task %s failed after its deadline", task, exc_info=True)
            raise Answered()
        raise


def _follow(conn, task, timeout, on_timeout, stopping, linger, state, XenAPI):
    started = time.monotonic()
    poll = POLL_FIRST
    answered_at = None
    while True:
        status = conn.call("task.get_status", task)
        if status != "pending":
            try:
                if status == "success":
                    result = conn.call("task.get_result", task)
                else:
                    info = conn.call("task.get_error_info", task)
                    result = XenAPI.Failure(list(info or ()) or ["TASK_" + str(status).upper()])
            finally:
                _destroy(conn, task)
            if answered_at is not None:
                log.info("XAPI task %s ended (%s) %.0f s after its deadline", task, status,
                         time.monotonic() - answered_at)
                raise Answered()
            if isinstance(result, Exception):
                raise result
            return result
        now = time.monotonic()
        if answered_at is None and now - started >= timeout:
            try:
                conn.call("task.cancel", task)
            except XenAPI.Failure:
                pass  # not cancellable (many SM operations are not): it runs to its end
            answered_at = state["answered_at"] = now
            on_timeout(["TIMEOUT", "no result within %.0f s; task %s cancelled" % (timeout, task)])
        elif answered_at is not None and now - answered_at >= linger:
            log.warning("XAPI task %s still %s %.0f s after it was cancelled; the lane goes on",
                        task, status, now - answered_at)
            raise Answered()
        if stopping.wait(poll):
            raise Answered()
        poll = min(POLL_MAX, poll * 2)


def _destroy(conn, task):
    """Best effort: xapi keeps finished tasks until destroyed (or garbage-collected)."""
    try:
        conn.call("task.destroy", task)
    except Exception:  # noqa: BLE001 -- a leftover task is harmless
        log.debug("task.destroy %s failed", task)
