"""What the agent leaves on disk survives a SIGKILL: the trace's torn line, autostart once per boot."""

import json

from agent.report import status, trace


def test_a_torn_trace_line_is_skipped_and_the_next_run_starts_a_new_line(tmp_path):
    path = str(tmp_path / "trace.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({"n": 1}) + "\n" + '{"n": 2, "cut sho')   # killed mid-write
    assert trace.read(path) == [{"n": 1}]
    trace.TraceFile(path).append({"n": 3})
    assert trace.read(path) == [{"n": 1}, {"n": 3}]


def test_a_restarted_agent_takes_over_only_from_this_boot(tmp_path):
    path = str(tmp_path / "status.json")
    nothing = {"autostart_done": False, "host_fixed": False, "uplinks_seen": False}
    assert status.carried_over(path) == nothing                           # no file

    def carried(**written):
        written.setdefault("boot_id", status.boot_id())
        status.write_atomic(path, written)
        return status.carried_over(path)

    assert carried(autostart_done=True, host={"fixed_by_agent": True}, uplinks_seen=True) == \
        {"autostart_done": True, "host_fixed": True, "uplinks_seen": True}
    assert carried(autostart_done=True, host={"fixed_by_agent": False}) == \
        {"autostart_done": True, "host_fixed": False, "uplinks_seen": False}
    # killed before host.enable returned: the intent was written first
    assert carried(host={"fixed_by_agent": False, "enable_sent": True}) == \
        {"autostart_done": False, "host_fixed": True, "uplinks_seen": False}
    assert carried(autostart_done=True, host={"fixed_by_agent": True}, uplinks_seen=True,
                   boot_id="an-earlier-boot") == nothing


def test_a_new_agent_removes_the_status_temp_files_of_killed_agents(tmp_path):
    import logging
    import os
    import subprocess
    import sys
    from agent.adapters.files import FileReport
    path = str(tmp_path / "status.json")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (dead.pid, live.pid):
            with open("%s.%d.tmp" % (path, pid), "w") as f:
                f.write('{"state": "HEAL')          # killed mid-write
        FileReport(path, str(tmp_path / "trace.jsonl"), 1 << 20, logging.getLogger("test"))
        assert sorted(os.listdir(str(tmp_path))) == ["status.json.%d.tmp" % live.pid]
    finally:
        live.kill()
        live.wait()
