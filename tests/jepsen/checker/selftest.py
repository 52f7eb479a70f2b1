"""Self-test of the checkers: hand-made histories that must pass or fail
(JEPSEN.md end of 4.2), randomized linearizable histories from a sequential
simulation (must pass) and the same with one read corrupted (must fail).

Run from tests/jepsen:  /usr/bin/python3 -m checker.selftest [--seed N] [--quick]
or:                      /usr/bin/python3 tests/jepsen/checker/selftest.py
Exit status 0 when every case passes; one line per case.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))   # tests/jepsen: checker, history, report

from checker import invariants, models, wgl  # noqa: E402
import history  # noqa: E402

MS = 1_000_000


class H:
    """Builder for hand-made histories; times in ms."""

    def __init__(self):
        self.evs = []

    def op(self, proc, f, key, value, t0, t1=None, type="ok", out=None, node="n1", **extra):
        """An op invoked at t0 and completed at t1 (type None: never completed).
        out is the completion value (defaults to value)."""
        self.evs.append({"t": t0 * MS, "proc": proc, "type": "invoke", "f": f,
                         "key": key, "value": value, "node": node})
        if type is not None:
            c = {"t": t1 * MS, "proc": proc, "type": type, "f": f, "key": key,
                 "value": value if out is None and f != "read" else out}
            c.update(extra)
            self.evs.append(c)
        return self

    def nem(self, t, event, **detail):
        d = {"t": t * MS, "proc": "nemesis", "type": "nemesis", "event": event}
        d.update(detail)
        self.evs.append(d)
        return self

    def events(self):
        evs = sorted(self.evs, key=lambda e: (e["t"], e["type"] != "invoke"))
        for i, e in enumerate(evs):
            e["i"] = i
        return evs


# ---------------------------------------------------------------- cases

def hand_cases():
    """(name, model, events, expected valid, extra check or None)."""
    c = []
    reg = "register"

    c.append(("stale read after acked write", reg,
              H().op(0, "write", "k", 1, 0, 10).op(1, "read", "k", None, 20, 30, out=None).events(), False))
    c.append(("read of the old value concurrent with a write", reg,
              H().op(0, "write", "k", 1, 0, 20).op(1, "read", "k", None, 10, 30, out=None).events(), True))
    c.append(("read of the new value concurrent with a write", reg,
              H().op(0, "write", "k", 1, 0, 20).op(1, "read", "k", None, 10, 30, out=1).events(), True))
    c.append(("read of the new value, read invoked first", reg,
              H().op(1, "read", "k", None, 0, 30, out=1).op(0, "write", "k", 1, 10, 20).events(), True))
    c.append(("sequential write 1, write 2, read 1", reg,
              H().op(0, "write", "k", 1, 0, 10).op(0, "write", "k", 2, 20, 30)
              .op(1, "read", "k", None, 40, 50, out=1).events(), False))
    c.append(("two readers see the writes in opposite orders", reg,
              H().op(0, "write", "k", 1, 0, 100).op(1, "write", "k", 2, 0, 100)
              .op(2, "read", "k", None, 10, 20, out=1).op(2, "read", "k", None, 30, 40, out=2)
              .op(3, "read", "k", None, 10, 20, out=2).op(3, "read", "k", None, 30, 40, out=1).events(), False))
    c.append(("lost CAS (read of the value the CAS replaced)", reg,
              H().op(0, "write", "k", 1, 0, 10).op(1, "cas", "k", [1, 2], 20, 30, applied=True)
              .op(2, "read", "k", None, 40, 50, out=1).events(), False))
    c.append(("CAS chain 1->2->3 then read 3", reg,
              H().op(0, "write", "k", 1, 0, 10).op(1, "cas", "k", [1, 2], 20, 30, applied=True)
              .op(2, "cas", "k", [2, 3], 25, 45, applied=True)
              .op(0, "read", "k", None, 50, 60, out=3).events(), True))
    c.append(("info write read later", reg,
              H().op(0, "write", "k", 1, 0, 10, type="info").op(1, "read", "k", None, 500, 510, out=1).events(), True))
    c.append(("info write never read", reg,
              H().op(0, "write", "k", 1, 0, 10, type="info").op(1, "read", "k", None, 500, 510, out=None)
              .op(1, "read", "k", None, 600, 610, out=None).events(), True))
    c.append(("write that never completed, read later", reg,
              H().op(0, "write", "k", 3, 0, type=None).op(1, "read", "k", None, 500, 510, out=3).events(), True))
    c.append(("info write read, then its effect vanishes", reg,
              H().op(0, "write", "k", 1, 0, 10, type="info").op(1, "read", "k", None, 500, 510, out=1)
              .op(1, "read", "k", None, 600, 610, out=None).events(), False))
    c.append(("info CAS whose precondition held, read later", reg,
              H().op(0, "write", "k", 1, 0, 10).op(1, "cas", "k", [1, 2], 20, 30, type="info")
              .op(2, "read", "k", None, 40, 50, out=2).events(), True))
    c.append(("info CAS whose precondition never held cannot explain a read", reg,
              H().op(0, "write", "k", 1, 0, 10).op(1, "cas", "k", [3, 2], 20, 30, type="info")
              .op(2, "read", "k", None, 40, 50, out=2).events(), False))
    c.append(("failed write read later", reg,
              H().op(0, "write", "k", 1, 0, 10, type="fail").op(1, "read", "k", None, 20, 30, out=1).events(), False))
    c.append(("info read with a bogus value is ignored", reg,
              H().op(0, "write", "k", 1, 0, 10).op(1, "read", "k", None, 20, 30, type="info", out=7).events(), True))
    c.append(("cas applied:false when the value matched", reg,
              H().op(0, "write", "k", 1, 0, 10).op(1, "cas", "k", [1, 2], 20, 30, applied=False).events(), False))
    c.append(("cas applied:false when the value differed", reg,
              H().op(0, "write", "k", 1, 0, 10).op(1, "cas", "k", [3, 2], 20, 30, applied=False)
              .op(2, "read", "k", None, 40, 50, out=1).events(), True))
    c.append(("cas applied:false concurrent with the write that made it match", reg,
              H().op(0, "write", "k", 1, 0, 30).op(1, "cas", "k", [1, 2], 10, 20, applied=False).events(), True))
    c.append(("unread info write that a cas applied:false needs", reg,
              H().op(0, "write", "k", 1, 0, 10).op(1, "write", "k", 2, 20, 30, type="info")
              .op(2, "cas", "k", [1, 3], 40, 50, applied=False).events(), True))
    c.append(("cas applied:false with no write to explain it", reg,
              H().op(0, "write", "k", 1, 0, 10).op(1, "write", "k", 2, 20, 30, type="fail")
              .op(2, "cas", "k", [1, 3], 40, 50, applied=False).events(), False))
    c.append(("read of a never-written key returns null", reg,
              H().op(0, "read", "k", None, 0, 10, out=None).events(), True))
    c.append(("read of a value nobody wrote", reg,
              H().op(0, "read", "k", None, 0, 10, out=4).events(), False))
    ev = (H().op(0, "write", "a", 1, 0, 10).op(1, "read", "a", None, 20, 30, out=1)
          .op(0, "write", "b", 1, 40, 50).op(1, "read", "b", None, 60, 70, out=None).events())
    c.append(("two keys, one stale (only key b invalid)", reg, ev, False,
              lambda r: r["invalid_keys"] == ["b"] or "invalid_keys=%r" % r["invalid_keys"]))
    c.append(("reads on one key do not see writes to another", reg,
              H().op(0, "write", "a", 1, 0, 10).op(1, "read", "b", None, 20, 30, out=None).events(), True))

    # revisions (separate verdict; linearizability itself passes)
    def rev_is(expected):
        return lambda r: r["revisions"]["valid"] == expected or \
            "revisions=%r" % (r["revisions"],)
    c.append(("revisions: sequential writes with decreasing revs", reg,
              H().op(0, "write", "k", 1, 0, 10, rev=10).op(0, "write", "k", 2, 20, 30, rev=5).events(),
              True, rev_is(False)))
    c.append(("revisions: concurrent writes, witness order disagrees, other order fits", reg,
              H().op(0, "write", "k", 1, 0, 30, rev=11).op(1, "write", "k", 1, 5, 25, rev=10)
              .op(2, "read", "k", None, 40, 50, out=1, rev=11).events(), True, rev_is(True)))
    c.append(("revisions: read returns an older revision than the write it sees", reg,
              H().op(0, "write", "k", 1, 0, 10, rev=10).op(0, "write", "k", 1, 20, 30, rev=12)
              .op(1, "read", "k", None, 40, 50, out=1, rev=10).events(), True, rev_is(False)))
    c.append(("revisions: info write between, read sees a newer revision", reg,
              H().op(0, "write", "k", 1, 0, 10, rev=10).op(1, "write", "k", 2, 20, 30, type="info")
              .op(2, "read", "k", None, 40, 50, out=2, rev=14).op(2, "read", "k", None, 60, 70, out=2, rev=14)
              .events(), True, rev_is(True)))

    # nonce
    non = "nonce"
    ev = (H().op(0, "claim", "x", None, 0, 20, out=True, node="n1")
          .op(1, "claim", "x", None, 5, 25, out=True, node="n2").events())
    c.append(("nonce accepted twice on two nodes", non, ev, False,
              lambda r, ev=ev: invariants.nonce_uniqueness(ev)["valid"] is False or "invariant passed"))
    ev = (H().op(0, "claim", "x", None, 0, 20, out=True, node="n1")
          .op(1, "claim", "x", None, 5, 25, out=False, node="n2")
          .op(1, "claim", "y", None, 30, 40, out=True, node="n3").events())
    c.append(("nonce accepted once, refused once", non, ev, True,
              lambda r, ev=ev: invariants.nonce_uniqueness(ev)["valid"] is True or "invariant failed"))
    c.append(("nonce refused before anyone claimed it", non,
              H().op(0, "claim", "x", None, 0, 10, out=False).op(1, "claim", "x", None, 20, 30, out=True).events(),
              False))
    c.append(("nonce: info claim then refused", non,
              H().op(0, "claim", "x", None, 0, 10, type="info").op(1, "claim", "x", None, 20, 30, out=False).events(),
              True))
    c.append(("nonce: accepted value given as accepted=true", non,
              H().op(0, "claim", "x", None, 0, 10, accepted=True).op(1, "claim", "x", None, 20, 30, accepted=True)
              .events(), False))

    # queue
    q = "queue"
    c.append(("queue FIFO order respected", q,
              H().op(0, "enqueue", "q", 1, 0, 10).op(0, "enqueue", "q", 2, 20, 30)
              .op(1, "dequeue", "q", None, 40, 50, out=1).op(1, "dequeue", "q", None, 60, 70, out=2)
              .op(1, "dequeue", "q", None, 80, 90, out=None).events(), True))
    c.append(("queue FIFO order violated", q,
              H().op(0, "enqueue", "q", 1, 0, 10).op(0, "enqueue", "q", 2, 20, 30)
              .op(1, "dequeue", "q", None, 40, 50, out=2).events(), False))
    c.append(("queue concurrent enqueues in either order", q,
              H().op(0, "enqueue", "q", 1, 0, 30).op(1, "enqueue", "q", 2, 0, 30)
              .op(2, "dequeue", "q", None, 40, 50, out=2).op(2, "dequeue", "q", None, 60, 70, out=1).events(), True))
    c.append(("queue empty dequeue while an element is queued", q,
              H().op(0, "enqueue", "q", 1, 0, 10).op(1, "dequeue", "q", None, 20, 30, out=None).events(), False))
    c.append(("queue info enqueue dequeued later", q,
              H().op(0, "enqueue", "q", 5, 0, 10, type="info").op(1, "dequeue", "q", None, 20, 30, out=5).events(),
              True))
    return c


def budget_case(n=16):
    """n concurrent writes of distinct values, each with a concurrent read
    of it, then a read of a value nobody wrote: the search must visit about
    n * 3^n configurations before it can fail."""
    h = H()
    for p in range(n):
        h.op(p, "write", "k", p, 0, 1000)
    for p in range(n):
        h.op(p, "read", "k", None, 0 + p, 1000, out=p)   # reads overlap all writes
    h.op(99, "read", "k", None, 2000, 2010, out=99)
    return h.events()


# ---------------------------------------------------------------- random

def gen_register(rng, n_ops=150, keys=("a", "b", "c"), conc=5, p_info=0.03, p_fail=0.03):
    """Random linearizable register history: every op gets a linearization
    point inside its interval (info ops: anywhere after invocation, or never)
    and results come from applying the ops in that order."""
    ops = []
    clock = [rng.randint(0, 5) * MS for _ in range(conc)]
    procs = list(range(conc))
    for n in range(n_ops):
        w = min(range(conc), key=lambda x: clock[x])
        t_inv = clock[w] + rng.randint(0, 3) * MS
        d1 = rng.randint(0, 12) * MS
        d2 = rng.randint(0, 12) * MS
        r = rng.random()
        f = "read" if r < 0.5 else ("write" if r < 0.8 else "cas")
        val = None if f == "read" else (rng.randint(0, 4) if f == "write" else [rng.randint(0, 4), rng.randint(0, 4)])
        r = rng.random()
        kind = "info" if r < p_info else ("fail" if r < p_info + p_fail else "ok")
        op = {"proc": procs[w], "f": f, "key": rng.choice(keys), "value": val, "kind": kind,
              "t_inv": t_inv, "node": "n%d" % (1 + w % 3)}
        if kind == "info":
            op["t_lin"] = t_inv + rng.randint(0, 60) * MS
            op["t_ret"] = t_inv + 20 * MS
            op["happens"] = rng.random() < 0.5
            procs[w] += conc
        else:
            op["t_lin"] = t_inv + d1
            op["t_ret"] = t_inv + d1 + d2
            op["happens"] = kind == "ok"
        clock[w] = op["t_ret"] + MS
        ops.append(op)
    state = {}
    rev = {}
    index = 0
    for op in sorted(ops, key=lambda o: o["t_lin"]):
        if not op["happens"]:
            continue
        k = op["key"]
        cur = state.get(k)
        index += rng.randint(1, 3)
        if op["f"] == "read":
            op["out"] = cur
            op["rev"] = rev.get(k, 0)
        elif op["f"] == "write":
            state[k] = op["value"]
            rev[k] = op["rev"] = index
        else:
            op["applied"] = cur == op["value"][0]
            if op["applied"]:
                state[k] = op["value"][1]
                rev[k] = index
            op["rev"] = rev.get(k, 0)
    return _emit(ops)


def _emit(ops):
    evs = []
    for op in ops:
        evs.append({"t": op["t_inv"], "proc": op["proc"], "type": "invoke", "f": op["f"],
                    "key": op["key"], "value": op["value"], "node": op["node"]})
        c = {"t": op["t_ret"], "proc": op["proc"], "type": op["kind"], "f": op["f"],
             "key": op["key"], "value": op["value"]}
        if op["kind"] == "ok":
            if op["f"] in ("read", "dequeue", "claim"):
                c["value"] = op.get("out")
            for x in ("rev", "applied"):
                if x in op:
                    c[x] = op[x]
        evs.append(c)
    # calls before returns on equal times, as a recorder would log them
    evs.sort(key=lambda e: (e["t"], e["type"] != "invoke"))
    for i, e in enumerate(evs):
        e["i"] = i
    return evs


def corrupt_read(rng, evs, fs=("read",), bogus=99):
    cands = [e for e in evs if e["type"] == "ok" and e["f"] in fs]
    if not cands:
        return None
    e = rng.choice(cands)
    e["value"] = bogus
    return e["key"]


def gen_nonce(rng, n_ops=120, pool=25, conc=6):
    ops = []
    clock = [0] * conc
    procs = list(range(conc))
    for n in range(n_ops):
        w = min(range(conc), key=lambda x: clock[x])
        t_inv = clock[w] + rng.randint(0, 3) * MS
        kind = "info" if rng.random() < 0.04 else "ok"
        op = {"proc": procs[w], "f": "claim", "key": "n%d" % rng.randrange(pool), "value": None,
              "kind": kind, "t_inv": t_inv, "node": "n%d" % (1 + w % 3)}
        if kind == "info":
            op["t_lin"] = t_inv + rng.randint(0, 40) * MS
            op["t_ret"] = t_inv + 15 * MS
            op["happens"] = rng.random() < 0.5
            procs[w] += conc
        else:
            op["t_lin"] = t_inv + rng.randint(0, 8) * MS
            op["t_ret"] = op["t_lin"] + rng.randint(0, 8) * MS
            op["happens"] = True
        clock[w] = op["t_ret"] + MS
        ops.append(op)
    used = set()
    for op in sorted(ops, key=lambda o: o["t_lin"]):
        if op["happens"]:
            op["out"] = op["key"] not in used
            used.add(op["key"])
    return _emit(ops)


def corrupt_nonce(rng, evs):
    """Turn a refusal into an acceptance of a nonce that an ok claim accepted."""
    accepted = {e["key"] for e in evs if e["type"] == "ok" and e["value"] is True}
    cands = [e for e in evs if e["type"] == "ok" and e["value"] is False and e["key"] in accepted]
    if not cands:
        return None
    e = rng.choice(cands)
    e["value"] = True
    return e["key"]


def gen_queue(rng, n_ops=40, conc=3):
    ops = []
    clock = [0] * conc
    procs = list(range(conc))
    nextv = [0]
    for n in range(n_ops):
        w = min(range(conc), key=lambda x: clock[x])
        t_inv = clock[w] + rng.randint(0, 3) * MS
        f = "enqueue" if rng.random() < 0.55 else "dequeue"
        val = None
        if f == "enqueue":
            nextv[0] += 1
            val = nextv[0]
        kind = "info" if (f == "enqueue" and rng.random() < 0.04) else "ok"
        op = {"proc": procs[w], "f": f, "key": "q", "value": val, "kind": kind,
              "t_inv": t_inv, "node": "n1"}
        if kind == "info":
            op["t_lin"] = t_inv + rng.randint(0, 30) * MS
            op["t_ret"] = t_inv + 15 * MS
            op["happens"] = rng.random() < 0.5
            procs[w] += conc
        else:
            op["t_lin"] = t_inv + rng.randint(0, 6) * MS
            op["t_ret"] = op["t_lin"] + rng.randint(0, 6) * MS
            op["happens"] = True
        clock[w] = op["t_ret"] + MS
        ops.append(op)
    q = []
    for op in sorted(ops, key=lambda o: o["t_lin"]):
        if not op["happens"]:
            continue
        if op["f"] == "enqueue":
            q.append(op["value"])
        else:
            op["out"] = q.pop(0) if q else None
    return _emit(ops)


def brute_force(ops, model):
    """Reference checker for tiny histories: try every order that respects
    real time (a before b when a returned before b was invoked), every ok
    op placed, each info op placed or not."""
    n = len(ops)
    must = [[a.id for a in ops if a.ok and a.ret_t < b.call_t] for b in ops]
    need = sum(1 for op in ops if op.ok)
    seen = set()

    def go(placed, state, n_ok):
        if n_ok == need:
            return True
        if (placed, state) in seen:
            return False
        seen.add((placed, state))
        for op in ops:
            if placed >> op.id & 1 or any(not placed >> a & 1 for a in must[op.id]):
                continue
            legal, s2 = model.step(state, op)
            if legal and go(placed | 1 << op.id, s2, n_ok + op.ok):
                return True
        return False

    return go(0, model.init(), 0) if n else True


def gen_tiny(rng, kind):
    """A tiny history with random results: linearizable or not. Written
    values range wider than read ones, so some info ops are unobservable
    (exercises the models' prune())."""
    h = H()
    n = rng.randint(2, 7)
    for p in range(n):
        t0 = rng.randint(0, 12)
        t1 = t0 + rng.randint(0, 6)
        typ = rng.choice(["ok"] * 6 + ["info", "info", "fail", None])
        if kind == "register":
            f = rng.choice(["read", "read", "write", "cas"])
            val = rng.randint(0, 4) if f == "write" else ([rng.randint(0, 2), rng.randint(0, 4)] if f == "cas" else None)
            out = rng.choice([None, 0, 1, 2]) if f == "read" else None
            extra = {"applied": rng.random() < 0.6} if f == "cas" else {}
            if rng.random() < 0.7:
                extra["rev"] = rng.randint(0, 6)
            h.op(p, f, "k", val, t0, t1, type=typ, out=out, **extra)
        elif kind == "nonce":
            h.op(p, "claim", "x", None, t0, t1, type=typ, out=rng.random() < 0.4)
        else:
            f = rng.choice(["enqueue", "dequeue"])
            h.op(p, f, "q", rng.randint(1, 4) if f == "enqueue" else None, t0, t1, type=typ,
                 out=rng.choice([None, 1, 2, 3]) if f == "dequeue" else None)
    return h.events()


def test_brute_force(run, rng, n):
    for kind in ("register", "nonce", "queue"):
        agree = 0
        n_valid = 0
        rev_agree = 0
        pruned = 0
        bad = []
        for _ in range(n):
            evs = gen_tiny(rng, kind)
            per_key, _ = wgl.build_ops(evs, kind)
            ops = next(iter(per_key.values()), [])
            expect = brute_force(ops, models.get(kind))
            r = wgl.check(evs, kind, workers=1)
            pruned += sum(k.get("pruned", 0) > 0 for k in r["keys"])
            n_valid += expect
            if r["valid"] is expect:
                agree += 1
            else:
                bad.append(json.dumps(evs))
            if kind == "register":
                rexp = brute_force(ops, models.RegisterRev()) if expect else None
                if r["revisions"]["valid"] is rexp:
                    rev_agree += 1
                else:
                    bad.append("revisions %s vs %s: %s" % (r["revisions"]["valid"], rexp, json.dumps(evs)))
        run.report("brute force agrees with WGL on %d tiny %s histories" % (n, kind),
                   agree == n and (kind != "register" or rev_agree == n),
                   "%d agree, %d linearizable, %d with pruned info ops%s%s" % (
                       agree, n_valid, pruned, ", revisions %d agree" % rev_agree if kind == "register" else "",
                       "; first disagreement: " + bad[0] if bad else ""))


# ---------------------------------------------------------------- runner

class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def report(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print("%s  %s%s" % ("PASS" if ok else "FAIL", name, ("  (" + detail + ")") if detail else ""),
              flush=True)

    def check(self, name, model, events, expected, extra=None, **kw):
        kw.setdefault("workers", 1)
        t0 = time.monotonic()
        try:
            r = wgl.check(events, model, **kw)
        except Exception as ex:     # a crash is a failed case, not a crashed selftest
            self.report(name, False, "exception %r" % (ex,))
            return None
        dt = time.monotonic() - t0
        ok = r["valid"] == expected
        detail = "expected %s, got %s, %d ops, %.1f ms" % (expected, r["valid"], r["ops"], dt * 1000)
        if ok and extra is not None:
            x = extra(r)
            if x is not True:
                ok = False
                detail += ", " + str(x)
        self.report(name, ok, detail)
        return r


def test_history_recorder(run):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "history.jsonl")
        h = history.History(path)
        procs = history.Processes(4)
        seen_procs = []

        def worker():
            w = procs.bind()
            for n in range(50):
                p = procs.proc()
                h.invoke(p, "write", "k%d" % w, n, node="n1")
                typ = "info" if n % 10 == 9 else "ok"
                h.complete(p, typ, "write", "k%d" % w, n, rev=n)
                newp = procs.completed(typ)
                seen_procs.append((w, p, typ, newp))

        ts = [threading.Thread(target=worker) for _ in range(4)]
        h.nemesis("start", fault="partition", nodes=["n1"])
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        h.nemesis("stop", fault="partition")
        h.close()
        evs = history.load(path)
        ok = len(evs) == 402
        ok = ok and [e["i"] for e in evs] == list(range(402))
        ok = ok and all(a["t"] <= b["t"] for a, b in zip(evs, evs[1:]))
        ok = ok and all(newp == (p + 4 if typ == "info" else p) for w, p, typ, newp in seen_procs)
        ok = ok and evs[0]["proc"] == "nemesis" and evs[0]["fault"] == "partition"
        per_key, stats = wgl.build_ops(evs, "register")
        ok = ok and stats["ok"] == 180 and stats["info"] == 20 and stats["orphan_completions"] == 0
        r = wgl.check(evs, "register", workers=1)
        ok = ok and r["valid"] is True
        # torn last line is tolerated
        with open(path, "a") as f:
            f.write('{"i":402,"t":1,"pro')
        ok = ok and len(history.load(path)) == 402
        run.report("history recorder: 4 threads, retirement after info, load, torn tail", ok,
                   "%d events" % len(evs))


def test_invariants(run):
    with tempfile.TemporaryDirectory() as d:
        logs = {
            "n1.log": ["2026-01-01T00:00:00.000Z info  n1 raft: state none -> follower, term 1, leader 0000000000000000",
                       "2026-01-01T00:00:01.000Z info  n1 raft: state follower -> candidate, term 1, leader 0000000000000000",
                       "2026-01-01T00:00:01.100Z info  n1 raft: state candidate -> leader, term 2, leader 00000000000000a1",
                       "2026-01-01T00:00:05.000Z info  n1 raft: state leader -> follower, term 3, leader 0000000000000000"],
            "n2.log": ["2026-01-01T00:00:01.100Z info  n2 raft: state follower -> follower, term 2, leader 00000000000000a1",
                       "2026-01-01T00:00:05.000Z info  n2 raft: state candidate -> leader, term 3, leader 00000000000000a2"],
            "n3.log": ["2026-01-01T00:00:01.100Z info  n3 raft: state follower -> follower, term 2, leader 00000000000000a1",
                       "2026-01-01T00:00:01.100Z warn  n3 kv: something else"],
        }
        paths = []
        for name, lines in logs.items():
            p = os.path.join(d, name)
            with open(p, "w") as f:
                f.write("\n".join(lines) + "\n")
            paths.append(p)
        r = invariants.leaders_per_term(sorted(paths))
        run.report("leaders per term: one leader in terms 2 and 3", r["valid"] is True and r["lines"] == 7,
                   "leaders=%s" % r["leaders"])
        with open(paths[2], "a") as f:
            f.write("2026-01-01T00:00:05.000Z info  n3 raft: state candidate -> leader, term 3, leader 00000000000000a3\n")
        r = invariants.leaders_per_term(sorted(paths))
        run.report("leaders per term: two leaders in term 3", r["valid"] is False
                   and r["violations"] and r["violations"][0]["leaders"] == ["n2", "n3"],
                   "violations=%s" % [v["leaders"] for v in r["violations"]])
    h = H()
    h.nem(0, "start", fault="partition")
    for s in range(5):
        h.op(s, "write", "k", s, s * 1000 + 100, s * 1000 + 200, type="ok" if s != 2 else "info")
    h.op(9, "read", "k", None, 3100, 3200, type="fail")
    h.nem(2500, "stop", fault="partition").nem(3300, "kill", node="n2")
    r = invariants.availability(h.events())
    b = r["buckets"]
    ok = len(b) == 5 and [x["ok"] for x in b] == [1, 1, 0, 1, 1] and b[2]["info"] == 1 \
        and b[3]["fail"] == 1 and b[0]["faults"] == ["partition"] and b[3]["faults"] == ["kill"] \
        and b[4]["faults"] == []
    run.report("availability: buckets and nemesis windows", ok,
               "ok per s %s, faults %s" % ([x["ok"] for x in b], [x["faults"] for x in b]))
    # nemesis.py style: each action logged with phase invoke, then ok or fail
    h = H()
    for t, ev, ph, d in ((0, "partition-start", "invoke", {"shape": "majority"}),
                         (1, "partition-start", "ok", {"cut": [["n1"], ["n2", "n3"]]}),
                         (2, "kill-start", "invoke", {}), (3, "kill-start", "fail", {"error": "x"}),
                         (4, "clock-bump", "invoke", {}), (5, "clock-bump", "ok", {"ms": 500}),
                         (6, "partition-stop", "invoke", {}), (7, "partition-stop", "ok", {}),
                         (8, "flap-start", "ok", {}), (9, "flap-cut", "ok", {}), (10, "flap-heal", "ok", {}),
                         (11, "flap-stop", "ok", {}), (12, "kill-start", "ok", {}),
                         (13, "kill-restart", "ok", {"node": "n2"}),
                         (14, "heal-all", "invoke", {}), (15, "heal-all", "ok", {})):
        h.nem(t * 1000, ev, phase=ph, **d)
    nem = invariants.nemesis_windows(h.events())
    spans = sorted((w["fault"], w["start_t"] // (1000 * MS), w["stop_t"] // (1000 * MS), w["failed"])
                   for w in nem["windows"])
    want = [("clock", 5, 15, False), ("flap", 8, 11, False), ("kill", 2, 3, True),
            ("kill", 12, 15, False), ("partition", 0, 7, False)]
    want_inj = {"partition": 1, "clock-bump": 1, "flap": 1, "flap-cut": 1, "kill": 1}
    run.report("nemesis windows from invoke/ok/fail phases", spans == want and nem["injected"] == want_inj,
               "windows %s, injected %s" % (spans, nem["injected"]))


def test_report(run):
    try:
        import report
    except Exception as ex:
        run.report("report.py importable", False, repr(ex))
        return
    for name, evs, code in (
            ("valid", H().nem(0, "start", fault="kill").op(0, "write", "k", 1, 0, 10)
             .op(1, "read", "k", None, 20, 30, out=1).nem(40, "stop", fault="kill").events(), 0),
            ("stale read", H().nem(0, "start", fault="partition").op(0, "write", "k", 1, 0, 10)
             .op(1, "read", "k", None, 20, 30, out=None).nem(40, "heal_all").events(), 1),
            ("budget-exhausting", budget_case(16), 2),
            ("nonce accepted twice", H().op(0, "claim", "x", None, 0, 20, out=True, node="n1")
             .op(1, "claim", "x", None, 5, 25, out=True, node="n2").events(), 1),
            ("no ok op", H().op(0, "write", "k", 1, 0, 10, type="fail").events(), 2)):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "history.jsonl"), "w") as f:
                for e in evs:
                    f.write(json.dumps(e) + "\n")
            with open(os.path.join(d, "n1.log"), "w") as f:
                f.write("2026-01-01T00:00:01.100Z info  n1 raft: state candidate -> leader, term 2, leader 00000000000000a1\n")
            import contextlib
            import io
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc = report.main([d, "--workers", "1", "--quiet", "--budget-steps", "20000"])
            with open(os.path.join(d, "summary.json")) as f:
                summ = json.load(f)
            txt = open(os.path.join(d, "report.txt")).read()
            ok = rc == code and summ["exit_code"] == code and "timeline" in txt.lower()
            if code == 1:
                ok = ok and "Anomalies (" in txt and "Anomalies (0)" not in txt
            if name == "stale read":
                ok = ok and "nemesis active: partition" in txt and "cannot place" in txt
            if name == "nonce accepted twice":
                ok = ok and summ["verdicts"].get("nonce-unique") is False
            run.report("report.py on a %s history exits %d" % (name, code), ok, "rc=%s" % rc)
    with tempfile.TemporaryDirectory() as d:
        import contextlib
        import io
        with contextlib.redirect_stderr(io.StringIO()):
            rc = report.main([d, "--quiet"])
        run.report("report.py without a history exits 2", rc == 2 and os.path.exists(os.path.join(d, "summary.json")),
                   "rc=%s" % rc)


def bench(seed, n=20):
    """Checker speed on one-key histories of 400 ops (valid and with one
    corrupted read), by client concurrency and share of info ops; then an
    8-key history through the Pool(2) driver."""
    print("one key, 400 ops; times per key (ms): valid mean/max, corrupted mean/max; "
          "max steps; verdict errors")
    for p_info in (0.01, 0.02, 0.05):
        for conc in (3, 6, 10):
            rng = random.Random(seed)
            tv, tc, steps, infos, errs = [], [], [], [], 0
            for _ in range(n):
                sd = rng.randrange(1 << 30)
                evs = gen_register(random.Random(sd), n_ops=400, keys=("k",), conc=conc,
                                   p_info=p_info, p_fail=0.02)
                r = wgl.check(evs, "register", workers=1)
                k = r["keys"][0]
                tv.append(k["total_seconds"])
                infos.append(k["info_ops"])
                steps.append(k["steps"])
                errs += r["valid"] is not True or r["revisions"]["valid"] is not True
                corrupt_read(random.Random(sd + 1), evs)
                r = wgl.check(evs, "register", workers=1)
                tc.append(r["keys"][0]["total_seconds"])
                steps.append(r["keys"][0]["steps"])
                errs += r["valid"] is not False
            print("  conc %2d, info ops/key %4.1f: valid %6.1f / %6.1f  corrupted %7.1f / %7.1f  "
                  "steps %8d  errors %d (unknown = budget)" % (
                      conc, sum(infos) / n, 1000 * sum(tv) / n, 1000 * max(tv),
                      1000 * sum(tc) / n, 1000 * max(tc), max(steps), errs))
    evs = gen_register(random.Random(seed), n_ops=3200, keys=tuple("k%d" % i for i in range(8)), conc=6,
                       p_info=0.02)
    for workers in (1, 2):
        t0 = time.monotonic()
        r = wgl.check(evs, "register", workers=workers)
        print("8 keys x ~400 ops, workers=%d: %s, %.3f s wall, slowest key %.1f ms" % (
            workers, r["valid"], time.monotonic() - t0, 1000 * r["max_key_seconds"]))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer randomized histories")
    ap.add_argument("--bench", action="store_true", help="measure checker speed instead")
    a = ap.parse_args(argv)
    if a.bench:
        return bench(a.seed)
    run = Runner()
    t_start = time.monotonic()

    for case in hand_cases():
        name, model, events, expected = case[:4]
        extra = case[4] if len(case) > 4 else None
        run.check("%s: %s" % (model, name), model, events, expected, extra)

    r = run.check("budget: 16 concurrent writes + impossible read, 20000 steps", "register",
                  budget_case(), "unknown", budget_steps=20000)
    ev = budget_case() + H().op(500, "write", "other", 1, 0, 10).events()
    for i, e in enumerate(sorted(ev, key=lambda e: e["t"])):
        e["i"] = i
    run.check("budget: one unknown key and one valid key aggregate to unknown", "register", ev, "unknown",
              lambda r: r["unknown_keys"] == ["k"] or "unknown_keys=%r" % r["unknown_keys"],
              budget_steps=20000)
    run.check("budget: time limit 0.05 s", "register", budget_case(), "unknown",
              lambda r: "time" in r["keys"][0].get("reason", "") or r["keys"][0].get("reason"),
              budget_steps=10 ** 9, budget_s=0.05)
    run.check("budget: the same shape with 6 writes and the default budget is invalid", "register",
              budget_case(6), False)

    test_history_recorder(run)
    test_invariants(run)

    rng = random.Random(a.seed)
    n_reg = 10 if a.quick else 40
    n_small = 5 if a.quick else 20

    def busy_key(g):
        return gen_register(g, n_ops=400, keys=("k",), conc=6, p_info=0.04, p_fail=0.02)

    for kind, gen, model, corrupt, n in (
            ("register", gen_register, "register", lambda g, e: corrupt_read(g, e), n_reg),
            ("register (one key, 400 ops, 6 clients, 4% info)", busy_key, "register",
             lambda g, e: corrupt_read(g, e), n_small // 2),
            ("nonce", gen_nonce, "nonce", corrupt_nonce, n_small),
            ("queue", gen_queue, "queue", lambda g, e: corrupt_read(g, e, ("dequeue",), 10 ** 6), n_small)):
        good = bad = 0
        bad_msgs = []
        t0 = time.monotonic()
        steps = 0
        skipped = 0
        for s in range(n):
            seed = rng.randrange(1 << 30)
            evs = gen(random.Random(seed))
            r = wgl.check(evs, model, workers=1)
            steps += sum(k["steps"] for k in r["keys"])
            if r["valid"] is True and (model != "register" or r["revisions"]["valid"] is True):
                good += 1
            else:
                bad_msgs.append("seed %d valid=%s rev=%s" % (seed, r["valid"], r.get("revisions", {}).get("valid")))
            key = corrupt(random.Random(seed + 1), evs)
            if key is None:
                skipped += 1
                continue
            r = wgl.check(evs, model, workers=1)
            if r["valid"] is False and r["invalid_keys"] == [key]:
                bad += 1
            else:
                bad_msgs.append("corrupted seed %d valid=%s invalid=%s" % (seed, r["valid"], r["invalid_keys"]))
        dt = time.monotonic() - t0
        run.report("random %s: %d linearizable histories pass" % (kind, n), good == n,
                   "%d/%d, %.2f s total, %d steps; %s" % (good, n, dt, steps, "; ".join(bad_msgs[:3])))
        run.report("random %s: corrupted histories fail on the corrupted key" % kind, bad == n - skipped,
                   "%d/%d (%d without a candidate op)" % (bad, n - skipped, skipped))

    test_brute_force(run, rng, 300 if a.quick else 2000)

    # the pool driver on a multi-key history
    evs = gen_register(random.Random(a.seed), n_ops=800, keys=tuple("k%d" % i for i in range(8)))
    r1 = wgl.check(evs, "register", workers=2)
    key = corrupt_read(random.Random(a.seed), evs)
    r2 = wgl.check(evs, "register", workers=2)
    run.report("pool(2) driver: 8 keys valid, then one corrupted key invalid",
               r1["valid"] is True and r2["valid"] is False and r2["invalid_keys"] == [key],
               "%s / %s %s, %.2f s" % (r1["valid"], r2["valid"], r2["invalid_keys"], r1["seconds"] + r2["seconds"]))

    # speed: one key with ~400 ops and a few info ops
    evs = gen_register(random.Random(a.seed + 7), n_ops=400, keys=("k",), conc=6, p_info=0.015, p_fail=0.02)
    r = wgl.check(evs, "register", workers=1)
    k = r["keys"][0]
    run.report("speed: one key, %d ops (%d info) checks in under 1 s" % (k["ops"], k["info_ops"]),
               r["valid"] is True and k["total_seconds"] < 1.0,
               "%.1f ms, %d steps" % (k["total_seconds"] * 1000, k["steps"]))

    test_report(run)

    dt = time.monotonic() - t_start
    print("selftest: %d passed, %d failed, %.1f s" % (run.passed, run.failed, dt))
    return 0 if run.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
