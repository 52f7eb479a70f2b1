#!/usr/bin/env python3
"""ctlbench: the control plane's signed requests against a running node.

Modes (one line "RESULT mode=... p50_ms=... p99_ms=... ops_s=..." each):
  healthz   GET /healthz, unsigned: the HTTP floor
  me        GET /v1/me, signed: authentication + one nonce claim (one raft
            entry), then a local read
  kvput     PUT /v1/kv/..., signed: the nonce claim rides in the write (one
            raft entry)
  room      PUT /v1/rooms/R/members/H then DELETE it, signed, one room
            and member per client: two read-modify-write txns (each a nonce
            claim + a txn: two raft entries)
Sequential latency over one keep-alive connection; throughput with --procs
processes each keeping one request in flight.

Signing uses tests/lib/ubsign.py (Debian's python3-cryptography).
"""
import argparse
import http.client
import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "lib"))
import ubsign  # noqa: E402


def percentile(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else 0.0


class Client:
    def __init__(self, port, ident):
        self.port = port
        self.ident = ident
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, body=b""):
        headers = {}
        if self.ident and path.startswith("/v1/"):
            headers["Authorization"] = self.ident.authorization(method, path, body)
        try:
            self.conn.request(method, path, body=body or None, headers=headers)
            r = self.conn.getresponse()
            r.read()
        except (http.client.HTTPException, OSError):
            # h2o closes the connection after some error answers: reconnect.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return 0
        if r.getheader("connection", "").lower() == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return r.status


def one(c, mode, i, tag):
    if mode == "healthz":
        return c.call("GET", "/healthz") == 200
    if mode == "me":
        return c.call("GET", "/v1/me") == 200
    if mode == "kvput":
        return c.call("PUT", "/v1/kv/ctlbench/%s-%d" % (tag, i), b"x" * 128) == 200
    if mode == "room":
        room, user = "r" + tag, "u" + tag
        return (c.call("PUT", "/v1/rooms/%s/members/%s" % (room, user)) == 200 and
                c.call("DELETE", "/v1/rooms/%s/members/%s" % (room, user)) == 200)
    raise ValueError(mode)


def worker(args):
    port, seed_file, handle, mode, n, tag = args
    ident = ubsign.Identity.from_seed_file(handle, seed_file) if seed_file else None
    c = Client(port, ident)
    if mode == "room":
        # One room and one member per client: the figure is the cost of the
        # transactions, not of contention on a single room.
        c.call("POST", "/v1/rooms", json.dumps({"name": "r" + tag}).encode())
        c.call("POST", "/v1/members", ubsign.Identity("u" + tag).member_body())
    lat, errors = [], 0
    for i in range(n):
        t = time.perf_counter()
        ok = one(c, mode, i, tag)
        lat.append((time.perf_counter() - t) * 1000)
        errors += 0 if ok else 1
    return lat, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seed-file", required=True)
    ap.add_argument("--handle", default="admin")
    ap.add_argument("--mode", required=True, choices=["healthz", "me", "kvput", "room"])
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=1)
    a = ap.parse_args()
    per = max(1, a.n // a.procs)
    stamp = "%x" % (time.time_ns() & 0xffffffffff)
    jobs = [(a.port, a.seed_file, a.handle, a.mode, per, "%s-%d" % (stamp, p))
            for p in range(a.procs)]
    t0 = time.perf_counter()
    if a.procs == 1:
        results = [worker(jobs[0])]
    else:
        with multiprocessing.Pool(a.procs) as pool:
            results = pool.map(worker, jobs)
    elapsed = time.perf_counter() - t0
    lat = [x for r in results for x in r[0]]
    errors = sum(r[1] for r in results)
    print("RESULT mode=%s procs=%d n=%d errors=%d p50_ms=%.3f p99_ms=%.3f ops_s=%.0f" % (
        a.mode, a.procs, len(lat), errors, percentile(lat, 50), percentile(lat, 99),
        len(lat) / elapsed))


if __name__ == "__main__":
    main()
