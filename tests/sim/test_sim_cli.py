"""``agent lab xapi`` (``main``) serves clients in other processes until SIGTERM."""

import os
import re
import shutil
import signal
import subprocess
import sys
import xmlrpc.client

import pytest
import XenAPI

from agent.lab.xapi import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_MAIN = "import sys; from agent.lab.xapi import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def served(request):
    """A simulator run by main() in a subprocess; yields (socket path, port)."""
    import tempfile
    directory = os.path.join("/tmp" if "_" in tempfile.gettempdir() else tempfile.gettempdir(),
                             "sspn-sim-cli-%d" % os.getpid())
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "xapi")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", RUN_MAIN, "--socket", path, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline()
        match = re.match(r"^xapi simulator listening socket=(\S+) port=(\d+) scenario=", line)
        assert match, "unexpected first line %r; stderr: %s" % (line, proc.stderr.read()
                                                               if proc.poll() is not None else "")
        yield proc, match.group(1), int(match.group(2))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_main_serves_other_processes(served):
    """A client in another process talks to main() over Unix and TCP; sim.* calls over the wire
    change what event.from reports; SIGTERM stops it cleanly and removes the socket."""
    proc, path, port = served
    session = XenAPI.Session("http://%s/" % path.replace("/", "_"), transport=XenAPI.UDSTransport())
    session.xenapi.login_with_password("root", "", "1.0", "cli-test")
    x = session.xenapi
    pfsense = x.VM.get_by_name_label("pfsense")[0]
    token = x.event_from(["vm/" + pfsense], "", 0.0)["token"]
    control = xmlrpc.client.ServerProxy("http://127.0.0.1:%d/" % port)
    assert control.sim.vm_start("pfsense") == {"Status": "Success", "Value": ""}
    batch = x.event_from(["vm/" + pfsense], token, 10.0)
    assert [e["snapshot"]["power_state"] for e in batch["events"]] == ["Running"]
    state = control.sim.state()["Value"]
    assert state["vms"]["pfsense"]["power_state"] == "Running" and state["port"] == port
    # A XenAPI Session may call sim.* too: its session ref is ignored.
    assert x.sim.vm_stop("pfsense") == ""
    assert x.VM.get_power_state(pfsense) == "Halted"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not os.path.exists(path)


def test_main_refuses_underscore_paths(capsys):
    """main() exits 78 naming the '_' problem and the fix."""
    assert main(["--socket", "/tmp/sspn_bad/xapi"]) == 78
    assert "contains '_'" in capsys.readouterr().err


def test_main_refuses_bad_scenario(tmp_path, capsys):
    """main() exits 78 naming the unknown scenario key."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[host]\nname = "x"\n')
    assert main(["--socket", "/tmp/sspn-sim-never/xapi", "--scenario", str(bad)]) == 78
    assert "unknown key host.name" in capsys.readouterr().err
