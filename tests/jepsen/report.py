#!/usr/bin/python3
"""Check a results directory and write summary.json + report.txt.

    /usr/bin/python3 tests/jepsen/report.py RESULTS_DIR [--model auto] [--workers 2]

RESULTS_DIR holds history.jsonl (client ops and nemesis events, see
history.py) and node logs *.log (also logs/*.log). Runs every checker that
applies: linearizability per key for each model family present in the
history (register: read/write/cas, nonce: claim, queue: enqueue/dequeue),
the register revision check, nonce uniqueness, one leader per term from the
node logs, checker/stream.py's check(events) if that module exists, and
availability per second (informational).

Exit code: 0 valid, 1 anomaly found, 2 unknown (budget exhausted, missing
history, checker error).
"""

import argparse
import glob
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import history  # noqa: E402
from checker import invariants, wgl  # noqa: E402

NS = 1_000_000_000
FAMILIES = {
    "register": ("read", "write", "cas"),
    "nonce": ("claim",),
    "queue": ("enqueue", "dequeue"),
}
EXIT = {True: 0, False: 1}
WINDOW_MAX_LINES = 200
TIMELINE_MAX_LINES = 600


def aggregate(values):
    vals = [v for v in values if v is not None]
    if any(v is False for v in vals):
        return False
    if any(v == "unknown" for v in vals):
        return "unknown"
    return True


def verdict_word(v):
    return {True: "VALID", False: "INVALID", "unknown": "UNKNOWN", None: "n/a"}.get(v, str(v).upper())


def detect_families(events):
    fs = {}
    for e in events:
        if e.get("type") == "invoke":
            fs[e.get("f")] = fs.get(e.get("f"), 0) + 1
    return [fam for fam, names in FAMILIES.items() if any(n in fs for n in names)]


def _filter_family(events, names):
    keep = []
    for e in events:
        if e.get("proc") == "nemesis" or e.get("type") == "nemesis" or e.get("f") in names:
            keep.append(e)
    return keep


def counts(events):
    by_type = {"invoke": 0, "ok": 0, "fail": 0, "info": 0, "never_completed": 0}
    by_f = {}
    for inv, comp in wgl.pair_events(events):
        typ = comp.get("type") if comp is not None else "never_completed"
        by_type["invoke"] += 1
        by_type[typ] += 1
        d = by_f.setdefault(str(inv.get("f")), {"ok": 0, "fail": 0, "info": 0, "never_completed": 0})
        d[typ] += 1
    nem = invariants.nemesis_windows(events)
    return {"events": len(events), "ops_by_type": by_type, "ops_by_f": by_f,
            "nemesis_events": sum(1 for e in events if e.get("proc") == "nemesis"),
            "faults_injected": nem["injected"]}, nem


def _fmt_t(t, t0):
    if t is None:
        return "      +inf"
    return "%+10.3fs" % ((t - t0) / NS)


def fmt_event(e, t0):
    if e.get("proc") == "nemesis" or e.get("type") == "nemesis":
        extra = {k: v for k, v in e.items() if k not in ("i", "t", "proc", "type", "event")}
        return "%s  i=%-6s NEMESIS %s %s" % (_fmt_t(e.get("t"), t0), e.get("i"), e.get("event"),
                                            json.dumps(extra, default=str) if extra else "")
    extra = {k: v for k, v in e.items()
             if k not in ("i", "t", "proc", "type", "f", "key", "value", "node")}
    return "%s  i=%-6s p%-5s %-6s %-7s %-8s %-12s %s%s" % (
        _fmt_t(e.get("t"), t0), e.get("i"), e.get("proc"), e.get("type"), e.get("f"),
        json.dumps(e.get("key")), json.dumps(e.get("value"), default=str),
        ("@" + str(e["node"]) + " ") if e.get("node") else "",
        " ".join("%s=%s" % (k, json.dumps(v, default=str)) for k, v in extra.items()))


def fmt_op(d, t0):
    """One operation of a counterexample (models.Op.to_dict())."""
    f = d.get("f")
    if d.get("type") == "ok" and f in ("read", "dequeue", "claim"):
        what = "%s -> %s" % (f, json.dumps(d.get("out"), default=str))
    elif f in ("read", "dequeue", "claim"):
        what = "%s (no result)" % f
    else:
        what = "%s %s" % (f, json.dumps(d.get("value"), default=str))
    for k in ("applied", "rev"):
        if k in d:
            what += " %s=%s" % (k, json.dumps(d[k]))
    return "i=%-6s p%-5s %-4s key=%-6s %-34s %-5s [%s, %s]" % (
        d.get("i"), d.get("proc"), d.get("type"), json.dumps(d.get("key")), what,
        ("@" + str(d["node"])) if d.get("node") else "",
        _fmt_t(d.get("call_t"), t0).strip(), _fmt_t(d.get("ret_t"), t0).strip())


def history_window(events, nem, lo, hi, key=None, keys=None, pad_s=1.0):
    """Events within [lo - pad, hi + pad] (for the key(s) if given, plus every
    nemesis event), and the nemesis windows active then."""
    lo -= int(pad_s * NS)
    hi += int(pad_s * NS)
    sel = []
    for e in events:
        t = e.get("t")
        if t is None or t < lo or t > hi:
            continue
        if e.get("proc") == "nemesis" or e.get("type") == "nemesis":
            sel.append(e)
        elif (key is None and keys is None) or e.get("key") == key or (keys and e.get("key") in keys):
            sel.append(e)
    active = [w for w in nem["windows"]
              if not w.get("failed") and w["start_t"] is not None and w["start_t"] <= hi and (w["stop_t"] is None or w["stop_t"] >= lo)]
    return sel, active, lo, hi


def run_checkers(events, args, log_paths):
    checkers = {}
    fams = detect_families(events) if args.model == "auto" else [args.model]
    for fam in fams:
        evs = _filter_family(events, FAMILIES.get(fam, ()))
        try:
            res = wgl.check(evs, fam, args.budget_steps, args.budget_s, args.workers)
        except Exception as ex:
            checkers["linearizable/" + fam] = {"valid": "unknown", "error": repr(ex),
                                               "traceback": traceback.format_exc()}
            continue
        rev = res.pop("revisions", None)
        checkers["linearizable/" + fam] = res
        if rev is not None:
            rev["keys"] = [{"key": k["key"], **k["revisions"]} for k in res["keys"]
                           if k["revisions"]["valid"] is not True]
            checkers["revisions/" + fam] = rev
        if fam == "nonce":
            checkers["nonce-unique"] = invariants.nonce_uniqueness(evs)
    stream_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checker", "stream.py")
    if os.path.exists(stream_path):
        try:
            from checker import stream
            if hasattr(stream, "check"):
                res = stream.check(events)
                if isinstance(res, dict) and res.get("valid", None) is not None:
                    checkers["stream"] = res
        except Exception as ex:
            checkers["stream"] = {"valid": "unknown", "error": repr(ex),
                                  "traceback": traceback.format_exc()}
    if log_paths:
        checkers["leader-per-term"] = invariants.leaders_per_term(log_paths)
    return checkers


def collect_anomalies(checkers, events, nem, t0):
    anomalies = []
    for name, res in checkers.items():
        if name.startswith("linearizable/"):
            for k in res.get("keys", []):
                if k["valid"] is False:
                    cx = k["counterexample"]
                    lo, hi = cx["window_t"]
                    if hi == float("inf") or hi is None:
                        hi = lo
                    anomalies.append({"checker": name, "key": k["key"],
                                      "what": "not linearizable: op %s cannot be placed" % cx["unplaceable"]["i"],
                                      "counterexample": cx, "window": [lo, hi]})
        elif name.startswith("revisions/"):
            for k in res.get("keys", []):
                if k["valid"] is False:
                    cx = k.get("counterexample")
                    if cx:
                        lo, hi = cx["window_t"]
                        if hi == float("inf") or hi is None:
                            hi = lo
                    else:
                        op = k["witness_violation"]
                        lo, hi = op["call_t"], op["ret_t"] or op["call_t"]
                    anomalies.append({"checker": name, "key": k["key"],
                                      "what": "revisions do not increase along any linearization",
                                      "counterexample": cx, "witness_violation": k.get("witness_violation"),
                                      "window": [lo, hi]})
        elif name == "nonce-unique":
            for v in res.get("violations", []):
                ts = [a["call_t"] for a in v["accepted"]] + [a["ret_t"] for a in v["accepted"] if a.get("ret_t")]
                anomalies.append({"checker": name, "key": v["nonce"],
                                  "what": "nonce accepted %d times (nodes %s)" % (len(v["accepted"]), v["nodes"]),
                                  "ops": v["accepted"], "window": [min(ts), max(ts)]})
        elif name == "leader-per-term":
            for v in res.get("violations", []):
                anomalies.append({"checker": name, "key": None,
                                  "what": "term %d has leaders %s" % (v["term"], v["leaders"]),
                                  "lines": v["lines"], "window": None})
        elif res.get("valid") is False:
            anomalies.append({"checker": name, "key": None, "what": "checker reported invalid",
                              "detail": {k: v for k, v in res.items() if k not in ("valid",)}, "window": None})
    for a in anomalies:
        if a["window"] is not None:
            sel, active, lo, hi = history_window(events, nem, a["window"][0], a["window"][1], key=a["key"])
            a["history_window"] = {"from_s": round((lo - t0) / NS, 3), "to_s": round((hi - t0) / NS, 3),
                                   "events": sel[:WINDOW_MAX_LINES], "truncated": len(sel) > WINDOW_MAX_LINES,
                                   "nemesis_active": [{"fault": w["fault"], "id": w["id"],
                                                       "start_s": round((w["start_t"] - t0) / NS, 3),
                                                       "stop_s": None if w["stop_t"] is None
                                                       else round((w["stop_t"] - t0) / NS, 3),
                                                       "detail": w["detail"]} for w in active]}
    return anomalies


def checker_line(name, res):
    v = res.get("valid")
    bits = []
    if name.startswith("linearizable/"):
        bits.append("%d keys, %d ops (%d info), %d steps, slowest key %.1f ms, %.2f s in all" % (
            len(res.get("keys", [])), res.get("ops", 0), sum(k["info_ops"] for k in res.get("keys", [])),
            sum(k["steps"] for k in res.get("keys", [])),
            1000 * res.get("max_key_seconds", 0), res.get("seconds", 0)))
        if res.get("invalid_keys"):
            bits.append("invalid keys %s" % res["invalid_keys"])
        if res.get("unknown_keys"):
            bits.append("unknown keys %s (%s)" % (res["unknown_keys"], "; ".join(
                sorted({k.get("reason", "") for k in res["keys"] if k["valid"] == "unknown"}))))
    elif name.startswith("revisions/"):
        if res.get("methods"):
            bits.append("keys by method: %s" % ", ".join("%s %d" % kv for kv in sorted(res["methods"].items())))
        if res.get("invalid_keys"):
            bits.append("invalid keys %s" % res["invalid_keys"])
        if res.get("unknown_keys"):
            bits.append("unknown keys %s" % res["unknown_keys"])
    elif name == "nonce-unique":
        bits.append("%d nonces, %d accepted, %d violations; fresh nonces %s" % (
            res["nonces"], res["accepted"], len(res["violations"]), res["fresh"]))
    elif name == "leader-per-term":
        bits.append("%d raft lines in %s, %d terms with a leader, %d violations, %d view conflicts, "
                    "%d term regressions" % (res["lines"], ",".join(res["files"]), res["terms_with_leader"],
                                             len(res["violations"]), len(res["view_conflicts"]),
                                             len(res["term_regressions"])))
    elif name == "availability":
        bits.append("totals %s, quiet ok rate %s, faulty ok rate %s, longest gap without ok %.0f s, "
                    "ok latency ms %s" % (res["totals"], res.get("quiet", {}).get("ok_rate"),
                                          res.get("faulty", {}).get("ok_rate"),
                                          res.get("max_gap_without_ok_s", 0), res.get("ok_latency_ms")))
    if res.get("error"):
        bits.append("error " + res["error"])
    return "  %-24s %-8s %s" % (name, verdict_word(v), "; ".join(bits))


def render(summary, events, t0):
    L = []
    L.append("unibus fault-injection report: %s" % summary["dir"])
    L.append("verdict: %s (exit %d)" % (verdict_word(summary["valid"]), summary["exit_code"]))
    if summary.get("run"):
        L.append("run: %s" % json.dumps(summary["run"], default=str))
    L.append("")
    L.append("Checkers")
    for name, res in summary["checkers"].items():
        L.append(checker_line(name, res))
    c = summary["counts"]
    L.append("")
    L.append("Counts")
    L.append("  events %d, nemesis events %d" % (c["events"], c["nemesis_events"]))
    L.append("  ops by type: %s" % ", ".join("%s %d" % kv for kv in c["ops_by_type"].items()))
    for f, d in sorted(c["ops_by_f"].items()):
        L.append("    %-10s %s" % (f, ", ".join("%s %d" % kv for kv in d.items())))
    L.append("  faults injected: %s" % (", ".join("%s %d" % kv for kv in sorted(c["faults_injected"].items()))
                                        or "none"))
    L.append("")
    L.append("Anomalies (%d)" % len(summary["anomalies"]))
    for n, a in enumerate(summary["anomalies"], 1):
        L.append("")
        L.append("  #%d %s key=%s: %s" % (n, a["checker"], json.dumps(a["key"]), a["what"]))
        cx = a.get("counterexample")
        if cx:
            L.append("    longest linearized prefix: %d ops%s; state after it: %s" % (
                cx["linearized_prefix_len"], " (last %d shown)" % len(cx["linearized_prefix"])
                if cx["prefix_truncated"] else "", json.dumps(cx["state_after_prefix"], default=str)))
            for d in cx["linearized_prefix"][-10:]:
                L.append("      " + fmt_op(d, t0))
            L.append("    cannot place:")
            L.append("      " + fmt_op(cx["unplaceable"], t0))
            L.append("    concurrent with it and not linearized (%d):" % len(cx["concurrent"]))
            for d in cx["concurrent"]:
                L.append("      " + fmt_op(d, t0))
        if a.get("witness_violation") and not cx:
            L.append("    revision violation at " + fmt_op(a["witness_violation"], t0))
        for d in a.get("ops", []):
            L.append("      " + fmt_op(d, t0))
        for ln in a.get("lines", []):
            L.append("      %s:%s %s (node clock) %s" % (ln["file"], ln["line"], ln["ts"], ln["node"]))
        hw = a.get("history_window")
        if hw:
            L.append("    nemesis active: %s" % (", ".join(
                "%s [%s, %s]%s" % (w["fault"], w["start_s"], "end" if w["stop_s"] is None else w["stop_s"],
                                   " " + json.dumps(w["detail"], default=str) if w["detail"] else "")
                for w in hw["nemesis_active"]) or "none"))
            L.append("    history window %.3f s .. %.3f s (this key + nemesis events)%s:" % (
                hw["from_s"], hw["to_s"], ", truncated" if hw["truncated"] else ""))
            for e in hw["events"]:
                L.append("      " + fmt_event(e, t0))
    unknown = [(n, r) for n, r in summary["checkers"].items() if r.get("valid") == "unknown"]
    if unknown:
        L.append("")
        L.append("Unknown")
        for n, r in unknown:
            L.append("  %s: %s" % (n, r.get("error") or ", ".join(
                "%s (%s)" % (k["key"], k.get("reason")) for k in r.get("keys", []) if k.get("valid") == "unknown")))
    L.append("")
    av = summary["checkers"].get("availability", {})
    L.append("Timeline (per %s s: ok / fail / info, faults active)" % av.get("bucket_s", 1))
    buckets = av.get("buckets", [])
    group = max(1, -(-len(buckets) // TIMELINE_MAX_LINES))
    if group > 1:
        merged = []
        for g in range(0, len(buckets), group):
            part = buckets[g:g + group]
            merged.append({"s": part[0]["s"], "ok": sum(b["ok"] for b in part),
                           "fail": sum(b["fail"] for b in part), "info": sum(b["info"] for b in part),
                           "faults": sorted({f for b in part for f in b["faults"]})})
        buckets = merged
        L.append("  (%d s per line)" % (group * av.get("bucket_s", 1)))
    peak = max([b["ok"] + b["fail"] + b["info"] for b in buckets] + [1])
    for b in buckets:
        tot = b["ok"] + b["fail"] + b["info"]
        width = 30
        n_ok = round(width * b["ok"] / peak)
        n_fail = round(width * b["fail"] / peak)
        n_info = round(width * b["info"] / peak)
        bar = ("#" * n_ok + "x" * n_fail + "?" * n_info).ljust(width)
        L.append("  %7.1fs  ok %4d  fail %4d  info %4d  |%s| %s" % (
            b["s"], b["ok"], b["fail"], b["info"], bar,
            ("<< " + ", ".join(b["faults"])) if b["faults"] else ("" if tot else "(no completions)")))
    L.append("  legend: # ok, x fail, ? info; << faults active in that second")
    return "\n".join(L) + "\n"


def _clean(o):
    """Make a result JSON-safe (inf -> null, tuples are fine)."""
    if isinstance(o, float) and (o == float("inf") or o != o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="results directory (history.jsonl, *.log)")
    ap.add_argument("--history", default="history.jsonl", help="history file name inside dir")
    ap.add_argument("--model", default="auto", choices=["auto"] + sorted(FAMILIES))
    ap.add_argument("--budget-steps", type=int, default=2_000_000)
    ap.add_argument("--budget-s", type=float, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quiet", action="store_true", help="do not print the report")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    d = args.dir
    hpath = os.path.join(d, args.history)
    summary = {"dir": os.path.abspath(d)}
    for meta in ("run.json", "meta.json"):
        p = os.path.join(d, meta)
        if os.path.exists(p):
            try:
                with open(p) as f:
                    summary["run"] = json.load(f)
            except (OSError, ValueError):
                pass
    try:
        events = history.load(hpath)
    except (OSError, ValueError) as ex:
        summary.update({"valid": "unknown", "exit_code": 2, "error": "cannot read history: %s" % ex})
        with open(os.path.join(d, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        print("report: %s" % summary["error"], file=sys.stderr)
        return 2
    log_paths = sorted(set(glob.glob(os.path.join(d, "*.log")) + glob.glob(os.path.join(d, "logs", "*.log"))))
    t0 = min((e["t"] for e in events if isinstance(e.get("t"), int)), default=0)
    cnt, nem = counts(events)
    checkers = {}
    if cnt["ops_by_type"]["ok"] == 0:
        checkers["history"] = {"valid": "unknown", "error": "no ok operation in the history "
                               "(%d invocations): nothing was tested" % cnt["ops_by_type"]["invoke"]}
    checkers.update(run_checkers(events, args, log_paths))
    checkers["availability"] = invariants.availability(events)
    valid = aggregate(r.get("valid") for r in checkers.values())
    anomalies = collect_anomalies(checkers, events, nem, t0)
    summary.update({
        "valid": valid,
        "exit_code": EXIT.get(valid, 2),
        "checkers": checkers,
        "verdicts": {n: r.get("valid") for n, r in checkers.items()},
        "counts": cnt,
        "anomalies": anomalies,
        "nemesis": {"windows": [dict(w, start_s=round((w["start_t"] - t0) / NS, 3),
                                     stop_s=None if w["stop_t"] is None else round((w["stop_t"] - t0) / NS, 3))
                                for w in nem["windows"]],
                    "points": [dict(p, s=round((p["t"] - t0) / NS, 3)) for p in nem["points"]]},
        "t0": t0,
        "check_seconds": round(time.monotonic() - t_start, 3),
    })
    text = render(summary, events, t0)
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(_clean(summary), f, indent=1, default=str)
    with open(os.path.join(d, "report.txt"), "w") as f:
        f.write(text)
    if not args.quiet:
        sys.stdout.write(text)
    return summary["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
