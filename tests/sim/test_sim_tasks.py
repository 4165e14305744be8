"""Async calls and tasks (server_helpers.ml do_dispatch, taskHelper.ml), VM.start's operation
lock and xapi-autostart-vms (scripts/xapi-autostart-vms), over the real XenAPI client."""

import threading

import pytest
import XenAPI

from agent.lab.xapi.scenario import parse_scenario

NFS_SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"


def _task_done(x, task, wait_until):
    wait_until(lambda: x.task.get_status(task) != "pending", what="task completion")
    return x.task.get_status(task)


def test_async_start_returns_a_task_that_succeeds(sim, xenapi_session, wait_until):
    """Async.VM.start answers a task ref at once; the task ends success with an empty result."""
    x = xenapi_session.xenapi
    vm = x.VM.get_by_name_label("pfsense")[0]
    task = x.Async.VM.start(vm, False, False)
    assert task.startswith("OpaqueRef:")
    assert _task_done(x, task, wait_until) == "success"
    record = x.task.get_record(task)
    assert record["result"] == "<value></value>" and record["progress"] == 1.0
    assert x.VM.get_power_state(vm) == "Running"
    x.task.destroy(task)
    with pytest.raises(XenAPI.Failure) as failure:
        x.task.get_status(task)
    assert failure.value.details == ["HANDLE_INVALID", "task", task]


def test_async_failure_lands_in_error_info(sim, xenapi_session, wait_until):
    """A failing Async call: status failure, error_info = the error's code and params."""
    x = xenapi_session.xenapi
    vm = x.VM.get_by_name_label("pfsense")[0]
    x.VM.start(vm, False, False)
    task = x.Async.VM.start(vm, False, False)
    assert _task_done(x, task, wait_until) == "failure"
    assert x.task.get_error_info(task) == ["VM_BAD_POWER_STATE", vm, "halted", "running"]


def test_concurrent_start_waits_for_the_other_then_bad_power_state(
        sim_factory, sim_login, background, wait_until):
    """While a start is in progress the VM's current_operations holds it; a second VM.start
    does not get OTHER_OPERATION_IN_PROGRESS (with_vm_operation retries it): it waits for the
    first to finish and then fails with VM_BAD_POWER_STATE."""
    sim = sim_factory(settings={"vm_start_seconds": 0.6})
    x = sim_login(sim).xenapi
    other = sim_login(sim).xenapi
    vm = x.VM.get_by_name_label("pfsense")[0]
    task = x.Async.VM.start(vm, False, False)
    wait_until(lambda: x.VM.get_current_operations(vm), what="start marked on the VM")
    assert x.VM.get_current_operations(vm) == {task: "start"}
    assert x.VM.get_power_state(vm) == "Halted"
    second = background(other.VM.start, vm, False, False)
    assert _task_done(x, task, wait_until) == "success"
    second.join()
    assert isinstance(second.error, XenAPI.Failure)
    assert second.error.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    assert x.VM.get_current_operations(vm) == {}


def test_a_waiting_start_can_be_cancelled(sim_factory, sim_login, wait_until):
    """A start waiting for another operation's lock is cancellable: TASK_CANCELLED, status
    cancelled (Helpers.retry checks TaskHelper.is_cancelling)."""
    sim = sim_factory(settings={"vm_start_seconds": 2.0})
    x = sim_login(sim).xenapi
    vm = x.VM.get_by_name_label("pfsense")[0]
    first = x.Async.VM.start(vm, False, False)
    wait_until(lambda: x.VM.get_current_operations(vm), what="first start marked")
    waiting = x.Async.VM.start(vm, False, False)
    wait_until(lambda: x.task.get_allowed_operations(waiting) == ["cancel"], what="cancellable")
    x.task.cancel(waiting)
    assert _task_done(x, waiting, wait_until) == "cancelled"
    assert x.task.get_error_info(waiting) == ["TASK_CANCELLED", waiting]
    assert _task_done(x, first, wait_until) == "success"


def test_autostart_starts_auto_poweron_vms_one_by_one_ignoring_order(sim_factory, sim_login):
    """xapi-autostart-vms: pool auto_poweron=true -> every halted auto_poweron VM that is not a
    template or snapshot is started, one at a time, in DB order, errors ignored."""
    scenario = parse_scenario({
        "pool": {"auto_poweron": True},
        "vm": [{"name_label": "late", "auto_poweron": True, "order": 9},
               {"name_label": "early", "auto_poweron": True, "order": 0},
               {"name_label": "manual"}]})
    sim = sim_factory(scenario=scenario)
    outcomes = sim.run_autostart_vms()
    x = sim_login(sim).xenapi
    names = [x.VM.get_name_label(vm) for vm, _ in outcomes]
    assert names == ["late", "early"]
    assert [o for _, o in outcomes] == ["success", "success"]
    assert x.VM.get_power_state(x.VM.get_by_name_label("manual")[0]) == "Halted"
    starts = [e["vm"] for e in sim.state()["timeline"] if e["event"] == "running"]
    assert starts == ["late", "early"]


def test_autostart_does_nothing_without_pool_auto_poweron(sim_factory):
    """The script only acts when the pool has other_config:auto_poweron=true."""
    sim = sim_factory(scenario=parse_scenario(
        {"pool": {"auto_poweron": False}, "vm": [{"name_label": "a", "auto_poweron": True}]}))
    assert sim.run_autostart_vms() == []
    assert sim.state()["vms"]["a"]["power_state"] == "Halted"


def test_autostart_after_init_wait_gives_up_races_a_client(sim_factory, sim_login, wait_until):
    """init never completes: xapi-autostart-vms runs when the init wait gives up; a client
    starting the same VM meanwhile waits for that start, then gets VM_BAD_POWER_STATE."""
    scenario = parse_scenario({"pool": {"auto_poweron": True},
                               "vm": [{"name_label": "fw", "auto_poweron": True}],
                               "simulator": {"autostart_vms": True, "init_completes": False,
                                             "init_wait_seconds": 0.3, "vm_start_seconds": 0.5}})
    sim = sim_factory(scenario=scenario)
    x = sim_login(sim).xenapi
    vm = x.VM.get_by_name_label("fw")[0]
    wait_until(lambda: x.VM.get_current_operations(vm), what="autostart's start in progress")
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.start(vm, False, False)   # waits for autostart's start, then:
    assert failure.value.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    wait_until(lambda: sim.autostart_runs == 1, what="autostart finished")
    assert x.VM.get_power_state(vm) == "Running"


def test_autostart_runs_after_start_up_when_init_completes(sim_factory, wait_until):
    """autostart_vms with init completing: the script runs right after start-up."""
    scenario = parse_scenario({"pool": {"auto_poweron": True},
                               "vm": [{"name_label": "fw", "auto_poweron": True}],
                               "simulator": {"autostart_vms": True}})
    sim = sim_factory(scenario=scenario)
    wait_until(lambda: sim.autostart_runs == 1, what="autostart run")
    assert sim.state()["vms"]["fw"]["power_state"] == "Running"


def test_task_cancel_of_a_finished_task_changes_nothing(sim, xenapi_session, wait_until):
    """task.cancel on a completed task is accepted and leaves its status (cancel_this)."""
    x = xenapi_session.xenapi
    task = x.Async.VM.start(x.VM.get_by_name_label("pfsense")[0], False, False)
    assert _task_done(x, task, wait_until) == "success"
    x.task.cancel(task)
    assert x.task.get_status(task) == "success"


def test_task_events_are_sent(sim, xenapi_session, wait_until):
    """task is an event class: an Async call's task shows up as add then mod events."""
    x = xenapi_session.xenapi
    token = x.event_from(["task"], "", 0.0)["token"]
    task = x.Async.VM.start(x.VM.get_by_name_label("pfsense")[0], False, False)
    seen = threading.Event()
    ops = []
    for _ in range(20):
        reply = x.event_from(["task"], token, 1.0)
        token = reply["token"]
        for event in reply["events"]:
            if event["ref"] == task:
                ops.append((event["operation"], event["snapshot"]["status"]))
        if ops and ops[-1][1] == "success":
            seen.set()
            break
    assert seen.is_set(), ops


def test_autostart_runs_once_per_system_boot(sim_factory, wait_until):
    """xapi-domains.service is a oneshot of the boot: a toolstack restart does not rerun it."""
    scenario = parse_scenario({"pool": {"auto_poweron": True},
                               "vm": [{"name_label": "fw", "auto_poweron": True}],
                               "simulator": {"autostart_vms": True}})
    sim = sim_factory(scenario=scenario)
    wait_until(lambda: sim.autostart_runs == 1, what="autostart run")
    sim.vm_stop("fw")
    sim.toolstack_restart(0.05)
    wait_until(lambda: sim.is_up and sim.state()["startup_complete"], what="xapi back")
    assert sim.autostart_runs == 1
    assert sim.state()["vms"]["fw"]["power_state"] == "Halted"
