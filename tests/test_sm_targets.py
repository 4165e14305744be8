"""Storage probe targets from a PBD's device_config: the ports SM connects to (agent/decision/sm_targets.py)."""

import pytest

from agent import config as cfgmod
from agent.decision import desired
from agent.decision.sm_targets import split_target, targets_for
from agent.decision.world import PbdView

UUID = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
BINDING = '[[binding]]\nnetwork = "sspn"\nvms = ["pfsense"]\naddresses = ["192.0.2.2/24"]\n'


def _config(sr_text):
    return cfgmod.parse_config(BINDING + '[[sr]]\nuuid = "%s"\n%s\n' % (UUID, sr_text))


@pytest.mark.parametrize("sr_type,device_config,expected", [
    ("nfs", {"server": "198.51.100.5", "serverpath": "/vms"}, ["198.51.100.5:2049", "198.51.100.5:111"]),
    ("nfs", {"server": "nas.lan", "nfsversion": "4.1"}, ["nas.lan:2049"]),
    ("nfs", {"server": "2001:db8::5"}, ["[2001:db8::5]:2049", "[2001:db8::5]:111"]),
    ("smb", {"server": "//nas.lan/vms"}, ["nas.lan:445"]),
    ("cifs", {"server": "\\\\nas\\vms"}, ["nas:445"]),
    ("iso", {"location": "nas.lan:/isos"}, ["nas.lan:2049", "nas.lan:111"]),
    ("iso", {"location": "nfs://nas.lan/isos", "nfsversion": "4"}, ["nas.lan:2049"]),
    ("iso", {"location": "//nas.lan/isos", "type": "cifs"}, ["nas.lan:445"]),
    ("lvmoiscsi", {"target": "10.0.0.1,10.0.0.2", "targetIQN": "iqn.x", "port": "3261"},
     ["10.0.0.1:3261", "10.0.0.2:3261"]),
    ("lvmoiscsi", {"target": "san.lan", "targetIQN": "iqn.x"}, ["san.lan:3260"]),
    ("weird", {"server": "198.51.100.9"}, ["198.51.100.9"]),
    ("nfs", {}, []),
])
def test_service_ports_by_sr_type(sr_type, device_config, expected):
    """NFS 2049 (+111 for v3, SM's default), SMB/CIFS 445, iSCSI target:port, ISO locations;
    an unknown service is pinged; no server, no target."""
    assert targets_for(sr_type, device_config) == expected


def test_icmp_mode_config_hosts_and_ports():
    """icmp pings the hosts; configured addresses replace the servers; probe_ports the ports."""
    dc = {"server": "nas.lan"}
    assert targets_for("nfs", dc, "icmp") == ["nas.lan"]
    assert targets_for("nfs", dc, "tcp", ["198.51.100.7"]) == ["198.51.100.7:2049", "198.51.100.7:111"]
    assert targets_for("nfs", dc, "tcp", (), [2050]) == ["nas.lan:2050"]


def test_split_target():
    """host:port and [v6]:port are TCP; bare v4, v6 and names are ICMP."""
    assert split_target("nas.lan:2049") == ("nas.lan", 2049)
    assert split_target("[2001:db8::5]:111") == ("2001:db8::5", 111)
    assert split_target("2001:db8::5") == ("2001:db8::5", None)
    assert split_target("198.51.100.5") == ("198.51.100.5", None)


def test_storage_targets_follow_the_config():
    """[[sr]] probe_mode / probe / probe_ports reach desired.storage_targets."""
    pbd = PbdView("OpaqueRef:p", UUID, device_config={"server": "nas.lan"}, sr_type="nfs")
    config = _config("")
    assert desired.storage_targets(config.srs[0], pbd) == ["nas.lan:2049", "nas.lan:111"]
    config = _config('probe_mode = "icmp"')
    assert desired.storage_targets(config.srs[0], pbd) == ["nas.lan"]
    config = _config('probe = ["198.51.100.7"]\nprobe_ports = [2049]')
    assert desired.storage_targets(config.srs[0], pbd) == ["198.51.100.7:2049"]


@pytest.mark.parametrize("text,problem", [
    ('probe_mode = "ping"', 'is not "tcp"'),
    ('probe_mode = "tpc"', 'did you mean "tcp"?'),
    ("probe_ports = [0]", "is not a TCP port"),
    ('probe_ports = ["2049"]', "expected an integer"),
    ('probe_mode = "icmp"\nprobe_ports = [2049]', "ports are not pinged"),
])
def test_bad_probe_settings_are_one_clear_line(text, problem):
    """Each bad setting: one ConfigError naming the key, the problem and the fix."""
    with pytest.raises(cfgmod.ConfigError) as err:
        _config(text)
    assert problem in str(err.value) and "sr[0].probe_" in str(err.value)
