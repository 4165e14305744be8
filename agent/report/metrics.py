"""Metrics in the Prometheus text format, for node_exporter's textfile collector.

Off unless ``[files] metrics`` names a file (e.g.
/var/lib/node_exporter/textfile_collector/sspn_agent.prom). ``MetricsReport`` wraps the
report the agent writes to: it counts what passes through (transitions, effects) and rewrites
the file, atomically (a temp file in the same directory, then rename, as the textfile collector
requires), each time the status is written. Counters start at 0 with each agent process;
``sspn_agent_start_time_seconds`` tells a restart from a reset. The format:
https://prometheus.io/docs/instrumenting/exposition_formats/ (text format 0.0.4).
"""

import os
import time

STATES = ("BOOTING", "MAINTENANCE", "WAITING_VM", "BINDING", "ROUTED", "SR_PROBING", "HEALTHY",
          "DEGRADED")
# The first word of an effect's "what" -> the repair it made (see states/*.py ctx.effect calls).
REPAIR_KINDS = {"add": "address", "default": "route", "PBD.plug": "pbd_plug",
                "VM.start": "vm_start", "host.enable": "host_enable"}


def repair_kind(what):
    """The repair an effect description names ("add 192.0.2.2/24 on xapi0" -> "address"), or None."""
    return REPAIR_KINDS.get((what or "").split(" ", 1)[0])


def probe_kind(what):
    """ "gateway" or "storage" for a probe effect ("probe gateway ..." / "probe sr:..."), else None."""
    words = (what or "").split()
    if not words or words[0] != "probe":
        return None
    return "gateway" if words[1:2] == ["gateway"] else "storage"


def _label(value):
    """A label value escaped as the text format requires (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics(object):
    """The counters and gauges, fed with trace records; ``render`` gives the file's text."""

    def __init__(self, started=None):
        self.started = time.time() if started is None else started
        self.transitions = {}      # (trigger, to) -> count
        self.repairs = {}          # kind -> count
        self.probe_failures = {}   # kind -> count
        self.bind_started = None
        self.last_bind_delay = None

    def effect(self, entry):
        """Count one effect (a trace effect record, or one inside a transition)."""
        if entry.get("ok", True):
            kind = repair_kind(entry.get("what"))
            if kind:
                self.repairs[kind] = self.repairs.get(kind, 0) + 1
        else:
            kind = probe_kind(entry.get("what"))
            if kind:
                self.probe_failures[kind] = self.probe_failures.get(kind, 0) + 1

    def transition(self, record):
        """Count one transition and its effects; time BINDING (entered -> left for ROUTED)."""
        key = (record.get("trigger", "?"), record.get("to", "?"))
        self.transitions[key] = self.transitions.get(key, 0) + 1
        for entry in record.get("effects", ()):
            self.effect(entry)
        if record.get("to") == "BINDING" and record.get("from") != "BINDING":
            self.bind_started = record.get("time")
        elif record.get("from") == "BINDING" and record.get("to") == "ROUTED":
            if self.bind_started is not None and record.get("time") is not None:
                self.last_bind_delay = max(0.0, record["time"] - self.bind_started)
            self.bind_started = None

    def render(self, state, since, now=None):
        """The metrics file's text for the current ``state`` entered at ``since`` (epoch s)."""
        now = time.time() if now is None else now
        out = []

        def family(name, kind, text, samples):
            out.append("# HELP %s %s" % (name, text))
            out.append("# TYPE %s %s" % (name, kind))
            for labels, value in samples:
                body = ",".join('%s="%s"' % (k, _label(v)) for k, v in labels)
                out.append("%s%s %s" % (name, "{%s}" % body if body else "", _number(value)))

        family("sspn_agent_state", "gauge", "1 for the agent's current state, 0 for the others.",
               [((("state", s),), 1 if s == state else 0) for s in STATES])
        family("sspn_agent_state_since_timestamp_seconds", "gauge",
               "When the agent entered its current state (Unix time).", [((), since)])
        family("sspn_agent_state_seconds", "gauge", "Seconds in the current state.",
               [((), max(0.0, now - since))])
        family("sspn_agent_start_time_seconds", "gauge",
               "When this agent process started (Unix time); counters restart from 0 with it.",
               [((), self.started)])
        family("sspn_agent_transitions_total", "counter", "Transitions, by trigger and target state.",
               [((("trigger", t), ("to", to)), n) for (t, to), n in sorted(self.transitions.items())])
        family("sspn_agent_repairs_total", "counter", "Repairs made, by kind (address, route, "
               "pbd_plug, vm_start, host_enable).",
               [((("kind", k),), n) for k, n in sorted(self.repairs.items())])
        family("sspn_agent_probe_failures_total", "counter",
               "Probe rounds without an answer, by target kind (gateway, storage).",
               [((("kind", k),), n) for k, n in sorted(self.probe_failures.items())])
        if self.last_bind_delay is not None:
            family("sspn_agent_last_bind_delay_seconds", "gauge",
                   "Seconds from entering BINDING to the addresses being bound (the last time).",
                   [((), self.last_bind_delay)])
        return "\n".join(out) + "\n"


def _number(value):
    return ("%d" % value) if isinstance(value, int) else ("%.3f" % value)


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temp file in the same directory and rename()."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


class MetricsReport(object):
    """A report that passes everything to ``inner`` and keeps ``path`` up to date."""

    def __init__(self, inner, path, log, clock=time.time):
        self.inner, self.path, self.log, self.clock = inner, path, log, clock
        self.metrics = Metrics(started=clock())
        self._failing = False

    def transition(self, record):
        """Count a transition, then pass it on."""
        self.metrics.transition(record)
        self.inner.transition(record)

    def effect(self, record):
        """Count an effect, then pass it on."""
        self.metrics.effect(record)
        self.inner.effect(record)

    def status(self, snapshot):
        """Write the status (inner), then the metrics file; a failure is logged once."""
        self.inner.status(snapshot)
        text = self.metrics.render(snapshot.get("state", "BOOTING"),
                                   snapshot.get("since", self.clock()), self.clock())
        try:
            write_atomic(self.path, text)
        except OSError as e:
            if not self._failing:
                self.log.warning("cannot write the metrics file %s: %s, retrying with each status "
                                 "update", self.path, e.strerror or e)
            self._failing = True
            return
        if self._failing:
            self.log.info("metrics file %s written again", self.path)
        self._failing = False

    def __getattr__(self, name):  # anything else a report offers
        return getattr(self.inner, name)


def wrap(report, path, log):
    """``report`` itself when ``path`` is empty (metrics off), else a MetricsReport around it."""
    return MetricsReport(report, path, log) if path else report
