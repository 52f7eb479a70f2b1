"""Nonce uniqueness of signed control-plane requests (JEPSEN.md 5.3).

Every signed /v1/ request claims its nonce through Raft; a nonce used
before is refused with 401 nonce_reused on every node. Each op is a signed
GET /v1/me (history f "claim", key = the nonce, ok value true = accepted,
false = refused as reused; see client_kv.claim):

  * 60%: a fresh random nonce to one random member;
  * 40%: one nonce to 2 or 3 different members at the same moment (a
    barrier releases the senders together), half of the time the very same
    signed header (a replay), else separately signed requests sharing the
    nonce. The extra senders are helper threads with fresh process ids.

Checkers (report.py): linearizable/nonce (test-and-set per nonce) and
nonce-unique (at most one accepted claim per nonce, whatever the node).
Nonces are never reused after the request window, so the claim's expiry
(--auth-skew + 1 s after ts) plays no part.

Liveness after the final heal ("nonce-liveness"): every live member must
accept a fresh nonce within 20 s, and then 5 more fresh nonces in a row.
Signature timestamps are the harness's clock; a node whose clock the
nemesis moved by more than the 60 s window answers 401 stale_timestamp
(recorded as fail): the clock nemesis keeps offsets within +-30 s.
"""
import threading
import time

from client_kv import claim
from generator import fresh_proc

PATH = "/v1/me"


class Nonce:
    name = "nonce"

    def __init__(self, ctx):
        self.ctx = ctx
        self.c = ctx.cluster
        self.hist = ctx.hist
        self.timeout = ctx.args.op_timeout
        self.dup_groups = 0
        self.liveness = None

    def start(self):
        pass

    def stop(self):
        pass

    @staticmethod
    def _nonce(rng):
        return "n%024x" % rng.getrandbits(96)

    def _claim_op(self, proc, node, nonce, auth, barrier=None, pool=None, w=None):
        def execute():
            return claim(self.c, node, nonce, timeout=self.timeout, authorization=auth)
        if barrier is not None:
            try:
                barrier.wait(5)
            except threading.BrokenBarrierError:
                pass
        if pool is not None:
            return pool.op(w, "claim", nonce, None, node, execute)
        self.hist.invoke(proc, "claim", nonce, None, node=node)
        r = execute()
        typ = r.pop("type")
        val = r.pop("value", None)
        self.hist.complete(proc, typ, "claim", nonce, val, node=node, **r)
        return dict(r, type=typ, value=val)

    def run_op(self, pool, w, rng):
        members = list(self.c.members)
        nonce = self._nonce(rng)
        if rng.random() < 0.6 or len(members) < 2:
            node = rng.choice(members)
            self._claim_op(None, node, nonce, None, pool=pool, w=w)
            return
        k = min(len(members), rng.choice((2, 3)))
        nodes = rng.sample(members, k)
        replay = rng.random() < 0.5
        auth = self.c.admin.authorization("GET", PATH, b"", nonce=nonce) if replay else None
        barrier = threading.Barrier(k)
        self.dup_groups += 1
        helpers = []
        for node in nodes[1:]:
            t = self.c.client_thread(self._claim_op, args=(fresh_proc(), node, nonce, auth, barrier),
                                     name="claim-helper")
            helpers.append(t)
            t.start()
        self._claim_op(None, nodes[0], nonce, auth, barrier=barrier, pool=pool, w=w)
        for t in helpers:
            t.join(self.timeout + 10)

    def final(self, first_s=20.0, then=5):
        """Every live member accepts fresh nonces once the cluster is healed."""
        import random
        rng = random.Random("nonce-final-%s" % self.ctx.seed)
        per_node = {}
        for n in [n for n in self.c.member_nodes() if n.alive()]:
            end = time.monotonic() + first_s
            first = None
            tries = 0
            while time.monotonic() < end:
                tries += 1
                r = self._claim_op(fresh_proc(), n.name, self._nonce(rng), None)
                if r["type"] == "ok" and r["value"] is True:
                    first = round(first_s - (end - time.monotonic()), 3)
                    break
                time.sleep(0.2)
            after = []
            if first is not None:
                for _ in range(then):
                    r = self._claim_op(fresh_proc(), n.name, self._nonce(rng), None)
                    after.append(r["type"] if r["type"] != "ok" else
                                 ("accepted" if r["value"] else "refused"))
            per_node[n.name] = {"first_accept_s": first, "tries": tries, "then": after}
        ok = bool(per_node) and all(v["first_accept_s"] is not None and
                                    all(x == "accepted" for x in v["then"])
                                    for v in per_node.values())
        self.liveness = {"valid": ok, "nodes": per_node}

    def checks(self):
        out = {"nonce-liveness": self.liveness or {"valid": "unknown", "note": "not run"}}
        out["nonce-liveness"]["dup_groups"] = self.dup_groups
        return out
