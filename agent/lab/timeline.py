"""The lab's timeline: the agent's trace merged with the lab's own actions, rendered and summed up.

Agent records come from the trace file (agent/report/trace.py: transitions ``{from, to, trigger, cause,
effects, time}`` and effects ``{type: "effect", what, result, state, time}``); the lab's own
records (``lab_event``) are what the lab injected (source "lab") or what the simulated XAPI did
on its own (source "sim", e.g. a VM power hook making the bridge). Every entry carries ``t``:
seconds since the lab started, on the wall clock the trace uses. Python 3.6 compatible.
"""

import re

AGENT, LAB, SIM = "agent", "lab", "sim"
MARK = {LAB: "[lab]", SIM: "[sim]"}
CAUSE_WIDTH = 110   # text mode cuts long causes (JSON keeps them whole)

_PLUG = re.compile(r"^PBD\.plug sr:(\S+)$")
_START = re.compile(r"^VM\.start (.+)$")
_REPEATED = re.compile(r"^(add |default via |PBD\.plug |VM\.start |host\.enable)")


def lab_event(when, what, source=LAB, **extra):
    """A record of something the lab did (or the simulator did by itself) at wall time ``when``."""
    entry = {"time": when, "source": source, "kind": "action", "what": what}
    entry.update(extra)
    return entry


def merge(trace_records, lab_events, origin):
    """Timeline entries from both sources, oldest first, each with ``t`` relative to ``origin``.

    At equal times the lab's entry comes first: what was injected precedes the reaction.
    """
    entries = []
    for record in trace_records:
        if record.get("type") == "effect":
            entry = {"source": AGENT, "kind": "effect", "state": record.get("state"),
                     "what": record.get("what"), "result": record.get("result"),
                     "ok": record.get("ok", True)}
        else:
            entry = {"source": AGENT, "kind": "transition", "from": record.get("from"),
                     "to": record.get("to"), "trigger": record.get("trigger"),
                     "cause": record.get("cause"),
                     "effects": [{"what": e.get("what"), "result": e.get("result"),
                                  "ok": e.get("ok", True)} for e in record.get("effects", [])]}
        entry["time"] = float(record.get("time", 0.0))
        entries.append(entry)
    entries.extend(dict(event) for event in lab_events)
    entries.sort(key=lambda e: (e["time"], 0 if e["source"] != AGENT else 1))
    for entry in entries:
        entry["t"] = round(entry["time"] - origin, 3)
    return entries


def _cut(text, width=CAUSE_WIDTH):
    text = str(text or "")
    return text if len(text) <= width else text[:width - 3] + "..."


def render(entries):
    """The timeline as text lines: elapsed seconds, state change or action, cause, effects."""
    lines = ["     t (s)  what happened"]
    for e in entries:
        stamp = "%10.3f" % e["t"]
        if e["source"] != AGENT:
            lines.append("%s  %s %s" % (stamp, MARK.get(e["source"], "[%s]" % e["source"]),
                                        e["what"]))
        elif e["kind"] == "transition":
            lines.append("%s  %s -> %s  on %s" % (stamp, e["from"], e["to"], e["trigger"]))
            lines.append("%s     cause: %s" % (" " * 10, _cut(e["cause"])))
            for fx in e["effects"]:
                lines.append("%s     effect: %s -> %s" % (" " * 10, fx["what"], fx["result"]))
        else:
            lines.append("%s  (%s) effect: %s -> %s" % (stamp, e["state"], e["what"], e["result"]))
    return lines


# --- reading facts back out of the timeline ----------------------------------------------------

def effects(entries, since=None):
    """(time, what, result, ok) of every agent effect, in order; transition effects take its time."""
    out = []
    for e in entries:
        if e["source"] != AGENT or (since is not None and e["time"] < since):
            continue
        if e["kind"] == "transition":
            out.extend((e["time"], fx["what"], fx["result"], fx["ok"]) for fx in e["effects"])
        else:
            out.append((e["time"], e["what"], e["result"], e["ok"]))
    return out


def transitions(entries):
    """The agent's transitions, in order."""
    return [e for e in entries if e["source"] == AGENT and e["kind"] == "transition"]


def srs_plugged(entries):
    """SR uuids whose PBD.plug succeeded, in order."""
    out = []
    for _t, what, result, _ok in effects(entries):
        match = _PLUG.match(what or "")
        if match and result == "ok" and match.group(1) not in out:
            out.append(match.group(1))
    return out


def vms_started(entries, by_lab=False):
    """VMs the simulated XAPI booted, in order: through XAPI calls (the agent's), or with
    ``by_lab`` those the lab started itself (sim.* controls, e.g. a reboot)."""
    return [e["vm_started"] for e in entries if e["source"] == SIM and e.get("vm_started")
            and bool(e.get("by_lab")) == by_lab]


def untraced_starts(entries):
    """VMs booted through XAPI that have no "VM.start <name> -> ok" in the agent's trace."""
    traced = [_START.match(what).group(1) for _t, what, result, _ok in effects(entries)
              if _START.match(what or "") and result == "ok"]
    out = []
    for name in vms_started(entries):
        if name in traced:
            traced.remove(name)
        else:
            out.append(name)
    return out


def count_calls(calls):
    """{method: {"ok": n, "failed": m}} from the lab's (time, method, succeeded) call records."""
    out = {}
    for _when, method, ok in calls:
        counts = out.setdefault(method, {"ok": 0, "failed": 0})
        counts["ok" if ok else "failed"] += 1
    return out


def repeated_effects(entries, since):
    """Kernel or XAPI changes the agent made at or after wall time ``since`` ("what -> result")."""
    return ["%s -> %s" % (what, result) for _t, what, result, _ok in effects(entries, since)
            if _REPEATED.match(what or "") and result not in ("present",)]


def bind_delays(entries):
    """[(bridge, seconds)]: each bridge the simulator's VM hook created -> the next entry into
    ROUTED (addresses bound and default routes installed, per the trace)."""
    out = []
    routed = [e["time"] for e in transitions(entries) if e["to"] == "ROUTED"]
    for e in entries:
        if e["source"] == SIM and e.get("bridge_created"):
            later = [t for t in routed if t >= e["time"] - 0.0005]  # trace times are ms-rounded
            if later:
                out.append((e["bridge_created"], round(max(0.0, later[0] - e["time"]), 3)))
    return out


def healthy_at(entries, since=None):
    """Wall time of the last transition into HEALTHY (at or after ``since``), or None."""
    times = [e["time"] for e in transitions(entries) if e["to"] == "HEALTHY"
             and (since is None or e["time"] >= since - 0.0005)]
    return times[-1] if times else None


def first_effect(entries, pattern, since, result="ok"):
    """Wall time of the first effect matching regex ``pattern`` with ``result`` after ``since``."""
    regex = re.compile(pattern)
    for t, what, res, _ok in effects(entries, since):
        if regex.search(what or "") and res == result:
            return t
    return None


# --- the summary -------------------------------------------------------------------------------

def render_summary(summary):
    """The summary block as text lines."""
    s = summary
    lines = ["summary (%s, %s):" % (s["scenario"], s["kernel"])]

    def row(label, value):
        lines.append("  %-22s %s" % (label, value))
    row("result", "ok" if s["ok"] else "FAILED: %s" % s["error"])
    if s.get("time_to_healthy") is not None:
        row("time to HEALTHY", "%.3f s after %s (HEALTHY at +%.3f s)"
            % (s["time_to_healthy"], s["measured_from"], s["healthy_at"]))
    else:
        row("time to HEALTHY", "not reached")
    if s.get("bind_delays"):
        row("bind delay", ", ".join("%s %.0f ms" % (b, 1000 * d) for b, d in s["bind_delays"])
            + " (bridge made by the VM hook -> addresses + default routes, per the trace)")
    row("SRs plugged", ", ".join(s["srs_plugged"]) or "none")
    row("VMs started (order)", (", ".join(s["vms_started"]) or "none") + " (booted through XAPI)")
    if s.get("vms_started_by_lab"):
        row("started by the lab", ", ".join(s["vms_started_by_lab"]))
    if s.get("untraced_starts"):
        row("not in the trace", ", ".join("VM.start %s" % n for n in s["untraced_starts"])
            + " (booted, but the agent's trace has no such effect)")
    if s.get("xapi_calls"):
        row("XAPI calls received", ", ".join("%s %d ok%s" % (m, c["ok"], ", %d failed" % c["failed"]
                                                            if c["failed"] else "")
                                            for m, c in sorted(s["xapi_calls"].items())))
    for key, label in (("storage_back_to_plugged", "storage up -> plugged"),):
        if s.get(key) is not None:
            row(label, "%.3f s%s" % (s[key], s.get(key + "_note", "")))
    if "repeated_effects" in s:
        row("repeated effects", ", ".join(s["repeated_effects"]) or "none")
    ping = s.get("ping")
    if ping:
        row("ping through the fw", "%s: %s -> %s (%s)" % (
            "ok" if ping["ok"] else "NO ANSWER", ping["from"], ping["target"], ping["how"]))
    stop = s.get("agent_stop")
    if stop:
        row("agent stop", "%s: %s; networking %s" % (
            stop["how"], "exited %s" % stop["exit"] if stop["exit"] is not None else "DID NOT EXIT",
            "left in place" if stop["networking_left_in_place"] else
            "CHANGED (missing: %s)" % ", ".join(stop["missing"])))
    return lines


def summary(name, entries, lab, kind, error, ping, stop):
    """The summary of one run: time to HEALTHY, bind delays, SRs, VMs, ping, how the agent stopped."""
    delays = bind_delays(entries)
    healthy = lab.healthy_time
    out = {
        "scenario": name, "kernel": kind, "ok": error is None, "error": error,
        "healthy_at": round(healthy - lab.origin, 3) if healthy else None,
        "time_to_healthy": round(healthy - lab.fault_at, 3) if healthy and lab.fault_at else None,
        "measured_from": lab.fault_label,
        "bind_delays": [[b, d] for b, d in delays], "bind_delay": delays[-1][1] if delays else None,
        "srs_plugged": srs_plugged(entries), "vms_started": vms_started(entries),
        "vms_started_by_lab": vms_started(entries, by_lab=True),
        "untraced_starts": untraced_starts(entries), "xapi_calls": count_calls(lab.calls),
        "ping": ping, "agent_stop": stop}
    out.update(lab.notes)
    return out


def render_run(run):
    """A run as text: what ran where, the timeline, the summary."""
    info = run["lab"]
    lines = ["agent lab: %s -- %s" % (run["scenario"], run["description"])]
    if info.get("namespaces"):
        lines.append("  kernel: %s %s" % (run["kernel"], ", ".join(info["namespaces"])))
        lines.append("  agent:  pid %s, %s" % (info["agent_pid"], info["agent_command"]))
    else:
        lines.append("  kernel: %s; the agent runs in this process; the XAPI simulator and "
                     "adapter are real" % run["kernel"])
    lines.append("  files:  %s %s" % (info["workdir"], "(kept: see agent.log)"
                                      if info["workdir_kept"] else "(removed)"))
    return "\n".join(lines + [""] + render(run["timeline"]) + [""] + render_summary(run["summary"]))
