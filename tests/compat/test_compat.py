#!/usr/bin/python3
"""Client-compatibility suites: real, unmodified NATS clients against the bus.

Starts a server, provisions members and a room, and runs every case of the
nats.c client (tests/compat/compat_c.c, built as compat_c) and of the nats.js
v2 client (tests/compat/js/compat.mjs) against it, then prints one line per
case and exits non-zero if any failed.

    test_compat.py [--backend membershipd|nats-server] [--client c|js|all]
                   [--cluster] [CASE ...]

Backends:
  membershipd  the bus embedded in membershipd (what CI runs): one node
               started by tests/lib/ubcluster.py (--bus-listen on a free
               port, --bus-auth enforce); members and rooms through the
               signed HTTP API; a second lone node with --tls-cert/--tls-key
               for the tls case. --cluster adds the three-node variant
               (cases marked 3nodes: alice, bob and carol each on another
               node), which needs bus routes.
  nats-server  Debian's nats-server with a generated config: one nkey user
               per member with the permissions of DESIGN.md §5, and "removal"
               by rewriting the config and sending SIGHUP (reload). It
               validates the suites themselves: every case must pass there.

Environment: MEMBERSHIPD (membershipd backend), COMPAT_C (the compat_c
binary), NATS_SERVER (optional path of nats-server), NODE (optional path of
node), UNIBUS_KEEP_TEST_DIRS=1 to keep the temporary directory.

The access-control contract the cases encode (member M in room R):
  publish   room.R.>, member.M.>, and one reply to a request M received
  subscribe room.R.>, member.M.>, _INBOX.M.> (clients set the inbox prefix
            _INBOX.M)
Each client run gets its own members (handle ROLE-CLIENT, e.g. alice-c), all
in room r1; role ghost is never provisioned. The cases removed and
room_removed print READY; the harness deletes the member (takes it out of
the room), and once the change is committed (HTTP 200; nats-server has
logged the reload) writes GO, from which the case allows one second.
A failing case prints its client's output and the command to rerun it.
"""
import argparse
import atexit
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
import ubsign  # noqa: E402

CASES = ["pubsub", "wildcards", "queue", "request", "headers", "noresponders",
         "auth", "deny_pub", "deny_sub", "maxpayload", "tls", "removed",
         "room_removed"]
# Cases run once more with their members spread over three nodes.
CLUSTER_CASES = ["pubsub", "wildcards", "queue", "request", "headers",
                 "noresponders"]
ROOM = "r1"
ROOM_ROLES = ["alice", "bob", "carol", "victim", "leaver"]
ALL_ROLES = ROOM_ROLES + ["ghost"]
CASE_TIMEOUT = 60
# The harness's side of the READY handshake: what it changes, per case.
ACTIONS = {"remove-member": "victim", "remove-from-room": "leaver"}

_PROCS = set()


@atexit.register
def _kill_leftovers():
    """No server outlives the suite, whatever failed."""
    for p in list(_PROCS):
        if p.poll() is None:
            p.kill()
            p.wait()


def free_port():
    # ubcluster's picker keeps ports below the ephemeral range.
    import ubcluster
    return ubcluster.free_port()


def make_certs(root):
    """The client CA and a server certificate for localhost/127.0.0.1, made
    by the deployment script; the cluster CA serves as the CA a client must
    not trust for the data plane."""
    out = os.path.join(root, "certs")
    subprocess.run([os.path.join(SRC, "deploy/cluster/generate-cluster-certs.sh"),
                    "--out", out, "compat"], check=True,
                   stdout=subprocess.DEVNULL)
    return {"ca": os.path.join(out, "client-ca.crt"),
            "wrong_ca": os.path.join(out, "cluster-ca.crt"),
            "cert": os.path.join(out, "server.crt"),
            "key": os.path.join(out, "server.key")}


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------
class NatsServer:
    """Debian's nats-server, configured with the access-control contract."""

    name = "nats-server"

    def __init__(self, root):
        self.root = root
        self.binary = os.environ.get("NATS_SERVER") or next(
            (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server",
                         shutil.which("nats-server") or "") if p and os.path.exists(p)),
            None)
        if not self.binary:
            raise SystemExit("test_compat: nats-server not found (apt-get install nats-server, "
                             "or set NATS_SERVER)")
        self.members = {}   # handle -> (Identity, set of rooms)
        self.servers = []   # (proc, log path)
        self.port = free_port()
        self.tls_port = free_port()
        self.certs = make_certs(root)

    # -- provisioning ------------------------------------------------------
    def add_member(self, ident, rooms):
        self.members[ident.handle] = (ident, set(rooms))

    def _write_auth(self):
        users = []
        for handle, (ident, rooms) in sorted(self.members.items()):
            pub = ["room.%s.>" % r for r in sorted(rooms)] + ["member.%s.>" % handle]
            sub = pub + ["_INBOX.%s.>" % handle]
            users.append(
                '    { nkey: "%s", permissions: {\n'
                '        publish: { allow: [%s] },\n'
                '        subscribe: { allow: [%s] },\n'
                '        allow_responses: true } }  # %s'
                % (ident.pub, ", ".join('"%s"' % s for s in pub),
                   ", ".join('"%s"' % s for s in sub), handle))
        path = os.path.join(self.root, "auth.conf")
        with open(path + ".tmp", "w") as f:
            f.write("authorization {\n  users = [\n%s\n  ]\n}\n" % "\n".join(users))
        os.replace(path + ".tmp", path)

    def start(self):
        self._write_auth()
        confs = {
            "plain.conf": 'listen: "127.0.0.1:%d"\nserver_name: "compat"\n'
                          'include "auth.conf"\n' % self.port,
            "tls.conf": 'listen: "127.0.0.1:%d"\nserver_name: "compat-tls"\n'
                        'tls {\n  cert_file: "%s"\n  key_file: "%s"\n  timeout: 2\n}\n'
                        'include "auth.conf"\n'
                        % (self.tls_port, self.certs["cert"], self.certs["key"]),
        }
        for name, text in confs.items():
            conf = os.path.join(self.root, name)
            with open(conf, "w") as f:
                f.write(text)
            log = os.path.join(self.root, name + ".log")
            logf = open(log, "ab")
            proc = subprocess.Popen([self.binary, "-c", conf], stdout=logf,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            logf.close()
            _PROCS.add(proc)
            self.servers.append((proc, log))
        for proc, log in self.servers:
            self._wait_log(proc, log, "Server is ready", 1)

    def _wait_log(self, proc, log, text, count, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(log, errors="replace") as f:
                if f.read().count(text) >= count:
                    return
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("nats-server: no '%s' (x%d) in %s:\n%s"
                           % (text, count, log, open(log, errors="replace").read()[-3000:]))

    def _reload(self):
        """Rewrites the users and reloads every server; returns once each
        has logged the reload (the change is then in force)."""
        self._write_auth()
        before = []
        for proc, log in self.servers:
            with open(log, errors="replace") as f:
                before.append(f.read().count("Reloaded server configuration"))
            proc.send_signal(signal.SIGHUP)
        for (proc, log), n in zip(self.servers, before):
            self._wait_log(proc, log, "Reloaded server configuration", n + 1)

    def remove_member(self, handle):
        del self.members[handle]
        self._reload()

    def remove_from_room(self, handle, room):
        self.members[handle][1].discard(room)
        self._reload()

    def urls(self):
        return ["nats://127.0.0.1:%d" % self.port]

    def tls_url(self):
        return "tls://localhost:%d" % self.tls_port

    def logs(self):
        out = []
        for _, log in self.servers:
            with open(log, errors="replace") as f:
                out.append("----- %s -----\n%s" % (log, f.read()[-4000:]))
        return "\n".join(out)

    def stop(self):
        for proc, _ in self.servers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class Membershipd:
    """The bus embedded in membershipd, provisioned through the HTTP API.

    A plain node serves every case but tls; a second lone node started with
    --tls-cert/--tls-key serves the tls case (its HTTP API is then HTTPS,
    which ubcluster speaks when Node.http_ca is set). With cluster=True a
    three-node cluster serves CLUSTER_CASES, one member per node."""

    name = "membershipd"

    def __init__(self, root, cluster=False):
        import ubcluster
        self.uc = ubcluster
        self.root = root
        self.binary = os.environ.get("MEMBERSHIPD")
        if not self.binary:
            raise SystemExit("test_compat: set MEMBERSHIPD to the membershipd binary "
                             "(ctest does), or use --backend nats-server")
        self.certs = make_certs(root)
        self.pending = []   # (Identity, rooms) to provision once started
        self.clusters = {}  # "plain", "tls", "three" -> ubcluster.Cluster

    def add_member(self, ident, rooms):
        self.pending.append((ident, list(rooms)))

    def _node_args(self, node, tls):
        extra = ["--bus-auth", "enforce"]
        if not hasattr(node, "bus_port"):
            # ubcluster predating the bus: pick the port here.
            node.bus_port = free_port()
            extra += ["--bus-listen", "127.0.0.1:%d" % node.bus_port]
        if tls:
            extra += ["--tls-cert", self.certs["cert"], "--tls-key", self.certs["key"]]
            node.http_ca = self.certs["ca"]
        node.extra = extra

    def _provision(self, cluster):
        leader = cluster.wait_leader(timeout=40)
        self.uc.wait_for(lambda: leader.request("GET", "/v1/me")[0] == 200,
                         timeout=30, what="the admin")

        def ok(st, j, want, what):
            if st not in want:
                raise RuntimeError("%s: HTTP %s %r" % (what, st, j))

        st, j = leader.request("POST", "/v1/rooms", json.dumps({"name": ROOM}).encode())
        ok(st, j, (201,), "create room " + ROOM)
        for ident, rooms in self.pending:
            st, j = leader.request("POST", "/v1/members", ident.member_body())
            ok(st, j, (201,), "create member " + ident.handle)
            for r in rooms:
                st, j = leader.request("PUT", "/v1/rooms/%s/members/%s" % (r, ident.handle))
                ok(st, j, (200,), "add %s to room %s" % (ident.handle, r))
        # Every node authenticates from its own copy: wait until each has
        # the last write.
        last = self.pending[-1][0].handle

        def has_last(n):
            st, j = n.request("GET", "/v1/rooms/" + ROOM)
            return st == 200 and last in j.get("members", [])
        for n in cluster.nodes:
            self.uc.wait_for(lambda n=n: has_last(n), timeout=30,
                             what="%s to see the members" % n.name)

    def start(self):
        uc = self.uc
        plain = uc.Cluster(self.binary, n=1)
        self.clusters["plain"] = plain
        self._node_args(plain.nodes[0], tls=False)
        tls = uc.Cluster(self.binary, n=1, names=["n1tls"])
        self.clusters["tls"] = tls
        self._node_args(tls.nodes[0], tls=True)
        plain.start()
        tls.start()
        self._provision(plain)
        self._provision(tls)
        self._wait_bus(plain)
        self._wait_bus(tls)

    def start_cluster(self):
        three = self.uc.Cluster(self.binary, n=3)
        self.clusters["three"] = three
        for n in three.nodes:
            self._node_args(n, tls=False)
        three.start()
        self._provision(three)
        self._wait_bus(three)

    def _wait_bus(self, cluster):
        import socket
        for n in cluster.nodes:
            port = n.bus_port

            def listening(port=port):
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            self.uc.wait_for(listening, timeout=30,
                             what="the bus of %s on port %d" % (n.name, port))

    # The removal cases run on the plain node only: change it there.
    def remove_member(self, handle):
        leader = self.clusters["plain"].wait_leader(timeout=20)
        st, j = leader.request("DELETE", "/v1/members/" + handle)
        if st != 200:
            raise RuntimeError("delete member %s: HTTP %s %r" % (handle, st, j))

    def remove_from_room(self, handle, room):
        leader = self.clusters["plain"].wait_leader(timeout=20)
        st, j = leader.request("DELETE", "/v1/rooms/%s/members/%s" % (room, handle))
        if st != 200:
            raise RuntimeError("take %s out of %s: HTTP %s %r" % (handle, room, st, j))

    def urls(self):
        return ["nats://127.0.0.1:%d" % self.clusters["plain"].nodes[0].bus_port]

    def cluster_urls(self):
        return ["nats://127.0.0.1:%d" % n.bus_port for n in self.clusters["three"].nodes]

    def tls_url(self):
        return "tls://localhost:%d" % self.clusters["tls"].nodes[0].bus_port

    def logs(self):
        out = []
        for c in self.clusters.values():
            for n in c.all_nodes():
                try:
                    out.append("----- log of %s -----\n%s" % (n.name, n.log()[-4000:]))
                except OSError:
                    pass
        return "\n".join(out)

    def stop(self):
        for c in self.clusters.values():
            c.close()


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------
def client_command(client):
    if client == "c":
        exe = os.environ.get("COMPAT_C")
        if not exe or not os.access(exe, os.X_OK):
            return None, ("COMPAT_C is not set to the compat_c binary (ctest sets it; "
                          "build it with: cmake --build BUILD --target compat_c)")
        return [exe], None
    node = os.environ.get("NODE") or shutil.which("node")
    if not node:
        return None, "node (Node.js) is not installed: run scripts/setup.sh"
    js = os.path.join(HERE, "js")
    if not os.path.isdir(os.path.join(js, "node_modules", "nats")):
        return None, ("tests/compat/js/node_modules is missing: run "
                      "`npm ci --prefix tests/compat/js` (scripts/setup.sh does it)")
    return [node, os.path.join(js, "compat.mjs")], None


def write_creds(root, client, idents):
    d = os.path.join(root, "creds-" + client)
    os.makedirs(d, mode=0o700, exist_ok=True)
    for role, ident in idents.items():
        with open(os.path.join(d, role + ".id"), "w") as f:
            f.write("%s %s\n" % (ident.handle, ident.pub))
        path = os.path.join(d, role + ".seed")
        with open(path, "w") as f:
            f.write(ident.seed + "\n")
        os.chmod(path, 0o600)
    return d


class Result:
    def __init__(self, client, case, variant, ok, secs, out, err, argv=()):
        self.client, self.case, self.variant = client, case, variant
        self.ok, self.secs, self.out, self.err = ok, secs, out, err
        self.argv = list(argv)

    @property
    def label(self):
        return "%s/%s%s" % (self.client, self.variant + ":" if self.variant else "", self.case)


def run_case(cmd, case, args, backend, handles, client, variant=""):
    """Runs one case; answers its READY handshake by changing membership."""
    t0 = time.time()
    env = dict(os.environ)
    if env.get("ASAN_OPTIONS"):
        # Under scripts/test.sh's fast_unwind_on_malloc=0 every malloc of
        # OpenSSL unwinds the slow way: setting up nats.c's TLS contexts
        # then takes seconds each. Leak reports keep working.
        env["ASAN_OPTIONS"] += ":fast_unwind_on_malloc=1"
    proc = subprocess.Popen(cmd + [case] + args, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=HERE, env=env)
    _PROCS.add(proc)
    lines = queue.Queue()
    out, err = [], []

    def pump(stream, sink, q=None):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            sink.append(line)
            if q is not None:
                q.put(line)
        stream.close()
        if q is not None:
            q.put(None)

    threads = [threading.Thread(target=pump, args=(proc.stdout, out, lines), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, err), daemon=True)]
    for t in threads:
        t.start()
    deadline = t0 + CASE_TIMEOUT
    harness_err = None
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.05, deadline - time.time()))
            except queue.Empty:
                harness_err = "timed out after %d s" % CASE_TIMEOUT
                break
            if line is None:
                break
            if line.startswith("READY"):
                action = line.split()[1] if len(line.split()) > 1 else ""
                role = ACTIONS.get(action)
                if role is None:
                    harness_err = "unknown handshake %r" % line
                    break
                try:
                    if action == "remove-member":
                        backend.remove_member(handles[role])
                    else:
                        backend.remove_from_room(handles[role], ROOM)
                except Exception as e:  # noqa: BLE001 - reported as the case's failure
                    harness_err = "harness could not %s: %s" % (action, e)
                    break
                proc.stdin.write(b"GO\n")
                proc.stdin.flush()
        if harness_err is None:
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                harness_err = "timed out after %d s" % CASE_TIMEOUT
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for t in threads:
            t.join(5)
        try:
            proc.stdin.close()
        except OSError:
            pass
    errtext = "".join(err)
    if harness_err:
        errtext += "harness: %s\n" % harness_err
    ok = harness_err is None and proc.returncode == 0
    if not ok and proc.returncode not in (0, None) and not harness_err and "FAIL" not in errtext:
        errtext += "exited with status %s\n" % proc.returncode
    return Result(client, case, variant, ok, time.time() - t0, "".join(out), errtext,
                  cmd + [case] + args)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["membershipd", "nats-server"], default="membershipd")
    ap.add_argument("--client", choices=["c", "js", "all"], default="all")
    ap.add_argument("--cluster", action="store_true",
                    help="also run the three-node variant (membershipd with bus routes)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case's notes")
    ap.add_argument("cases", nargs="*", metavar="CASE", help="cases to run (default: all)")
    opt = ap.parse_args()
    for c in opt.cases:
        if c not in CASES:
            ap.error("unknown case %r (cases: %s)" % (c, " ".join(CASES)))
    cases = opt.cases or CASES
    clients = ["c", "js"] if opt.client == "all" else [opt.client]
    if opt.cluster and opt.backend != "membershipd":
        ap.error("--cluster needs --backend membershipd")

    # Missing clients are failures with a clear reason, before any server.
    cmds = {}
    for client in clients:
        cmd, why = client_command(client)
        if cmd is None:
            print("FAIL %s: %s" % (client, why))
            return 1
        cmds[client] = cmd

    root = tempfile.mkdtemp(prefix="unibus-compat-")
    backend = None
    results = []
    t_start = time.time()
    try:
        backend = (NatsServer(root) if opt.backend == "nats-server"
                   else Membershipd(root, cluster=opt.cluster))
        idents, creds = {}, {}
        for client in clients:
            idents[client] = {r: ubsign.Identity("%s-%s" % (r, client)) for r in ALL_ROLES}
            for r in ROOM_ROLES:
                backend.add_member(idents[client][r], [ROOM])
        backend.start()
        if opt.cluster:
            backend.start_cluster()
        print("compat: backend %s ready in %.1f s" % (backend.name, time.time() - t_start))
        for client in clients:
            creds[client] = write_creds(root, client, idents[client])
        certs = backend.certs
        for client in clients:
            handles = {r: i.handle for r, i in idents[client].items()}
            base = ["--creds", creds[client], "--room", ROOM]
            for case in cases:
                if case == "tls":
                    args = base + ["--url", backend.tls_url(), "--ca", certs["ca"],
                                   "--wrong-ca", certs["wrong_ca"]]
                else:
                    args = base + sum((["--url", u] for u in backend.urls()), [])
                r = run_case(cmds[client], case, args, backend, handles, client)
                results.append(r)
                report(r, opt.verbose)
            if opt.cluster:
                for case in CLUSTER_CASES:
                    if opt.cases and case not in opt.cases:
                        continue
                    args = base + sum((["--url", u] for u in backend.cluster_urls()), [])
                    r = run_case(cmds[client], case, args, backend, handles, client,
                                 variant="3nodes")
                    results.append(r)
                    report(r, opt.verbose)
    except Exception:
        import traceback
        traceback.print_exc()
        if backend is not None:
            print(backend.logs())
        results.append(Result("harness", "setup", "", False, 0, "", ""))
    finally:
        failed = [r for r in results if not r.ok]
        if failed and backend is not None and not any(r.client == "harness" for r in failed):
            print(backend.logs())
        if backend is not None:
            backend.stop()
        if os.environ.get("UNIBUS_KEEP_TEST_DIRS"):
            print("compat: kept %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)

    print("\ncompat summary (backend %s, %.1f s):" % (opt.backend, time.time() - t_start))
    for r in results:
        print("  %-4s %s" % ("PASS" if r.ok else "FAIL", r.label))
    print("%d passed, %d failed" % (len(results) - len(failed), len(failed)))
    return 1 if failed or not results else 0


def report(r, verbose):
    print("%s %-28s %5.2f s" % ("PASS" if r.ok else "FAIL", r.label, r.secs))
    if not r.ok or verbose:
        for line in r.err.splitlines():
            print("    " + line)
    if not r.ok and r.argv:
        import shlex
        print("    (UNIBUS_KEEP_TEST_DIRS=1 keeps the credentials to rerun: %s)"
              % " ".join(shlex.quote(a) for a in r.argv))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
