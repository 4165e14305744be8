"""Event realism (xen-api as it is): periodic SR mods cost the agent nothing (real XenAPI
client against the simulator)."""

from tests.sim.conftest import login
from tests.waiting import wait_until


def test_periodic_sr_stat_mods_post_nothing(sim_factory, start_adapter_for):
    """xapi mods every SR about every 120 s and after each plug (SR.stat, xen-api xapi_sr.ml);
    here every 50 ms. The adapter follows the SR but posts no event for a mod that changes
    nothing it reads."""
    simulator = sim_factory(settings={"sr_stat_interval": 0.05})
    adapter, recorder = start_adapter_for(simulator)
    recorder.wait_kind("xapi_connected")
    api = login(simulator).xenapi
    pbd = recorder.seen[0].world.pbds[0]
    sr = api.SR.get_by_uuid(pbd.sr_uuid)
    if not pbd.attached:   # xapi stats attached SRs only
        api.PBD.plug(pbd.ref)
        recorder.wait_kind("pbd_changed", pbd__attached=True)
    recorder.drain()
    before = len(recorder.seen)
    follow = getattr(api.event, "from")
    token, mods = follow(["sr/" + sr], "", 0.0)["token"], 0
    while mods < 5:
        result = follow(["sr/" + sr], token, 5.0)
        assert result["events"], "no SR mod within 5 s"
        token = result["token"]
        mods += len([e for e in result["events"] if e["operation"] == "mod"])
    simulator.host_disable()   # a marker after those mods
    recorder.wait_kind("host_changed", host__enabled=False)
    # blocked in event.from again: every batch it got before has been handled
    wait_until(lambda: simulator.state()["event_waiters"] >= 1, message="adapter polling again")
    recorder.drain()
    assert not [e for e in recorder.seen[before:] if e.kind == "pbd_changed"]
