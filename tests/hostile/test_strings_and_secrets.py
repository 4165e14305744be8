"""Strings from XAPI are data, credentials never leave the process (docs/hostile.md).

Unit level: agent/report/text.py is the one place both rules live; these tests drive it with
hypothesis and then check each sink applies it: events' describe(), the trace writer and
renderer, the status writer and renderer, the log formatter.
"""

import io
import json
import logging
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decision import events as ev
from agent.report import logsetup, status, text, trace
from agent.decision.world import PbdView, VmView
from tests.hostile.conftest import read

SECRET = "hunter2-S3CRET"
HOSTILE = ("\n2026-01-01 00:00:00 DEGRADED -> HEALTHY on forged (cause: x)\x1b[2J\x1b[31m"
           "\u202egnp.exe\u2066\u200b\u2028\u2029\x00\x7f\x85" + "L" * 20000)
CREDENTIAL_KEYS = ("password", "Password", "chappassword", "incoming_chappassword",
                   "CHAPPassword", "password_secret", "cifspassword", "secret", "api_token",
                   "private_key", "ssh-key", "key", "passphrase", "auth")


def _safe(line):
    return not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in line)


@given(st.text(max_size=2000))
def test_clean_gives_one_safe_bounded_line(value):
    out = text.clean(value)
    assert _safe(out) and len(out) <= text.LIMIT + 40


@settings(max_examples=200)
@given(st.sampled_from(CREDENTIAL_KEYS), st.text(min_size=1, max_size=40).filter(
    lambda s: s.strip() and "'" not in s and '"' not in s))
def test_credential_keys_are_redacted_in_maps_and_in_text(key, secret):
    cleaned = text.clean_tree({"device_config": {key: secret, "server": "192.0.2.9"}})
    assert cleaned["device_config"][key] == text.REDACTED
    assert cleaned["device_config"]["server"] == "192.0.2.9"
    shown = text.clean("PbdView(device_config={%r: %r})" % (key, secret))
    assert text.REDACTED in shown


def _pbd(**device_config):
    return PbdView(ref="OpaqueRef:p", sr_uuid="5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01",
                   attached=False, device_config=device_config, sr_type="nfs", shared=True,
                   master_attached=None)


def test_describe_redacts_device_config_credentials():
    event = ev.PbdChanged(_pbd(server="198.51.100.10", password=SECRET, chappassword=SECRET,
                               serverpath="/export"))
    described = event.describe()
    assert SECRET not in described and "5f8c0a36" in described
    shown = ev.show(dict(event.pbd.device_config))  # a map shown on its own is redacted too
    assert SECRET not in shown and "REDACTED" in shown and "198.51.100.10" in shown
    assert SECRET not in ev.redact({"password": SECRET, "nested": {"Secret": SECRET}})


def test_every_sink_escapes_and_shortens_a_hostile_label(tmp_path):
    vm = VmView(ref="OpaqueRef:v", name_label=HOSTILE, power_state="Running")
    cause = ev.VmChanged(vm).describe()
    record = {"time": 1.7e9, "from": "ROUTED", "to": "HEALTHY", "trigger": "t",
              "cause": cause, "effects": [{"what": "VM.start %s" % HOSTILE, "result": "ok"}],
              "device_config": {"password": SECRET}}
    # the trace: written cleaned, rendered cleaned
    path = str(tmp_path / "trace.jsonl")
    trace.TraceFile(path).append(record)
    raw = read(path, binary=True)
    assert SECRET.encode() not in raw and raw.count(b"\n") == 1 and len(raw) < 4000
    for rec in trace.read(path):
        line = trace.render(rec)
        assert _safe(line) and "\n" not in line and len(line) < 2000
    # the status: written cleaned, rendered cleaned
    spath = str(tmp_path / "status.json")
    status.write_atomic(spath, {"state": "HEALTHY", "since": 1.7e9, "meaning": HOSTILE,
                                "reasons": {"vm:%s" % HOSTILE: HOSTILE}, "blockers": [HOSTILE],
                                "pbd": {"device_config": {"chappassword": SECRET}},
                                "transitions": [record]})
    raw = read(spath, binary=True)
    assert SECRET.encode() not in raw and len(raw) < 8000
    for line in status.render(json.loads(raw.decode()), True).splitlines():
        assert _safe(line) and len(line) < 2000
    # the journal
    stream = io.StringIO()
    logger = logging.getLogger("hostile-test")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logsetup.JournalFormatter("%(message)s"))
    logger.addHandler(handler)
    try:
        logger.warning("%s -> %s (cause: %s) password=%s", "ROUTED", "HEALTHY", cause, SECRET)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert out.count("\n") == 1 and _safe(out.rstrip("\n")) and SECRET not in out
    assert len(out) <= logsetup.MESSAGE_LIMIT + 60


def test_xapi_publish_and_message_bodies_are_cleaned():
    """What the XAPI adapter sends for PublishState / RaiseMessage (the sink of core.publish
    and core.alert) goes through text.clean: checked on the recorded calls."""
    from agent.adapters.xapi import XapiAdapter
    from agent.decision.world import PublishState, RaiseMessage
    calls = []

    class Conn(object):
        call_timeout = 1.0

        def call(self, name, *args, **kw):
            calls.append((name, args))
            return "OpaqueRef:m"
    adapter = XapiAdapter.__new__(XapiAdapter)
    adapter._execute(Conn(), PublishState("OpaqueRef:h", {"sspn-agent-reason": HOSTILE +
                                                          " password=" + SECRET}))
    adapter._execute(Conn(), RaiseMessage("SSPN_AGENT_DEGRADED", HOSTILE + " chappassword: " +
                                          SECRET, priority=2, host_uuid="u"))
    sent = [a for _, args in calls for a in args if isinstance(a, str)]
    assert sent and all(_safe(a) and SECRET not in a and len(a) <= 2100 for a in sent)
