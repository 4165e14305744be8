"""agent/tools/legacy.py: vif-ip-binder JSON (with its /* */ comments) becomes a valid agent.toml."""

import ipaddress
import json
import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, parse_config
from agent.tools.legacy import import_legacy, load_legacy, strip_json_comments

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                      "vif-ip-binder.json.sample")
SAMPLE_PASSWORD = "Pl4intext-R00t!"

# Phase.target is left out: its pareto optimisation of the stored examples took most of the
# time on 3.6 and adds nothing to "never raises anything but ConfigError".
FUZZ = settings(max_examples=max(300, settings().max_examples), deadline=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow])


def legacy(**keys):
    """JSON text of a minimal vif-ip-binder file updated with ``keys``."""
    data = {"vmName": "Firewall", "sspnName": "dom0", "address": "192.0.2.2/24"}
    data.update(keys)
    return json.dumps(data, indent=4)


def converted(text, source="/root/vif-ip-binder.json"):
    """(Config parsed from the generated TOML, toml text, notes)."""
    toml_text, notes = import_legacy(text, source)
    return parse_config(toml_text, "generated.toml"), toml_text, notes


def refused(text):
    """The ConfigError import_legacy raises for ``text``."""
    with pytest.raises(ConfigError) as info:
        import_legacy(text, "/root/vif-ip-binder.json")
    assert "\n" not in str(info.value) and "internal error" not in str(info.value)
    return info.value


# --- the published sample shape --------------------------------------------------------------------

def test_sample_with_comments_converts():
    """The sample, /* */ comments and all, converts to a file parse_config accepts."""
    toml_text, notes = load_legacy(SAMPLE)
    config = parse_config(toml_text, "generated.toml")
    binding = config.bindings[0]
    assert binding.network == "dom0" and binding.vms == ("Firewall",)
    assert binding.addresses == (ipaddress.ip_interface("192.0.2.2/24"),)
    assert config.route.gateway4 == ipaddress.ip_address("192.0.2.1")
    assert config.route.gateway6 is None
    assert config.management.bridge == "xenbr0" and config.management.mirror
    assert config.timing.event_timeout == 30.0
    assert config.xapi.is_local and config.xapi.password_file == ""


def test_sample_password_never_in_output():
    """The stored root password appears neither in the TOML nor in the notes."""
    toml_text, notes = load_legacy(SAMPLE)
    assert SAMPLE_PASSWORD not in toml_text
    assert not any(SAMPLE_PASSWORD in note for note in notes)


def test_password_dropped_with_shred_note():
    """Dropping the password says the local socket needs none and to shred the old file."""
    _, _, notes = converted(legacy(password="hunter2"), "/root/vif-ip-binder.json")
    note = next(n for n in notes if n.startswith("password:"))
    assert "local socket" in note and "shred -u /root/vif-ip-binder.json" in note
    assert "hunter2" not in note


def test_header_names_the_source_and_carries_the_notes():
    """The TOML starts with a comment naming the source file, and every note is a comment."""
    toml_text, notes = load_legacy(SAMPLE)
    lines = toml_text.splitlines()
    assert lines[0].startswith("# ") and SAMPLE in lines[0]
    comments = " ".join(ln[1:].strip() for ln in lines if ln.startswith("#"))
    for note in notes:
        assert " ".join(note.split()) in comments


def test_notes_are_single_lines():
    """Notes come back as a list of one-line strings for the CLI to print on stderr."""
    _, notes = load_legacy(SAMPLE)
    assert notes and all(isinstance(n, str) and "\n" not in n for n in notes)


def test_user_and_ip_binary_dropped_with_notes():
    """user and ipBinary are dropped, each with a note saying why."""
    _, _, notes = converted(legacy(user="root", ipBinary="/usr/sbin/ip"))
    assert any(n.startswith("user: dropped") for n in notes)
    assert any(n.startswith("ipBinary: dropped") and "netlink" in n for n in notes)


def test_unknown_keys_get_a_note_without_their_value():
    """Unknown keys are noted by name; their values (maybe secrets) are not echoed."""
    _, text, notes = converted(legacy(apiToken="sekret-value", extra=1))
    assert any('"apiToken": unknown' in n for n in notes)
    assert any('"extra": unknown' in n for n in notes)
    assert "sekret-value" not in text and not any("sekret-value" in n for n in notes)


def test_behaviour_changes_are_noted():
    """The notes say the agent no longer re-enables a deliberately disabled host."""
    _, _, notes = converted(legacy())
    assert any("enable_host" in n and "always" in n for n in notes)
    assert any("require_pool_auto_poweron" in n for n in notes)


# --- mapping ---------------------------------------------------------------------------------------

def test_v6_address_and_gateway():
    """A v6 address and gateway become the binding address and route.gateway6."""
    config, _, _ = converted(legacy(address="2001:db8:1::2/64", gateway="2001:db8:1::1"))
    assert config.bindings[0].addresses == (ipaddress.ip_interface("2001:db8:1::2/64"),)
    assert config.route.gateway6 == ipaddress.ip_address("2001:db8:1::1")
    assert config.route.gateway4 is None


def test_link_local_v6_gateway():
    """A link-local v6 gateway converts when the address is v6."""
    config, _, _ = converted(legacy(address="2001:db8:1::2/64", gateway="fe80::1"))
    assert config.route.gateway6 == ipaddress.ip_address("fe80::1")


def test_no_gateway_leaves_routes_alone():
    """Without gateway, both gateways stay unset and a note says so."""
    config, _, notes = converted(legacy())
    assert config.gateways() == []
    assert any(n.startswith("gateway:") for n in notes)


def test_missing_br_name_uses_inventory():
    """Without brName, management.bridge stays empty (the inventory decides), with a note."""
    config, _, notes = converted(legacy())
    assert config.management.bridge == ""
    assert any(n.startswith("brName:") for n in notes)


def test_net_srs_mapping():
    """Each {sr_uuid: ping_ip} becomes an [[sr]] with that probe; uuids are lowercased."""
    config, _, _ = converted(legacy(netSRs=[
        {"5F8C0A36-3C4E-4A4E-9A52-6D1B7C1F0A01": "198.51.100.5"},
        {"5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a02": "2001:db8:3::5",
         "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a03": "198.51.100.6"}]))
    assert [(sr.uuid, [str(p) for p in sr.probe]) for sr in config.srs] == [
        ("5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01", ["198.51.100.5"]),
        ("5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a02", ["2001:db8:3::5"]),
        ("5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a03", ["198.51.100.6"])]


def test_net_srs_empty_ping_uses_device_config():
    """An empty ping address leaves probe empty (the PBD's server is probed), with a note."""
    config, _, notes = converted(legacy(netSRs=[{"5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01": ""}]))
    assert config.srs[0].probe == ()
    assert any("device_config" in n for n in notes)


def test_net_srs_repeated_uuid_merged():
    """The same SR listed twice becomes one [[sr]] with both ping addresses."""
    uuid = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
    config, _, notes = converted(legacy(netSRs=[{uuid: "198.51.100.5"},
                                                {uuid.upper(): "198.51.100.6"}]))
    assert len(config.srs) == 1
    assert [str(p) for p in config.srs[0].probe] == ["198.51.100.5", "198.51.100.6"]
    assert any("merged" in n for n in notes)


def test_strings_with_comment_markers_survive():
    """'//' and '/*' inside strings are data, not comments (e.g. URLs, odd VM labels)."""
    text = ('{\n  "vmName": "fw // main /* a */", // the firewall\n'
            '  "sspnName": "dom0", /* SSPN */ "address": "192.0.2.2/24",\n'
            '  "homepage": "http://example.invalid/a//b", "quote": "say \\"//\\" twice"\n}\n')
    config, _, notes = converted(text)
    assert config.bindings[0].vms == ("fw // main /* a */",)
    assert any('"homepage"' in n for n in notes)


def test_strip_json_comments_keeps_lines():
    """Blanking comments keeps every newline, so JSON error lines stay right."""
    text = '{/* a\nb */ "k": 1, // c\n "s": "//x"}'
    stripped = strip_json_comments(text)
    assert stripped.count("\n") == text.count("\n")
    assert json.loads(stripped) == {"k": 1, "s": "//x"}


def test_labels_with_quotes_and_backslashes():
    """Labels with quotes, backslashes and non-ASCII are escaped correctly in the TOML."""
    config, _, _ = converted(legacy(vmName='pf "edge" \\ fw ñ', sspnName="dom0\tnet"))
    assert config.bindings[0].vms == ('pf "edge" \\ fw ñ',)
    assert config.bindings[0].network == "dom0\tnet"


def test_duplicate_keys_noted():
    """A key given twice keeps the last value, as vif-ip-binder did, with a note."""
    text = ('{"vmName": "old", "vmName": "Firewall", "sspnName": "dom0",'
            ' "address": "192.0.2.2/24"}')
    config, _, notes = converted(text)
    assert config.bindings[0].vms == ("Firewall",)
    assert any('"vmName" appears more than once' in n for n in notes)


# --- refusals --------------------------------------------------------------------------------------

def test_missing_required_keys_are_named():
    """Missing vmName / sspnName / address are named in one message."""
    error = refused('{"sspnName": "dom0"}')
    assert error.key == "vmName"
    assert "vmName, address" in error.message


def test_json_error_has_line_and_column():
    """A JSON syntax error gives its line, column and what to fix."""
    text = '{\n  "vmName": "Firewall",\n  "sspnName": "dom0"\n  "address": "192.0.2.2/24"\n}'
    error = refused(text)
    assert error.line == 4 and "column 3" in error.message
    assert "comma is missing" in error.message


def test_trailing_comma_explained():
    """A comma before } is reported on its line with the fix."""
    error = refused('{\n  "vmName": "Firewall",\n}')
    assert error.line == 3 and "no comma may come before }" in error.message


def test_unclosed_block_comment():
    """A /* comment that never ends is reported at the line it opens."""
    error = refused('{"vmName": "fw",\n /* oops\n "sspnName": "x"}')
    assert error.line == 2 and "never closed" in error.message


def test_top_level_must_be_an_object():
    """A JSON list at the top is refused."""
    assert "JSON object" in refused("[]").message


@pytest.mark.parametrize("keys, key", [
    ({"vmName": 5}, "vmName"),
    ({"address": None}, "address"),
    ({"gateway": ["192.0.2.1"]}, "gateway"),
    ({"timeout": "30"}, "timeout"),
    ({"timeout": True}, "timeout"),
    ({"netSRs": {"a": "b"}}, "netSRs"),
    ({"netSRs": ["5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"]}, "netSRs[0]"),
    ({"netSRs": [{"5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01": 5}]}, "netSRs[0]"),
])
def test_wrong_types_named(keys, key):
    """Values of the wrong JSON type are refused, naming the vif-ip-binder key."""
    assert refused(legacy(**keys)).key == key


@pytest.mark.parametrize("keys, key, words", [
    ({"address": "192.0.2.2"}, "address", "no prefix length"),
    ({"address": "192.0.2.2/32"}, "address", "has no subnet"),
    ({"address": "192.0.2.300/24"}, "address", "is not an IP address"),
    ({"gateway": "198.51.100.1"}, "gateway", "outside every binding's subnet"),
    ({"gateway": "2001:db8::1"}, "gateway", "IPv6"),
    ({"gateway": "router"}, "gateway", "is not an IP address"),
    ({"netSRs": [{"uid": "ip"}]}, "netSRs[0]", "is not an SR uuid"),
    ({"netSRs": [{"5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01": "nfs.local"}]}, "netSRs[0]",
     "is not an IP address"),
    ({"timeout": 0}, "timeout", "out of range"),
    ({"brName": "bad bridge"}, "brName", "not a bridge name"),
    ({"sspnName": ""}, "sspnName", "is empty"),
])
def test_invalid_values_named(keys, key, words):
    """Values the new config would refuse are reported under the vif-ip-binder key."""
    error = refused(legacy(**keys))
    assert error.key == key and words in error.message
    assert error.line is not None


def test_lone_surrogate_escape_refused():
    """A JSON \\ud800 escape (not a character) is refused under its key, not written out."""
    error = refused('{"vmName": "a\\ud800", "sspnName": "s", "address": "192.0.2.2/24"}')
    assert error.key == "vmName" and "surrogate" in error.message


def test_sr_error_names_the_right_entry():
    """An error in the second netSRs entry names netSRs[1]."""
    error = refused(legacy(netSRs=[{"5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01": "198.51.100.5"},
                                   {"not-a-uuid": "198.51.100.6"}]))
    assert error.key == "netSRs[1]"


def test_non_utf8_file(tmp_path):
    """A file that is not UTF-8 is a ConfigError naming the line."""
    path = tmp_path / "vif-ip-binder.json"
    path.write_bytes(b'{\n"vmName": "\xff"}')
    with pytest.raises(ConfigError) as info:
        load_legacy(str(path))
    assert info.value.line == 2 and "UTF-8" in info.value.message


def test_missing_file(tmp_path):
    """A missing legacy file is a ConfigError."""
    with pytest.raises(ConfigError):
        load_legacy(str(tmp_path / "nope.json"))


# --- fuzzing ---------------------------------------------------------------------------------------

def import_outcome(text):
    """(toml, notes) that parse back, or a well-formed ConfigError; nothing else."""
    try:
        toml_text, notes = import_legacy(text, "fuzz.json")
    except ConfigError as error:
        assert "\n" not in str(error) and "internal error" not in str(error), str(error)
        return error
    parse_config(toml_text, "generated.toml")
    return toml_text, notes


@FUZZ
@given(st.text())
def test_fuzz_arbitrary_text(text):
    """Any text gives TOML or a ConfigError, never another exception."""
    import_outcome(text)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                    st.sampled_from(["192.0.2.2/24", "192.0.2.1", "2001:db8:1::2/64", "fe80::1",
                                     "2001:db8:1::1", "xenbr0", "", "//", "/*"]))
JSONISH = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
LEGACY_KEYS = ["user", "password", "vmName", "sspnName", "brName", "address", "gateway",
               "netSRs", "timeout", "ipBinary", "other"]


@st.composite
def legacy_documents(draw):
    doc = {}
    for key in draw(st.lists(st.sampled_from(LEGACY_KEYS), unique=True)):
        if key == "netSRs" and draw(st.booleans()):
            doc[key] = draw(st.lists(st.dictionaries(
                st.sampled_from(["5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01", "uid"]),
                st.sampled_from(["198.51.100.5", "", "ip"]), max_size=2), max_size=3))
        else:
            doc[key] = draw(JSONISH)
    return doc


@FUZZ
@given(legacy_documents(), st.booleans())
def test_fuzz_legacy_shaped_documents(doc, comment):
    """vif-ip-binder-shaped JSON of random values converts to a loadable file or a ConfigError."""
    text = json.dumps(doc, indent=1)
    if comment:
        text = text.replace(",\n", ", /* c */\n", 1)
    import_outcome(text)


@FUZZ
@given(st.sampled_from(["192.0.2.2/24", "2001:db8:1::2/64", "198.51.100.7/25"]),
       st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_fuzz_valid_files_always_convert(address, vm, network):
    """Any labels with a valid address convert, and the labels survive exactly."""
    if not vm.strip() or not network.strip() or "\x00" in vm + network:
        return
    result = import_outcome(legacy(vmName=vm, sspnName=network, address=address,
                                   password="pw-" + vm))
    assert not isinstance(result, ConfigError), str(result)
    config = parse_config(result[0], "generated.toml")
    assert config.bindings[0].vms == (vm,) and config.bindings[0].network == network
