#!/usr/bin/python3
"""Smoke test of the fault-injection plumbing (cluster.py, nemesis.py, nfqdelay).

    /usr/bin/python3 tests/jepsen/netns_check.py [--binary build-jepsen/src/membershipd]
                                                 [--out DIR] [--keep]

Needs root and the Debian packages iptables, libfaketime, libnetfilter-queue-dev.
Steps: sweep of a fake crashed run, 3 nodes in namespaces, leader, signed KV
write/read from the client namespace, isolate the leader (new leader among
the rest) and heal, pause/resume, 100 ms delay n1<->n2 measured with TCP
connect and HTTP round trips, clock bump seen in the node's Date header,
kill/restart, add n4 as voter and remove it, heal_all, teardown with nothing
left behind. Exit 0 on success, 1 on failure. Takes about 25 s.
"""
import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from email.utils import parsedate_to_datetime

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import cluster as jcluster  # noqa: E402
import nemesis as jnemesis  # noqa: E402

T0 = time.monotonic()
EVENTS = []


def say(msg):
    print("[%6.2fs] %s" % (time.monotonic() - T0, msg), flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def log_event(event, **detail):
    EVENTS.append(dict(detail, event=event, t=time.monotonic_ns()))
    if detail.get("phase") != "invoke":
        say("  event %s %s" % (event, json.dumps(detail, sort_keys=True, default=str)))


PROBE = r"""
import http.client, json, socket, sys, time
ip, port, n, tmo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
conn_ms, http_ms = [], []
for _ in range(n):
    t = time.monotonic()
    s = socket.create_connection((ip, port), timeout=tmo)
    conn_ms.append((time.monotonic() - t) * 1000)
    s.close()
    c = http.client.HTTPConnection(ip, port, timeout=tmo)
    c.connect()
    t = time.monotonic()
    c.request("GET", "/healthz")
    c.getresponse().read()
    http_ms.append((time.monotonic() - t) * 1000)
    c.close()
print(json.dumps({"connect_ms": min(conn_ms), "http_ms": min(http_ms)}))
"""


def probe(c, src, dst, n=3, timeout=5.0):
    """Min TCP connect and HTTP request round trip (ms) from src's
    namespace to dst's HTTP port; None if it cannot connect."""
    r = subprocess.run(c.ns_exec(src, ["/usr/bin/python3", "-c", PROBE, c.node(dst).ip,
                                       str(c.node(dst).http_port), str(n), str(timeout)]),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def node_date(c, node):
    """The node's HTTP Date header minus our real time, in seconds."""
    s = c.connect(c.node(node).http_addr, 2.0)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    now = time.time()
    for line in data.split(b"\r\n"):
        if line.lower().startswith(b"date:"):
            return parsedate_to_datetime(line[5:].strip().decode()).timestamp() - now
    raise AssertionError("no Date header from %s" % node)


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = pred()
        except (OSError, RuntimeError):
            v = None
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def fake_crashed_run():
    """A namespace as a SIGKILLed harness leaves it: owner marker of a dead
    pid and a process inside. Returns (ns, Popen)."""
    for k in range(9999, 0, -1):
        prefix = "ub%d" % k
        if not any(n.startswith(prefix + "-") for n in jcluster.netns_list()) \
                and not jcluster._owner_alive(prefix):
            break
    ns = prefix + "-n1"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    os.makedirs(jcluster.OWNER_DIR, exist_ok=True)
    with open(jcluster._marker(prefix), "w") as f:
        f.write("999999999 0")                # no such pid
    p = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "300"])
    wait_for(lambda: jcluster.netns_pids(ns), 5, "the fake leftover process")
    return ns, p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.environ.get("MEMBERSHIPD") or
                    os.path.join(SRC, "build-jepsen", "src", "membershipd"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the output directory")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="unibus-netns-check-")
    say("output in %s" % out)

    check(not jcluster.Cluster.root_has_route(), "the root namespace routes to 10.88.0.0/24")
    tools = jnemesis.build_tools(os.path.join(out, "tools"))
    say("built tools in %s" % tools)

    stale_ns, stale_proc = fake_crashed_run()
    c = jcluster.Cluster(args.binary, out, nodes=3, spares=1, seed=42, log=log_event)
    stale_proc.wait(5)
    check(stale_ns not in jcluster.netns_list(), "sweep left %s" % stale_ns)
    say("sweep removed the fake crashed run's %s; our prefix is %s" % (stale_ns, c.prefix))
    nem = jnemesis.Nemeses(c, log=log_event, tools_dir=tools)
    pids = []
    ok = False
    try:
        ok = run(c, nem, pids)
    finally:
        ns_before = [n for n in jcluster.netns_list() if n.startswith(c.prefix + "-")]
        t = time.monotonic()
        c.teardown()
        say("teardown %.2fs (%d namespaces)" % (time.monotonic() - t, len(ns_before)))
    left_ns = [n for n in jcluster.netns_list() if n.startswith(c.prefix + "-")]
    left_pids = [p for p in pids if os.path.exists("/proc/%d" % p)]
    check(not left_ns, "namespaces left: %s" % left_ns)
    check(not left_pids, "processes left: %s" % left_pids)
    check(not os.path.exists(jcluster._marker(c.prefix)), "owner marker left")
    check(not jcluster.Cluster.root_has_route(), "root namespace route after teardown")
    say("nothing left: no namespace, none of %d pids, no marker" % len(pids))
    if ok and not args.keep and not args.out:
        import shutil
        shutil.rmtree(out, ignore_errors=True)
    return 0 if ok else 1


def run(c, nem, pids):
    t = time.monotonic()
    c.start()
    pids += [n.pid for n in c.member_nodes()]
    leader = c.wait_leader(timeout=30)
    say("3 nodes up, leader %s after %.2fs" % (leader.name, time.monotonic() - t))

    # The root namespace (this thread) cannot reach the nodes. (A default
    # route may lead to a proxy that accepts any connection: what answers
    # must not be the node.)
    try:
        conn = http.client.HTTPConnection(leader.ip, leader.http_port, timeout=1)
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        body = r.read()
        conn.close()
        check(b'"node":"%s"' % leader.name.encode() not in body,
              "reached node %s from the root namespace" % leader.name)
        say("root namespace: %s:%d answered by something else (HTTP %d), not the node"
            % (leader.ip, leader.http_port, r.status))
    except (OSError, http.client.HTTPException) as e:
        say("root namespace cannot reach %s: %r" % (leader.ip, e))

    # Plain client code in a thread of the client namespace.
    def client_put_get():
        check(c.in_client_ns(), "client thread not in the client namespace")
        res = []
        for method, body, node in (("PUT", b"v1", leader), ("GET", None, c.nodes[2])):
            path = "/v1/kv/jepsen/k"
            conn = http.client.HTTPConnection(node.ip, node.http_port, timeout=5)
            conn.request(method, path, body=body, headers={
                "Authorization": c.admin.authorization(method, path, body or b"")})
            r = conn.getresponse()
            res.append((r.status, json.loads(r.read())))
            conn.close()
        return res
    (st1, j1), (st2, j2) = c.run_in_clients(client_put_get)
    check(st1 == 200 and st2 == 200, "PUT/GET: %s %r / %s %r" % (st1, j1, st2, j2))
    check(base64.b64decode(j2["value"]) == b"v1", "read %r" % j2)
    say("signed PUT on %s, GET on %s from the client namespace: rev %s, value v1"
        % (leader.name, c.nodes[2].name, j1["revision"]))

    # Isolate the leader: the rest elect another one; heal.
    old = leader
    rest = [n for n in c.member_nodes() if n is not old]
    t = time.monotonic()
    nem.partition.start(shape="isolate-leader")
    new = c.wait_leader(nodes=rest, exclude=[old], timeout=20)
    check(new is not old, "leader did not change")
    took = time.monotonic() - t
    st, j = c.kv_put(new, "jepsen", "k", b"v2", timeout=5)
    check(st == 200, "write after isolation: %s %r" % (st, j))
    try:
        st, v, _ = c.kv_get(old, "jepsen", "k", timeout=2)
    except OSError as e:
        st, v = repr(e), None
    check(st != 200 or v == b"v2", "stale read on the isolated old leader: %r" % v)
    say("isolated %s: new leader %s after %.2fs; write ok; isolated node's read -> %s"
        % (old.name, new.name, took, st))
    nem.partition.stop()
    t = time.monotonic()
    leader = c.wait_leader(timeout=20)
    say("healed: all agree on %s after %.2fs" % (leader.name, time.monotonic() - t))

    # Bridge: only n1<->n2 cut, both still reach n3.
    nem.partition.bridge("n1", "n2")
    r = probe(c, "n1", "n3", n=1)
    check(r is not None, "n1 cannot reach n3 with only n1-/-n2 cut")
    check(probe(c, "n2", "n3", n=1) is not None, "n2 cannot reach n3")
    check(probe(c, "n1", "n2", n=1, timeout=1.0) is None, "n1 reached n2 across the cut")
    check(c.health("n1")[0] is not None and c.health("n2")[0] is not None,
          "the client cannot reach n1/n2")
    nem.partition.stop()
    say("bridge n1-/-n2: n1->n3 %.1f ms, n1->n2 blocked" % r["connect_ms"])

    # Total loss n1->n2 (one way: the SYN-ACKs to n2 are lost too), then none.
    nem.loss.start(prob=1.0, links=[("n1", "n2")], symmetric=False)
    check(probe(c, "n1", "n2", n=1, timeout=1.0) is None, "n1 reached n2 with 100% loss")
    check(probe(c, "n1", "n3", n=1) is not None, "n1 cannot reach n3 with loss n1->n2 only")
    nem.loss.stop()
    check(probe(c, "n1", "n2", n=1) is not None, "n1 cannot reach n2 after loss-stop")
    say("loss 100% n1->n2: blocked; n1->n3 fine; after stop n1->n2 fine")

    # Flapping isolation, 0.3-0.6 s phases, for 2.5 s.
    cuts_before = sum(1 for e in EVENTS if e["event"] == "flap-cut")
    nem.flap.start(shape="isolate", period=(0.3, 0.6))
    time.sleep(2.5)
    nem.flap.stop()
    flips = sum(1 for e in EVENTS if e["event"] == "flap-cut") - cuts_before
    check(flips >= 2, "flapping toggled %d times" % flips)
    check(not any("-j DROP" in nem.firewall.show(n) for n in c.nodes), "flap left rules")
    leader = c.wait_leader(timeout=20)
    say("flapped %d times, healed; leader %s" % (flips, leader.name))

    # Pause a follower: it stops answering; resume: it answers again.
    fol = [n for n in c.member_nodes() if n is not leader][0]
    nem.pause.start(targets=fol.name)
    st, _ = c.health(fol, timeout=0.5)
    check(st is None, "paused node answered %s" % st)
    st, j = c.kv_put(leader, "jepsen", "k", b"v3", timeout=5)
    check(st == 200, "write with a paused follower: %s %r" % (st, j))
    nem.pause.stop()
    wait_for(lambda: c.health(fol)[0] == 200, 10, "the resumed node")
    say("paused %s (no answer, writes go on), resumed (answers)" % fol.name)

    # Delay 100 ms each way between n1 and n2.
    base = probe(c, "n1", "n2")
    nem.delay.start(ms=100, links=[("n1", "n2")])
    d12 = probe(c, "n1", "n2")
    d13 = probe(c, "n1", "n3")
    dc2 = c.run_in_clients(lambda: (lambda t: (c.connect(c.node("n2").http_addr, 2).close(),
                                               (time.monotonic() - t) * 1000)[1])(time.monotonic()))
    nem.delay.stop()
    after = probe(c, "n1", "n2")
    say("delay n1<->n2 100 ms: connect %.1f -> %.1f ms, HTTP %.1f -> %.1f ms; n1->n3 connect "
        "%.1f ms; client->n2 %.1f ms; after stop %.1f ms"
        % (base["connect_ms"], d12["connect_ms"], base["http_ms"], d12["http_ms"],
           d13["connect_ms"], dc2, after["connect_ms"]))
    check(190 <= d12["connect_ms"] <= 300, "delayed connect %r" % d12)
    check(190 <= d12["http_ms"] <= 300, "delayed HTTP round trip %r" % d12)
    check(d13["connect_ms"] < 50 and dc2 < 50 and after["connect_ms"] < 50, "undelayed links slow")

    # Clock bump on n3: its Date header moves, signed requests still work.
    skew0 = node_date(c, "n3")
    nem.clock.bump(targets="n3", delta_ms=30000)
    skew = wait_for(lambda: (lambda s: s if s > 25 else None)(node_date(c, "n3")), 5,
                    "n3's clock to move")
    st, j = c.kv_put("n3", "jepsen", "k", b"v4", timeout=5)
    check(st == 200, "signed write through the skewed node: %s %r" % (st, j))
    nem.clock.stop()
    skew1 = wait_for(lambda: (lambda s: s if abs(s) < 3 else None)(node_date(c, "n3")), 5,
                     "n3's clock to come back")
    say("clock n3 +30 s: Date skew %.1f -> %.1f -> %.1f s; signed write through n3 ok"
        % (skew0, skew, skew1))

    # Kill the leader, a new one takes over, restart it; the data is there.
    leader = c.wait_leader(timeout=10)
    t = time.monotonic()
    nem.kill.start(targets="leader")
    check(not leader.alive(), "killed leader alive")
    new = c.wait_leader(nodes=[n for n in c.member_nodes() if n is not leader],
                        exclude=[leader], timeout=20)
    took = time.monotonic() - t
    nem.kill.stop()
    pids.append(leader.pid)
    c.wait_leader(timeout=20)
    st, v, _ = c.kv_get(leader, "jepsen", "k", timeout=5)
    check(st == 200 and v == b"v4", "restarted node reads %s %r" % (st, v))
    say("killed leader %s: new leader %s after %.2fs; restarted, it reads v4"
        % (leader.name, new.name, took))

    # Membership: n4 joins and becomes a voter, then is removed.
    t = time.monotonic()
    nem.membership.add()
    pids.append(c.node("n4").pid)
    voters = c.voters()
    check(voters == ["n1", "n2", "n3", "n4"], "voters after add: %r" % voters)
    say("n4 added as voter in %.2fs: %s" % (time.monotonic() - t, voters))
    st, v, _ = c.kv_get("n4", "jepsen", "k", timeout=5)
    check(st == 200 and v == b"v4", "n4 reads %s %r" % (st, v))
    t = time.monotonic()
    nem.membership.remove("n4")
    voters = c.voters()
    check(voters == ["n1", "n2", "n3"], "voters after remove: %r" % voters)
    check(not c.node("n4").alive(), "removed n4 still running")
    say("n4 removed in %.2fs: %s" % (time.monotonic() - t, voters))
    try:
        c.remove("n1")
        raise AssertionError("removal below 3 voters was allowed")
    except RuntimeError as e:
        say("below 3 voters refused: %s" % e)

    # Everything at once, then heal_all.
    nem.partition.start(shape="majority-minority")
    nem.loss.start(prob=0.2)
    nem.delay.start(ms=20, jitter_ms=10)
    nem.pause.start(targets="one")
    nem.clock.strobe(targets="all", delta_ms=2000, period_ms=20, duration_s=30)
    nem.kill.start(targets="one")
    time.sleep(1.0)
    pids += [n.pid for n in c.nodes if n.pid]
    t = time.monotonic()
    nem.heal_all()
    leader = c.wait_leader(timeout=30)
    st, j = c.kv_put(leader, "jepsen", "k", b"v5", timeout=5)
    check(st == 200, "write after heal_all: %s %r" % (st, j))
    rules = "".join(nem.firewall.show(n) for n in c.nodes)
    check("-j DROP" not in rules and "NFQUEUE" not in rules, "rules left:\n" + rules)
    check(all(n.clock_offset_ms == 0 for n in c.nodes), "clock offsets left")
    say("all faults at once, heal_all: leader %s %.2fs later, write ok"
        % (leader.name, time.monotonic() - t))
    pids += [p.pid for p in c._tools]

    # The recommended mode: the main thread enters the client namespace, so
    # threads created afterwards use plain sockets; teardown (in the finally
    # of main) then runs from inside the client namespace too.
    c.enter_client_ns()
    got = {}

    def plain(n):
        conn = http.client.HTTPConnection(n.ip, n.http_port, timeout=5)
        conn.request("GET", "/healthz")
        got[n.name] = json.loads(conn.getresponse().read())["node"]
        conn.close()
    ts = [threading.Thread(target=plain, args=(n,)) for n in c.member_nodes()]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(got == {n.name: n.name for n in c.member_nodes()}, "plain threads got %r" % got)
    say("main thread in the client namespace: plain sockets in new threads reach %s"
        % sorted(got))

    bad = c.unexpected_exits()
    check(not bad, "unexpected node exits: %r" % bad)
    say("no unexpected exits")
    for n in c.member_nodes():
        check(n.stop() == 0, "%s: SIGTERM exit status not 0" % n.name)
    check(not c.unexpected_exits(), "exits after SIGTERM: %r" % c.unexpected_exits())
    say("clean SIGTERM exit on every node")
    return True


if __name__ == "__main__":
    try:
        rc = main()
    except AssertionError as e:
        say("FAILED: %s" % e)
        rc = 1
    say("%s in %.1fs" % ("OK" if rc == 0 else "FAILED", time.monotonic() - T0))
    sys.exit(rc)
