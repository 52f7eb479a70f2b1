"""CAS register per key through the KV API (JEPSEN.md 5.1).

Keys k<slot>.<generation> in bucket "jepsen"; each op picks a random slot
(--keys) and a random current member node. Mix: 50% read, 30% write, 20%
cas; values 0..4, so compare-and-swaps contend. A slot moves to a fresh key
after --key-ops operations, which keeps every key's history small enough
for the WGL search. History ops (history.py):

    read   value null   -> ok value v|null, rev
    write  value v      -> ok rev
    cas    value [a, b] -> ok applied true|false, rev

After the final heal every key is read once on every live member
(linearizable reads), which pins the final state of keys with info writes.
Check "final-reads": every live member answered those reads (recovery).
With --stale-reads the reads use ?stale=true (a deliberately broken read
path: the checker should find stale reads under partitions and kills).
"""
import threading
import time

from client_kv import KV
from generator import fresh_proc

BUCKET = "jepsen"


class Register:
    name = "register"

    def __init__(self, ctx):
        self.ctx = ctx
        self.c = ctx.cluster
        self.hist = ctx.hist
        a = ctx.args
        self.kv = KV(self.c, BUCKET, timeout=a.op_timeout, stale_reads=a.stale_reads)
        self.final_kv = KV(self.c, BUCKET, timeout=max(a.op_timeout, 5.0))
        self.nkeys = a.keys
        self.key_ops = a.key_ops
        self._lock = threading.Lock()
        self._gen = [0] * self.nkeys
        self._count = [0] * self.nkeys
        self.keys_used = []
        self.final_result = None

    def start(self):
        pass

    def stop(self):
        pass

    def _key(self, rng):
        slot = rng.randrange(self.nkeys)
        with self._lock:
            if self._count[slot] >= self.key_ops:
                self._gen[slot] += 1
                self._count[slot] = 0
            self._count[slot] += 1
            key = "k%d.%d" % (slot, self._gen[slot])
            if self._count[slot] == 1:
                self.keys_used.append(key)
        return key

    def run_op(self, pool, w, rng):
        key = self._key(rng)
        node = rng.choice(list(self.c.members))
        x = rng.random()
        kv = self.kv
        if x < 0.5:
            pool.op(w, "read", key, None, node, lambda: kv.read(node, key))
        elif x < 0.8:
            v = rng.randrange(5)
            pool.op(w, "write", key, v, node, lambda: kv.write(node, key, v))
        else:
            a, b = rng.randrange(5), rng.randrange(5)
            pool.op(w, "cas", key, [a, b], node, lambda: kv.cas(node, key, a, b))

    def final(self, deadline_s=30.0):
        """Reads every key on every live member, retrying failures until
        the deadline; records them in the history."""
        end = time.monotonic() + deadline_s
        nodes = [n.name for n in self.c.member_nodes() if n.alive()]
        todo = [(k, n) for k in list(self.keys_used) for n in nodes]
        failed = {}
        while todo and time.monotonic() < end:
            again = []
            for key, node in todo:
                proc = fresh_proc()
                self.hist.invoke(proc, "read", key, None, node=node)
                r = self.final_kv.read(node, key)
                typ = r.pop("type")
                val = r.pop("value", None)
                self.hist.complete(proc, typ, "read", key, val, node=node, final=True, **r)
                if typ != "ok":
                    again.append((key, node))
                    failed[(key, node)] = r.get("error")
                else:
                    failed.pop((key, node), None)
            todo = again
            if todo:
                time.sleep(0.5)
        self.final_result = {
            "valid": not todo,
            "keys": len(self.keys_used), "nodes": nodes,
            "reads": len(self.keys_used) * len(nodes),
            "unanswered": [{"key": k, "node": n, "error": failed.get((k, n))} for k, n in todo][:20],
        }

    def checks(self):
        if self.final_result is None:
            return {"final-reads": {"valid": "unknown", "note": "final reads not run"}}
        return {"final-reads": self.final_result}
