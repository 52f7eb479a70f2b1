"""Starts real membershipd processes on loopback for integration tests.

Each node gets its own data directory, free ports and the certificates made
by deploy/cluster/generate-cluster-certs.sh. Nothing here mocks the daemon:
tests talk HTTP to it and kill it with real signals.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

import ubsign

import atexit

_LIVE = set()


@atexit.register
def _kill_leftovers():
    """No daemon outlives the test process, whatever failed."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_USED = set()


def free_port():
    """A free loopback port below the kernel's ephemeral range.

    A port from bind(0) is an ephemeral one: between picking it and the
    daemon binding it, any outbound connection (a node dialing a peer) may
    take it as its source port, and the daemon then fails to listen."""
    import random
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError):
        low = 32768
    for _ in range(1000):
        port = random.randint(10000, low - 1)
        if port in _USED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _USED.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


class HTTPError(Exception):
    pass


class Node:
    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.http_port = free_port()
        self.route_port = free_port()
        self.bus_port = free_port()
        self.data = os.path.join(cluster.root, name)
        self.log_path = os.path.join(cluster.root, name + ".log")
        self.proc = None
        self.extra = []
        self.cert_name = name  # whose certificate this node presents
        # CA file to verify the HTTP API over TLS, for a node started with
        # --tls-cert/--tls-key in extra; None: plain HTTP.
        self.http_ca = None

    @property
    def bus_url(self):
        return "nats://127.0.0.1:%d" % self.bus_port

    @property
    def route(self):
        return "127.0.0.1:%d" % self.route_port

    def args(self):
        c = self.cluster
        a = [c.binary, "--name", self.name, "--data-dir", self.data,
             "--http-listen", "127.0.0.1:%d" % self.http_port,
             "--bus-listen", "127.0.0.1:%d" % self.bus_port,
             "--election-timeout-ms", str(c.election_ms),
             "--heartbeat-ms", str(c.heartbeat_ms),
             "--snapshot-threshold", str(c.snapshot_threshold),
             "--snapshot-trailing", str(c.snapshot_trailing)]
        if c.admin_boot and c.clustered:
            a += ["--bootstrap-admin", "admin=" + c.admin_boot.pub]
        if c.clustered:
            peers = [n.route for n in c.peers_of(self)]
            a += ["--route-listen", self.route,
                  "--routes", ",".join("nats://" + p for p in peers),
                  "--route-tls-cert", os.path.join(c.certs, self.cert_name, "route.crt"),
                  "--route-tls-key", os.path.join(c.certs, self.cert_name, "route.key"),
                  "--route-tls-ca", c.route_ca,
                  "--cluster-pass-file", os.path.join(c.certs, "cluster.pass")]
        return a + self.extra

    def start(self):
        assert self.proc is None
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.logf,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        _LIVE.add(self.proc)
        return self

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.logf.close()

    def stop(self, timeout=20):
        """SIGTERM; returns the exit status."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "hung"
        self.proc = None
        self.logf.close()
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    # -- HTTP -------------------------------------------------------------
    def request(self, method, path, body=None, timeout=30, headers=None,
                ident="admin"):
        """Sends a request signed by ident (an ubsign.Identity, "admin" for
        the cluster's admin, or None for an unsigned request)."""
        headers = dict(headers or {})
        if ident == "admin" and path.startswith("/v1/"):
            ident = self.cluster.admin()
        if ident not in (None, "admin") and path.startswith("/v1/"):
            headers["Authorization"] = ident.authorization(method, path, body or b"")
        if self.http_ca:
            import ssl
            ctx = ssl.create_default_context(cafile=self.http_ca)
            conn = http.client.HTTPSConnection("127.0.0.1", self.http_port,
                                               timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port,
                                              timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        try:
            j = json.loads(data) if data else None
        except ValueError:
            j = data
        return r.status, j

    def kv_path(self, bucket, key=None, **q):
        p = "/v1/kv/" + urllib.parse.quote(bucket, safe="")
        if key is not None:
            p += "/" + urllib.parse.quote(key, safe="/")
        if q:
            p += "?" + urllib.parse.urlencode(q)
        return p

    def put(self, bucket, key, value, timeout=30, **q):
        if isinstance(value, str):
            value = value.encode()
        return self.request("PUT", self.kv_path(bucket, key, **q), value,
                            timeout=timeout)

    def get(self, bucket, key, **q):
        return self.request("GET", self.kv_path(bucket, key, **q))

    def delete(self, bucket, key, **q):
        return self.request("DELETE", self.kv_path(bucket, key, **q))

    def health(self):
        try:
            return self.request("GET", "/healthz", timeout=2)
        except OSError:
            return None, None

    def cluster_info(self):
        return self.request("GET", "/v1/cluster", timeout=10)


class Cluster:
    def __init__(self, binary, n=3, clustered=None, election_ms=1000,
                 heartbeat_ms=100, snapshot_threshold=1024,
                 snapshot_trailing=1024, names=None, spare_names=()):
        self.binary = binary
        self.root = tempfile.mkdtemp(prefix="unibus-it-")
        self.clustered = n > 1 if clustered is None else clustered
        self.election_ms = election_ms
        self.heartbeat_ms = heartbeat_ms
        self.snapshot_threshold = snapshot_threshold
        self.snapshot_trailing = snapshot_trailing
        names = list(names or ["n%d" % (i + 1) for i in range(n)])
        # Clusters get their first admin from --bootstrap-admin; a lone node
        # makes its own key in its data directory (read by admin()).
        self.admin_boot = ubsign.Identity("admin") if self.clustered else None
        self._admin = self.admin_boot
        self.certs = os.path.join(self.root, "certs")
        self.route_ca = os.path.join(self.certs, "cluster-ca.crt")
        if self.clustered:
            subprocess.run([os.path.join(SRC, "deploy/cluster/generate-cluster-certs.sh"),
                            "--out", self.certs] + names + list(spare_names),
                           check=True, stdout=subprocess.DEVNULL)
        self.nodes = [Node(self, nm) for nm in names]
        self.extra_nodes = []

    def admin(self):
        if self._admin is None:
            path = os.path.join(self.nodes[0].data, "admin.nk")
            wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0,
                     timeout=30, what="the auto-created admin key")
            ident = ubsign.Identity.from_seed_file("admin", path)
            # The key file is written before the admin record commits.
            wait_for(lambda: self.nodes[0].request("GET", "/v1/me", ident=ident)[0] == 200,
                     timeout=30, what="the auto-created admin to be committed")
            self._admin = ident
        return self._admin

    def peers_of(self, node):
        return [n for n in self.nodes if n is not node]

    def add_node(self, name):
        """A node that is not in the others' --routes (it joins)."""
        node = Node(self, name)
        self.extra_nodes.append(node)
        return node

    def start(self):
        for n in self.nodes:
            n.start()
        return self

    def all_nodes(self):
        return self.nodes + self.extra_nodes

    def close(self, keep=False):
        for n in self.all_nodes():
            n.kill()
        if not keep and not os.environ.get("UNIBUS_KEEP_TEST_DIRS"):
            shutil.rmtree(self.root, ignore_errors=True)

    def dump_logs(self):
        for n in self.all_nodes():
            try:
                print("----- log of %s -----\n%s" % (n.name, n.log()[-6000:]))
            except OSError:
                pass

    def wait_leader(self, nodes=None, timeout=30):
        """Waits until every live node in `nodes` agrees on one leader that
        is itself live; returns the leader Node."""
        asked = list(nodes or self.nodes)
        nodes = [n for n in asked if n.alive()]
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            names = set()
            for n in nodes:
                st, j = n.health()
                last = j
                if st != 200 or not j or not j.get("leader"):
                    names.add(None)
                else:
                    names.add(j["leader"])
            if len(names) == 1 and None not in names:
                leader = names.pop()
                for n in self.all_nodes():
                    if n.name == leader and n.alive():
                        return n
            time.sleep(0.05)
        detail = []
        for n in asked:
            state = "alive" if n.alive() else "exited %r" % (n.proc.poll() if n.proc else None)
            tail = [l for l in n.log().splitlines()
                    if "route: connected" not in l and "route: accepted" not in l][-8:]
            detail.append("%s (%s):\n  %s" % (n.name, state, "\n  ".join(tail)))
        raise AssertionError("no agreed leader within %ss (last health: %r)\n%s"
                             % (timeout, last, "\n".join(detail)))


def wait_for(pred, timeout=30, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = pred()
        except OSError:
            v = None  # the node is (re)starting and not listening yet
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)
