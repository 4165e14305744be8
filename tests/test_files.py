"""What the agent leaves on disk survives a SIGKILL: the trace's torn line, autostart once per boot."""

import json

from agent import status, trace


def test_a_torn_trace_line_is_skipped_and_the_next_run_starts_a_new_line(tmp_path):
    path = str(tmp_path / "trace.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({"n": 1}) + "\n" + '{"n": 2, "cut sho')   # killed mid-write
    assert trace.read(path) == [{"n": 1}]
    trace.TraceFile(path).append({"n": 3})
    assert trace.read(path) == [{"n": 1}, {"n": 3}]


def test_a_restarted_agent_takes_over_only_from_this_boot(tmp_path):
    path = str(tmp_path / "status.json")
    nothing = {"autostart_done": False, "host_fixed": False}
    assert status.carried_over(path) == nothing                           # no file
    status.write_atomic(path, {"autostart_done": True, "host": {"fixed_by_agent": True},
                               "boot_id": status.boot_id()})
    assert status.carried_over(path) == {"autostart_done": True, "host_fixed": True}
    status.write_atomic(path, {"autostart_done": True, "host": {"fixed_by_agent": False},
                               "boot_id": status.boot_id()})
    assert status.carried_over(path) == {"autostart_done": True, "host_fixed": False}
    status.write_atomic(path, {"autostart_done": False, "host": {"fixed_by_agent": False,
                                                                  "enable_sent": True},
                               "boot_id": status.boot_id()})   # killed before host.enable returned
    assert status.carried_over(path) == {"autostart_done": False, "host_fixed": True}
    status.write_atomic(path, {"autostart_done": True, "host": {"fixed_by_agent": True},
                               "boot_id": "an-earlier-boot"})
    assert status.carried_over(path) == nothing
