"""The bus at the protocol level, over raw sockets against a real node:
the INFO a client sees, nkey authentication and its failures, the ACL of a
member and its changes on live connections, protocol options (verbose,
echo, UNSUB max, queue groups), and hostile input, each followed by a check
that the node keeps serving everyone else. The real NATS clients are driven
by tests/compat."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import ubcluster  # noqa: E402
import ubsign  # noqa: E402
from ubnats import Client  # noqa: E402

BIN = os.environ["MEMBERSHIPD"]


class Bus(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = ubcluster.Cluster(BIN, n=1)
        cls.addClassCleanup(cls.c.close)
        cls.n = cls.c.nodes[0]
        cls.c.start()
        cls.c.wait_leader()
        cls.admin = cls.c.admin()
        cls.alice = cls.member("alice")
        cls.bob = cls.member("bob")
        st, j = cls.n.request("POST", "/v1/rooms", json.dumps({"name": "r1"}).encode(),
                              ident=cls.alice)
        assert st == 201, (st, j)
        st, j = cls.n.request("PUT", "/v1/rooms/r1/members/bob", ident=cls.alice)
        assert st in (200, 201), (st, j)

    @classmethod
    def member(cls, handle):
        ident = ubsign.Identity(handle)
        st, j = cls.n.request("POST", "/v1/members", ident.member_body(), ident=cls.admin)
        assert st == 201, (st, j)
        return ident

    def alive(self):
        """Another client still gets full service."""
        a = Client(self.n, self.admin)
        self.assertEqual(a.ping(), [])
        a.send("SUB alive.check 1\r\nPUB alive.check 2\r\nok\r\n")
        self.assertEqual(a.msg()[4], b"ok")
        a.close()

    # -- INFO and authentication ------------------------------------------
    def test_info(self):
        c = Client(self.n, connect=False)
        i = c.info
        self.assertTrue(i["headers"])
        self.assertTrue(i["auth_required"])
        self.assertEqual(i["max_payload"], 1048576)
        self.assertEqual(i["proto"], 1)
        self.assertRegex(i["version"], r"^2\.\d+\.\d+$")
        self.assertRegex(i["nonce"], r"^[A-Za-z0-9_-]{15}$")
        self.assertEqual(i["port"], self.n.bus_port)
        self.assertNotEqual(Client(self.n, connect=False).info["nonce"], i["nonce"])
        c.close()

    def test_auth_accepted_and_refused(self):
        c = Client(self.n, self.alice)
        self.assertEqual(c.ping(), [])
        c.close()
        for who, sig in ((ubsign.Identity("ghost"), None),  # not a member
                         (self.alice, ubsign.b64url(b"\0" * 64)),  # bad signature
                         (self.alice, "not base64!")):
            c = Client(self.n, connect=False)
            c.connect(who, sig=sig)
            self.assertEqual(c.closed(), b"-ERR 'Authorization Violation'\r\n")
        # A signature over another connection's nonce.
        other = Client(self.n, connect=False)
        c = Client(self.n, connect=False)
        c.connect(self.alice, sig=ubsign.b64url(self.alice.key.sign(other.info["nonce"].encode())))
        self.assertEqual(c.closed(), b"-ERR 'Authorization Violation'\r\n")
        # No credentials at all; an op before CONNECT.
        c = Client(self.n, connect=False)
        c.connect(None)
        self.assertEqual(c.closed(), b"-ERR 'Authorization Violation'\r\n")
        c = Client(self.n, connect=False)
        c.send("SUB foo 1\r\n")
        self.assertEqual(c.closed(), b"-ERR 'Authorization Violation'\r\n")
        self.alive()

    def test_connect_never_sent(self):
        c = Client(self.n, connect=False)
        t0 = time.time()
        self.assertEqual(c.closed(timeout=10), b"-ERR 'Authentication Timeout'\r\n")
        self.assertLess(time.time() - t0, 5)

    # -- ACL ----------------------------------------------------------------
    def test_member_permissions(self):
        a = Client(self.n, self.alice)
        self.assertEqual(a.ping(), [])
        a.send("SUB room.r2.> 1\r\n")
        a.send("PUB room.r2.x 2\r\nhi\r\n")
        a.send("PUB member.bob.x 2\r\nhi\r\n")
        a.send("SUB _INBOX.bob.> 2\r\n")
        a.send("PUB room.r1.x _INBOX.bob.1 2\r\nhi\r\n")
        a.send("SUB > 3\r\n")
        self.assertEqual(a.ping(), [
            "-ERR 'Permissions Violation for Subscription to \"room.r2.>\"'\r\n",
            "-ERR 'Permissions Violation for Publish to \"room.r2.x\"'\r\n",
            "-ERR 'Permissions Violation for Publish to \"member.bob.x\"'\r\n",
            "-ERR 'Permissions Violation for Subscription to \"_INBOX.bob.>\"'\r\n",
            "-ERR 'Permissions Violation for Publish with Reply of \"_INBOX.bob.1\"'\r\n",
            "-ERR 'Permissions Violation for Subscription to \">\"'\r\n",
        ])
        # Allowed: its room, its own inbox and member subjects.
        a.send("SUB room.r1.chat 10\r\nSUB _INBOX.alice.* 11\r\nSUB member.alice.> 12\r\n")
        self.assertEqual(a.ping(), [])
        # Request/reply between two members of the room: bob may answer once.
        b = Client(self.n, self.bob)
        b.send("SUB room.r1.svc 1\r\n")
        self.assertEqual(b.ping(), [])
        a.send("PUB room.r1.svc _INBOX.alice.1 3\r\nreq\r\n")
        subj, sid, reply, _, data = b.msg()
        self.assertEqual((subj, reply, data), ("room.r1.svc", "_INBOX.alice.1", b"req"))
        b.send("PUB _INBOX.alice.1 3\r\nrep\r\n")
        self.assertEqual(b.ping(), [])
        self.assertEqual(a.msg()[4], b"rep")
        b.send("PUB _INBOX.alice.1 5\r\nagain\r\n")
        self.assertEqual(b.ping(), [
            "-ERR 'Permissions Violation for Publish to \"_INBOX.alice.1\"'\r\n"])
        self.assertEqual(a.ping(), [])
        a.close()
        b.close()

    def test_room_removal_and_member_removal_reach_live_connections(self):
        carol = self.member("carol")
        st, j = self.n.request("PUT", "/v1/rooms/r1/members/carol", ident=self.alice)
        self.assertIn(st, (200, 201), j)
        c = Client(self.n, carol)
        c.send("SUB room.r1.> 1\r\n")
        self.assertEqual(c.ping(), [])
        st, j = self.n.request("DELETE", "/v1/rooms/r1/members/carol", ident=self.alice)
        self.assertEqual(st, 200, j)
        t0 = time.time()
        self.assertEqual(c.line(),
                         "-ERR 'Permissions Violation for Subscription to \"room.r1.>\"'\r\n")
        self.assertLess(time.time() - t0, 1.0)
        a = Client(self.n, self.alice)
        a.send("PUB room.r1.x 2\r\nhi\r\n")
        self.assertEqual(a.ping(), [])
        c.send("PUB room.r1.x 2\r\nhi\r\n")
        self.assertEqual(c.ping(), [
            "-ERR 'Permissions Violation for Publish to \"room.r1.x\"'\r\n"])
        # Removing the member closes its connection.
        st, j = self.n.request("DELETE", "/v1/members/carol", ident=self.admin)
        self.assertEqual(st, 200, j)
        t0 = time.time()
        self.assertEqual(c.closed(), b"-ERR 'Authorization Violation'\r\n")
        self.assertLess(time.time() - t0, 1.0)
        c = Client(self.n, connect=False)
        c.connect(carol)
        self.assertEqual(c.closed(), b"-ERR 'Authorization Violation'\r\n")
        a.close()

    # -- protocol options --------------------------------------------------
    def test_verbose_echo_unsub_max_and_queues(self):
        c = Client(self.n, self.admin, verbose=True)
        c.send("SUB v.x 1\r\n")
        self.assertEqual(c.line(), "+OK\r\n")
        c.close()
        # echo:false: no copy of its own messages, others still get them.
        me = Client(self.n, self.admin, echo=False)
        other = Client(self.n, self.admin)
        me.send("SUB e.x 1\r\n")
        other.send("SUB e.x 1\r\n")
        self.assertEqual(other.ping(), [])
        me.send("PUB e.x 1\r\na\r\n")
        self.assertEqual(me.ping(), [])
        self.assertEqual(other.msg()[4], b"a")
        # UNSUB with max: exactly that many, then nothing.
        other.send("SUB u.x 2\r\nUNSUB 2 2\r\n")
        self.assertEqual(other.ping(), [])
        me.send("PUB u.x 1\r\n1\r\nPUB u.x 1\r\n2\r\nPUB u.x 1\r\n3\r\n")
        self.assertEqual(me.ping(), [])
        got = [other.msg()[4] for _ in range(2)]
        self.assertEqual(got, [b"1", b"2"])
        self.assertEqual(other.ping(), [])
        # Queue group across two connections: each message exactly once.
        q1, q2 = Client(self.n, self.admin), Client(self.n, self.admin)
        for q in (q1, q2):
            q.send("SUB q.* workers 7\r\n")
            self.assertEqual(q.ping(), [])
        for i in range(200):
            me.send("PUB q.%d 1\r\nx\r\n" % i)
        self.assertEqual(me.ping(), [])
        n1 = sum(1 for l in q1.ping() if l.startswith("MSG"))
        n2 = sum(1 for l in q2.ping() if l.startswith("MSG"))
        self.assertEqual(n1 + n2, 200)
        self.assertGreater(n1, 20)
        self.assertGreater(n2, 20)

    def test_wildcards_and_headers(self):
        c = Client(self.n, self.admin)
        c.send("SUB w.*.x 1\r\nSUB w.> 2\r\nSUB w.a 3\r\n")
        c.send("PUB w.a.x 1\r\na\r\n")
        msgs = {c.msg()[1] for _ in range(2)}
        self.assertEqual(msgs, {"1", "2"})
        c.send("HPUB w.a 26 28\r\nNATS/1.0\r\nK: v1\r\nK: v2\r\n\r\nhi\r\n")
        got = sorted((m[1], m[3], m[4]) for m in (c.msg(), c.msg()))
        self.assertEqual(got, [("2", b"NATS/1.0\r\nK: v1\r\nK: v2\r\n\r\n", b"hi"),
                               ("3", b"NATS/1.0\r\nK: v1\r\nK: v2\r\n\r\n", b"hi")])
        # A client without headers gets the payload alone.
        old = Client(self.n, self.admin, headers=False, no_responders=False)
        old.send("SUB w.old 1\r\n")
        self.assertEqual(old.ping(), [])
        c.send("HPUB w.old 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
        self.assertEqual(old.line(), "MSG w.old 1 2\r\n")
        self.assertEqual(c.msg()[:2], ("w.old", "2"))  # its own w.> copy
        # no responders
        c.send("SUB _INBOX.me.* 9\r\nPUB nobody.home _INBOX.me.1 0\r\n\r\n")
        subj, sid, reply, hdr, data = c.msg()
        self.assertEqual((subj, sid, data), ("_INBOX.me.1", "9", b""))
        self.assertEqual(hdr, b"NATS/1.0 503\r\nNats-Subject: nobody.home\r\n\r\n")

    # -- hostile input -----------------------------------------------------
    def check_refused(self, data, err):
        c = Client(self.n, self.admin)
        self.assertEqual(c.ping(), [])
        c.send(data)
        got = c.closed()
        self.assertTrue(got.endswith(("-ERR '%s'\r\n" % err).encode()), (data[:60], got[-200:]))
        self.alive()

    def test_bad_input(self):
        self.check_refused("GARBAGE\r\n", "Unknown Protocol Operation")
        self.check_refused("PUB foo 3\r\nhello\r\n", "Unknown Protocol Operation")
        self.check_refused("PUB foo x\r\nhi\r\n", "Unknown Protocol Operation")
        self.check_refused("HPUB foo 10 5\r\n12345\r\n", "Unknown Protocol Operation")
        self.check_refused("SUB\r\n", "Unknown Protocol Operation")
        self.check_refused("PUB foo " + "a" * 5000, "maximum control line exceeded")
        self.check_refused("PUB foo 2000000\r\n", "Maximum Payload Violation")
        self.check_refused(b"\x16\x03\x01\x00\xff" + os.urandom(300), "Unknown Protocol Operation")
        # Invalid subjects are refused without closing.
        c = Client(self.n, self.admin)
        c.send("SUB foo..bar 1\r\nSUB foo.>.bar 2\r\nPUB foo.* 1\r\nx\r\n")
        self.assertEqual(c.ping(), ["-ERR 'Invalid Subject'\r\n", "-ERR 'Invalid Subject'\r\n",
                                    "-ERR 'Invalid Publish Subject'\r\n"])
        c.close()

    def test_slow_consumer_is_cut_off_alone(self):
        slow = Client(self.n, self.admin)
        slow.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.send("SUB flood 1\r\n")
        self.assertEqual(slow.ping(), [])
        fast = Client(self.n, self.admin)
        fast.send("SUB flood 1\r\n")
        self.assertEqual(fast.ping(), [])
        pub = Client(self.n, self.admin)
        chunk = b"x" * 65536
        frame = b"PUB flood 65536\r\n" + chunk + b"\r\n"
        for _ in range(20):  # 80 MiB in all, past the 64 MiB limit
            pub.send(frame * 64)
            # the fast subscriber drains as we go
            fast.s.settimeout(10)
            want = 64 * (len(b"MSG flood 1 65536\r\n") + 65536 + 2)
            while want > 0:
                data = fast.s.recv(min(want, 1 << 20))
                self.assertTrue(data)
                want -= len(data)
        self.assertEqual(pub.ping(), [])
        self.assertEqual(fast.ping(), [])
        ubcluster.wait_for(lambda: "unibus_bus_slow_consumers_total 1" in self.metrics(),
                           timeout=10, what="the slow consumer to be cut off")
        self.alive()

    def test_flow_control_keeps_a_draining_subscriber(self):
        """A publisher faster than its subscriber is paused, not the
        subscriber cut off: 96 MiB through a reader paced at about 50 MB/s,
        nothing lost."""
        import threading
        before = self.metrics()
        sub = Client(self.n, self.admin)
        sub.send("SUB flow 1\r\n")
        self.assertEqual(sub.ping(), [])
        pub = Client(self.n, self.admin)
        n, size = 1536, 65536
        frame = b"PUB flow %d\r\n" % size + b"y" * size + b"\r\n"

        def blast():
            for _ in range(n // 64):
                pub.send(frame * 64)
        t = threading.Thread(target=blast)
        t.start()
        head = b"MSG flow 1 %d\r\n" % size
        for i in range(n):
            self.assertEqual(sub.f.readline(), head, "message %d" % i)
            self.assertEqual(len(sub.f.read(size + 2)), size + 2)
            if i % 8 == 7:
                # About 50 MB/s: slower than the server even under ASan,
                # yet never still long enough to count as stuck.
                time.sleep(0.01)
        t.join()
        self.assertEqual(pub.ping(), [])
        m = self.metrics()

        def counter(text, name):
            import re
            return int(re.search(r"\n%s (\d+)\n" % name, text).group(1))
        self.assertEqual(counter(m, "unibus_bus_slow_consumers_total"),
                         counter(before, "unibus_bus_slow_consumers_total"))
        self.assertGreater(counter(m, "unibus_bus_publisher_stalls_total"),
                           counter(before, "unibus_bus_publisher_stalls_total"))

    def metrics(self):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.n.http_port) as r:
            return r.read().decode()

    def test_health_and_metrics_report_the_bus(self):
        c = Client(self.n, self.admin)
        c.send("SUB m.x 1\r\n")
        self.assertEqual(c.ping(), [])
        st, j = self.n.health()
        self.assertEqual(st, 200)
        self.assertGreaterEqual(j["bus"]["connections"], 1)
        self.assertGreaterEqual(j["bus"]["subscriptions"], 1)
        self.assertTrue(j["posture"]["acl"])
        m = self.metrics()
        for name in ("connections", "subscriptions", "msgs_in_total", "bytes_out_total",
                     "slow_consumers_total", "auth_failures_total"):
            self.assertRegex(m, r"\nunibus_bus_%s \d+\n" % name)


NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


@unittest.skipUnless(os.path.exists(NATS_SERVER), "Debian's nats-server is not installed")
class ExternalNats(unittest.TestCase):
    """--nats-url: the embedded bus stays off, the control plane serves on,
    and /healthz says whether the external server answers."""

    def test_external_nats_server(self):
        port = ubcluster.free_port()
        nats = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (nats.poll() is None and nats.kill(), nats.wait()))
        c = ubcluster.Cluster(BIN, n=1)
        self.addCleanup(c.close)
        n = c.nodes[0]
        n.extra = ["--nats-url", "nats://127.0.0.1:%d" % port]
        c.start()
        c.wait_leader()
        admin = c.admin()
        self.assertEqual(n.request("GET", "/v1/me", ident=admin)[0], 200)

        def bus():
            return (n.health()[1] or {}).get("bus", {})
        ubcluster.wait_for(lambda: bus().get("reachable") is True, timeout=15,
                           what="the external server to be seen")
        b = bus()
        self.assertEqual(b["external"], "nats://127.0.0.1:%d" % port)
        self.assertRegex(b["version"], r"^\d+\.\d+\.\d+$")
        self.assertEqual(n.health()[1]["posture"]["bus_auth"], "external")
        self.assertFalse(n.health()[1]["posture"]["acl"])
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", n.bus_port), timeout=2).close()
        nats.kill()
        nats.wait()
        ubcluster.wait_for(lambda: bus().get("reachable") is False, timeout=15,
                           what="the lost external server to be reported")
        self.assertTrue(bus()["error"])
        self.assertEqual(n.health()[0], 200)  # the control plane does not depend on it

    def test_bad_nats_url_refused(self):
        for url, why in (("nats://user:secret@127.0.0.1:4222", "credentials"),
                         ("http://127.0.0.1:4222", "nats://HOST:PORT"),
                         ("nats://127.0.0.1", "nats://HOST:PORT")):
            d = tempfile.mkdtemp(prefix="unibus-natsurl-")
            self.addCleanup(shutil.rmtree, d, True)
            r = subprocess.run([BIN, "--data-dir", d, "--http-listen",
                                "127.0.0.1:%d" % ubcluster.free_port(), "--nats-url", url],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(why, r.stderr)
            self.assertNotIn("secret", r.stderr)


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)  # sockets left to the GC
    unittest.main(verbosity=2, warnings="ignore")
