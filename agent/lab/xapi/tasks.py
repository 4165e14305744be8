"""XAPI tasks: ``Async.<call>`` returns a task ref at once and runs the call in its own thread.

Follows xen-api v26.1.4:

- ``ocaml/xapi/server_helpers.ml`` ``do_dispatch``: a leading ``Async.`` runs the call in a new
  thread and answers the task ref immediately; parameter count and session are checked first,
  so those errors still come back synchronously.
- ``ocaml/xapi/taskHelper.ml`` ``complete`` / ``failed`` / ``cancel_this``: a finished task gets
  ``progress = 1``, ``finished``, ``allowed_operations = []`` and ``status`` ``success`` (with
  ``result`` = the XML-RPC text of the value, ``Xmlrpc.to_string``), ``failure`` (with
  ``error_info`` = code and params) or ``cancelled`` (the error was ``TASK_CANCELLED``).
- ``ocaml/xapi/xapi_task.ml`` ``cancel``: records ``cancel`` in the task's
  ``current_operations``; the operation notices it at its next cancellation point
  (``TaskHelper.exn_if_cancelling``) and fails with ``TASK_CANCELLED [task]``. ``destroy``:
  a completed task's row goes at once, a pending one is marked and goes when it completes.

A synchronous call that takes an operation lock (VM.start, PBD.plug) also has a task row while
it runs (``Context.make ~task_in_database``), so ``current_operations`` of the VM or SR name a
real task ref, as xapi's do; that row is destroyed when the call returns
(``Context.finally_destroy_context``).
"""

import threading
import time
import xmlrpc.client

from . import wire
from .errors import Disconnect, XapiError

COMPLETED = ("success", "failure", "cancelled")


def _now():
    return xmlrpc.client.DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime()))


def result_text(value):
    """A task's ``result`` field: the value as ocaml-rpc's ``Xmlrpc.to_string`` writes it."""
    out = []
    wire.encode_value(value, out)
    return "".join(out)


class Tasks(object):
    """The task rows of one simulator and the threads running Async calls."""

    def __init__(self, db, host_ref):
        self.db = db
        self.host = host_ref
        self._destroy_when_done = set()

    def create(self, label, description=""):
        """A new pending task row (resident on this host); returns its ref."""
        return self.db.create("task", name_label=label, name_description=description,
                              status="pending", created=_now(), resident_on=self.host,
                              allowed_operations=[], progress=0.0)

    def set_cancellable(self, task):
        """Allow task.cancel (TaskHelper.set_cancellable)."""
        if task and self.db.exists("task", task):
            self.db.update("task", task, allowed_operations=["cancel"])

    def is_cancelling(self, task):
        """Whether task.cancel was asked for (TaskHelper.is_cancelling)."""
        if not task or not self.db.exists("task", task):
            return False
        return "cancel" in self.db.get("task", task, "current_operations").values()

    def exn_if_cancelling(self, task):
        """Raise TASK_CANCELLED [task] if cancel was asked for (TaskHelper.exn_if_cancelling)."""
        if self.is_cancelling(task):
            raise XapiError("TASK_CANCELLED", task)

    def complete(self, task, value):
        """Mark a pending task succeeded with ``value`` (TaskHelper.complete)."""
        with self.db.lock:
            if not self.db.exists("task", task) or self.db.get("task", task, "status") != "pending":
                return
            self.db.update("task", task, allowed_operations=[], finished=_now(), progress=1.0,
                           result=result_text(value), status="success")
            self._maybe_destroy(task)

    def fail(self, task, details):
        """Mark a pending task failed, or cancelled for TASK_CANCELLED (TaskHelper.failed)."""
        with self.db.lock:
            if not self.db.exists("task", task) or self.db.get("task", task, "status") != "pending":
                return
            status = "cancelled" if details and details[0] == "TASK_CANCELLED" else "failure"
            self.db.update("task", task, progress=1.0, error_info=list(details),
                           finished=_now(), allowed_operations=[], status=status)
            self._maybe_destroy(task)

    def _maybe_destroy(self, task):
        if task in self._destroy_when_done:
            self._destroy_when_done.discard(task)
            self.db.delete("task", task)

    def destroy(self, task):
        """task.destroy: gone now if completed, else when it completes (Xapi_task.destroy)."""
        with self.db.lock:
            status = self.db.get("task", task, "status")   # HANDLE_INVALID ["task", ref] first
            if status in COMPLETED:
                self.db.delete("task", task)
            else:
                self._destroy_when_done.add(task)
                self.db.mutate("task", task, lambda rec: rec["current_operations"].__setitem__(
                    task, "destroy"))

    def cancel(self, task, caller_task=""):
        """task.cancel: record the request; the operation acts on it at its next cancellation
        point (Xapi_task.cancel sets current_operations, no check of the status: cancelling a
        finished task changes nothing else, TaskHelper.cancel_this)."""
        with self.db.lock:
            self.db.record("task", task)   # HANDLE_INVALID ["task", ref]
            self.db.update("task", task, current_operations={caller_task or task: "cancel"})

    def run_async(self, task, fn):
        """Run ``fn()`` in a new thread, completing or failing ``task`` with its outcome."""
        def body():
            try:
                value = fn()
            except XapiError as exc:
                self.fail(task, exc.details)
            except Disconnect:
                # xapi died mid-call: the task row stays pending in a DB that is kept; after a
                # real restart xapi's startup cancels such tasks (not modelled further).
                pass
            except Exception as exc:   # INTERNAL_ERROR, as ExnHelper.error_of_exn maps it
                self.fail(task, ["INTERNAL_ERROR", "%s: %s" % (type(exc).__name__, exc)])
            else:
                self.complete(task, "" if value is None else value)
        thread = threading.Thread(target=body, name="xapi-sim-task")
        thread.daemon = True
        thread.start()
        return thread
