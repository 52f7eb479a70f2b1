"""`membershipd migrate-to-kv` against a real one-node cluster: a SQLite
allowlist is imported through the node's bus, a second run changes nothing,
a conflicting row never overwrites, an invalid database imports nothing, a
non-loopback target without --ca is refused (DESIGN.md §6 item 4), and the
source database is never modified."""
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import ubcluster  # noqa: E402
import ubsign  # noqa: E402
from ubnats import Client  # noqa: E402

BIN = os.environ["MEMBERSHIPD"]

SCHEMA = ("CREATE TABLE members(handle TEXT PRIMARY KEY, role TEXT NOT NULL "
          "CHECK(role IN ('admin','member')), sign_pub TEXT NOT NULL, "
          "added_at TEXT)")  # an extra column, ignored by the import


def make_db(path, rows, schema=SCHEMA):
    db = sqlite3.connect(path)
    db.execute(schema)
    for row in rows:
        db.execute("INSERT INTO members(handle, role, sign_pub) VALUES (?, ?, ?)", row)
    db.commit()
    db.close()


def bus_knows(node, ident):
    """Whether the node's bus lets ident connect: the bus learns a new
    member from the KV a moment after the HTTP write is acknowledged."""
    try:
        Client(node, ident).close()
        return True
    except (AssertionError, OSError):
        return False


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Migrate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = ubcluster.Cluster(BIN, n=1)
        cls.addClassCleanup(cls.c.close)
        cls.n = cls.c.nodes[0]
        cls.c.start()
        cls.c.wait_leader()
        cls.admin = cls.c.admin()
        ubcluster.wait_for(lambda: bus_knows(cls.n, cls.admin), timeout=30,
                           what="the bus to know the admin")
        cls.seed_file = os.path.join(cls.n.data, "admin.nk")
        cls.work = tempfile.mkdtemp(prefix="unibus-migrate-")
        cls.addClassCleanup(shutil.rmtree, cls.work, True)
        # The default --seed-file is local_files/admin.nk under the working
        # directory: where a lone node run from there keeps its admin key.
        os.symlink(cls.n.data, os.path.join(cls.work, "local_files"))
        cls.ids = {h: ubsign.Identity(h) for h in
                   ("alice", "bob", "carol", "dave", "frank", "henry", "intruder")}
        cls.good = os.path.join(cls.work, "allowlist.db")
        make_db(cls.good, [("alice", "member", cls.ids["alice"].pub),
                           ("bob", "member", cls.ids["bob"].pub),
                           ("carol", "admin", cls.ids["carol"].pub)])
        cls.good_digest = digest(cls.good)

    def migrate(self, *args, timeout=120):
        r = subprocess.run([BIN, "migrate-to-kv"] + list(args), cwd=self.work,
                           capture_output=True, text=True, timeout=timeout)
        # Secrets never printed.
        self.assertNotIn(self.admin.seed, r.stdout + r.stderr)
        return r

    def url_args(self, db):
        return ["--db", db, "--nats-url", self.n.bus_url]

    def member(self, handle):
        st, j = self.n.request("GET", "/v1/members/" + handle)
        return st, j

    def kv_revision(self, handle):
        """The member record's KV revision, when the KV face shows it."""
        st, j = self.n.get("members", handle)
        return j.get("revision") if st == 200 and isinstance(j, dict) else None

    def assertMember(self, handle, role):
        st, j = self.member(handle)
        self.assertEqual(st, 200, j)
        self.assertEqual(j["handle"], handle)
        self.assertEqual(j["role"], role)
        self.assertEqual(j["sign_pub"], self.ids[handle].pub)
        return j

    def assertSourceUntouched(self):
        self.assertEqual(digest(self.good), self.good_digest)

    # -- the import ------------------------------------------------------
    def test_import_is_idempotent_and_never_overwrites(self):
        # First run, with the default seed file and handle.
        r = self.migrate(*self.url_args(self.good))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = r.stdout.splitlines()
        for line in ("created alice (member)", "created bob (member)",
                     "created carol (admin)",
                     "imported 3: 3 created, 0 unchanged, 0 conflicts"):
            self.assertIn(line, out, r.stdout)
        before = {h: self.assertMember(h, role) for h, role in
                  (("alice", "member"), ("bob", "member"), ("carol", "admin"))}
        revs = {h: self.kv_revision(h) for h in before}

        # Second run: nothing changes.
        r = self.migrate(*self.url_args(self.good), "--seed-file",
                         self.seed_file, "--handle", "admin")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = r.stdout.splitlines()
        for line in ("unchanged alice", "unchanged bob", "unchanged carol",
                     "imported 3: 0 created, 3 unchanged, 0 conflicts"):
            self.assertIn(line, out, r.stdout)
        for h, rec in before.items():
            self.assertEqual(self.member(h), (200, rec))
            self.assertEqual(self.kv_revision(h), revs[h])

        # Another key for alice, and bob's key under a new handle: both
        # conflicts; dave is new and is created anyway.
        conflict = os.path.join(self.work, "conflict.db")
        make_db(conflict, [("alice", "member", self.ids["intruder"].pub),
                           ("dave", "member", self.ids["dave"].pub),
                           ("erin", "member", self.ids["bob"].pub)])
        r = self.migrate(*self.url_args(conflict))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout.splitlines()
        self.assertTrue(any(l.startswith("conflict alice: ") for l in out), r.stdout)
        self.assertTrue(any(l.startswith("conflict erin: ") for l in out), r.stdout)
        self.assertIn("created dave (member)", out)
        self.assertIn("imported 3: 1 created, 0 unchanged, 2 conflicts", out)
        for h, rec in before.items():
            self.assertEqual(self.member(h), (200, rec))
            self.assertEqual(self.kv_revision(h), revs[h])
        self.assertEqual(self.member("erin")[0], 404)
        self.assertMember("dave", "member")

        # The imported members are real: alice signs a request with her key.
        st, j = self.n.request("GET", "/v1/me", ident=self.ids["alice"])
        self.assertEqual((st, j.get("handle")), (200, "alice"), j)
        self.assertSourceUntouched()

    def test_invalid_rows_import_nothing(self):
        bad = os.path.join(self.work, "invalid.db")
        make_db(bad, [("frank", "member", self.ids["frank"].pub),
                      ("Bad Name", "member", ubsign.Identity("x").pub),
                      ("gina", "owner", ubsign.Identity("y").pub),
                      ("hal", "member", "UNOTAKEY"),
                      ("ivy", "member", self.admin.seed)],
                # No CHECK: an old schema that let bad rows in.
                schema="CREATE TABLE members(handle TEXT, role TEXT, sign_pub TEXT)")
        d = digest(bad)
        r = self.migrate(*self.url_args(bad))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        for frag in ('row 2 (handle "Bad Name")', 'row 3 (handle "gina")',
                     'row 4 (handle "hal")', 'row 5 (handle "ivy")',
                     "nothing was imported"):
            self.assertIn(frag, r.stderr)
        self.assertNotIn("row 1 ", r.stderr)
        # The seed in row 5 is called a seed and never echoed.
        self.assertIn("seed", r.stderr)
        self.assertEqual(self.member("frank")[0], 404)
        self.assertEqual(digest(bad), d)
        self.assertSourceUntouched()

    def test_schema_errors_are_clear(self):
        none = os.path.join(self.work, "notable.db")
        make_db(none, [], schema="CREATE TABLE users(name TEXT)")
        r = self.migrate(*self.url_args(none))
        self.assertEqual(r.returncode, 1)
        self.assertIn("no table 'members'", r.stderr)
        nocol = os.path.join(self.work, "nocol.db")
        make_db(nocol, [], schema="CREATE TABLE members(handle TEXT, role TEXT)")
        r = self.migrate(*self.url_args(nocol))
        self.assertEqual(r.returncode, 1)
        self.assertIn("no column sign_pub", r.stderr)
        missing = os.path.join(self.work, "absent.db")
        r = self.migrate(*self.url_args(missing))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot open --db", r.stderr)
        self.assertFalse(os.path.exists(missing))  # never created

    def test_dry_run_sends_nothing(self):
        dry = os.path.join(self.work, "dry.db")
        make_db(dry, [("henry", "member", self.ids["henry"].pub)])
        r = self.migrate(*self.url_args(dry), "--dry-run")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        line = [l for l in r.stdout.splitlines() if l.startswith("would send ")]
        self.assertEqual(len(line), 1, r.stdout)
        subj, body = line[0][len("would send "):].split(" ", 1)
        self.assertEqual(subj, "$UB.API.MEMBER.IMPORT")
        self.assertEqual(json.loads(body), {"handle": "henry", "role": "member",
                                            "sign_pub": self.ids["henry"].pub})
        self.assertEqual(self.member("henry")[0], 404)
        # Without a target, only the database is checked.
        r = self.migrate("--db", dry, "--dry-run")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    # -- the confidentiality rule and the flags ----------------------------
    def test_non_loopback_target_needs_ca(self):
        for url in ("nats://192.0.2.10:4250", "tls://192.0.2.10:4250",
                    "nats://node.example:4250", "nats://[2001:db8::1]:4250"):
            for extra in ([], ["--dry-run"]):
                r = self.migrate("--db", self.good, "--nats-url", url, *extra,
                                 timeout=20)
                self.assertEqual(r.returncode, 2, (url, r.stdout, r.stderr))
                self.assertIn("--ca", r.stderr)
                self.assertIn("in clear", r.stderr)
                self.assertEqual(r.stdout, "")
        # Loopback in every spelling is accepted (dry run: nothing dialled).
        for url in ("nats://127.0.0.1:4250", "nats://127.8.9.10", "localhost:4250",
                    "nats://[::1]:4250"):
            r = self.migrate("--db", self.good, "--nats-url", url, "--dry-run")
            self.assertEqual(r.returncode, 0, (url, r.stderr))
        self.assertSourceUntouched()

    def test_usage_errors(self):
        cases = [
            ([], "--db"),
            (["--db", self.good], "--nats-url"),
            (["--db", self.good, "--nats-url", "nats://u:pw@127.0.0.1:4250"], "credentials"),
            (["--db", self.good, "--nats-url", "ws://127.0.0.1:4250"], "nats://"),
            (["--db", self.good, "--nats-url", self.n.bus_url, "--handle", "Admin"], "--handle"),
            (["--db", self.good, "--nats-url", self.n.bus_url, "--seed-file",
              os.path.join(self.work, "nope.nk")], "seed file"),
            (["--db", self.good, "--bogus"], "--bogus"),
        ]
        for args, frag in cases:
            r = self.migrate(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(frag, r.stderr, args)
        r = self.migrate("--help")
        self.assertEqual(r.returncode, 0)
        for flag in ("--db", "--nats-url", "--ca", "--seed-file", "--handle",
                     "--dry-run", "loopback"):
            self.assertIn(flag, r.stdout)

    # -- who may import ----------------------------------------------------
    def test_member_key_is_forbidden(self):
        mallory = ubsign.Identity("mallory")
        st, j = self.n.request("POST", "/v1/members", mallory.member_body("member"))
        self.assertEqual(st, 201, j)
        ubcluster.wait_for(lambda: bus_knows(self.n, mallory), timeout=30,
                           what="the bus to know mallory")
        seed = os.path.join(self.work, "mallory.nk")
        with open(seed, "w") as f:
            f.write(mallory.seed + "\n")
        os.chmod(seed, 0o600)
        lone = os.path.join(self.work, "lone.db")
        make_db(lone, [("nadia", "member", ubsign.Identity("nadia").pub)])
        r = self.migrate(*self.url_args(lone), "--seed-file", seed,
                         "--handle", "mallory")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("not an admin", r.stderr)
        self.assertNotIn(mallory.seed, r.stdout + r.stderr)
        self.assertEqual(self.member("nadia")[0], 404)

    def test_unknown_key_cannot_connect(self):
        stranger = os.path.join(self.work, "stranger.nk")
        with open(stranger, "w") as f:
            f.write(ubsign.Identity("stranger").seed + "\n")
        r = self.migrate(*self.url_args(self.good), "--seed-file", stranger)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("cannot connect", r.stderr)

    @unittest.skipUnless(shutil.which("nats-server"), "needs Debian's nats-server")
    def test_plain_nats_server_is_not_a_unibus_bus(self):
        port = ubcluster.free_port()
        ns = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(ns.wait)
        self.addCleanup(ns.kill)

        def up():
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        ubcluster.wait_for(up, timeout=20, what="nats-server")
        r = self.migrate("--db", self.good, "--nats-url",
                         "nats://127.0.0.1:%d" % port, "--seed-file", self.seed_file)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("not a unibus node", r.stderr)
        self.assertSourceUntouched()


class MigrateTLS(unittest.TestCase):
    """A node whose bus speaks TLS (--tls-cert): --ca pins its certificate,
    and a CA that did not sign it is refused before anything is sent."""

    @classmethod
    def setUpClass(cls):
        cls.c = ubcluster.Cluster(BIN, n=1)
        cls.addClassCleanup(cls.c.close)
        cls.n = cls.c.nodes[0]
        certs = os.path.join(cls.c.root, "tls")
        subprocess.run([os.path.join(ubcluster.SRC, "deploy/cluster/generate-cluster-certs.sh"),
                        "--out", certs, cls.n.name], check=True, stdout=subprocess.DEVNULL)
        cls.client_ca = os.path.join(certs, "client-ca.crt")
        cls.other_ca = os.path.join(certs, "cluster-ca.crt")
        cls.n.extra = ["--tls-cert", os.path.join(certs, "server.crt"),
                       "--tls-key", os.path.join(certs, "server.key")]
        cls.n.http_ca = cls.client_ca
        cls.c.start()
        cls.c.wait_leader()
        cls.admin = cls.c.admin()
        cls.seed_file = os.path.join(cls.n.data, "admin.nk")
        cls.work = tempfile.mkdtemp(prefix="unibus-migrate-tls-")
        cls.addClassCleanup(shutil.rmtree, cls.work, True)
        cls.olga = ubsign.Identity("olga")
        cls.db = os.path.join(cls.work, "allowlist.db")
        make_db(cls.db, [("olga", "admin", cls.olga.pub)])

    def migrate(self, url, *args, env=None):
        r = subprocess.run([BIN, "migrate-to-kv", "--db", self.db, "--nats-url", url,
                            "--seed-file", self.seed_file] + list(args),
                           cwd=self.work, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, **(env or {})))
        self.assertNotIn(self.admin.seed, r.stdout + r.stderr)
        return r

    def test_ca_pins_the_node(self):
        url = "nats://127.0.0.1:%d" % self.n.bus_port
        # The last case: OpenSSL's default trust store (here via
        # SSL_CERT_FILE) holds the node's CA, but --ca names another: a pin
        # means only --ca counts.
        for args, frag, env in (([], "--ca FILE", None),
                                (["--ca", self.other_ca], "TLS", None),
                                (["--ca", self.other_ca], "TLS",
                                 {"SSL_CERT_FILE": self.client_ca})):
            r = self.migrate(url, *args, env=env)
            self.assertEqual(r.returncode, 1, (args, r.stdout, r.stderr))
            self.assertIn(frag, r.stderr)
            self.assertNotIn("imported", r.stdout)
            self.assertEqual(self.n.request("GET", "/v1/members/olga")[0], 404)
        # The bus may learn the admin a moment after HTTP does.
        deadline = time.time() + 30
        while True:
            r = self.migrate(url, "--ca", self.client_ca)
            if "Authorization Violation" not in r.stderr or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("created olga (admin)", r.stdout.splitlines())
        st, j = self.n.request("GET", "/v1/members/olga")
        self.assertEqual((st, j["role"], j["sign_pub"]), (200, "admin", self.olga.pub))
        r = self.migrate("tls://localhost:%d" % self.n.bus_port, "--ca", self.client_ca)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("imported 1: 0 created, 1 unchanged, 0 conflicts",
                      r.stdout.splitlines())


if __name__ == "__main__":
    unittest.main(verbosity=2)
