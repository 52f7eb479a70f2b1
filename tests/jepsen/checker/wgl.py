"""Linearizability checker: WGL search with Lowe's memoization (JEPSEN.md 4.2).

Pipeline:
1. build_ops(): pair each invoke with the next completion of the same proc.
   fail -> dropped; ok -> interval [invoke.t, complete.t]; info (or no
   completion at all) -> return time +inf; info reads -> dropped.
2. Split by key (linearizability is local: P-compositionality) and check
   each key on its own, in a multiprocessing pool.
3. search(): calls and returns sorted by time (calls first on equal times),
   in a doubly linked list with a head sentinel. The candidates for the
   next linearized op are the calls before the first return. One the model
   accepts, whose configuration (linearized ops, state) is new, is lifted
   out of the list (with its return) and pushed on an explicit stack; when
   no candidate is left, the op returning first cannot be placed here, so
   pop the last lifted op, relink it ("unlift") and try the next candidate
   of that frame. Success when every ok op is linearized (info ops have no
   return node: they may stay unplaced, i.e. "never happened"); failure
   when a dead end is reached with an empty stack. A step/time budget turns
   an exhausted search into "unknown". Exact speed-ups (see search()):
   candidate order (read-only ops first and forced, then by revision, info
   ops last), and a memo that also skips configurations whose info-op set
   is a superset of a visited one with the same ok ops and state.
4. For the register, revisions are checked separately: along the witness
   order a mutation's revision must exceed every earlier one and a read must
   return the current revision. If the witness order violates that, a
   second search with the revision-aware model decides (another
   linearization may satisfy it).
"""

import multiprocessing
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from checker import models  # noqa: E402
else:
    from . import models

INF = float("inf")
COUNTEREXAMPLE_MAX_OPS = 60


def _key_str(k):
    return k if isinstance(k, str) else repr(k)


def pair_events(events):
    """Yield (invoke, completion) per operation, in completion order.

    completion is None when the op never completed (treat as info). Nemesis
    events are skipped. An invoke while the same proc still has one
    outstanding closes the old one with None; a completion without an
    invoke is ignored (build_ops counts both in its stats)."""
    return _pair(events, None)


def _pair(events, stats):
    pending = {}
    for ev in events:
        proc = ev.get("proc")
        typ = ev.get("type")
        if proc == "nemesis" or typ == "nemesis":
            continue
        if typ == "invoke":
            if proc in pending:
                if stats is not None:
                    stats["reinvoked"] += 1
                yield pending.pop(proc), None
            pending[proc] = ev
        elif typ in ("ok", "fail", "info"):
            inv = pending.pop(proc, None)
            if inv is None:
                if stats is not None:
                    stats["orphan_completions"] += 1
                continue
            yield inv, ev
    for inv in pending.values():
        yield inv, None


def build_ops(events, model):
    """Pair invocations with completions.

    Returns (per_key, stats): per_key maps key -> list of Op (ids 0..n-1 in
    invocation order); stats counts what was dropped or odd."""
    if isinstance(model, str):
        model = models.get(model)
    raw = {}
    stats = {"ok": 0, "info": 0, "fail": 0, "info_reads_dropped": 0,
             "never_completed": 0, "orphan_completions": 0, "reinvoked": 0,
             "other_f": 0}
    fs = getattr(model, "fs", None)

    def finish(inv, comp):
        if fs is not None and inv.get("f") not in fs:
            stats["other_f"] += 1     # another workload's op in the same history
            return
        typ = comp.get("type") if comp is not None else "info"
        if comp is None:
            stats["never_completed"] += 1
        stats[typ] += 1
        if typ == "fail":
            return
        ok = typ == "ok"
        f = inv.get("f")
        out = None
        applied = None
        rev = None
        if ok:
            out = comp.get("value")
            if out is None and "accepted" in comp:
                out = comp.get("accepted")
            out = models.freeze(out)
            if f == "cas":
                applied = comp.get("applied", True)
            rev = comp.get("rev")
        op = models.Op(0, inv.get("i"), inv.get("proc"), f, inv.get("key"),
                       models.freeze(inv.get("value")), out, ok, applied, rev,
                       inv.get("node"), inv["t"], comp["t"] if ok else INF,
                       comp.get("i") if comp is not None else None)
        if not ok and model.is_read(op):
            stats["info_reads_dropped"] += 1
            return
        k = models.freeze(op.key)
        raw.setdefault(k, []).append(op)

    for inv, comp in _pair(events, stats):
        finish(inv, comp)

    per_key = {}
    for k, ops in raw.items():
        ops.sort(key=lambda o: (o.call_t, o.i if o.i is not None else 0))
        for n, op in enumerate(ops):
            op.id = n
        per_key[k] = ops
    return per_key, stats


def search(ops, model, budget_steps=2_000_000, budget_s=30.0):
    """WGL search over one key's ops (op.id must be 0..n-1).

    Returns a dict with valid (True/False/"unknown"), steps (model steps
    tried plus dead ends), cache (configurations memoized), seconds, and
    witness (op ids in linearization order) or counterexample."""
    t_start = time.monotonic()
    if isinstance(model, str):
        model = models.get(model)
    n = len(ops)
    # Node ids: 0 head, 2k + 1 call of op k, 2k + 2 its return, 2n + 2 tail
    # (even, so a scan for calls stops at it like at a return).
    tail = 2 * n + 2
    evs = []
    ok_left = 0
    for op in ops:
        evs.append((op.call_t, 0, 2 * op.id + 1))
        if op.ok:
            evs.append((op.ret_t, 1, 2 * op.id + 2))
            ok_left += 1
    evs.sort()      # on equal times calls first: concurrent, the permissive choice
    nxt = [tail] * (tail + 1)
    prv = [0] * (tail + 1)
    last = 0
    for _, _, node in evs:
        nxt[last] = node
        prv[node] = last
        last = node
    nxt[last] = tail
    prv[tail] = last

    step = model.step
    oks = [op.ok for op in ops]
    # Candidate order. Any order is complete; a good one finds a witness
    # without backtracking. Ok ops come first, in the model's priority
    # order (the register: by returned revision, the order the store
    # itself chose) or else list (time) order; info ops come last, so an
    # op that may never have happened enters the state only when nothing
    # else can go next.
    prio_fn = getattr(model, "priority", None)
    prio = [prio_fn(op) for op in ops] if prio_fn is not None else None
    if prio is not None and all(p is None for p in prio):
        prio = None
    if prio is not None:
        prio = [(INF, 0) if p is None else p for p in prio]

    # Read-only ok ops (a legal step leaves the state as it is: reads,
    # cas applied:false, refused claims, empty dequeues) are tried first,
    # and once one is linearized its siblings are not tried: any
    # linearization from here can be rearranged to place it next, since it
    # changes no state and nothing pending must precede it.
    ro_fn = getattr(model, "read_only", None)
    ro = [op.ok and ro_fn(op) for op in ops] if ro_fn is not None else [False] * n

    def candidates():
        ro_c = []
        ok_c = []
        info_c = []
        e = nxt[0]
        while e & 1:
            k = e >> 1
            if ro[k]:
                ro_c.append(e)
            elif oks[k]:
                ok_c.append(e)
            else:
                info_c.append(e)
            e = nxt[e]
        if prio is not None and len(ok_c) > 1:
            ok_c.sort(key=lambda c: prio[c >> 1])
        return ro_c + ok_c + info_c, e    # e: the first return (or tail)

    state = model.init()
    bits = 0            # linearized ok ops
    ibits = 0           # linearized info ops
    stack = []          # (candidates, next index, state before, lifted call, blocker)
    # Lowe's memo: (ok bitset, state) -> info bitsets visited with it. A
    # configuration is skipped if one with the same ok ops and state and a
    # subset of its info ops was visited: info ops are optional, so every
    # completion of the larger set is a completion of the smaller one.
    cache = {}
    steps = 0
    best_depth = -1
    best = None         # (prefix op ids, blocked op id, state)
    deadline = t_start + budget_s
    result = None
    cands, blocker = candidates()
    idx = 0

    while ok_left:
        steps += 1
        if steps > budget_steps:
            result = {"valid": "unknown", "reason": "step budget %d exhausted" % budget_steps}
            break
        if steps & 1023 == 0 and time.monotonic() > deadline:
            result = {"valid": "unknown", "reason": "time budget %gs exhausted" % budget_s}
            break
        if idx < len(cands):
            e = cands[idx]
            idx += 1
            k = e >> 1
            legal, s2 = step(state, ops[k])
            if legal:
                if oks[k]:
                    nb = bits | (1 << k)
                    nib = ibits
                else:
                    nb = bits
                    nib = ibits | (1 << k)
                ck = (nb, s2)
                seen = cache.get(ck)
                if seen is None:
                    cache[ck] = [nib]
                    fresh = True
                else:
                    # Subsumed if a visited configuration had the same ok
                    # ops and state and a subset of these info ops.
                    fresh = True
                    for x in seen:
                        if not x & ~nib:
                            fresh = False
                            break
                    if fresh:
                        seen.append(nib)
                if not fresh and ro[k]:
                    # Placing it next is as good as anything, and that
                    # configuration was already explored: dead end here.
                    idx = len(cands)
                elif fresh:
                    stack.append((cands, len(cands) if ro[k] else idx, state, e, blocker))
                    bits = nb
                    ibits = nib
                    state = s2
                    # lift: unlink the call and its return
                    p = prv[e]; q = nxt[e]; nxt[p] = q; prv[q] = p
                    if oks[k]:
                        r = e + 1
                        p = prv[r]; q = nxt[r]; nxt[p] = q; prv[q] = p
                        ok_left -= 1
                    cands, blocker = candidates()
                    idx = 0
            continue
        # Dead end: the op returning at `blocker` cannot be linearized here.
        if blocker == tail:
            raise AssertionError("WGL: no return left with %d ok ops left" % ok_left)
        if len(stack) > best_depth:
            best_depth = len(stack)
            best = ([f[3] >> 1 for f in stack], (blocker - 2) >> 1, state)
        if not stack:
            result = {"valid": False}
            break
        cands, idx, state, e, blocker = stack.pop()
        k = e >> 1
        if oks[k]:
            bits &= ~(1 << k)
        else:
            ibits &= ~(1 << k)
        # unlift: relink the return, then the call
        if oks[k]:
            r = e + 1
            nxt[prv[r]] = r; prv[nxt[r]] = r
            ok_left += 1
        nxt[prv[e]] = e; prv[nxt[e]] = e

    if result is None:
        result = {"valid": True, "witness": [f[3] >> 1 for f in stack]}
    elif result["valid"] is False:
        result["counterexample"] = _counterexample(ops, best)
    result["steps"] = steps
    result["cache"] = len(cache)
    result["seconds"] = time.monotonic() - t_start
    return result


def _counterexample(ops, best):
    prefix, blocked_id, state = best
    blocked = ops[blocked_id]
    placed = set(prefix)
    conc = [op for op in ops
            if op.id not in placed and op.id != blocked_id and op.call_t <= blocked.ret_t and op.ret_t >= blocked.call_t]
    conc.sort(key=lambda o: o.call_t)
    tail = prefix[-COUNTEREXAMPLE_MAX_OPS:]
    return {
        "linearized_prefix_len": len(prefix),
        "linearized_prefix": [ops[k].to_dict() for k in tail],
        "prefix_truncated": len(prefix) > len(tail),
        "state_after_prefix": state,
        "unplaceable": blocked.to_dict(),
        "concurrent": [op.to_dict() for op in conc[:COUNTEREXAMPLE_MAX_OPS]],
        "window_t": [min([blocked.call_t] + [o.call_t for o in conc]),
                     blocked.ret_t],
    }


def _revision_check(ops, witness, budget_steps, budget_s):
    if not any(op.rev is not None for op in ops):
        return {"valid": True, "method": "none", "note": "no revisions recorded"}
    rm = models.RegisterRev()
    state = rm.init()
    for pos, k in enumerate(witness):
        legal, state = rm.step(state, ops[k])
        if not legal:
            break
    else:
        return {"valid": True, "method": "witness"}
    res = search(ops, rm, budget_steps, budget_s)
    out = {"valid": res["valid"], "method": "search", "steps": res["steps"],
           "seconds": res["seconds"],
           "witness_violation": ops[witness[pos]].to_dict()}
    if "counterexample" in res:
        out["counterexample"] = res["counterexample"]
    if "reason" in res:
        out["reason"] = res["reason"]
    return out


def check_key(task):
    """Pool worker: (key, model name, ops, budget_steps, budget_s) -> result."""
    key, model_name, ops, budget_steps, budget_s = task
    t0 = time.monotonic()
    model = models.get(model_name)
    n_before = len(ops)
    if hasattr(model, "prune"):
        ops = model.prune(ops)
        for n, op in enumerate(ops):
            op.id = n
    res = search(ops, model, budget_steps, budget_s)
    out = {"key": key, "valid": res["valid"], "ops": len(ops),
           "info_ops": sum(1 for op in ops if not op.ok),
           "pruned": n_before - len(ops),
           "steps": res["steps"], "seconds": res["seconds"]}
    for f in ("counterexample", "reason"):
        if f in res:
            out[f] = res[f]
    if model_name == "register":
        if res["valid"] is True:
            out["revisions"] = _revision_check(ops, res["witness"], budget_steps, budget_s)
        else:
            out["revisions"] = {"valid": None, "method": "skipped",
                                "note": "no linearization to check revisions against"}
    out["total_seconds"] = time.monotonic() - t0
    return out


def _aggregate(values, empty=True):
    """False if any False, else "unknown" if any, else True; None entries
    (not applicable) are ignored; `empty` if nothing is left."""
    vals = [v for v in values if v is not None]
    if not vals:
        return empty
    if any(v is False for v in vals):
        return False
    if any(v == "unknown" for v in vals):
        return "unknown"
    return True


def check(history_events, model="register", budget_steps=2_000_000, budget_s=30,
          workers=2):
    """Check a history (list of event dicts) for linearizability per key.

    Returns {"checker": "linearizable", "model", "valid": True|False|"unknown",
    "keys": [per-key result], "invalid_keys", "unknown_keys", "ops", "stats",
    "seconds", and for the register "revisions": {"valid", "invalid_keys",
    "unknown_keys"}}. A per-key result is {key, valid, ops, info_ops, steps,
    seconds, [counterexample], [reason], [revisions]}."""
    t0 = time.monotonic()
    models.get(model)   # validate the name early
    per_key, stats = build_ops(history_events, model)
    tasks = [(k, model, ops, budget_steps, budget_s) for k, ops in per_key.items()]
    tasks.sort(key=lambda t: -len(t[2]))    # biggest first for load balance
    if workers > 1 and len(tasks) > 1:
        ctx = multiprocessing.get_context("fork")
        chunk = max(1, len(tasks) // (workers * 16))
        with ctx.Pool(min(workers, len(tasks))) as pool:
            results = list(pool.imap_unordered(check_key, tasks, chunksize=chunk))
    else:
        results = [check_key(t) for t in tasks]
    results.sort(key=lambda r: _key_str(r["key"]))
    for r in results:
        if not isinstance(r["key"], (str, int, float, bool, type(None))):
            r["key"] = _key_str(r["key"])
    out = {
        "checker": "linearizable",
        "model": model,
        "valid": _aggregate(r["valid"] for r in results),
        "keys": results,
        "invalid_keys": [r["key"] for r in results if r["valid"] is False],
        "unknown_keys": [r["key"] for r in results if r["valid"] == "unknown"],
        "ops": sum(r["ops"] for r in results),
        "stats": stats,
        "max_key_seconds": max((r["seconds"] for r in results), default=0.0),
        "seconds": time.monotonic() - t0,
    }
    if model == "register":
        revs = [r["revisions"] for r in results]
        out["revisions"] = {
            "checker": "revisions",
            "valid": _aggregate((rv["valid"] for rv in revs), empty=None if revs else True),
            "invalid_keys": [r["key"] for r in results if r["revisions"]["valid"] is False],
            "unknown_keys": [r["key"] for r in results if r["revisions"]["valid"] == "unknown"],
            "methods": {},
        }
        for rv in revs:
            m = out["revisions"]["methods"]
            m[rv["method"]] = m.get(rv["method"], 0) + 1
    return out


def main(argv=None):
    import argparse
    import json
    ap = argparse.ArgumentParser(description="check a history.jsonl for linearizability")
    ap.add_argument("history")
    ap.add_argument("--model", default="register", choices=sorted(models.MODELS))
    ap.add_argument("--budget-steps", type=int, default=2_000_000)
    ap.add_argument("--budget-s", type=float, default=30)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import history as hist
    res = check(hist.load(a.history), a.model, a.budget_steps, a.budget_s, a.workers)
    json.dump(res, sys.stdout, indent=1, default=str)
    print()
    return {True: 0, False: 1}.get(res["valid"], 2)


if __name__ == "__main__":
    sys.exit(main())
