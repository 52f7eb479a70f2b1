"""Thread-safe JSON Lines history recorder for the fault-injection harness.

One event per line (JEPSEN.md section 4.1):

    {"i":17,"t":123456789,"proc":4,"type":"invoke","f":"cas","key":"k3","value":[2,5],"node":"n2"}
    {"i":18,"t":123460001,"proc":4,"type":"ok","f":"cas","key":"k3","value":[2,5],"applied":true,"rev":88}
    {"i":19,"t":123470000,"proc":"nemesis","type":"nemesis","event":"start","fault":"partition"}

`i` is the position in the file and `t` is time.monotonic_ns() of the harness,
both taken under one lock, so `i` order is `t` order. The file is opened
line-buffered (every event reaches the kernel when it is logged, so a crashed
harness still leaves a usable history) and fsynced at close().

Process ids: each worker thread owns one logical process at a time and has at
most one outstanding operation. After an `info` completion the old operation
may still be in flight, so the worker continues under a fresh process id
(proc += concurrency); `Processes` keeps that bookkeeping.
"""

import json
import os
import threading
import time

COMPLETION_TYPES = ("ok", "fail", "info")


class History:
    """Append-only recorder for one run (creates or truncates path).
    All methods are thread-safe."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        # A new history per run: an existing file is truncated (appending a
        # second run would restart "i" and break invoke/completion pairing).
        self._f = open(path, "w", buffering=1, encoding="utf-8")
        self._i = 0
        self._closed = False

    def _append(self, ev):
        with self._lock:
            if self._closed:
                raise ValueError("history %s is closed" % self.path)
            i = self._i
            self._i += 1
            rec = {"i": i, "t": time.monotonic_ns()}
            rec.update(ev)
            self._f.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
            return i

    def invoke(self, proc, f, key, value=None, node=None):
        """Log an invocation; returns its event index."""
        ev = {"proc": proc, "type": "invoke", "f": f, "key": key, "value": value}
        if node is not None:
            ev["node"] = node
        return self._append(ev)

    def complete(self, proc, type, f, key, value=None, **extra):
        """Log the completion of proc's outstanding op.

        type is "ok" (happened, value is the result), "fail" (definitely did
        not happen) or "info" (unknown). extra carries e.g. applied=, rev=,
        error=, node=."""
        if type not in COMPLETION_TYPES:
            raise ValueError("completion type must be ok|fail|info, not %r" % (type,))
        ev = {"proc": proc, "type": type, "f": f, "key": key, "value": value}
        ev.update(extra)
        return self._append(ev)

    def nemesis(self, event, **detail):
        """Log a nemesis event (proc "nemesis").

        Preferred form: nemesis("start", fault="partition", ...),
        nemesis("stop", fault="partition"), nemesis("heal_all"), or a point
        event such as nemesis("kill", fault="kill", node="n2")."""
        ev = {"proc": "nemesis", "type": "nemesis", "event": event}
        ev.update(detail)
        return self._append(ev)

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Processes:
    """Logical process ids for `concurrency` worker threads.

    Worker w starts as process w. retire(w) (or completed(w, "info")) gives it
    a fresh id, proc + concurrency. Workers may be named explicitly by index,
    or a thread may bind() itself once and then call proc()/retire() with no
    argument."""

    def __init__(self, concurrency):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency
        self._procs = list(range(concurrency))
        self._lock = threading.Lock()
        self._local = threading.local()
        self._next_worker = 0

    def bind(self, worker=None):
        """Bind the calling thread to a worker slot (the next free one if
        worker is None); returns the worker index."""
        with self._lock:
            if worker is None:
                if self._next_worker >= self.concurrency:
                    raise ValueError("all %d worker slots are bound" % self.concurrency)
                worker = self._next_worker
                self._next_worker += 1
        self._local.worker = worker
        return worker

    def _worker(self, worker):
        if worker is None:
            worker = getattr(self._local, "worker", None)
            if worker is None:
                raise ValueError("thread is not bound; call bind() or pass worker")
        return worker

    def proc(self, worker=None):
        """Current process id of the worker."""
        w = self._worker(worker)
        with self._lock:
            return self._procs[w]

    def retire(self, worker=None):
        """Give the worker a fresh process id; returns it."""
        w = self._worker(worker)
        with self._lock:
            self._procs[w] += self.concurrency
            return self._procs[w]

    def completed(self, type, worker=None):
        """Call after each completion; retires the process after an info.
        Returns the process id to use for the next operation."""
        if type == "info":
            return self.retire(worker)
        return self.proc(worker)


def load(path):
    """Read a history file into a list of dicts (in file order).

    A torn last line (the harness was killed mid-write) is skipped; a bad line
    anywhere else raises ValueError."""
    events = []
    with open(path, "r", encoding="utf-8") as f:
        lines = f.readlines()
    for n, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines) - 1:
                break
            raise ValueError("%s:%d: not a JSON event" % (path, n + 1))
    return events
