"""`agent status` and `agent trace` survive any file content (docs/hostile.md).

Hypothesis writes arbitrary JSON (every shape, not only dicts), arbitrary bytes and huge files
as the status file and the trace, then runs the real CLI entry point in-process: an exit
status from the documented set, short lines, no control character, never an exception.
`trace -n` reads a bounded amount from the end of a huge file.
"""

import json
import os
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.tools import cli

from agent.report import safefile, status, trace

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=6),
    max_leaves=12)
KEYS = ("state", "since", "updated", "pid", "boot_id", "stopped", "reasons", "blockers", "xapi",
        "addresses", "routes", "srs", "next_retry", "transitions", "meaning", "heartbeat",
        "replaced_routes", "type", "time", "from", "to", "effects", "what", "result")
SHAPED = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=12)
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _printable(text):
    return all(unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp") or ch == "\n"
               for ch in text)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


@SETTINGS
@given(content=st.one_of(SHAPED.map(lambda d: json.dumps(d).encode()),
                         JSON.map(lambda d: json.dumps(d).encode()),
                         st.binary(max_size=300)))
def test_status_survives_any_content(tmp_path, capsys, content):
    path = str(tmp_path / "status.json")
    _write(path, content)
    for argv in (("status", "--file", path), ("status", "--json", "--file", path)):
        code, out, err = _run(capsys, *argv)
        assert code in (status.EXIT_HEALTHY, status.EXIT_WORKING, status.EXIT_DEGRADED,
                        status.EXIT_NOT_RUNNING, status.EXIT_STALE)
        assert _printable(out + err) and "Traceback" not in out + err
        assert all(len(line) < 3000 for line in out.splitlines())


@SETTINGS
@given(lines=st.lists(st.one_of(SHAPED.map(json.dumps), JSON.map(json.dumps),
                                st.binary(max_size=80).map(lambda b: b.decode("latin-1"))),
                      max_size=8))
def test_trace_survives_any_content(tmp_path, capsys, lines):
    path = str(tmp_path / "trace.jsonl")
    _write(path, "\n".join(lines).encode("utf-8", "surrogatepass"))
    for argv in (("trace", "--file", path), ("trace", "-n", "3", "--file", path),
                 ("trace", "--json", "--file", path)):
        code, out, err = _run(capsys, *argv)
        assert code == 0 and _printable(out + err) and "Traceback" not in out + err


def test_a_huge_corrupt_status_is_one_line(tmp_path, capsys):
    path = str(tmp_path / "status.json")
    with open(path, "wb") as f:
        f.truncate(status.READ_LIMIT + 1)
    code, out, _ = _run(capsys, "status", "--file", path)
    assert code == status.EXIT_NOT_RUNNING and len(out.splitlines()) == 1
    assert "larger than" in out


def test_a_corrupt_status_is_not_called_missing(tmp_path, capsys):
    path = str(tmp_path / "status.json")
    _write(path, b'{"state": "HEAL')
    code, out, _ = _run(capsys, "status", "--file", path)
    assert code == status.EXIT_NOT_RUNNING and "not valid JSON" in out and "no status" not in out


def test_trace_n_reads_from_the_end_of_a_huge_file(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "trace.jsonl")
    record = json.dumps({"type": "effect", "time": 1.7e9, "state": "HEALTHY", "what": "w",
                         "result": "r" * 200}) + "\n"
    with open(path, "w") as f:
        f.write(record * 60000)  # about 15 MB
        f.write(json.dumps({"type": "effect", "time": 1.7e9, "state": "HEALTHY",
                            "what": "the last", "result": "ok"}) + "\n")
    read = []
    real = safefile._read_upto

    def counting(fd, limit):
        data = real(fd, limit)
        read.append(len(data))
        return data
    monkeypatch.setattr(safefile, "_read_upto", counting)
    code, out, _ = _run(capsys, "trace", "-n", "3", "--file", path)
    assert code == 0 and len(out.splitlines()) == 3 and "the last: ok" in out.splitlines()[-1]
    assert sum(read) <= 3 * trace.TAIL_BYTES < os.path.getsize(path) // 100


def test_trace_n_with_large_records_reads_more_and_never_skips_a_gap(tmp_path, capsys):
    """Records larger than the per-record guess: -n still gives the last N, in order, from the
    current file; the rotated file is used only when the current one was read whole."""
    path = str(tmp_path / "trace.jsonl")
    with open(path + ".1", "w") as f:
        f.write(json.dumps({"type": "effect", "time": 1.7e9, "what": "old", "result": "x"}) + "\n")
    with open(path, "w") as f:
        for n in range(40):
            f.write(json.dumps({"type": "effect", "time": 1.7e9, "what": "n%d" % n,
                                "result": "r" * 20000}) + "\n")
    records = trace.read(path, 5)
    assert [r["what"] for r in records] == ["n35", "n36", "n37", "n38", "n39"]
    assert [r["what"] for r in trace.read(path, 45)][:2] == ["old", "n0"]  # read whole: no gap
    with open(path, "w") as f:
        f.write(json.dumps({"type": "effect", "time": 1.7e9, "what": "new", "result": "x"}) + "\n")
    assert [r["what"] for r in trace.read(path, 5)] == ["old", "new"]
