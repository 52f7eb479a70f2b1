"""The control plane over real HTTP: signed requests and their failures,
members, rooms, sealed keys, blobs, invariants under concurrent writers, a
replay on another node, and a blob that survives the loss of its node."""
import base64
import hashlib
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import ubcluster  # noqa: E402
import ubsign  # noqa: E402

BIN = os.environ["MEMBERSHIPD"]


def jbody(obj):
    return json.dumps(obj).encode()


def oversize_status(node, path, length):
    """Announces a body of length bytes and reads the answer, which the
    server sends before reading the body."""
    import socket
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=10) as s:
        s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                   % (path, length)).encode())
        line = s.makefile("rb").readline().decode()
    return int(line.split()[1])


class OneNode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = ubcluster.Cluster(BIN, n=1)
        cls.addClassCleanup(cls.c.close)
        cls.n = cls.c.nodes[0]
        cls.n.extra = ["--blob-max-bytes", str(2 * 1024 * 1024)]
        cls.c.start()
        cls.c.wait_leader()
        cls.admin = cls.c.admin()

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def member(self, handle, role="member"):
        ident = ubsign.Identity(handle)
        st, j = self.n.request("POST", "/v1/members", ident.member_body(role))
        self.assertEqual(st, 201, j)
        return ident

    def req(self, ident, method, path, body=None):
        return self.n.request(method, path, body, ident=ident)

    # -- authentication --------------------------------------------------
    def test_auth_failures_have_stable_codes(self):
        n = self.n
        st, j = n.request("GET", "/v1/me", ident=None)
        self.assertEqual((st, j["error"]["code"]), (401, "missing_auth"))
        st, j = n.request("GET", "/v1/me", ident=None,
                          headers={"Authorization": "Bearer abc"})
        self.assertEqual((st, j["error"]["code"]), (401, "bad_auth_header"))
        ghost = ubsign.Identity("ghost")
        st, j = self.req(ghost, "GET", "/v1/me")
        self.assertEqual((st, j["error"]["code"]), (401, "unknown_member"))
        # Right handle, wrong key.
        impostor = ubsign.Identity("admin")
        st, j = self.req(impostor, "GET", "/v1/me")
        self.assertEqual((st, j["error"]["code"]), (401, "bad_signature"))
        # Stale timestamp.
        h = self.admin.authorization("GET", "/v1/me", b"", ts=int(time.time()) - 3600)
        st, j = n.request("GET", "/v1/me", ident=None, headers={"Authorization": h})
        self.assertEqual((st, j["error"]["code"]), (401, "stale_timestamp"))
        # Signature over another path does not verify.
        h = self.admin.authorization("GET", "/v1/members", b"")
        st, j = n.request("GET", "/v1/me", ident=None, headers={"Authorization": h})
        self.assertEqual((st, j["error"]["code"]), (401, "bad_signature"))
        # Tampered body.
        body = jbody({"name": "tampered"})
        h = self.admin.authorization("POST", "/v1/rooms", body)
        st, j = n.request("POST", "/v1/rooms", jbody({"name": "other"}), ident=None,
                          headers={"Authorization": h})
        self.assertEqual(st, 401)
        # Replay of a valid request.
        h = self.admin.authorization("GET", "/v1/me", b"")
        st, j = n.request("GET", "/v1/me", ident=None, headers={"Authorization": h})
        self.assertEqual(st, 200, j)
        st, j = n.request("GET", "/v1/me", ident=None, headers={"Authorization": h})
        self.assertEqual((st, j["error"]["code"]), (401, "nonce_reused"))
        # healthz and metrics need no signature.
        self.assertEqual(n.request("GET", "/healthz", ident=None)[0], 200)

    def test_replayed_kv_write_is_refused_and_changes_nothing(self):
        path = "/v1/kv/replay/k"
        h = self.admin.authorization("PUT", path, b"first")
        st, j = self.n.request("PUT", path, b"first", ident=None, headers={"Authorization": h})
        self.assertEqual(st, 200, j)
        rev = j["revision"]
        self.assertEqual(self.n.put("replay", "k", "second")[0], 200)
        st, j = self.n.request("PUT", path, b"first", ident=None, headers={"Authorization": h})
        self.assertEqual((st, j["error"]["code"]), (401, "nonce_reused"))
        st, j = self.n.get("replay", "k")
        self.assertEqual(base64.b64decode(j["value"]), b"second")
        self.assertGreater(j["revision"], rev)
        # A failed compare-and-swap consumes its nonce too.
        bad = "/v1/kv/replay/k?rev=1"
        h = self.admin.authorization("PUT", bad, b"x")
        st, j = self.n.request("PUT", bad, b"x", ident=None, headers={"Authorization": h})
        self.assertEqual(st, 409)
        st, j = self.n.request("PUT", bad, b"x", ident=None, headers={"Authorization": h})
        self.assertEqual((st, j["error"]["code"]), (401, "nonce_reused"))

    def test_longest_handle_and_nonce(self):
        ident = self.member("h" * 64)
        h = ident.authorization("GET", "/v1/me", b"", nonce="n" * 64)
        st, j = self.n.request("GET", "/v1/me", ident=None, headers={"Authorization": h})
        self.assertEqual(st, 200, j)

    def test_control_plane_buckets_are_not_writable_through_kv(self):
        for bucket in ("members", "nkeys", "rooms", "sealed", "blobs", "blobdata",
                       "nonces", "_ctl"):
            st, j = self.n.request("PUT", "/v1/kv/%s/x" % bucket, b"v")
            self.assertEqual((st, j["error"]["code"]), (403, "reserved_bucket"), bucket)
            st, j = self.n.request("DELETE", "/v1/kv/%s/x" % bucket)
            self.assertEqual(st, 403, bucket)
        st, j = self.n.request("GET", "/v1/kv/members?limit=5")
        self.assertEqual(st, 200)

    def test_roles(self):
        m = self.member("roleuser")
        for method, path in (("GET", "/v1/members"), ("GET", "/v1/cluster"),
                             ("GET", "/v1/kv/app/x"), ("GET", "/v1/members/admin")):
            st, j = self.req(m, method, path)
            self.assertEqual(st, 403, (method, path, j))
            self.assertEqual(j["error"]["code"], "forbidden")
        st, j = self.req(m, "POST", "/v1/members", ubsign.Identity("x1").member_body())
        self.assertEqual(st, 403)
        st, j = self.req(m, "GET", "/v1/me")
        self.assertEqual((st, j["handle"], j["role"]), (200, "roleuser", "member"))
        st, j = self.req(m, "GET", "/v1/members/roleuser")
        self.assertEqual(st, 200)

    # -- members -----------------------------------------------------------
    def test_member_crud_and_bad_input(self):
        ident = ubsign.Identity("alice")
        before = self.n.request("GET", "/v1/members")[1]
        bad = [
            b"{",                                        # truncated JSON
            b"[]",                                       # not an object
            jbody({"handle": "alice"}),                  # missing fields
            jbody({"handle": 5, "role": "member", "sign_pub": ident.pub, "box_pub": ident.box_pub}),
            jbody({"handle": "Alice!", "role": "member", "sign_pub": ident.pub, "box_pub": ident.box_pub}),
            jbody({"handle": "../etc", "role": "member", "sign_pub": ident.pub, "box_pub": ident.box_pub}),
            jbody({"handle": "alice", "role": "root", "sign_pub": ident.pub, "box_pub": ident.box_pub}),
            jbody({"handle": "alice", "role": "member", "sign_pub": ident.pub[:-1], "box_pub": ident.box_pub}),
            jbody({"handle": "alice", "role": "member", "sign_pub": "A" + ident.pub[1:], "box_pub": ident.box_pub}),
            jbody({"handle": "alice", "role": "member", "sign_pub": ident.pub, "box_pub": "!!notbase64!!"}),
            jbody({"handle": "alice", "role": "member", "sign_pub": ident.pub,
                   "box_pub": base64.b64encode(b"x" * 31).decode()}),
            jbody({"handle": "alice", "role": "member", "sign_pub": ident.pub, "box_pub": ident.box_pub,
                   "extra": 1}),
        ]
        for b in bad:
            st, j = self.n.request("POST", "/v1/members", b)
            self.assertEqual(st, 400, (b, j))
            self.assertIn("error", j)
        self.assertEqual(oversize_status(self.n, "/v1/members", 3 * 1024 * 1024), 413)
        after = self.n.request("GET", "/v1/members")[1]
        self.assertEqual(before["members"], after["members"])
        st, j = self.n.request("POST", "/v1/members", ident.member_body())
        self.assertEqual(st, 201, j)
        self.assertEqual(j["sign_pub"], ident.pub)
        st, j = self.n.request("POST", "/v1/members", ident.member_body())
        self.assertEqual((st, j["error"]["code"]), (409, "exists"))
        twin = ubsign.Identity("alice2")
        twin.pub, twin.key = ident.pub, ident.key
        st, j = self.n.request("POST", "/v1/members", twin.member_body())
        self.assertEqual((st, j["error"]["code"]), (409, "key_in_use"))
        st, j = self.n.request("DELETE", "/v1/members/alice")
        self.assertEqual(st, 200, j)
        st, j = self.n.request("GET", "/v1/members/alice")
        self.assertEqual(st, 404)
        st, j = self.req(ident, "GET", "/v1/me")
        self.assertEqual((st, j["error"]["code"]), (401, "unknown_member"))

    def test_pagination_and_last_admin(self):
        for i in range(5):
            self.member("page%d" % i)
        st, j = self.n.request("GET", "/v1/members?limit=2")
        self.assertEqual(st, 200)
        self.assertEqual(len(j["members"]), 2)
        self.assertTrue(j["more"])
        seen = [m["handle"] for m in j["members"]]
        while j["more"]:
            st, j = self.n.request("GET", "/v1/members?limit=2&after=" + j["next_after"])
            seen += [m["handle"] for m in j["members"]]
        self.assertEqual(seen, sorted(seen))
        self.assertTrue({"page0", "page4", "admin"} <= set(seen))
        st, j = self.n.request("DELETE", "/v1/members/admin")
        self.assertEqual((st, j["error"]["code"]), (409, "last_admin"))

    # -- rooms and keys ----------------------------------------------------
    def test_rooms_keys_and_invariants(self):
        owner, bob, eve = self.member("owner1"), self.member("bob1"), self.member("eve1")
        st, j = self.req(owner, "POST", "/v1/rooms", jbody({"name": "ops"}))
        self.assertEqual(st, 201, j)
        self.assertEqual((j["owner"], j["epoch"], j["members"]), ("owner1", 1, ["owner1"]))
        st, j = self.req(owner, "POST", "/v1/rooms", jbody({"name": "ops"}))
        self.assertEqual(st, 409)
        for bad in (jbody({"name": "Bad Name"}), jbody({"name": "../x"}), b"{", jbody({"name": "a", "x": 1})):
            self.assertEqual(self.req(owner, "POST", "/v1/rooms", bad)[0], 400)
        # Only the owner (or an admin) manages membership.
        st, j = self.req(bob, "PUT", "/v1/rooms/ops/members/bob1")
        self.assertEqual(st, 403)
        st, j = self.req(owner, "PUT", "/v1/rooms/ops/members/bob1")
        self.assertEqual((st, j["members"]), (200, ["owner1", "bob1"]))
        st, j = self.req(owner, "PUT", "/v1/rooms/ops/members/nobody")
        self.assertEqual(st, 404)
        # Members read the room, others do not.
        self.assertEqual(self.req(bob, "GET", "/v1/rooms/ops")[0], 200)
        self.assertEqual(self.req(eve, "GET", "/v1/rooms/ops")[0], 403)
        st, j = self.req(eve, "GET", "/v1/rooms")
        self.assertNotIn("ops", [r["name"] for r in j["rooms"]])
        # Sealed keys: for current members, at the current epoch, read only by
        # their addressee.
        ct = base64.b64encode(b"sealed-for-bob").decode()
        st, j = self.req(owner, "PUT", "/v1/rooms/ops/keys/1/bob1", jbody({"ciphertext": ct}))
        self.assertEqual(st, 200, j)
        st, j = self.req(owner, "PUT", "/v1/rooms/ops/keys/2/bob1", jbody({"ciphertext": ct}))
        self.assertEqual((st, j["error"]["code"]), (409, "stale_epoch"))
        st, j = self.req(owner, "PUT", "/v1/rooms/ops/keys/1/eve1", jbody({"ciphertext": ct}))
        self.assertEqual((st, j["error"]["code"]), (409, "not_a_member"))
        st, j = self.req(eve, "PUT", "/v1/rooms/ops/keys/1/bob1", jbody({"ciphertext": ct}))
        self.assertEqual(st, 403)
        for bad in (jbody({"ciphertext": "%%%"}), jbody({"ciphertext": 5}), jbody({}), b"{"):
            self.assertEqual(self.req(owner, "PUT", "/v1/rooms/ops/keys/1/bob1", bad)[0], 400)
        st, j = self.req(bob, "GET", "/v1/rooms/ops/keys/1/bob1")
        self.assertEqual(st, 200, j)
        self.assertEqual(base64.b64decode(j["ciphertext"]), b"sealed-for-bob")
        self.assertEqual(self.req(owner, "GET", "/v1/rooms/ops/keys/1/bob1")[0], 403)
        self.assertEqual(self.req(bob, "GET", "/v1/rooms/ops/keys/x/bob1")[0], 400)
        # Taking bob out bumps the epoch and drops his key.
        st, j = self.req(owner, "DELETE", "/v1/rooms/ops/members/bob1")
        self.assertEqual((st, j["epoch"], j["members"]), (200, 2, ["owner1"]))
        st, j = self.req(bob, "GET", "/v1/rooms/ops/keys/1/bob1")
        self.assertEqual(st, 403)
        st, j = self.n.request("GET", "/v1/kv/sealed?prefix=ops/")
        self.assertEqual(j["entries"], [])
        # Deleting a member takes it out of every room.
        self.assertEqual(self.req(owner, "PUT", "/v1/rooms/ops/members/eve1")[0], 200)
        st, j = self.n.request("DELETE", "/v1/members/eve1")
        self.assertEqual(st, 200)
        st, j = self.req(owner, "GET", "/v1/rooms/ops")
        self.assertEqual((j["members"], j["epoch"]), (["owner1"], 3))
        # Owner deletes the room.
        self.assertEqual(self.req(owner, "DELETE", "/v1/rooms/ops")[0], 200)
        self.assertEqual(self.req(owner, "GET", "/v1/rooms/ops")[0], 404)

    def test_concurrent_writers_keep_invariants(self):
        owner = self.member("cowner")
        users = [self.member("cu%d" % i) for i in range(4)]
        self.assertEqual(self.req(owner, "POST", "/v1/rooms", jbody({"name": "busy"}))[0], 201)
        stop = time.time() + 4
        errors = []
        sealed = []

        def churn(u):
            ct = base64.b64encode(b"k").decode()
            while time.time() < stop:
                for method, path, body in (
                        ("PUT", "/v1/rooms/busy/members/" + u.handle, None),
                        ("GET", "/v1/rooms/busy", None)):
                    st, j = self.req(owner, method, path, body)
                    if st >= 500:
                        errors.append((st, j))
                    if method == "GET" and st == 200:
                        st2, j2 = self.req(owner, "PUT", "/v1/rooms/busy/keys/%d/%s" % (j["epoch"], u.handle),
                                           jbody({"ciphertext": ct}))
                        if st2 == 200:
                            sealed.append(u.handle)
                        elif st2 != 409:
                            errors.append((st2, j2))
                st, j = self.req(owner, "DELETE", "/v1/rooms/busy/members/" + u.handle)
                if st not in (200, 404, 409):
                    errors.append((st, j))

        threads = [threading.Thread(target=churn, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertFalse(errors, errors[:3])
        # The race was real: keys were sealed while members came and went.
        self.assertGreater(len(sealed), 5)
        st, room = self.req(owner, "GET", "/v1/rooms/busy")
        self.assertGreater(room["epoch"], 5)
        st, keys = self.n.request("GET", "/v1/kv/sealed?prefix=busy/&limit=1000")
        for e in keys["entries"]:
            _, epoch, handle = e["key"].split("/")
            # A sealed key exists only for a current member, at an epoch the
            # room has reached.
            self.assertIn(handle, room["members"], e["key"])
            self.assertLessEqual(int(epoch), room["epoch"])

    # -- blobs -------------------------------------------------------------
    def test_blobs(self):
        owner, outsider = self.member("bowner"), self.member("boutsider")
        self.assertEqual(self.req(owner, "POST", "/v1/rooms", jbody({"name": "files"}))[0], 201)
        data = os.urandom(1024 * 1024 + 12345)  # spans several chunks
        st, j = self.req(owner, "POST", "/v1/rooms/files/blobs", data)
        self.assertEqual(st, 201, j)
        self.assertEqual(j["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(j["size"], len(data))
        st, got = self.req(owner, "GET", "/v1/blobs/" + j["sha256"])
        self.assertEqual(st, 200)
        self.assertEqual(got, data)
        self.assertEqual(self.req(outsider, "GET", "/v1/blobs/" + j["sha256"])[0], 403)
        self.assertEqual(self.req(outsider, "POST", "/v1/rooms/files/blobs", b"x")[0], 403)
        self.assertEqual(self.req(owner, "GET", "/v1/blobs/" + "0" * 64)[0], 404)
        self.assertEqual(self.req(owner, "GET", "/v1/blobs/not-a-sha")[0], 400)
        self.assertEqual(self.req(owner, "POST", "/v1/rooms/files/blobs", b"")[0], 400)
        st, j = self.req(owner, "POST", "/v1/rooms/files/blobs", os.urandom(2 * 1024 * 1024 + 1))
        self.assertEqual(st, 413)


class ThreeNodes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = ubcluster.Cluster(BIN, n=3)
        cls.addClassCleanup(cls.c.close)
        cls.c.start()
        cls.leader = cls.c.wait_leader(timeout=40)
        ubcluster.wait_for(lambda: cls.leader.request("GET", "/v1/me")[0] == 200,
                           timeout=20, what="the bootstrap admin")

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def test_replay_on_another_node_fails(self):
        a, b = self.c.nodes[0], self.c.nodes[1]
        h = self.c.admin().authorization("GET", "/v1/me", b"")
        st, j = a.request("GET", "/v1/me", ident=None, headers={"Authorization": h})
        self.assertEqual(st, 200, j)
        for other in (b, self.c.nodes[2], a):
            st, j = other.request("GET", "/v1/me", ident=None, headers={"Authorization": h})
            self.assertEqual((st, j["error"]["code"]), (401, "nonce_reused"))

    def test_bootstrap_admin_only_once(self):
        st, j = self.leader.request("GET", "/v1/members")
        self.assertEqual([m["handle"] for m in j["members"]], ["admin"])
        self.assertEqual(j["members"][0]["role"], "admin")

    def test_blob_survives_loss_of_its_node(self):
        follower = [n for n in self.c.nodes if n is not self.leader][0]
        st, j = follower.request("POST", "/v1/rooms", jbody({"name": "vault"}))
        self.assertEqual(st, 201, j)
        data = os.urandom(700 * 1024)
        st, j = follower.request("POST", "/v1/rooms/vault/blobs", data)
        self.assertEqual(st, 201, j)
        follower.kill()
        others = [n for n in self.c.nodes if n is not follower]
        self.c.wait_leader(nodes=others)
        for n in others:
            st, got = n.request("GET", "/v1/blobs/" + j["sha256"])
            self.assertEqual(st, 200)
            self.assertEqual(got, data)
        follower.start()
        ubcluster.wait_for(lambda: follower.health()[0] == 200, timeout=30,
                           what="the restarted node")


if __name__ == "__main__":
    unittest.main(verbosity=2)
