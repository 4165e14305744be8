"""Every duration, count, size and list of agent.toml has bounds (docs/hostile.md).

Hypothesis writes config text around agent.toml.example: any value for each bounded key
(tiny, huge, 30-digit integers, negative), lists past their caps, duplicates, and arbitrary
lines. The verdict is a ConfigError naming the key on one line, or a config whose every
bounded value lies inside BOUNDS: nothing that passes validation can make the agent spin.
"""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from agent import config as cfgmod
from tests.hostile.conftest import ROOT, read

EXAMPLE = read(os.path.join(ROOT, "agent.toml.example"))
NUMBERS = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64),
                    st.floats(min_value=1e-12, max_value=1e-1),
                    st.integers(min_value=-10 ** 30, max_value=10 ** 30),
                    st.sampled_from([0, 1, 10 ** 29, 1e-9, 86400.0, 86401, 1e300]))


def _with(section, key, value):
    """The example with ``key`` of ``[section]`` set to ``value`` (TOML text)."""
    lines, out, current, done = EXAMPLE.split("\n"), [], None, False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped.strip("[]")
        if current == section and stripped.startswith(key + " ") and not done:
            line, done = "%s = %s" % (key, value), True
        out.append(line)
    assert done, (section, key)
    return "\n".join(out)


def _toml_number(value):
    if isinstance(value, float):
        return repr(value) if "e" in repr(value) or "." in repr(value) else repr(value) + ".0"
    return str(value)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(cfgmod.BOUNDS)), NUMBERS)
def test_a_bounded_value_is_inside_its_bounds_or_refused_by_name(where, value):
    section, key = where
    text = _with(section, key, _toml_number(value))
    try:
        config = cfgmod.parse_config(text)
    except cfgmod.ConfigError as exc:
        named = {"%s.%s" % where}
        if key == "backoff_base":
            named.add("timing.backoff_cap")  # "below backoff_base": the pair is named there
        assert exc.key in named and "\n" not in str(exc) and len(str(exc)) < 400
        return
    low, high = cfgmod.BOUNDS[where]
    got = getattr(getattr(config, section), key)
    assert low <= got <= high


def _binding(n, vms=1, addresses=1):
    return '[[binding]]\nnetwork = "net%d"\nvms = [%s]\naddresses = [%s]\n' % (
        n, ", ".join('"vm%d-%d"' % (n, i) for i in range(vms)),
        ", ".join('"10.%d.%d.2/24"' % (n, i) for i in range(addresses)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 20))
def test_lists_are_capped(bindings, vms, addresses):
    text = "".join(_binding(n, vms, addresses) for n in range(bindings))
    try:
        config = cfgmod.parse_config(text)
    except cfgmod.ConfigError as exc:
        assert bindings > cfgmod.MAX_BINDINGS or vms > cfgmod.MAX_VMS or \
            addresses > cfgmod.MAX_ADDRESSES, exc
        assert "at most" in str(exc)
        return
    assert len(config.bindings) <= cfgmod.MAX_BINDINGS


def test_duplicates_are_refused_everywhere():
    cases = {
        'vms = ["pfsense", "pfsense"]': "binding[0].vms[1]",
        'addresses = ["192.0.2.2/24", "192.0.2.2/24"]': "binding[0].addresses[1]",
        'probe = ["198.51.100.5", "198.51.100.5"]': "sr[0].probe[1]",
    }
    for line, key in sorted(cases.items()):
        name = line.split(" =")[0]
        section = "sr" if name == "probe" else "binding"
        text = _with(section, name, line.split(" = ", 1)[1])
        try:
            cfgmod.parse_config(text)
        except cfgmod.ConfigError as exc:
            assert exc.key == key and "twice" in str(exc)
        else:
            raise AssertionError("accepted: %s" % line)
    text = EXAMPLE + '\n[[sr]]\nuuid = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"\n'
    try:
        cfgmod.parse_config(text)
    except cfgmod.ConfigError as exc:
        assert "twice" in str(exc)
    else:
        raise AssertionError("a duplicate [[sr]] was accepted")


def test_long_strings_are_refused():
    text = _with("binding", "vms", '["%s"]' % ("x" * (cfgmod.MAX_LABEL + 1)))
    try:
        cfgmod.parse_config(text)
    except cfgmod.ConfigError as exc:
        assert "at most %d" % cfgmod.MAX_LABEL in str(exc)
    else:
        raise AssertionError("a 256-character label was accepted")


def test_a_vm_may_be_named_by_uuid():
    uuid = "0B7A3C1E-2D4F-4A6B-8C9D-0E1F2A3B4C5D"
    config = cfgmod.parse_config(_with("binding", "vms", '["pfsense", "%s"]' % uuid))
    assert config.bindings[0].vms == ("pfsense", uuid.lower())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=4), st.integers(0, 80))
def test_arbitrary_lines_give_a_config_or_one_error_line(lines, where):
    rows = EXAMPLE.split("\n")
    where = min(where, len(rows))
    text = "\n".join(rows[:where] + lines + rows[where:])
    try:
        config = cfgmod.parse_config(text)
    except cfgmod.ConfigError as exc:
        assert "\n" not in str(exc)
        return
    for (section, key), (low, high) in cfgmod.BOUNDS.items():
        assert low <= getattr(getattr(config, section), key) <= high


def test_the_journal_cannot_be_flooded():
    """Whatever a valid config lets happen, the log handler passes a burst, then a rate, and
    says how many lines it dropped (agent/report/logsetup.py RateLimit)."""
    import io
    import logging

    from agent.report import logsetup
    now = [0.0]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logsetup.SafeFormatter("%(message)s"))
    handler.addFilter(logsetup.RateLimit(clock=lambda: now[0]))
    logger = logging.getLogger("hostile-flood")
    logger.handlers[:] = [handler]
    logger.propagate = False
    for i in range(10000):
        logger.warning("probe %d: no answer, retrying in 0.0 s", i)
    assert len(stream.getvalue().splitlines()) == logsetup.BURST
    now[0] += 1.0
    for i in range(10000):
        logger.warning("probe %d: no answer", i)
    lines = stream.getvalue().splitlines()
    assert len(lines) == logsetup.BURST + logsetup.RATE
    assert lines[logsetup.BURST].startswith("(9800 log lines dropped")
