"""The bus across three real nodes joined by mutual-TLS routes: clients on
different nodes talk, queue groups deliver each message once cluster-wide,
a member removed is cut off on every node, and a restarted node heals."""
import os
import sys
import time
import unittest
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import ubcluster  # noqa: E402
import ubsign  # noqa: E402
from ubnats import Client  # noqa: E402

BIN = os.environ["MEMBERSHIPD"]


def wait_routes(node, want, timeout=20):
    ubcluster.wait_for(lambda: (node.health()[1] or {}).get("bus", {}).get("routes", 0) >= want,
                       timeout=timeout, what="%s to have %d bus routes" % (node.name, want))


class BusCluster(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = ubcluster.Cluster(BIN, n=3, spare_names=("n4",))
        cls.addClassCleanup(cls.c.close)
        cls.c.start()
        cls.c.wait_leader()
        cls.admin = cls.c.admin()
        for n in cls.c.nodes:
            wait_routes(n, 2)

    _probes = 0

    def probe(self, sub, pub, timeout=10):
        """Publishes on pub until sub receives it. Interest travels in order
        over each route, so sub's earlier subscriptions have arrived too."""
        BusCluster._probes += 1
        subject = "probe.%d" % BusCluster._probes
        sub.send("SUB %s 999\r\n" % subject)
        self.assertEqual(sub.ping(), [])
        deadline = time.time() + timeout
        while time.time() < deadline:
            pub.send("PUB %s 1\r\np\r\n" % subject)
            pub.ping()
            time.sleep(0.05)
            if any(l.startswith("MSG %s 999" % subject) for l in sub.ping()):
                sub.send("UNSUB 999\r\n")
                time.sleep(0.2)  # probes still crossing the route
                sub.ping()
                return
        self.fail("no route delivery of %s within %ss" % (subject, timeout))

    def test_pubsub_across_nodes_and_requests(self):
        n1, n2, n3 = self.c.nodes
        a = Client(n1, self.admin)
        b = Client(n2, self.admin)
        d = Client(n3, self.admin)
        for s in (b, d):
            self.probe(s, a)
        b.send("SUB x.> 1\r\n")
        d.send("SUB x.* 1\r\n")
        self.assertEqual(b.ping(), [])
        self.assertEqual(d.ping(), [])
        self.probe(b, a)
        self.probe(d, a)
        a.send("HPUB x.y 18 20\r\nNATS/1.0\r\nA: b\r\n\r\nhi\r\n")
        self.assertEqual(a.ping(), [])
        for s in (b, d):
            subj, sid, reply, hdr, data = s.msg()
            self.assertEqual((subj, sid, hdr, data),
                             ("x.y", "1", b"NATS/1.0\r\nA: b\r\n\r\n", b"hi"))
        # Exactly once per node: nothing else arrives.
        self.assertEqual(b.ping(), [])
        self.assertEqual(d.ping(), [])
        # Request on n1, responder on n3, reply back across the route.
        d.send("SUB svc.echo 2\r\n")
        self.probe(d, a)
        a.send("SUB _INBOX.a.* 3\r\nPUB svc.echo _INBOX.a.1 4\r\nping\r\n")
        subj, sid, reply, _, data = d.msg()
        self.assertEqual((subj, reply, data), ("svc.echo", "_INBOX.a.1", b"ping"))
        d.send("PUB %s 4\r\npong\r\n" % reply)
        subj, sid, _, _, data = a.msg()
        self.assertEqual((subj, sid, data), ("_INBOX.a.1", "3", b"pong"))
        # No responders anywhere in the cluster: a 503 comes back.
        a.send("PUB nobody.anywhere _INBOX.a.2 0\r\n\r\n")
        subj, sid, _, hdr, data = a.msg()
        self.assertEqual((subj, data), ("_INBOX.a.2", b""))
        self.assertTrue(hdr.startswith(b"NATS/1.0 503"), hdr)

    def test_queue_group_cluster_wide(self):
        n1, n2, n3 = self.c.nodes
        pub = Client(n1, self.admin)
        workers = [Client(n2, self.admin), Client(n3, self.admin), Client(n3, self.admin)]
        for w in workers:
            w.send("SUB jobs.* workers 1\r\n")
            self.assertEqual(w.ping(), [])
        probe = Client(n2, self.admin)
        self.probe(probe, pub)
        probe3 = Client(n3, self.admin)
        self.probe(probe3, pub)
        total = 300
        for i in range(total):
            pub.send("PUB jobs.%d 1\r\nj\r\n" % i)
        self.assertEqual(pub.ping(), [])
        time.sleep(0.5)
        counts = [sum(1 for l in w.ping() if l.startswith("MSG")) for w in workers]
        self.assertEqual(sum(counts), total, counts)
        self.assertGreater(counts[0], 0, counts)
        self.assertGreater(counts[1] + counts[2], 0, counts)
        # A local member of the group takes the messages published on its node.
        local = Client(n1, self.admin)
        local.send("SUB jobs.* workers 1\r\n")
        self.assertEqual(local.ping(), [])
        for i in range(50):
            pub.send("PUB jobs.%d 1\r\nj\r\n" % i)
        self.assertEqual(pub.ping(), [])
        self.assertEqual(sum(1 for l in local.ping() if l.startswith("MSG")), 50)

    def test_joined_node_is_routed(self):
        """A node that joins later is in nobody's --routes: the bus follows
        the meta group's configuration instead."""
        n1 = self.c.nodes[0]
        n4 = self.c.add_node("n4")
        n4.start()
        ubcluster.wait_for(lambda: any(m["name"] == "n4" for m in
                                       (n1.cluster_info()[1] or {}).get("members", [])),
                           timeout=40, what="n4 to join")
        wait_routes(n1, 3)
        wait_routes(n4, 3)
        a = Client(n1, self.admin)
        d = Client(n4, self.admin)
        d.send("SUB late.x 1\r\n")
        self.probe(d, a)
        a.send("PUB late.x 2\r\nhi\r\n")
        self.assertEqual(d.msg()[4], b"hi")
        a.send("SUB late.y 1\r\n")
        self.probe(a, d)
        d.send("PUB late.y 2\r\nho\r\n")
        self.assertEqual(a.msg()[4], b"ho")

    def test_member_removal_reaches_every_node(self):
        eve = ubsign.Identity("eve")
        n1 = self.c.nodes[0]
        st, j = n1.request("POST", "/v1/members", eve.member_body(), ident=self.admin)
        self.assertEqual(st, 201, j)
        conns = []
        for n in self.c.nodes:
            ubcluster.wait_for(lambda n=n: n.request("GET", "/v1/members/eve", ident=self.admin)[0] == 200,
                               timeout=10, what="eve on %s" % n.name)
            conns.append(Client(n, eve))
        st, j = n1.request("DELETE", "/v1/members/eve", ident=self.admin)
        self.assertEqual(st, 200, j)
        t0 = time.time()
        for c in conns:
            self.assertEqual(c.closed(), b"-ERR 'Authorization Violation'\r\n")
        self.assertLess(time.time() - t0, 1.5)

    def test_node_restart_heals(self):
        n1, n2, n3 = self.c.nodes
        n2.kill()
        wait_routes(n1, 1)
        n2.proc = None
        n2.start()
        self.c.wait_leader()
        for n in self.c.nodes:
            wait_routes(n, 2)
        a = Client(n1, self.admin)
        b = Client(n2, self.admin)
        self.probe(b, a)
        b.send("SUB heal.x 1\r\n")
        self.assertEqual(b.ping(), [])
        self.probe(b, a)
        a.send("PUB heal.x 2\r\nok\r\n")
        self.assertEqual(b.msg()[4], b"ok")
        # and the other way round
        a.send("SUB heal.y 1\r\n")
        self.probe(a, b)
        b.send("PUB heal.y 2\r\nok\r\n")
        self.assertEqual(a.msg()[4], b"ok")


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    unittest.main(verbosity=2, warnings="ignore")
