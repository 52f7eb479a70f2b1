"""One real membershipd (R1): the KV over HTTP, bad input, restart from disk,
clean shutdown, and the posture rules enforced at startup."""
import base64
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import ubcluster  # noqa: E402

BIN = os.environ["MEMBERSHIPD"]


class SingleNode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = ubcluster.Cluster(BIN, n=1)
        cls.addClassCleanup(cls.c.close)
        cls.c.start()
        cls.n = cls.c.nodes[0]
        cls.c.wait_leader()

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def setUp(self):
        if not self.n.alive():
            self.n.start()
            self.c.wait_leader()

    def test_healthz_reports_not_ha(self):
        st, j = self.n.health()
        self.assertEqual(st, 200)
        self.assertEqual(j["status"], "ok")
        self.assertEqual(j["node"], "n1")
        self.assertEqual(j["leader"], "n1")
        self.assertFalse(j["ha"])
        self.assertIn("not HA", j["ha_warning"])
        self.assertEqual(j["posture"]["bus_auth"], "enforce")
        self.assertFalse(j["posture"]["route_tls"])

    def test_put_get_cas_delete_list(self):
        n = self.n
        st, j = n.put("app", "k1", b"hello")
        self.assertEqual(st, 200, j)
        rev1 = j["revision"]
        st, j = n.get("app", "k1")
        self.assertEqual(st, 200, j)
        self.assertEqual(base64.b64decode(j["value"]), b"hello")
        self.assertEqual(j["revision"], rev1)
        self.assertEqual(j["create_revision"], rev1)
        # CAS with the right revision succeeds, with a stale one fails.
        st, j = n.put("app", "k1", b"v2", rev=rev1)
        self.assertEqual(st, 200, j)
        rev2 = j["revision"]
        self.assertGreater(rev2, rev1)
        st, j = n.put("app", "k1", b"v3", rev=rev1)
        self.assertEqual(st, 409, j)
        self.assertEqual(j["error"]["code"], "revision_mismatch")
        self.assertEqual(j["error"]["current_revision"], rev2)
        # rev=0 means create only.
        st, j = n.put("app", "k1", b"x", rev=0)
        self.assertEqual(st, 409)
        st, j = n.put("app", "fresh", b"x", rev=0)
        self.assertEqual(st, 200)
        # Value unchanged by the failed CAS.
        st, j = n.get("app", "k1")
        self.assertEqual(base64.b64decode(j["value"]), b"v2")
        # List by prefix, with pagination.
        for i in range(5):
            self.assertEqual(n.put("app", "list/%d" % i, str(i))[0], 200)
        st, j = n.request("GET", n.kv_path("app", prefix="list/", limit=3))
        self.assertEqual(st, 200, j)
        self.assertEqual([e["key"] for e in j["entries"]], ["list/0", "list/1", "list/2"])
        self.assertTrue(j["more"])
        st, j = n.request("GET", n.kv_path("app", prefix="list/", after=j["next_after"]))
        self.assertEqual([e["key"] for e in j["entries"]], ["list/3", "list/4"])
        self.assertFalse(j["more"])
        # Delete with a wrong revision fails, then succeeds.
        st, j = n.delete("app", "k1", rev=rev1)
        self.assertEqual(st, 409)
        st, j = n.delete("app", "k1", rev=rev2)
        self.assertEqual(st, 200, j)
        st, j = n.get("app", "k1")
        self.assertEqual(st, 404)
        self.assertEqual(j["error"]["code"], "not_found")
        st, j = n.delete("app", "k1")
        self.assertEqual(st, 404)

    def test_binary_and_empty_values(self):
        blob = bytes(range(256)) * 16
        st, j = self.n.put("bin", "b", blob)
        self.assertEqual(st, 200)
        st, j = self.n.get("bin", "b")
        self.assertEqual(base64.b64decode(j["value"]), blob)
        st, j = self.n.put("bin", "empty", b"")
        self.assertEqual(st, 200)
        st, j = self.n.get("bin", "empty")
        self.assertEqual(base64.b64decode(j["value"]), b"")

    def assert_error(self, resp, status, code=None):
        st, j = resp
        self.assertEqual(st, status, j)
        self.assertIsInstance(j, dict, "error bodies are JSON")
        self.assertIn("error", j)
        if code:
            self.assertEqual(j["error"]["code"], code)

    def test_bad_input_is_4xx_and_changes_nothing(self):
        n = self.n
        st, j = n.put("guard", "g", b"orig")
        self.assertEqual(st, 200)
        rev = j["revision"]
        _, before = n.request("GET", "/v1/cluster")
        self.assert_error(n.put("bad bucket!", "k", "v"), 400, "invalid_bucket")
        self.assert_error(n.put("b" * 65, "k", "v"), 400, "invalid_bucket")
        self.assert_error(n.put("guard", "k" * 1025, "v"), 400, "invalid_key")
        self.assert_error(n.request("PUT", "/v1/kv/guard/a%00b", b"v"), 400)
        self.assert_error(n.put("guard", "g", "v", rev="abc"), 400, "bad_revision")
        self.assert_error(n.put("guard", "g", "v", rev="-1"), 400, "bad_revision")
        self.assert_error(n.put("guard", "g", b"x" * (1024 * 1024 + 1)), 413)
        self.assert_error(n.put("_nodes", "x", "v"), 403, "reserved_bucket")
        self.assert_error(n.request("POST", "/v1/kv/guard/g", b"v"), 405)
        self.assert_error(n.request("GET", "/v1/nope"), 404, "not_found")
        self.assert_error(n.request("GET", "/v1/kv/guard?limit=0"), 400)
        self.assert_error(n.request("POST", "/v1/cluster/members", b"{not json"), 400, "bad_json")
        self.assert_error(n.request("POST", "/v1/cluster/members", b'{"name": 5}'), 400)
        self.assert_error(n.request("POST", "/v1/cluster/members",
                                    b'{"name":"x","address":"h:1","bogus":1}'), 400)
        self.assert_error(n.request("DELETE", "/v1/cluster/members/nobody"), 404)
        # Path traversal is normalised away, never reaching another bucket.
        st, j = n.request("GET", "/v1/kv/guard/../../healthz")
        self.assertNotEqual(st, 500)
        # Nothing changed.
        st, j = n.get("guard", "g")
        self.assertEqual(j["revision"], rev)
        self.assertEqual(base64.b64decode(j["value"]), b"orig")
        _, after = n.request("GET", "/v1/cluster")
        self.assertEqual(len(before["members"]), len(after["members"]))

    def test_error_answers_keep_the_connection(self):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.n.http_port, timeout=10)
        try:
            for _ in range(3):
                conn.request("GET", "/v1/nope")  # unsigned: 401
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 401)
                self.assertNotEqual((r.getheader("connection") or "").lower(), "close")
            sock = conn.sock
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            self.assertIs(conn.sock, sock, "the same connection served every request")
        finally:
            conn.close()

    def test_metrics(self):
        self.assertEqual(self.n.put("m", "k", "v")[0], 200)
        self.n.request("GET", "/v1/nope")
        st, body = self.n.request("GET", "/metrics")
        self.assertEqual(st, 200)
        text = body.decode() if isinstance(body, bytes) else str(body)
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, v = line.rsplit(" ", 1)
                values[name] = float(v)
        self.assertGreaterEqual(values['unibus_http_requests_total{route="kv",status="2xx"}'], 1)
        self.assertGreaterEqual(values['unibus_http_requests_total{route="other",status="4xx"}'], 1)
        self.assertGreater(values["unibus_raft_commit_index"], 0)
        self.assertEqual(values["unibus_raft_leader"], 1)
        self.assertGreaterEqual(values["unibus_proposal_seconds_count"], 1)
        self.assertEqual(values['unibus_proposal_seconds_bucket{le="+Inf"}'],
                         values["unibus_proposal_seconds_count"])
        self.assertGreaterEqual(values["unibus_members"], 1)
        self.assertGreaterEqual(values['unibus_auth_total{result="ok"}'], 1)
        self.assertIn("unibus_blob_bytes", values)

    def test_restart_from_disk_and_clean_sigterm(self):
        n = self.n
        revs = {}
        for i in range(50):
            st, j = n.put("durable", "k%d" % i, "v%d" % i)
            self.assertEqual(st, 200)
            revs[i] = j["revision"]
        rc = n.stop()
        self.assertEqual(rc, 0, n.log()[-3000:])
        self.assertIn("stopped cleanly", n.log())
        n.start()
        self.c.wait_leader()
        for i in range(50):
            st, j = n.get("durable", "k%d" % i)
            self.assertEqual(st, 200)
            self.assertEqual(base64.b64decode(j["value"]), b"v%d" % i)
            self.assertEqual(j["revision"], revs[i])
        # SIGKILL too: every acknowledged write survives.
        st, j = n.put("durable", "last", "acked")
        self.assertEqual(st, 200)
        n.kill()
        n.start()
        self.c.wait_leader()
        st, j = n.get("durable", "last")
        self.assertEqual(base64.b64decode(j["value"]), b"acked")


class Ctl(unittest.TestCase):
    """unibusctl against a real node: human output, --json, exit codes."""

    @classmethod
    def setUpClass(cls):
        cls.c = ubcluster.Cluster(BIN, n=1)
        cls.addClassCleanup(cls.c.close)
        cls.c.start()
        cls.n = cls.c.nodes[0]
        cls.c.wait_leader()
        cls.url = "http://127.0.0.1:%d" % cls.n.http_port
        cls.c.admin()  # waits until the auto-created admin is committed
        cls.seed = os.path.join(cls.n.data, "admin.nk")

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def ctl(self, *args, stdin=None, who=("admin", None)):
        handle, seed = who
        p = subprocess.run([os.environ["UNIBUSCTL"], "--url", self.url,
                            "--handle", handle, "--seed-file", seed or self.seed] + list(args),
                           input=stdin, capture_output=True, timeout=30)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_kv_round_trip(self):
        rc, out, err = self.ctl("kv", "put", "demo", "greeting", "hello")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"revision \d+")
        rev = int(out.split()[1])
        rc, out, err = self.ctl("kv", "get", "demo", "greeting")
        self.assertEqual((rc, out), (0, "hello\n"))
        self.assertIn("revision %d" % rev, err)
        rc, out, err = self.ctl("kv", "cas", "demo", "greeting", str(rev), "-", stdin=b"bye")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.ctl("kv", "cas", "demo", "greeting", str(rev), "again")
        self.assertEqual(rc, 1)
        self.assertIn("revision_mismatch", err)
        rc, out, err = self.ctl("--json", "kv", "get", "demo", "greeting")
        self.assertEqual(rc, 0)
        self.assertEqual(base64.b64decode(json.loads(out)["value"]), b"bye")
        rc, out, err = self.ctl("kv", "put", "demo", "dir/a", "1")
        rc, out, err = self.ctl("kv", "list", "demo", "--prefix", "dir/")
        self.assertEqual(rc, 0)
        self.assertIn("dir/a", out)
        rc, out, err = self.ctl("kv", "del", "demo", "greeting")
        self.assertEqual(rc, 0)
        rc, out, err = self.ctl("kv", "get", "demo", "greeting")
        self.assertEqual(rc, 1)
        self.assertIn("not_found", err)

    def test_cluster_status_and_usage(self):
        rc, out, err = self.ctl("cluster", "status")
        self.assertEqual(rc, 0, err)
        self.assertIn("n1", out)
        self.assertIn("voter", out)
        self.assertIn("WARNING", out)  # R1 is not HA, said plainly
        rc, out, err = self.ctl("--json", "cluster", "status")
        self.assertEqual(json.loads(out)["leader"], "n1")
        rc, out, err = self.ctl("kv", "frobnicate")
        self.assertEqual(rc, 2)
        p = subprocess.run([os.environ["UNIBUSCTL"], "--url", "http://127.0.0.1:1",
                            "cluster", "status"], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertTrue(p.stderr)


class Notify(unittest.TestCase):
    """Type=notify readiness: READY=1 once serving, STOPPING=1 on SIGTERM."""

    def test_sd_notify(self):
        import socket
        import tempfile
        d = tempfile.mkdtemp(prefix="unibus-notify-")
        path = os.path.join(d, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(20)
        port = ubcluster.free_port()
        env = dict(os.environ, NOTIFY_SOCKET=path)
        p = subprocess.Popen([BIN, "--name", "nt", "--data-dir", os.path.join(d, "data"),
                              "--http-listen", "127.0.0.1:%d" % port,
                              "--bus-listen", "127.0.0.1:%d" % ubcluster.free_port()],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            msg = sock.recv(4096).decode()
            self.assertIn("READY=1", msg)
            # Ready means serving.
            conn = __import__("http.client").client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            self.assertEqual(conn.getresponse().status, 200)
            conn.close()
            p.terminate()
            msg = sock.recv(4096).decode()
            self.assertIn("STOPPING=1", msg)
            self.assertEqual(p.wait(20), 0)
        finally:
            if p.poll() is None:
                p.kill()
            sock.close()
            import shutil
            shutil.rmtree(d, ignore_errors=True)


class Posture(unittest.TestCase):
    """Insecure or wrong configurations are refused with a useful message."""

    def run_bin(self, *args, env=None):
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run([BIN] + list(args), capture_output=True, text=True,
                           timeout=20, env=e)
        return p.returncode, p.stdout + p.stderr

    def test_secret_in_argv_refused_without_echo(self):
        rc, out = self.run_bin("--cluster-pass", "hunter2hunter2hunter2")
        self.assertEqual(rc, 2)
        self.assertIn("--cluster-pass-file", out)
        self.assertNotIn("hunter2", out)

    def test_credentials_in_routes_refused(self):
        rc, out = self.run_bin("--routes", "nats://u:secretpw@127.0.0.1:6250")
        self.assertEqual(rc, 2)
        self.assertIn("bare", out)
        self.assertNotIn("secretpw", out)

    def test_routes_without_tls_refused(self):
        rc, out = self.run_bin("--routes", "nats://127.0.0.1:1",
                               "--data-dir", "/tmp/unibus-never-used",
                               env={"UNIBUS_CLUSTER_PASS": "x" * 32})
        self.assertEqual(rc, 2)
        self.assertIn("--route-tls-cert", out)

    def test_routes_need_bus_auth_enforce(self):
        rc, out = self.run_bin("--routes", "nats://127.0.0.1:1", "--bus-auth", "off",
                               "--data-dir", "/tmp/unibus-never-used")
        self.assertEqual(rc, 2)
        self.assertIn("enforce", out)

    def test_bad_flags(self):
        for args in (["--kv-replicas", "2"], ["--bogus"], ["--bus-auth", "maybe"],
                     ["--http-listen"], ["--heartbeat-ms", "x"]):
            rc, out = self.run_bin(*args)
            self.assertEqual(rc, 2, args)
            self.assertTrue(out.strip(), args)

    def test_every_flag_is_documented(self):
        import re
        rc, out = self.run_bin("--help")
        flags = set(re.findall(r"^  (--[a-z-]+)", out, re.M))
        self.assertGreater(len(flags), 15)
        with open(os.path.join(ubcluster.SRC, "docs", "configuration.md")) as f:
            doc = f.read()
        missing = sorted(fl for fl in flags if "`" + fl not in doc and fl + "`" not in doc)
        self.assertEqual(missing, [], "flags missing from docs/configuration.md")

    def test_help_and_version(self):
        rc, out = self.run_bin("--help")
        self.assertEqual(rc, 0)
        for flag in ("--data-dir", "--routes", "--route-tls-ca", "--cluster-pass-file",
                     "--kv-replicas", "--bus-auth"):
            self.assertIn(flag, out)
        rc, out = self.run_bin("--version")
        self.assertEqual(rc, 0)
        self.assertIn("membershipd", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
