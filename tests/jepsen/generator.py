"""Seeded schedules for a fault-injection run (JEPSEN.md section 6).

plan(seed, faults, time_limit, ...) -> [Window]
    The nemesis schedule, fixed by the seed: after a quiet lead-in, fault
    windows of `interval` seconds separated by rests of `rest` seconds in
    which everything is healed. About a quarter of the windows
    (`quiet_p`) inject nothing. A fault window picks a random non-empty
    subset of the enabled faults and, for each, its options (partition
    shape, kill/pause targets, clock offset, loss rate, delay). Runtime
    choices (which node is leader, which random node) are made by
    nemesis.Nemeses with its own seeded rng.

NemesisRunner(nem, hist, windows, membership=None, log=None)
    A thread that plays the windows: starts every fault of a window,
    records history.nemesis("start", fault=KIND, id=WINDOW, ...), waits,
    undoes each fault explicitly (in reverse order) and records "stop".
    stop() ends the current window early (its faults are undone). The
    final heal (Nemeses.heal_all) is the driver's job (run.py).

MembershipDriver(cluster, hist, rng, log)
    One membership change at a time in its own thread, never below three
    voters: add the spare (join + promote to voter) while there are three
    members, else remove one (the leader half of the time). So it cycles
    add n4, remove one, re-add it, remove one... Used by the membership
    workload (a steady loop) and by the "membership" fault (one step per
    window). Voter counts are sampled after every change.

ClientPool(cluster, hist, workload, concurrency, rate, seed)
    `concurrency` worker threads in the client namespace, each one logical
    process at a time (history.Processes: a fresh id after an info). Each
    worker asks the workload for its next op and runs it
    (workload.run_op); the total rate is limited to `rate` ops/s, with
    jitter. Worker w uses random.Random(seed * 1000 + w).
"""
import itertools
import random
import threading
import time

import history

_fresh = itertools.count(1_000_000)
_fresh_lock = threading.Lock()


def fresh_proc():
    """A process id no worker uses (helper claims, final reads): one op each."""
    with _fresh_lock:
        return next(_fresh)

FAULTS = ("partition", "kill", "pause", "clock", "loss", "delay", "membership")
# Order in which a window's faults are started (undone in reverse).
APPLY_ORDER = ("clock", "delay", "loss", "partition", "pause", "kill", "membership")


class Window:
    def __init__(self, index, start_s, length_s, faults):
        self.index = index
        self.start_s = start_s
        self.length_s = length_s
        self.faults = faults            # [(kind, options dict)]

    def to_dict(self):
        return {"window": self.index, "start_s": round(self.start_s, 3),
                "length_s": round(self.length_s, 3),
                "faults": [{"fault": k, **o} for k, o in self.faults]}

    def __repr__(self):
        return "Window(%r)" % self.to_dict()


def _weighted(rng, choices):
    total = sum(w for _, w in choices)
    x = rng.uniform(0, total)
    for v, w in choices:
        x -= w
        if x <= 0:
            return v
    return choices[-1][0]


def fault_options(rng, kind, length_s, profile="ci"):
    """Options for one fault of a window (JSON-able)."""
    soak = profile == "soak"
    if kind == "partition":
        shape = rng.choice(["isolate", "isolate-leader", "majority-minority", "bridge", "flap"])
        o = {"shape": shape, "mode": "reject" if soak and rng.random() < 0.2 else "drop"}
        if shape == "flap":
            o["flap_shape"] = rng.choice(["isolate", "isolate-leader", "bridge"])
            o["period"] = [1.0, 2.0]
        return o
    if kind in ("kill", "pause"):
        return {"targets": _weighted(rng, [("one", 0.4), ("leader", 0.4), ("majority", 0.2)])}
    if kind == "clock":
        op = "bump" if rng.random() < 0.6 else "strobe"
        targets = rng.choice(["one", "leader", "all"])
        sign = rng.choice((-1, 1))
        if op == "bump":
            # Within +-30 s: signed requests (60 s window) keep working.
            return {"op": "bump", "targets": targets, "delta_ms": sign * rng.randint(250, 30000)}
        return {"op": "strobe", "targets": targets, "delta_ms": sign * rng.randint(100, 5000),
                "period_ms": rng.randint(20, 100), "duration_s": round(length_s, 3)}
    if kind == "loss":
        return {"prob": round(rng.uniform(0.05, 0.3), 3) if soak else 0.1}
    if kind == "delay":
        if soak:
            ms = rng.randint(20, 500)
            return {"ms": ms, "jitter_ms": ms // 3}
        return {"ms": 50, "jitter_ms": 20}
    if kind == "membership":
        return {}
    raise ValueError("unknown fault %r" % kind)


def plan(seed, faults, time_limit, interval=5.0, rest=None, quiet_p=0.25, lead_in=3.0,
         profile="ci"):
    """The list of fault windows for a run of time_limit seconds."""
    rng = random.Random("nemesis-plan-%d" % seed)
    faults = [f for f in FAULTS if f in faults]
    rest = interval / 2.0 if rest is None else rest
    windows = []
    t = min(lead_in, time_limit / 4.0)
    while t < time_limit - 1.0:
        length = interval if profile != "soak" else rng.uniform(interval, 3 * interval)
        length = min(length, time_limit - t)
        chosen = []
        if faults and rng.random() >= quiet_p:
            chosen = [f for f in faults if rng.random() < 0.5] or [rng.choice(faults)]
        chosen = [f for f in APPLY_ORDER if f in chosen]
        windows.append(Window(len(windows), t, length,
                              [(k, fault_options(rng, k, length, profile)) for k in chosen]))
        t += length + rest
    return windows


class NemesisRunner:
    def __init__(self, nem, hist, windows, membership=None, log=None):
        self.nem = nem
        self.hist = hist
        self.windows = windows
        self.membership = membership
        self.log = log or (lambda event, **d: None)
        self._stop = threading.Event()
        self._thread = None
        self.errors = []
        self.started = {}           # fault kind -> windows started
        self._active = []           # fault kinds of the window being played
        self.fault_windows = 0      # fault windows begun so far

    def fault_state(self):
        """(fault kinds active now, membership excluded; fault windows begun)."""
        return [k for k in self._active if k != "membership"], self.fault_windows

    def start(self):
        self._thread = threading.Thread(target=self._run, name="nemesis-runner", daemon=True)
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self, timeout=120):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.errors.append("nemesis runner did not stop within %ss" % timeout)

    def _wait_until(self, t):
        left = t - time.monotonic()
        if left > 0:
            self._stop.wait(left)

    def _start_fault(self, kind, o):
        nem = self.nem
        if kind == "partition":
            if o["shape"] == "flap":
                return nem.flap.start(shape=o["flap_shape"], period=tuple(o["period"]),
                                      mode=o.get("mode", "drop"))
            return nem.partition.start(shape=o["shape"], mode=o.get("mode", "drop"))
        if kind == "kill":
            return nem.kill.start(targets=o["targets"])
        if kind == "pause":
            return nem.pause.start(targets=o["targets"])
        if kind == "clock":
            if o["op"] == "bump":
                return nem.clock.bump(targets=o["targets"], delta_ms=o["delta_ms"])
            return nem.clock.strobe(targets=o["targets"], delta_ms=o["delta_ms"],
                                    period_ms=o["period_ms"], duration_s=o["duration_s"])
        if kind == "loss":
            return nem.loss.start(prob=o["prob"])
        if kind == "delay":
            return nem.delay.start(ms=o["ms"], jitter_ms=o["jitter_ms"])
        if kind == "membership":
            if self.membership is None:
                return {"skipped": "no membership driver"}
            return {"step": self.membership.step_async(window=True)}
        raise ValueError(kind)

    def _stop_fault(self, kind, o):
        nem = self.nem
        if kind == "partition":
            return nem.flap.stop() if o["shape"] == "flap" else nem.partition.stop()
        if kind == "membership":
            return None     # a change is not undone; the driver records its own window
        return {"kill": nem.kill, "pause": nem.pause, "clock": nem.clock, "loss": nem.loss,
                "delay": nem.delay}[kind].stop()

    def _run(self):
        for w in self.windows:
            self._wait_until(self.t0 + w.start_s)
            if self._stop.is_set():
                return
            if not w.faults:
                self.log("window-quiet", window=w.index)
                self._wait_until(self.t0 + w.start_s + w.length_s)
                continue
            active = []
            self.fault_windows += 1
            for kind, o in w.faults:
                if self._stop.is_set():
                    break
                try:
                    res = self._start_fault(kind, o) or {}
                except Exception as e:  # noqa: BLE001 - record and go on
                    self.errors.append("window %d: %s start: %r" % (w.index, kind, e))
                    self.log("fault-error", window=w.index, fault=kind, phase="start", error=repr(e))
                    continue
                active.append((kind, o))
                self._active = [k for k, _ in active]
                self.started[kind] = self.started.get(kind, 0) + 1
                if kind != "membership":
                    detail = dict(o)
                    detail.update({k: v for k, v in res.items() if k not in detail})
                    self.hist.nemesis("start", fault=kind, id=w.index, **detail)
            self._wait_until(self.t0 + w.start_s + w.length_s)
            self._active = []
            for kind, o in reversed(active):
                try:
                    res = self._stop_fault(kind, o) or {}
                except Exception as e:  # noqa: BLE001
                    self.errors.append("window %d: %s stop: %r" % (w.index, kind, e))
                    self.log("fault-error", window=w.index, fault=kind, phase="stop", error=repr(e))
                    res = {"error": repr(e)}
                if kind != "membership":
                    self.hist.nemesis("stop", fault=kind, id=w.index,
                                      **{k: v for k, v in res.items() if k != "took_ms"})


class MembershipDriver:
    """One membership change at a time (see the module docstring)."""

    def __init__(self, cluster, hist, rng, log=None, add_timeout=30, remove_timeout=30):
        self.c = cluster
        self.fault_state = lambda: ([], 0)   # set by run.py: NemesisRunner.fault_state
        self.hist = hist
        self.rng = rng
        self.log = log or (lambda event, **d: None)
        self.add_timeout = add_timeout
        self.remove_timeout = remove_timeout
        self._busy = threading.Lock()
        self._thread = None
        self._loop_stop = threading.Event()
        self._loop_thread = None
        self.steps = []            # {op, node, ok, error, voters, seconds}
        self.voter_samples = []    # (monotonic s, voters list or None)
        self.uncertain = set()     # nodes whose add/remove ended in an error
        self._n = 0

    def _sample(self):
        try:
            v = self.c.voters()
        except Exception as e:  # noqa: BLE001
            self.log("membership-sample-error", error=repr(e))
            v = None
        self.voter_samples.append((time.monotonic(), v))
        return v

    def step(self, window=False):
        """One change, synchronously. Returns its record: {id, op, node, ok,
        error, seconds, members, voters, faults_at_start, faults_at_end,
        quiet (no fault window during the change)}."""
        with self._busy:
            return self._step(window)

    def _step(self, window):
        c = self.c
        self._n += 1
        sid = "m%d" % self._n
        if len(c.members) <= 3 and c.spare_nodes():
            op, node = "add", c.spare_nodes()[0].name
        elif len(c.members) > 3:
            op = "remove"
            ld = None
            if self.rng.random() < 0.5:
                try:
                    ld = c.leader()
                except Exception:  # noqa: BLE001
                    ld = None
            node = ld.name if ld is not None and ld.name in c.members else \
                self.rng.choice(sorted(c.members))
        else:
            return {"op": "none", "reason": "3 members and no spare"}
        self.hist.nemesis("start", fault="membership", id=sid, op=op, node=node)
        t = time.monotonic()
        active0, epoch0 = self.fault_state()
        rec = {"id": sid, "op": op, "node": node, "ok": False, "faults_at_start": active0}
        try:
            if op == "add":
                c.add_spare(node, timeout=self.add_timeout)
            else:
                c.remove(node, timeout=self.remove_timeout, min_voters=3)
            rec["ok"] = True
            self.uncertain.discard(node)
        except Exception as e:  # noqa: BLE001 - a change may fail under faults
            rec["error"] = repr(e)
            self.uncertain.add(node)
        rec["seconds"] = round(time.monotonic() - t, 3)
        active1, epoch1 = self.fault_state()
        rec["faults_at_end"] = active1
        # No fault window was active at any moment of the change.
        rec["quiet"] = not active0 and not active1 and epoch0 == epoch1
        rec["members"] = list(c.members)
        rec["voters"] = self._sample()
        self.steps.append(rec)
        self.hist.nemesis("stop", fault="membership", id=sid, ok=rec["ok"],
                          error=rec.get("error"), members=rec["members"], voters=rec["voters"])
        self.log("membership-step", **rec)
        return rec

    def step_async(self, window=False):
        """Starts one change in a thread unless one is in flight. Returns
        True if started."""
        if not self._busy.acquire(blocking=False):
            return False

        def run():
            try:
                self._step(window)
            except Exception as e:  # noqa: BLE001
                self.log("membership-error", error=repr(e))
            finally:
                self._busy.release()
        self._thread = threading.Thread(target=run, name="membership-step", daemon=True)
        self._thread.start()
        return True

    def start_loop(self, pause_s=(2.0, 5.0)):
        """Changes membership continuously, resting pause_s between changes."""
        def loop():
            while not self._loop_stop.wait(self.rng.uniform(*pause_s)):
                try:
                    self.step()
                except Exception as e:  # noqa: BLE001
                    self.log("membership-error", error=repr(e))
        self._loop_thread = threading.Thread(target=loop, name="membership-loop", daemon=True)
        self._loop_thread.start()

    def stop(self, timeout=120):
        """Stops the loop and waits for a change in flight."""
        self._loop_stop.set()
        end = time.monotonic() + timeout
        for t in (self._loop_thread, self._thread):
            if t is not None:
                t.join(max(0.1, end - time.monotonic()))
        return not any(t is not None and t.is_alive() for t in (self._loop_thread, self._thread))


class ClientPool:
    def __init__(self, cluster, hist, workload, concurrency, rate, seed, log=None):
        self.c = cluster
        self.hist = hist
        self.workload = workload
        self.concurrency = concurrency
        self.rate = rate
        self.seed = seed
        self.log = log or (lambda event, **d: None)
        self.procs = history.Processes(concurrency)
        self._stop = threading.Event()
        self.threads = []
        self.errors = []
        self.ops = 0
        self._lock = threading.Lock()

    def start(self):
        for w in range(self.concurrency):
            t = self.c.client_thread(self._worker, args=(w,), name="client-%d" % w)
            self.threads.append(t)
            t.start()
        return self

    def _worker(self, w):
        rng = random.Random(self.seed * 1000 + w)
        self.procs.bind(w)
        period = self.concurrency / float(self.rate) if self.rate > 0 else 0.0
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.workload.run_op(self, w, rng)
            except Exception as e:  # noqa: BLE001 - a harness bug: record, keep going
                import traceback
                self.errors.append("worker %d: %s" % (w, traceback.format_exc()))
                self.log("client-error", worker=w, error=repr(e))
                self._stop.wait(0.5)
            with self._lock:
                self.ops += 1
            if period:
                left = t + period * rng.uniform(0.5, 1.5) - time.monotonic()
                if left > 0:
                    self._stop.wait(left)

    def stopping(self):
        return self._stop.is_set()

    def stop(self, timeout=30):
        self._stop.set()
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, end - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            self.errors.append("client threads did not stop: %s" % stuck)
        return not stuck

    # -- helpers for workloads -------------------------------------------------
    def op(self, w, f, key, value, node, execute, result_value=None):
        """Invoke, run execute() -> completion dict, complete. Returns it.
        The completion's "value" (if any) is the op's result; extra keys
        (rev, applied, error...) are recorded too."""
        proc = self.procs.proc(w)
        self.hist.invoke(proc, f, key, value, node=node)
        res = execute()
        typ = res.pop("type")
        val = res.pop("value", value if result_value is None else result_value)
        self.hist.complete(proc, typ, f, key, val, node=node, **res)
        self.procs.completed(typ, w)
        res["type"] = typ
        res["value"] = val
        return res
