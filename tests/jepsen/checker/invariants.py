"""Cheap whole-history checks besides WGL (JEPSEN.md 4.3, 4.5).

nonce_uniqueness(events)   each nonce accepted (ok, true) at most once cluster-wide
availability(events)       ok/fail/info per 1 s bucket, with nemesis windows
nemesis_windows(events)    fault windows and point events from nemesis events
leaders_per_term(paths)    at most one node claims leadership per raft term

Nemesis events (history.History.nemesis) are read flexibly: nemesis.py's
"KIND-start"/"KIND-stop"/"heal-all" logged with phase="invoke" then "ok" or
"fail", or event "start"/"stop" with fault=KIND (optional id= to pair
several windows of one kind) and "heal_all"; other events are point
events. See nemesis_windows().
"""

import os
import re

if __package__ in (None, ""):
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from checker import wgl  # noqa: E402
else:
    from . import wgl

NS = 1_000_000_000
_START = ("start", "begin", "on")
_STOP = ("stop", "end", "off", "undo")
_CLOSE = ("reset",)                         # KIND-reset closes KIND windows too
_SKEW = ("bump", "strobe")                  # open a KIND window if none is open
_UNDO = ("heal", "reset", "restart", "resume", "recover", "stop")   # not counted as faults
_HEAL_ALL = ("heal_all", "heal-all", "healall", "final", "final-heal", "final_heal")


def _op_summary(inv, comp):
    d = {"i": inv.get("i"), "proc": inv.get("proc"), "f": inv.get("f"),
         "key": inv.get("key"), "node": inv.get("node"), "call_t": inv.get("t")}
    if comp is not None:
        d["type"] = comp.get("type")
        d["ret_t"] = comp.get("t")
        d["value"] = inv.get("value")
        d["out"] = comp.get("value") if comp.get("value") is not None else comp.get("accepted")
        if "rev" in comp:
            d["rev"] = comp["rev"]
    else:
        d["type"] = "info"
    return d


def _accepted(comp):
    v = comp.get("value")
    if v is None:
        v = comp.get("accepted")
    return v is True


def nonce_uniqueness(events):
    """For each nonce (the op's key), at most one ok claim with value true.

    Also liveness figures: a nonce claimed only once in the whole history is
    fresh and should be accepted; refused fresh nonces are listed (the WGL
    nonce model flags them as invalid as well)."""
    claims = {}
    for inv, comp in wgl.pair_events(events):
        if inv.get("f") != "claim":
            continue
        claims.setdefault(repr(inv.get("key")), []).append((inv, comp))
    violations = []
    accepted_total = 0
    fresh = {"nonces": 0, "accepted": 0, "refused": 0, "fail": 0, "info": 0}
    refused_fresh = []
    for nonce, cl in claims.items():
        acc = [(i, c) for i, c in cl if c is not None and c.get("type") == "ok" and _accepted(c)]
        accepted_total += len(acc)
        if len(acc) > 1:
            violations.append({"nonce": cl[0][0].get("key"),
                               "accepted": [_op_summary(i, c) for i, c in acc],
                               "nodes": sorted({str(i.get("node")) for i, _ in acc})})
        if len(cl) == 1:
            inv, comp = cl[0]
            fresh["nonces"] += 1
            typ = comp.get("type") if comp is not None else "info"
            if typ == "ok":
                if _accepted(comp):
                    fresh["accepted"] += 1
                else:
                    fresh["refused"] += 1
                    refused_fresh.append(_op_summary(inv, comp))
            else:
                fresh[typ] += 1
    return {"checker": "nonce-unique", "valid": not violations,
            "nonces": len(claims), "accepted": accepted_total,
            "violations": violations, "fresh": fresh,
            "refused_fresh": refused_fresh[:50]}


def _split(event):
    """("start"|"stop"|"heal_all"|"point", kind or None, verb) for a name."""
    e = str(event)
    low = e.lower()
    if low in _HEAL_ALL:
        return "heal_all", None, low
    if low in _START:
        return "start", None, low
    if low in _STOP:
        return "stop", None, low
    for sep in ("-", "_", ":", " "):
        if sep in e:
            kind, verb = e.rsplit(sep, 1)
            v = verb.lower()
            if v in _START:
                return "start", kind, v
            if v in _STOP or v in _CLOSE:
                return "stop", kind, v
            return "point", kind, v
    return "point", None, low


def nemesis_windows(events):
    """Fault windows and point events from nemesis events.

    Understands both forms: event "start"/"stop" with fault=KIND, and
    nemesis.py's "KIND-start"/"KIND-stop" logged twice with phase="invoke"
    then phase="ok" or "fail". A window opens at the start's invoke (or at
    the start itself when there is no phase), counts once its ok arrives
    (a failed start closes it, marked failed); it closes at a stop's ok (a
    failed stop leaves it open), at "KIND-reset", or at "heal_all"/"heal-all".
    "KIND-bump"/"KIND-strobe" (clock skew) open a KIND window if none is
    open. Any other event is a point event named after the whole event
    (e.g. kill-restart, flap-cut, membership-add); invoke and fail phases of
    point events are ignored.

    Returns {"windows": [{fault, id, start_t, stop_t (None: open at the
    end), start_i, stop_i, detail, failed}], "points": [{fault, t, i,
    detail}], "injected": {kind: windows opened + fault points}}."""
    windows = []
    open_ = []
    points = []
    injected = {}

    def count(kind):
        injected[kind] = injected.get(kind, 0) + 1

    def close(w, ev):
        w["stop_t"] = ev.get("t")
        w["stop_i"] = ev.get("i")
        open_.remove(w)

    def new_window(kind, wid, ev, detail, pending):
        w = {"fault": kind, "id": wid, "start_t": ev.get("t"), "stop_t": None,
             "start_i": ev.get("i"), "stop_i": None, "detail": detail,
             "failed": False, "pending": pending}
        windows.append(w)
        open_.append(w)
        return w

    for ev in events:
        if ev.get("proc") != "nemesis" and ev.get("type") != "nemesis":
            continue
        event = ev.get("event", ev.get("f", "?"))
        what, kind, verb = _split(event)
        phase = ev.get("phase")
        fault = ev.get("fault") or ev.get("kind") or kind or str(event)
        wid = ev.get("id")
        detail = {k: v for k, v in ev.items()
                  if k not in ("i", "t", "proc", "type", "event", "fault", "kind", "phase")}
        if what == "start":
            pend = [w for w in open_ if w["pending"] and w["fault"] == fault]
            if phase == "invoke":
                new_window(fault, wid, ev, detail, True)
            elif phase == "fail":
                if pend:
                    pend[-1]["failed"] = True
                    pend[-1]["pending"] = False
                    pend[-1]["detail"].update(detail)
                    close(pend[-1], ev)
            else:       # ok, or no phase
                if pend:
                    pend[-1]["pending"] = False
                    pend[-1]["detail"].update(detail)
                else:
                    new_window(fault, wid, ev, detail, False)
                count(fault)
        elif what == "stop":
            if phase in ("invoke", "fail"):
                continue
            for w in [w for w in open_ if w["fault"] == fault and (wid is None or w["id"] == wid)]:
                close(w, ev)
        elif what == "heal_all":
            if phase in ("invoke", "fail"):
                continue
            for w in list(open_):
                close(w, ev)
            points.append({"fault": "heal_all", "t": ev.get("t"), "i": ev.get("i"), "detail": detail})
        else:
            if phase in ("invoke", "fail"):
                continue
            name = ev.get("fault") or ev.get("kind") or str(event)
            if kind is not None and verb in _SKEW and not any(w["fault"] == kind for w in open_):
                new_window(kind, wid, ev, {}, False)
            points.append({"fault": name, "t": ev.get("t"), "i": ev.get("i"), "detail": detail})
            if verb not in _UNDO:
                count(name)
    for w in windows:
        del w["pending"]
    return {"windows": windows, "points": points, "injected": injected}


def active_faults(nem, t0, t1):
    """Fault kinds whose window overlaps [t0, t1] or point events inside it."""
    kinds = set()
    for w in nem["windows"]:
        if not w.get("failed") and w["start_t"] is not None and w["start_t"] <= t1 and (w["stop_t"] is None or w["stop_t"] >= t0):
            kinds.add(w["fault"])
    for p in nem["points"]:
        if p["t"] is not None and t0 <= p["t"] <= t1 and p["fault"] != "heal_all":
            kinds.add(p["fault"])
    return sorted(kinds)


def availability(events, bucket_s=1.0):
    """Completions per time bucket (by completion time, relative to the first
    event), with the nemesis faults active in each bucket.

    Informational (valid is always True): availability is reported apart
    from safety."""
    ts = [ev["t"] for ev in events if isinstance(ev.get("t"), (int, float))]
    if not ts:
        return {"checker": "availability", "valid": True, "buckets": [], "totals": {},
                "t0": None, "bucket_s": bucket_s}
    t0 = min(ts)
    width = int(bucket_s * NS)
    nb = int((max(ts) - t0) // width) + 1
    buckets = [{"s": round(b * bucket_s, 3), "ok": 0, "fail": 0, "info": 0} for b in range(nb)]
    totals = {"ok": 0, "fail": 0, "info": 0}
    lat = []
    for inv, comp in wgl.pair_events(events):
        if comp is None:
            continue
        typ = comp.get("type")
        b = int((comp["t"] - t0) // width)
        buckets[b][typ] += 1
        totals[typ] += 1
        if typ == "ok":
            lat.append(comp["t"] - inv["t"])
    nem = nemesis_windows(events)
    for b, bk in enumerate(buckets):
        bk["faults"] = active_faults(nem, t0 + b * width, t0 + (b + 1) * width - 1)
    # longest run of buckets without an ok, ignoring leading/trailing silence
    first = next((k for k, b in enumerate(buckets) if b["ok"]), None)
    last = max((k for k, b in enumerate(buckets) if b["ok"]), default=None)
    gap = run = 0
    if first is not None:
        for b in buckets[first:last + 1]:
            run = run + 1 if b["ok"] == 0 else 0
            gap = max(gap, run)

    def share(sel):
        s = {"ok": 0, "fail": 0, "info": 0}
        for b in sel:
            for k in s:
                s[k] += b[k]
        n = sum(s.values())
        s["ok_rate"] = round(s["ok"] / n, 4) if n else None
        return s

    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6, 2) if lat else None

    return {"checker": "availability", "valid": True, "t0": t0, "bucket_s": bucket_s,
            "buckets": buckets, "totals": totals,
            "quiet": share(b for b in buckets if not b["faults"]),
            "faulty": share(b for b in buckets if b["faults"]),
            "max_gap_without_ok_s": gap * bucket_s,
            "ok_latency_ms": {"p50": pct(0.5), "p99": pct(0.99),
                              "max": round(lat[-1] / 1e6, 2) if lat else None}}


# ub_log line of src/raft_glue/node.c notify_change():
# 2026-11-27T18:23:25.801Z info  n2 raft: state candidate -> leader, term 2, leader 0480a93d2e9b094b
_RAFT_RE = re.compile(
    r"(?:(?P<tag>\S+) )?raft: state (?P<src>\w+) -> (?P<dst>\w+), "
    r"term (?P<term>\d+), leader (?P<leader>[0-9a-fA-F]+)")


def parse_raft_log(path):
    """Raft state lines of one node log: list of dicts {node, file, line, ts,
    from, to, term, leader (hex id, None for 0)}. The node is the log tag
    (the node's configured name) or else the file name without .log."""
    stem = os.path.basename(path)
    if stem.endswith(".log"):
        stem = stem[:-4]
    out = []
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            m = _RAFT_RE.search(line)
            if not m:
                continue
            tag = m.group("tag")
            if tag is None or tag.endswith(("info", "warn", "error", "debug")) or ":" in tag \
                    or tag[:4].isdigit():
                tag = None
            lid = m.group("leader").lower()
            out.append({"node": tag or stem, "file": os.path.basename(path), "line": n,
                        "ts": line.split(" ", 1)[0],
                        "from": m.group("src"), "to": m.group("dst"),
                        "term": int(m.group("term")),
                        "leader": None if int(lid, 16) == 0 else lid})
    return out


def leaders_per_term(log_paths):
    """At most one leader per term, from node logs.

    A violation is two different nodes logging "-> leader" with the same
    term. Also reported, without affecting the verdict: terms in which nodes
    name different leader ids (view_conflicts) and a node's term going down
    between consecutive lines of its log (term_regressions; expected only
    if the node's data was deliberately damaged). valid is None when no raft
    state line was found."""
    recs = []
    for p in log_paths:
        recs.extend(parse_raft_log(p))
    claims = {}
    ids = {}
    views = {}
    last_term = {}
    regressions = []
    for r in recs:
        if r["to"] == "leader":
            claims.setdefault(r["term"], {}).setdefault(r["node"], r)
            if r["leader"]:
                ids.setdefault(r["leader"], set()).add(r["node"])
        if r["leader"]:
            views.setdefault(r["term"], {}).setdefault(r["leader"], []).append(r["node"])
        prev = last_term.get(r["node"])
        if prev is not None and r["term"] < prev[0]:
            regressions.append({"node": r["node"], "from_term": prev[0], "to_term": r["term"],
                                "file": r["file"], "line": r["line"]})
        last_term[r["node"]] = (r["term"], r["line"])
    violations = []
    for term, nodes in sorted(claims.items()):
        if len(nodes) > 1:
            violations.append({"term": term, "leaders": sorted(nodes),
                               "lines": [{"node": n, "file": r["file"], "line": r["line"], "ts": r["ts"]}
                                         for n, r in sorted(nodes.items())]})
    conflicts = []
    for term, lids in sorted(views.items()):
        if len(lids) > 1:
            conflicts.append({"term": term,
                              "leaders": {lid: {"name": sorted(ids.get(lid, [])),
                                                "seen_by": sorted(set(ns))}
                                          for lid, ns in lids.items()}})
    return {"checker": "leader-per-term",
            "valid": (not violations) if recs else None,
            "lines": len(recs), "files": [os.path.basename(p) for p in log_paths],
            "terms_with_leader": len(claims),
            "leaders": {str(t): sorted(ns) for t, ns in sorted(claims.items())},
            "leader_ids": {lid: sorted(ns) for lid, ns in ids.items()},
            "violations": violations, "view_conflicts": conflicts,
            "term_regressions": regressions}
