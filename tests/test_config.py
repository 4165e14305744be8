"""agent/config/: the example loads, every bad file gets one ConfigError naming key and line."""

import datetime
import ipaddress
import os
import random
import re
import stat

import attr
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agent.config import (EX_CONFIG, SCHEMA, Binding, Config, ConfigError, RouteConfig, SrConfig,
                          XapiConfig, default_config, load_config, management_bridge,
                          parse_config, read_inventory, render_config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "agent.toml.example")
with open(EXAMPLE) as _handle:
    EXAMPLE_TEXT = _handle.read()

# Phase.target is left out: its pareto optimisation of the stored examples took most of the
# time on 3.6 and adds nothing to "never raises anything but ConfigError".
FUZZ = settings(max_examples=max(300, settings().max_examples), deadline=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

BINDING = """\
[[binding]]
network = "sspn"
vms = ["pfsense"]
addresses = ["192.0.2.2/24", "2001:db8:1::2/64"]
"""


def config_text(*sections):
    """A valid file: one dual-stack binding plus ``sections``."""
    return BINDING + "".join("\n" + s.strip("\n") + "\n" for s in sections)


def line_of(text, fragment, nth=1):
    """1-based line number of the nth line containing ``fragment``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    return hits[nth - 1]


def rejected(text, path="/etc/sspn-agent/agent.toml"):
    """The ConfigError that parse_config raises for ``text``."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    return info.value


def assert_well_formed(error, text=None):
    """One human line, no internal error, a plausible line number."""
    shown = str(error)
    assert "\n" not in shown and "\r" not in shown
    assert "internal error" not in shown, shown
    if error.line is not None and text is not None:
        assert 1 <= error.line <= text.count("\n") + 1, (error.line, shown)


# --- the example and the values -----------------------------------------------------------------

def test_example_loads_and_equals_default_config():
    """agent.toml.example loads, and default_config() is exactly what it describes."""
    config = load_config(EXAMPLE)
    assert config.path == EXAMPLE
    assert attr.evolve(config, path="<default>") == default_config()


def test_example_shows_every_schema_key():
    """Every key the loader knows appears in the example, and every example key is known."""
    seen = set()
    section = None
    for line in EXAMPLE_TEXT.splitlines():
        header = re.match(r"^\[\[?(\w+)\]\]?", line)
        if header:
            section = header.group(1)
        key = re.match(r"^(\w+)\s*=", line)
        if key:
            seen.add((section, key.group(1)))
    known = set((s, k) for s, keys in SCHEMA.items() for k in keys)
    assert seen == known


def test_example_defaults_match_class_defaults():
    """Keys the example shows with their default load to the classes' own defaults."""
    config = load_config(EXAMPLE)
    assert config.xapi == XapiConfig()
    assert config.timing == type(config.timing)()
    assert config.files == type(config.files)()
    assert config.maintenance == type(config.maintenance)()
    assert config.management == type(config.management)()


def test_defaults_fill_absent_sections():
    """A file with only a binding gets every other value from the defaults."""
    config = parse_config(BINDING)
    assert config.route == RouteConfig(None, None, True)
    assert config.srs == ()
    assert config.xapi.is_local


def test_config_is_frozen():
    """Config values cannot be changed after loading."""
    config = default_config()
    with pytest.raises(attr.exceptions.FrozenInstanceError):
        config.path = "x"
    with pytest.raises(attr.exceptions.FrozenInstanceError):
        config.timing.retry_budget = 2


def test_typed_values():
    """Addresses load as ipaddress objects, labels as tuples of str, SR uuids lowercased."""
    config = parse_config(config_text('[[sr]]\nuuid = "5F8C0A36-3C4E-4A4E-9A52-6D1B7C1F0A01"\n'
                                      'probe = ["198.51.100.5", "2001:db8:2::5"]'))
    binding = config.bindings[0]
    assert binding.vms == ("pfsense",)
    assert binding.addresses == (ipaddress.ip_interface("192.0.2.2/24"),
                                 ipaddress.ip_interface("2001:db8:1::2/64"))
    assert config.srs[0].uuid == "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"
    assert config.srs[0].probe == (ipaddress.ip_address("198.51.100.5"),
                                   ipaddress.ip_address("2001:db8:2::5"))


def test_int_accepted_where_a_number_is_expected():
    """timing.event_timeout = 30 (an integer) loads as 30.0."""
    config = parse_config(config_text("[timing]\nevent_timeout = 30"))
    assert config.timing.event_timeout == 30.0 and isinstance(config.timing.event_timeout, float)


def test_empty_gateway_means_none():
    """gateway4 = "" leaves the IPv4 default route alone (None)."""
    assert parse_config(config_text('[route]\ngateway4 = ""')).route.gateway4 is None


def test_addresses_helper_lists_binding_index_and_interface():
    """Config.addresses() pairs each address with its binding's index."""
    config = parse_config(config_text('[[binding]]\nnetwork = "b2"\nvms = ["fw2"]\n'
                                      'addresses = ["198.51.100.2/24"]'))
    assert config.addresses() == [(0, ipaddress.ip_interface("192.0.2.2/24")),
                                  (0, ipaddress.ip_interface("2001:db8:1::2/64")),
                                  (1, ipaddress.ip_interface("198.51.100.2/24"))]


def test_mirror_addresses_are_host_routes():
    """mirror_addresses() gives each binding address as /32 or /128."""
    assert [str(i) for i in default_config().mirror_addresses()] == [
        "192.0.2.2/32", "2001:db8:1::2/128"]


def test_gateways_helper():
    """gateways() lists (family, address) for the configured gateways only."""
    assert default_config().gateways() == [(4, ipaddress.ip_address("192.0.2.1")),
                                           (6, ipaddress.ip_address("2001:db8:1::1"))]
    assert parse_config(BINDING).gateways() == []


def test_binding_for_gateway_finds_the_subnet():
    """binding_for_gateway() returns the index of the binding whose subnet holds the gateway."""
    config = parse_config(config_text('[[binding]]\nnetwork = "b2"\nvms = ["fw2"]\n'
                                      'addresses = ["198.51.100.2/24"]'))
    assert config.binding_for_gateway(ipaddress.ip_address("198.51.100.1")) == 1
    assert config.binding_for_gateway("192.0.2.1") == 0
    assert config.binding_for_gateway("203.0.113.1") is None


def test_binding_for_link_local_gateway_is_first_v6_binding():
    """A link-local v6 gateway belongs to the first binding with a v6 address."""
    text = ('[[binding]]\nnetwork = "v4only"\nvms = ["a"]\naddresses = ["198.51.100.2/24"]\n'
            + BINDING + '[route]\ngateway6 = "fe80::1"\n')
    config = parse_config(text)
    assert config.route.gateway6 == ipaddress.ip_address("fe80::1")
    assert config.binding_for_gateway(config.route.gateway6) == 1


def test_render_config_round_trips():
    """render_config() writes text that parse_config() reads back to the same Config."""
    config = parse_config(config_text('[[sr]]\nuuid = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"\n'
                                      'probe = ["198.51.100.5"]', '[route]\ngateway6 = "fe80::1"'),
                          "x.toml")
    assert parse_config(render_config(config), "x.toml") == config


def test_config_error_formats_file_line_key_message():
    """str(ConfigError) is 'FILE: line N: key: problem; fix'."""
    error = ConfigError("is wrong; fix it", key="route.gateway4", line=3, path="/etc/a.toml")
    assert str(error) == "/etc/a.toml: line 3: route.gateway4: is wrong; fix it"
    assert str(ConfigError("bad", path="f")) == "f: bad"
    assert EX_CONFIG == 78


# --- rejections -----------------------------------------------------------------------------------

def test_toml_syntax_error_names_its_line():
    """A TOML syntax error is reported with tomli's line and a fix."""
    text = config_text("[route]\ngateway4 = 192.0.2.1")
    error = rejected(text)
    assert error.line == line_of(text, "gateway4 =")
    assert "TOML syntax" in error.message and "double quotes" in error.message
    assert str(error).startswith("/etc/sspn-agent/agent.toml: line %d: " % error.line)


def test_duplicate_key_names_the_second_line():
    """A key set twice is located at its second line (tomli says only 'end of document')."""
    text = config_text('[route]\ngateway4 = "192.0.2.1"\nprobe = true\ngateway4 = "192.0.2.9"')
    error = rejected(text)
    assert error.line == line_of(text, "gateway4", 2)
    assert "set twice" in error.message


def test_unknown_key_suggests_the_closest():
    """An unknown key is named with its line and the closest known key."""
    text = config_text('[route]\ngatway4 = "192.0.2.1"')
    error = rejected(text)
    assert error.key == "route.gatway4"
    assert error.line == line_of(text, "gatway4")
    assert "did you mean gateway4?" in error.message


def test_unknown_key_in_binding():
    """An unknown key inside the second [[binding]] is named binding[1].<key>."""
    text = config_text('[[binding]]\nnetwork = "b"\nvms = ["x"]\naddress = ["198.51.100.2/24"]')
    error = rejected(text)
    assert error.key == "binding[1].address"
    assert error.line == line_of(text, "address = ")
    assert "did you mean addresses?" in error.message


def test_unknown_section_suggests_the_closest():
    """An unknown top-level table is named, with the closest section."""
    text = config_text('[timings]\nretry_budget = 3')
    error = rejected(text)
    assert error.key == "timings" and "did you mean [timing]?" in error.message
    assert error.line == line_of(text, "[timings]")


def test_single_bracket_binding_is_explained():
    """[binding] instead of [[binding]] says to use two brackets."""
    error = rejected('[binding]\nnetwork = "sspn"\nvms = ["a"]\naddresses = ["192.0.2.2/24"]')
    assert error.key == "binding" and "[[binding]]" in error.message and error.line == 1


@pytest.mark.parametrize("snippet, key, words", [
    ('[timing]\nprobe_interval = "5"', "timing.probe_interval", "expected a number, got a string"),
    ("[timing]\nretry_budget = true", "timing.retry_budget", "expected an integer, got a boolean"),
    ("[timing]\nprobe_timeout = false", "timing.probe_timeout", "expected a number, got a boolean"),
    ("[timing]\nretry_budget = 2.5", "timing.retry_budget", "expected an integer, got a number"),
    ("[route]\nprobe = 1", "route.probe", "expected a boolean, got an integer"),
    ("[management]\nbridge = 7", "management.bridge", "expected a string, got an integer"),
    ('[xapi]\nurl = 1979-05-27', "xapi.url", "got a date/time"),
    ('[files]\ntrace_max_bytes = "1M"', "files.trace_max_bytes", "expected an integer"),
])
def test_wrong_types_are_named(snippet, key, words):
    """A value of the wrong type names the key, its line, what was found and how to write it."""
    text = config_text(snippet)
    error = rejected(text)
    assert error.key == key
    assert words in error.message and "e.g." in error.message
    assert error.line == line_of(text, key.split(".")[-1] + " =")


def test_list_expected_but_string_given():
    """vms = "pfsense" (not a list) says to write a list."""
    error = rejected('[[binding]]\nnetwork = "sspn"\nvms = "pfsense"\naddresses = ["192.0.2.2/24"]')
    assert error.key == "binding[0].vms" and '["a", "b"]' in error.message and error.line == 3


def test_list_element_of_wrong_type():
    """A non-string inside a list is named with its index."""
    error = rejected('[[binding]]\nnetwork = "sspn"\nvms = ["a", 5]\naddresses = ["192.0.2.2/24"]')
    assert error.key == "binding[0].vms[1]" and "got an integer" in error.message


@pytest.mark.parametrize("address, words", [
    ("192.0.2.300/24", "is not an IP address with a prefix"),
    ("not-an-address", "is not an IP address with a prefix"),
    ("192.0.02.2/24", "leading zero"),
    ("fe80::2%eth0/64", "scope id"),
    ("192.0.2.2", "has no subnet"),
    ("192.0.2.2/32", "has no subnet"),
    ("2001:db8:1::2/128", "has no subnet"),
    ("2001:db8:1::2", "has no subnet"),
    ("192.0.2.2/0", "/0"),
    ("127.0.0.2/8", "not a unicast host address"),
    ("224.0.0.5/24", "not a unicast host address"),
    ("192.0.2.0/24", "network or broadcast address"),
    ("192.0.2.255/24", "network or broadcast address"),
])
def test_bad_binding_addresses(address, words):
    """Malformed, prefix-less, host-route and special addresses are refused with a fix."""
    text = ('[[binding]]\nnetwork = "sspn"\nvms = ["pfsense"]\n'
            'addresses = [\n  "192.0.2.9/24",\n  "%s",\n]\n' % address)
    error = rejected(text)
    assert error.key == "binding[0].addresses[1]"
    assert words in error.message and "write it like" in error.message or words in error.message
    assert error.line == line_of(text, '"%s"' % address)


def test_no_binding():
    """A file without [[binding]] is refused, saying what to add."""
    error = rejected('[route]\nprobe = true\n')
    assert error.key == "binding" and "no [[binding]]" in error.message


@pytest.mark.parametrize("body, key, words", [
    ('network = ""\nvms = ["a"]\naddresses = ["192.0.2.2/24"]', "binding[0].network", "is empty"),
    ('network = "  "\nvms = ["a"]\naddresses = ["192.0.2.2/24"]', "binding[0].network",
     "is empty"),
    ('network = "n"\nvms = []\naddresses = ["192.0.2.2/24"]', "binding[0].vms", "is empty"),
    ('network = "n"\nvms = ["a", ""]\naddresses = ["192.0.2.2/24"]', "binding[0].vms[1]",
     "is empty"),
    ('network = "n"\nvms = ["a", "a"]\naddresses = ["192.0.2.2/24"]', "binding[0].vms[1]",
     "listed twice"),
    ('network = "n"\nvms = ["a"]\naddresses = []', "binding[0].addresses", "is empty"),
    ('vms = ["a"]\naddresses = ["192.0.2.2/24"]', "binding[0].network", "missing"),
    ('network = "n"\naddresses = ["192.0.2.2/24"]', "binding[0].vms", "missing"),
    ('network = "n"\nvms = ["a"]', "binding[0].addresses", "missing"),
])
def test_incomplete_bindings(body, key, words):
    """Empty or missing network, vms and addresses are refused, naming the key."""
    text = "[[binding]]\n" + body + "\n"
    error = rejected(text)
    assert error.key == key and words in error.message
    assert error.line is not None


def test_duplicate_address_across_bindings():
    """The same address in two bindings is refused at its second place."""
    text = config_text('[[binding]]\nnetwork = "b2"\nvms = ["x"]\n'
                       'addresses = ["198.51.100.2/24", "192.0.2.2/25"]')
    error = rejected(text)
    assert error.key == "binding[1].addresses[1]"
    assert "listed twice (also binding[0].addresses[0])" in error.message
    assert error.line == line_of(text, "192.0.2.2/25")


def test_duplicate_address_within_a_binding():
    """The same address twice in one binding is refused."""
    error = rejected('[[binding]]\nnetwork = "n"\nvms = ["a"]\n'
                     'addresses = ["192.0.2.2/24", "192.0.2.2/24"]')
    assert error.key == "binding[0].addresses[1]" and "listed twice" in error.message


def test_overlapping_subnets_in_two_bindings():
    """Two bindings whose subnets overlap are refused: a gateway could not pick its bridge."""
    error = rejected(config_text('[[binding]]\nnetwork = "b2"\nvms = ["x"]\n'
                                 'addresses = ["192.0.2.9/24"]'))
    assert error.key == "binding[1].addresses[0]" and "overlaps" in error.message


def test_same_network_in_two_bindings():
    """Two bindings for one network label are refused."""
    error = rejected(config_text('[[binding]]\nnetwork = "sspn"\nvms = ["x"]\n'
                                 'addresses = ["198.51.100.2/24"]'))
    assert error.key == "binding[1].network" and "already bound" in error.message


@pytest.mark.parametrize("route, key, words", [
    ('gateway4 = "198.51.100.1"', "route.gateway4", "outside every binding's subnet"),
    ('gateway6 = "2001:db8:9::1"', "route.gateway6", "outside every binding's subnet"),
    ('gateway4 = "2001:db8:1::1"', "route.gateway4", "put it in gateway6"),
    ('gateway6 = "192.0.2.1"', "route.gateway6", "put it in gateway4"),
    ('gateway4 = "192.0.2.2"', "route.gateway4", "dom0's own address"),
    ('gateway4 = "192.0.2.255"', "route.gateway4", "broadcast"),
    ('gateway4 = "gw.example"', "route.gateway4", "is not an IP address"),
    ('gateway6 = "ff02::1"', "route.gateway6", "not a unicast"),
])
def test_bad_gateways(route, key, words):
    """Gateways outside the subnets, of the wrong family or malformed are refused."""
    text = config_text("[route]\n" + route)
    error = rejected(text)
    assert error.key == key and words in error.message
    assert error.line == line_of(text, key.split(".")[1])


def test_v4_gateway_without_v4_address():
    """A v4 gateway when every binding is v6-only says to add an IPv4 address."""
    error = rejected('[[binding]]\nnetwork = "n"\nvms = ["a"]\naddresses = ["2001:db8:1::2/64"]\n'
                     '[route]\ngateway4 = "192.0.2.1"\n')
    assert error.key == "route.gateway4" and "no [[binding]] has an IPv4 address" in error.message


def test_v6_gateway_without_v6_address():
    """A v6 gateway (also link-local) when every binding is v4-only is refused."""
    for gateway in ("2001:db8:1::1", "fe80::1"):
        error = rejected('[[binding]]\nnetwork = "n"\nvms = ["a"]\naddresses = ["192.0.2.2/24"]\n'
                         '[route]\ngateway6 = "%s"\n' % gateway)
        assert error.key == "route.gateway6"
        assert "no [[binding]] has an IPv6 address" in error.message


def test_link_local_gateway_allowed_with_v6_address():
    """gateway6 = "fe80::1" loads when a binding has an IPv6 address."""
    config = parse_config(config_text('[route]\ngateway6 = "fe80::1"'))
    assert config.route.gateway6 == ipaddress.ip_address("fe80::1")


@pytest.mark.parametrize("srs, key, words", [
    ('[[sr]]\nuuid = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"\n'
     '[[sr]]\nuuid = "5F8C0A36-3C4E-4A4E-9A52-6D1B7C1F0A01"', "sr[1].uuid", "listed twice"),
    ('[[sr]]\nuuid = "5f8c0a36-3c4e-4a4e-9a52"', "sr[0].uuid", "is not an SR uuid"),
    ('[[sr]]\nuuid = "nfs-sr"', "sr[0].uuid", "is not an SR uuid"),
    ('[[sr]]\nprobe = ["198.51.100.5"]', "sr[0].uuid", "missing"),
    ('[[sr]]\nuuid = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"\nprobe = ["nfs.example"]',
     "sr[0].probe[0]", "is not an IP address"),
    ('[[sr]]\nuuid = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"\nprobe = ["198.51.100.5", "0.0.0.0"]',
     "sr[0].probe[1]", "cannot answer a ping"),
])
def test_bad_srs(srs, key, words):
    """Duplicate or malformed SR uuids and bad probe addresses are refused."""
    text = config_text(srs)
    error = rejected(text)
    assert error.key == key and words in error.message
    assert error.line is not None


def test_enable_host_must_be_a_choice():
    """enable_host outside the three values is refused, suggesting the closest."""
    text = config_text('[maintenance]\nenable_host = "when_locked_out"')
    error = rejected(text)
    assert error.key == "maintenance.enable_host"
    assert 'did you mean "when-locked-out"?' in error.message
    assert error.line == line_of(text, "enable_host")


@pytest.mark.parametrize("key", ["event_timeout", "probe_interval", "probe_timeout",
                                 "backoff_base", "backoff_cap"])
@pytest.mark.parametrize("value", ["0", "-1.5", "nan", "inf", "1e9"])
def test_timings_must_be_positive_and_sane(key, value):
    """Zero, negative, nan, infinite and absurd timings are refused."""
    text = config_text("[timing]\nbackoff_base = 0.5\n%s = %s" % (key, value)
                       if key != "backoff_base" else "[timing]\n%s = %s" % (key, value))
    error = rejected(text)
    assert error.key == "timing." + key
    assert error.line == line_of(text, key + " = " + value)


def test_call_timeout_must_be_positive():
    """xapi.call_timeout = 0 is refused."""
    assert rejected(config_text("[xapi]\ncall_timeout = 0")).key == "xapi.call_timeout"


def test_backoff_cap_below_base():
    """backoff_cap < backoff_base is refused at backoff_cap."""
    error = rejected(config_text("[timing]\nbackoff_base = 10\nbackoff_cap = 5"))
    assert error.key == "timing.backoff_cap" and "below backoff_base" in error.message


def test_retry_budget_at_least_one():
    """retry_budget = 0 is refused."""
    error = rejected(config_text("[timing]\nretry_budget = 0"))
    assert error.key == "timing.retry_budget" and "below 1" in error.message


def test_trace_max_bytes_at_least_4096():
    """trace_max_bytes below 4096 is refused; 4096 loads."""
    error = rejected(config_text("[files]\ntrace_max_bytes = 4095"))
    assert error.key == "files.trace_max_bytes" and "4096" in error.message
    assert parse_config(config_text("[files]\ntrace_max_bytes = 4096")).files.trace_max_bytes == 4096


@pytest.mark.parametrize("snippet, key", [
    ('[files]\nstatus = "status.json"', "files.status"),
    ('[files]\ntrace = ""', "files.trace"),
    ('[management]\ninventory = "inventory"', "management.inventory"),
    ('[xapi]\nsocket = ""', "xapi.socket"),
])
def test_paths_must_be_absolute(snippet, key):
    """Relative or empty paths are refused: the service's working directory is not ours."""
    assert rejected(config_text(snippet)).key == key


def test_bad_management_bridge_name():
    """A management bridge that cannot be an interface name is refused."""
    error = rejected(config_text('[management]\nbridge = "xenbr0 is mine"'))
    assert error.key == "management.bridge" and "xenbr0" in error.message


def test_nul_in_string_is_refused():
    """A string holding a NUL character is refused (it would break paths and XML-RPC)."""
    error = rejected(config_text('[files]\nstatus = "/run/a\\u0000b"'))
    assert error.key == "files.status" and "NUL" in error.message


def test_lone_surrogate_is_refused():
    """A label holding a lone surrogate (possible in a str) is refused: it cannot be encoded."""
    error = rejected('[[binding]]\nnetwork = "a\ud800"\nvms = ["b"]\naddresses = ["192.0.2.2/24"]')
    assert error.key == "binding[0].network" and "surrogate" in error.message


def test_odd_unknown_key_stays_on_one_line():
    """An unknown key with a newline in its quoted name is shown escaped, on one line."""
    error = rejected(config_text('[route]\n"gate\\nway" = 1'))
    assert error.key == 'route."gate\\nway"' and "\n" not in str(error)
    assert error.line == line_of(config_text('[route]\n"gate\\nway" = 1'), "gate")


# --- xapi credentials -----------------------------------------------------------------------------

def test_password_file_without_url(tmp_path):
    """password_file with the local socket is refused: the socket needs no password."""
    error = rejected(config_text('[xapi]\npassword_file = "%s"' % (tmp_path / "pw")))
    assert error.key == "xapi.password_file" and "needs no password" in error.message


def test_url_without_password_file():
    """A remote url with a username but no password_file is refused."""
    text = config_text('[xapi]\nurl = "https://192.0.2.10/"\nusername = "root"')
    error = rejected(text)
    assert error.key == "xapi.password_file" and "chmod 600" in error.message


def test_url_with_empty_username(tmp_path):
    """A remote url with username = "" is refused."""
    error = rejected(config_text('[xapi]\nurl = "https://192.0.2.10/"\nusername = ""'))
    assert error.key == "xapi.username"


def test_url_must_be_http():
    """A url that is not http(s) is refused."""
    error = rejected(config_text('[xapi]\nurl = "ftp://192.0.2.10/"'))
    assert error.key == "xapi.url" and "http://" in error.message


def test_missing_password_file(tmp_path):
    """A password file that does not exist is refused with the fix."""
    missing = str(tmp_path / "nope")
    error = rejected(config_text('[xapi]\nurl = "http://127.0.0.1:8080/"\n'
                                 'password_file = "%s"' % missing))
    assert error.key == "xapi.password_file"
    assert "does not exist" in error.message and "chmod 600 " + missing in error.message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_password_file_open_to_others(tmp_path, mode):
    """A password file accessible by group or others is refused: 'chmod 600 FILE'."""
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    os.chmod(str(secret), mode)
    text = config_text('[xapi]\nurl = "http://127.0.0.1:8080/"\npassword_file = "%s"' % secret)
    error = rejected(text)
    assert error.key == "xapi.password_file"
    assert "chmod 600 %s" % secret in error.message
    assert error.line == line_of(text, "password_file")
    assert "hunter2" not in str(error)


def test_remote_xapi_with_private_password_file(tmp_path):
    """url + username + a chmod 600 password file loads; read_password returns it, repr hides it."""
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    os.chmod(str(secret), stat.S_IRUSR | stat.S_IWUSR)
    config = parse_config(config_text('[xapi]\nurl = "http://127.0.0.1:8080/"\n'
                                      'password_file = "%s"' % secret))
    assert not config.xapi.is_local
    assert config.xapi.read_password() == "hunter2"
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.xapi)


def test_read_password_of_vanished_file(tmp_path):
    """read_password on a missing file raises ConfigError, not OSError."""
    with pytest.raises(ConfigError) as info:
        XapiConfig(url="http://x/", password_file=str(tmp_path / "gone")).read_password()
    assert info.value.key == "xapi.password_file"


# --- files ---------------------------------------------------------------------------------------

def test_load_missing_file(tmp_path):
    """A missing config file is a ConfigError saying how to create it."""
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "agent.toml"))
    assert "agent.toml.example" in info.value.message


def test_load_directory(tmp_path):
    """A directory given as config file is a ConfigError."""
    with pytest.raises(ConfigError):
        load_config(str(tmp_path))


def test_load_non_utf8(tmp_path):
    """Bytes that are not UTF-8 are a ConfigError naming the line."""
    path = tmp_path / "agent.toml"
    path.write_bytes(BINDING.encode() + b'[route]\ngateway4 = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.line == 6 and "UTF-8" in info.value.message


def test_load_with_bom(tmp_path):
    """A UTF-8 byte-order mark (Windows editors) is tolerated."""
    path = tmp_path / "agent.toml"
    path.write_bytes(b"\xef\xbb\xbf" + BINDING.encode())
    assert load_config(str(path)).bindings[0].network == "sspn"


def test_read_inventory(tmp_path):
    """read_inventory parses KEY='value' lines and strips the quotes."""
    inv = tmp_path / "xensource-inventory"
    inv.write_text("BUILD_NUMBER='release/yangtze'\nMANAGEMENT_INTERFACE='xenbr0'\n\n"
                   "CURRENT_INTERFACES='xenbr0 xenbr1'\n")
    assert read_inventory(str(inv)) == {"BUILD_NUMBER": "release/yangtze",
                                        "MANAGEMENT_INTERFACE": "xenbr0",
                                        "CURRENT_INTERFACES": "xenbr0 xenbr1"}


def test_management_bridge_prefers_config(tmp_path):
    """management_bridge() returns management.bridge when set, without reading the inventory."""
    config = attr.evolve(default_config(), management=attr.evolve(
        default_config().management, bridge="xenbr1", inventory=str(tmp_path / "none")))
    assert management_bridge(config) == "xenbr1"


def test_management_bridge_from_inventory(tmp_path):
    """management_bridge() falls back to MANAGEMENT_INTERFACE of the inventory."""
    inv = tmp_path / "inv"
    inv.write_text("MANAGEMENT_INTERFACE='xenbr0'\n")
    config = attr.evolve(default_config(), management=attr.evolve(
        default_config().management, inventory=str(inv)))
    assert management_bridge(config) == "xenbr0"


def test_management_bridge_neither(tmp_path):
    """No bridge in config nor inventory is a ConfigError naming management.bridge."""
    inv = tmp_path / "inv"
    inv.write_text("MANAGEMENT_INTERFACE=''\n")
    config = attr.evolve(default_config(), management=attr.evolve(
        default_config().management, inventory=str(inv)))
    with pytest.raises(ConfigError) as info:
        management_bridge(config)
    assert info.value.key == "management.bridge" and "MANAGEMENT_INTERFACE" in info.value.message


def test_management_bridge_unreadable_inventory(tmp_path):
    """A missing inventory is a ConfigError naming management.inventory."""
    config = attr.evolve(default_config(), management=attr.evolve(
        default_config().management, inventory=str(tmp_path / "none")))
    with pytest.raises(ConfigError) as info:
        management_bridge(config)
    assert info.value.key == "management.inventory"


# --- fuzzing: nothing but Config or ConfigError ---------------------------------------------------

def outcome(text):
    """Config, or the ConfigError (checked for form); any other exception fails the test."""
    try:
        return parse_config(text, "fuzz.toml")
    except ConfigError as error:
        assert_well_formed(error, text if isinstance(text, str) else None)
        return error


@FUZZ
@given(st.text())
def test_fuzz_arbitrary_text(text):
    """Any text gives a Config or a ConfigError, never another exception."""
    outcome(text)


@FUZZ
@given(st.binary())
def test_fuzz_arbitrary_bytes(data):
    """Any bytes (not UTF-8 included) give a Config or a ConfigError."""
    outcome(data)


def toml_value(value):
    """Tiny TOML writer for the fuzz values (str, bool, int, float, dates, lists, dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[%s]" % ", ".join(toml_value(v) for v in value)
    if isinstance(value, dict):
        return "{%s}" % ", ".join("%s = %s" % (toml_key(k), toml_value(v))
                                  for k, v in value.items())
    out = "".join("\\u%04x" % ord(c) if ord(c) < 0x20 or c in '"\\\x7f' else c for c in value)
    return '"%s"' % out.replace("\ud800", "")


def toml_key(key):
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else toml_value(key)


def toml_document(doc):
    """TOML text for {section: table or [tables]} with scalar/list/inline-table values."""
    lines = []
    for name, body in doc.items():
        if not isinstance(body, (dict, list)) or (isinstance(body, list) and not all(
                isinstance(b, dict) for b in body)):
            lines.insert(0, "%s = %s" % (toml_key(name), toml_value(body)))
            continue
        for table in (body if isinstance(body, list) else [body]):
            lines.append(("[[%s]]" if isinstance(body, list) else "[%s]") % toml_key(name))
            lines.extend("%s = %s" % (toml_key(k), toml_value(v)) for k, v in table.items())
    return "\n".join(lines) + "\n"


PLAUSIBLE = st.sampled_from([
    "", "sspn", "pfsense", "/var/lib/xcp/xapi", "http://127.0.0.1:8080/", "root",
    "192.0.2.2/24", "192.0.2.1", "2001:db8:1::2/64", "2001:db8:1::1", "fe80::1", "192.0.2.2",
    "198.51.100.5", "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01", "when-locked-out", "always",
    "never", "xenbr0", "/run/x.json", "0.0.0.0/0", "::/0", "192.0.2.2/32", "::1/128"])
SCALARS = st.one_of(
    PLAUSIBLE, st.text(max_size=12), st.booleans(),
    st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1), st.floats(),
    st.sampled_from([datetime.datetime(1979, 5, 27, 7, 32), datetime.date(2024, 2, 29),
                     datetime.time(7, 32, 0, 999000)]))  # cheap: st.datetimes() is slow on 3.6
VALUES = st.one_of(SCALARS, st.lists(st.one_of(PLAUSIBLE, SCALARS), max_size=4),
                   st.dictionaries(st.text(min_size=1, max_size=5), SCALARS, max_size=2))


GOOD = {
    "string": PLAUSIBLE,
    "number": st.one_of(st.floats(min_value=-1, max_value=1e6), st.integers(-5, 100000)),
    "integer": st.integers(-5, 10 ** 7),
    "boolean": st.booleans(),
    "list of strings": st.lists(PLAUSIBLE, max_size=4),
    "list of integers": st.lists(st.integers(-1, 70000), max_size=3),
}
ADDRESSES = ["192.0.2.2/24", "192.0.2.3/24", "198.51.100.2/24", "2001:db8:1::2/64",
             "2001:db8:2::2/64", "192.0.2.2", "192.0.2.2/32", "fe80::2/64", "192.0.2.0/24",
             "bad", "0.0.0.0/0", "2001:db8:1::2/128"]
UUIDS = ["5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01", "5F8C0A36-3C4E-4A4E-9A52-6D1B7C1F0A01",
         "aaaaaaaa-3c4e-4a4e-9a52-6d1b7c1f0a01", "nfs", ""]
SECONDS = st.sampled_from([0, -1, 0.5, 1, 5, 60.0, 1e9, 30])
PER_KEY = {  # plausible values per key, so well-typed documents reach every semantic check
    "url": st.sampled_from(["", "", "http://127.0.0.1:8080/", "https://[2001:db8::1]/", "ftp://x",
                            "http://"]),
    "socket": st.sampled_from(["/var/lib/xcp/xapi", "", "xapi.sock"]),
    "username": st.sampled_from(["root", ""]),
    "password_file": st.sampled_from(["", "", "/nonexistent/sspn-pw", "pw"]),
    "network": st.sampled_from(["sspn", "lan", "", " "]),
    "vms": st.lists(st.sampled_from(["pfsense", "opnsense", ""]), max_size=3),
    "addresses": st.lists(st.sampled_from(ADDRESSES), max_size=3),
    "gateway4": st.sampled_from(["", "192.0.2.1", "198.51.100.1", "203.0.113.1", "192.0.2.2",
                                 "2001:db8:1::1", "192.0.2.255"]),
    "gateway6": st.sampled_from(["", "2001:db8:1::1", "2001:db8:2::1", "fe80::1", "ff02::1",
                                 "192.0.2.1", "2001:db8:9::1"]),
    "bridge": st.sampled_from(["", "xenbr0", "bad name", "a" * 16]),
    "inventory": st.sampled_from(["/etc/xensource-inventory", "inventory"]),
    "uuid": st.sampled_from(UUIDS),
    "probe_mode": st.sampled_from(["tcp", "icmp", "tpc"]),
    "enable_host": st.sampled_from(list(("when-locked-out", "always", "never", "sometimes"))),
    "retry_budget": st.sampled_from([0, 1, 5]),
    "trace_max_bytes": st.sampled_from([100, 4096, 1048576]),
    "status": st.sampled_from(["/run/x.json", "x.json", ""]),
    "trace": st.sampled_from(["/var/log/t.jsonl", "t.jsonl", ""]),
}


def value_for(section, key, wild):
    """A plausible value of the right type; when ``wild``, sometimes anything at all."""
    if key not in SCHEMA.get(section, {}):
        return VALUES
    kind = SCHEMA[section][key]
    if section == "sr" and key == "probe":
        good = st.lists(st.sampled_from(["198.51.100.5", "2001:db8:3::5", "0.0.0.0", "nfs"]),
                        max_size=3)
    elif kind == "number":
        good = SECONDS
    else:
        good = PER_KEY.get(key, GOOD[kind])
    return st.one_of(good, good, good, VALUES) if wild else good


@st.composite
def tables(draw, section, wild):
    keys = list(SCHEMA[section])
    if wild:
        chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys)))
        if draw(st.integers(0, 9)) == 9:  # hypothesis favours small integers: 9 is rare
            chosen.append(draw(st.sampled_from(["bogus", section[:3], "gateway", "address"])))
    else:  # most keys present: the document gets past the "missing" checks
        dropped = draw(st.lists(st.sampled_from(keys), unique=True, max_size=2))
        chosen = [k for k in keys if k not in dropped]
    return dict((k, draw(value_for(section, k, wild))) for k in chosen)


@st.composite
def documents(draw, wild=True):
    sections = draw(st.lists(st.sampled_from(sorted(SCHEMA)), unique=True))
    if "binding" not in sections and draw(st.integers(0, 4)) != 4:
        sections.append("binding")
    doc = {}
    for section in sections:
        if section in ("binding", "sr"):
            doc[section] = draw(st.lists(tables(section, wild), min_size=1, max_size=3))
        else:
            doc[section] = draw(tables(section, wild))
    if wild and draw(st.integers(0, 9)) == 9:
        doc["extra"] = draw(VALUES)
    return doc


@FUZZ
@given(documents())
def test_fuzz_schema_shaped_documents(doc):
    """Documents of the schema's keys with random values of random types never crash."""
    outcome(toml_document(doc))


VALID_ADDRESSES = [["192.0.2.2/24", "2001:db8:1::2/64"], ["198.51.100.2/24"],
                   ["2001:db8:2::2/64", "203.0.113.2/24"]]


def valid_table(section, index=0):
    """Valid values for every key of a section (entry ``index`` of an array section)."""
    if section == "binding":
        return {"network": "sspn%d" % index, "vms": ["pfsense"],
                "addresses": list(VALID_ADDRESSES[index])}
    if section == "sr":
        return {"uuid": "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a0%d" % index,
                "probe": ["198.51.100.5"]}
    if section == "route":
        return {"gateway4": "192.0.2.1", "gateway6": "2001:db8:1::1", "probe": True}
    return dict((f.name, f.default) for f in attr.fields(
        type(getattr(default_config(), section))))


@st.composite
def near_valid_documents(draw):
    """A valid document with a few keys changed to plausible (often wrong) values or dropped."""
    doc = {}
    for section in sorted(SCHEMA):
        if section in ("binding", "sr"):
            doc[section] = [valid_table(section, i) for i in range(draw(st.integers(1, 3)))]
        else:
            doc[section] = valid_table(section)
    keys = [(sec, k) for sec in sorted(SCHEMA) for k in SCHEMA[sec]]
    for section, key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3)):
        tables_ = doc[section] if isinstance(doc[section], list) else [doc[section]]
        table = tables_[draw(st.integers(0, len(tables_) - 1))]
        if draw(st.integers(0, 5)) == 5:
            table.pop(key, None)
        else:
            table[key] = draw(value_for(section, key, wild=False))
    return doc


@FUZZ
@given(near_valid_documents())
def test_fuzz_near_valid_documents(doc):
    """Valid documents with a few keys changed reach every semantic check and never crash."""
    outcome(toml_document(doc))


@st.composite
def mutations(draw):
    lines = EXAMPLE_TEXT.splitlines(True)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["drop", "dup", "swap", "edit", "insert"]))
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "drop" and len(lines) > 1:
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "edit" and lines[i]:
            a = draw(st.integers(0, len(lines[i])))
            b = draw(st.integers(a, len(lines[i])))
            lines[i] = lines[i][:a] + draw(st.one_of(st.text(max_size=6), PLAUSIBLE.map(
                lambda p: '"%s"' % p))) + lines[i][b:]
        else:
            lines.insert(i, draw(st.sampled_from(
                ["[[binding]]\n", "[[sr]]\n", "[route]\n", 'gateway4 = "198.51.100.1"\n',
                 'addresses = ["192.0.2.2/24"]\n', "retry_budget = 0\n", "probe = [1]\n",
                 'uuid = "5F8C0A36-3C4E-4A4E-9A52-6D1B7C1F0A01"\n', "]\n", "= 1\n"])))
    return "".join(lines)


@FUZZ
@given(mutations())
def test_fuzz_mutated_example(text):
    """Copies of the example with lines dropped, duplicated, swapped or edited never crash."""
    outcome(text)


@st.composite
def valid_configs(draw):
    """Random valid Configs: bindings on distinct documentation subnets, gateways inside them."""
    nets = draw(st.lists(st.sampled_from(["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/25",
                                          "2001:db8:1::/64", "2001:db8:2::/64"]),
                         min_size=1, max_size=5, unique=True))
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    groups = {}
    for net in nets:
        groups.setdefault(rng.randrange(3), []).append(net)
    bindings = []
    for i, group in enumerate(groups.values()):
        ifaces = ["%s/%d" % (ipaddress.ip_network(n)[2], ipaddress.ip_network(n).prefixlen)
                  for n in group]
        bindings.append(Binding("net %d \"q\"" % i, ["fw%d" % i, "fw-b"], ifaces))
    gw = {}
    for family in (4, 6):
        owned = [n for n in nets if ipaddress.ip_network(n).version == family]
        if owned and draw(st.booleans()):
            gw[family] = str(ipaddress.ip_network(owned[0])[1])
    srs = [SrConfig("5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a0%d" % i,
                    draw(st.lists(st.sampled_from(["198.51.100.9", "2001:db8:3::9"]),
                                  unique=True)))
           for i in range(draw(st.integers(0, 3)))]
    return Config(bindings=bindings, route=RouteConfig(gw.get(4), gw.get(6),
                                                       draw(st.booleans())),
                  srs=srs, path="gen.toml")


@settings(max_examples=max(100, settings().max_examples), deadline=None)
@given(valid_configs())
def test_valid_configs_round_trip(config):
    """Any valid Config renders to TOML that loads back equal (render_config for the lab)."""
    assert parse_config(render_config(config), "gen.toml") == config
