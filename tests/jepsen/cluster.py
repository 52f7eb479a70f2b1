"""Real membershipd nodes in network namespaces, for the Jepsen-style harness.

Topology (JEPSEN.md section 3), for a run prefix P (e.g. "ub1234"):

    P-br   bridge namespace holding br0; every other namespace has one veth
           (eth0) whose peer (v-NAME) is a port of br0
    P-n1.. one namespace per node, node i at 10.88.0.i (n4 = the spare)
    P-c    the client namespace, 10.88.0.100 (harness clients)

10.88.0.0/24 exists only inside these namespaces: the root namespace has no
route to it and nothing forwards out. Nemesis rules (nemesis.py) match only
node addresses, so the client namespace always reaches every node.

How the harness runs its clients inside the client namespace
-------------------------------------------------------------
Network namespaces are per *thread* on Linux and a new thread inherits the
namespace of the thread that creates it. So:

* Recommended: right after constructing the Cluster, call
  ``cluster.enter_client_ns()`` in the main thread *before creating any
  client thread*. The main thread and every thread it creates from then on
  open their sockets in the client namespace, so plain ``socket`` /
  ``http.client`` code (client_kv.py, client_bus.py) just works.
  Subprocesses still work: everything that must run elsewhere goes through
  ``ip netns exec`` (nodes, iptables, nfqdelay), and ``ip netns add/del``
  does not care which namespace the caller is in.
* Or create client threads with ``cluster.client_thread(target, ...)`` (a
  threading.Thread that enters the namespace first), or run one function
  with ``cluster.run_in_clients(fn, *args)``.
* Cluster's own helpers (``http_request``, ``health``, ``leader``,
  ``wait_leader``, membership) work from *any* thread: they open their
  sockets in the client namespace through ``client_socket()``, which switches
  only the calling thread for the socket() call and switches it back.
* A separate process can be run there with ``cluster.client_exec(argv)``.

Everything is undone by ``teardown()``: registered with atexit and on
SIGINT/SIGTERM/SIGHUP, idempotent. A harness killed with SIGKILL leaves its
namespaces (and the nodes in them); the next Cluster (or
``/usr/bin/python3 tests/jepsen/cluster.py --sweep``) removes namespaces whose
owning harness is gone, killing the processes inside them.
"""
import atexit
import base64
import ctypes
import glob
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
import ubsign  # noqa: E402

SUBNET = "10.88.0"
CLIENT_IP = SUBNET + ".100"
HTTP_PORT = 8470
ROUTE_PORT = 6250
BUS_PORT = 4250
OWNER_DIR = "/run/unibus-jepsen"
NS_RE = re.compile(r"^(ub\d{1,4})-(br|c|n\d+)$")
CLONE_NEWNET = 0x40000000
# Certificates are made with the clock moved back this far, so a node whose
# clock the nemesis moves back still finds them valid (notBefore).
CERT_BACKDATE = "-2d"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


def _thread_ns_ino():
    return os.stat("/proc/thread-self/ns/net").st_ino


def _run(argv, input=None, check=True, timeout=30):
    r = subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                               r.stderr.decode(errors="replace").strip()))
    return r


def netns_list():
    r = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.decode().splitlines() if line.strip()]


def netns_pids(ns):
    r = _run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in r.stdout.split()]


def _proc_start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _marker(prefix):
    return os.path.join(OWNER_DIR, prefix + ".owner")


def _owner_alive(prefix):
    try:
        with open(_marker(prefix)) as f:
            pid, start = f.read().split()
    except (OSError, ValueError):
        return False
    return _proc_start_time(int(pid)) == start


def _kill_ns_processes(ns, deadline=5.0):
    """SIGKILLs, by pid, every process inside one of our namespaces and waits
    (by polling /proc: they are not our children) until they are gone.
    Never ourselves: the harness may live in its client namespace."""
    pids = [p for p in netns_pids(ns) if p != os.getpid()]
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        left = [p for p in pids if os.path.exists("/proc/%d" % p)
                and _proc_state(p) not in ("Z", None)]
        if not left:
            return []
        time.sleep(0.02)
    return left


def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def sweep(keep_prefix=None, say=None):
    """Deletes namespaces named like ours (ubNNNN-{br,c,nK}) whose owning
    harness process is gone, after killing the processes inside them.
    Namespaces of a live run (its owner marker names a live pid) are left
    alone. Returns the deleted names."""
    deleted = []
    for ns in netns_list():
        m = NS_RE.match(ns)
        if not m or m.group(1) == keep_prefix or _owner_alive(m.group(1)):
            continue
        left = _kill_ns_processes(ns)
        if left and say:
            say("sweep: processes %s in %s did not die" % (left, ns))
        _run(["ip", "netns", "del", ns], check=False)
        deleted.append(ns)
    # Markers of runs that are gone.
    for path in glob.glob(os.path.join(OWNER_DIR, "ub*.owner")):
        prefix = os.path.basename(path)[:-len(".owner")]
        if prefix != keep_prefix and not _owner_alive(prefix):
            try:
                os.unlink(path)
            except OSError:
                pass
    if deleted and say:
        say("sweep: deleted stale namespaces %s" % " ".join(deleted))
    return deleted


def _faketime_lib(name="libfaketimeMT.so.1"):
    for d in ["/usr/lib/x86_64-linux-gnu/faketime"] + glob.glob("/usr/lib/*/faketime"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    raise RuntimeError("libfaketime not found (apt-get install libfaketime)")


class _NsHTTPConnection(http.client.HTTPConnection):
    def __init__(self, cluster, host, port, timeout):
        super().__init__(host, port, timeout=timeout)
        self._cluster = cluster

    def connect(self):
        self.sock = self._cluster.connect((self.host, self.port), self.timeout)


class Node:
    """One membershipd in its own namespace. The process is
    ``ip netns exec NS membershipd ...`` (ip execs, so Popen's pid is the
    node's). State transitions are under self.lock."""

    def __init__(self, cluster, index, name):
        self.cluster = cluster
        self.index = index
        self.name = name
        self.ip = "%s.%d" % (SUBNET, index)
        self.ns = "%s-%s" % (cluster.prefix, name)
        self.http_port = HTTP_PORT
        self.route_port = ROUTE_PORT
        self.bus_port = BUS_PORT
        self.data_dir = os.path.join(cluster.out_dir, "data", name)
        self.log_path = os.path.join(cluster.out_dir, "logs", name + ".log")
        self.clock_file = os.path.join(cluster.out_dir, "clock", name + ".faketime")
        self.clock_offset_ms = 0.0
        self.proc = None
        self.paused = False
        self._expect_exit = False
        self._logf = None
        self.exits = []       # every exit: {pid, rc, expected, how, t}
        self.starts = 0
        self.lock = threading.RLock()

    def __repr__(self):
        return "<Node %s %s %s>" % (self.name, self.ip,
                                    "up" if self.alive() else "down")

    # -- addresses ---------------------------------------------------------
    @property
    def route(self):
        return "%s:%d" % (self.ip, self.route_port)

    @property
    def http_addr(self):
        return (self.ip, self.http_port)

    @property
    def bus_addr(self):
        return (self.ip, self.bus_port)

    @property
    def bus_url(self):
        return "nats://%s:%d" % (self.ip, self.bus_port)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    # -- process -----------------------------------------------------------
    def args(self):
        c = self.cluster
        peers = [n for n in c.member_nodes() if n is not self]
        certs = c.certs
        a = [c.binary, "--name", self.name, "--data-dir", self.data_dir,
             "--http-listen", "%s:%d" % (self.ip, self.http_port),
             "--bus-listen", "%s:%d" % (self.ip, self.bus_port),
             "--route-listen", self.route,
             "--routes", ",".join("nats://" + p.route for p in peers),
             "--route-tls-cert", os.path.join(certs, self.name, "route.crt"),
             "--route-tls-key", os.path.join(certs, self.name, "route.key"),
             "--route-tls-ca", os.path.join(certs, "cluster-ca.crt"),
             "--cluster-pass-file", os.path.join(certs, "cluster.pass"),
             "--bootstrap-admin", "admin=" + c.admin.pub,
             "--bus-auth", "enforce",
             "--election-timeout-ms", str(c.election_ms),
             "--heartbeat-ms", str(c.heartbeat_ms)]
        if c.snapshot_threshold is not None:
            a += ["--snapshot-threshold", str(c.snapshot_threshold)]
        if c.snapshot_trailing is not None:
            a += ["--snapshot-trailing", str(c.snapshot_trailing)]
        return a + list(c.extra_args)

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("UNIBUS_", "FAKETIME", "LD_PRELOAD"))}
        env.update({"LD_PRELOAD": self.cluster.faketime_lib,
                    "FAKETIME_TIMESTAMP_FILE": self.clock_file,
                    "FAKETIME_NO_CACHE": "1",
                    "DONT_FAKE_MONOTONIC": "1"})
        return env

    def start(self):
        """Starts the node (same data dir as before, if any). Its --routes
        name the other current members (cluster.members)."""
        with self.lock:
            if self.alive():
                raise RuntimeError("%s is already running" % self.name)
            if self.proc is not None:            # exited, not recorded yet
                self._record_exit(self.proc.returncode, False, "exited")
            self._close_log()
            os.makedirs(self.data_dir, exist_ok=True)
            if not os.path.exists(self.clock_file):
                self.set_clock(self.clock_offset_ms)
            argv = ["ip", "netns", "exec", self.ns] + self.args()
            self._logf = open(self.log_path, "ab")
            self._logf.write(("=== harness: start #%d of %s at %s: %s\n" % (
                self.starts + 1, self.name, time.strftime("%Y-%m-%dT%H:%M:%S"),
                " ".join(argv))).encode())
            self._logf.flush()
            self.proc = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env(),
                                         start_new_session=True)
            self._expect_exit = False
            self.paused = False
            self.starts += 1
        self.cluster._event("node-start", node=self.name, pid=self.proc.pid)
        return self

    def _record_exit(self, rc, expected, how):
        ex = {"node": self.name, "pid": self.proc.pid if self.proc else None, "rc": rc,
              "expected": expected, "how": how, "t": time.monotonic_ns()}
        self.exits.append(ex)
        self.proc = None
        self.paused = False
        self._close_log()
        if not expected:
            self.cluster._unexpected(ex)
        return ex

    def _close_log(self):
        if self._logf:
            self._logf.close()
            self._logf = None

    def kill(self):
        """SIGKILL and wait. Returns the exit status (None if not running)."""
        with self.lock:
            if self.proc is None:
                return None
            if self.proc.poll() is not None:        # died on its own before
                return self._record_exit(self.proc.returncode, False, "exited")["rc"]
            self._expect_exit = True
            self.proc.kill()
            rc = self.proc.wait()
            self._record_exit(rc, True, "kill")
            return rc

    def stop(self, timeout=20):
        """SIGTERM (SIGCONT too if paused) and wait; a node that does not
        exit in `timeout` s is killed. A non-zero status (or a hang) after
        SIGTERM counts as an unexpected exit. Returns the status or "hung"."""
        with self.lock:
            if self.proc is None:
                return None
            if self.proc.poll() is not None:
                return self._record_exit(self.proc.returncode, False, "exited")["rc"]
            self._expect_exit = True
            self.proc.send_signal(signal.SIGTERM)
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = "hung"
            self._record_exit(rc, rc == 0, "stop")
            return rc

    def pause(self):
        with self.lock:
            if not self.alive():
                return False
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True
            return True

    def resume(self):
        with self.lock:
            if not self.alive():
                self.paused = False
                return False
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False
            return True

    def alive(self):
        """Running (paused counts as running). A reaped zombie is dead."""
        p = self.proc
        return p is not None and p.poll() is None

    def restart(self, wipe=False):
        """Kill if running, then start on the same data dir (wipe=True moves
        the data dir aside first; only for a node that is not a voter)."""
        self.kill()
        if wipe:
            self.wipe()
        return self.start()

    def wipe(self):
        """Moves the data dir aside (kept for the report) so the node starts
        empty. Never wipe a voter in place (docs/operations.md)."""
        with self.lock:
            if self.alive():
                raise RuntimeError("wipe of running node %s" % self.name)
            if os.path.exists(self.data_dir):
                k = 1
                while os.path.exists("%s.old%d" % (self.data_dir, k)):
                    k += 1
                os.rename(self.data_dir, "%s.old%d" % (self.data_dir, k))

    def _check_exit(self):
        """Non-blocking: records an exit nobody asked for."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            p = self.proc
            if p is not None and not self._expect_exit and p.poll() is not None:
                self._record_exit(p.returncode, False, "exited")
        finally:
            self.lock.release()

    # -- clock ---------------------------------------------------------------
    def set_clock(self, offset_ms):
        """Sets the node's wall-clock offset (libfaketime reads the file on
        every time call: FAKETIME_NO_CACHE=1). CLOCK_MONOTONIC is real."""
        tmp = self.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%+.3f\n" % (offset_ms / 1000.0))
        os.rename(tmp, self.clock_file)
        self.clock_offset_ms = offset_ms

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Cluster:
    """Namespaces, certificates and node objects; nodes are not started until
    start(). nodes/spares: n1..n<nodes> are the initial voters, the spares
    (n<nodes+1>..) only join through add_spare()."""

    def __init__(self, binary, out_dir, nodes=3, spares=1, seed=None,
                 election_ms=800, heartbeat_ms=100, log=None,
                 snapshot_threshold=None, snapshot_trailing=None, extra_args=(),
                 handle_signals=True):
        self.binary = os.path.abspath(binary)
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError("no membershipd at %s" % self.binary)
        self.out_dir = os.path.abspath(out_dir)
        self.election_ms = election_ms
        self.heartbeat_ms = heartbeat_ms
        self.snapshot_threshold = snapshot_threshold
        self.snapshot_trailing = snapshot_trailing
        self.extra_args = list(extra_args)
        self.seed = seed if seed is not None else random.randrange(1 << 32)
        self.rng = random.Random(self.seed)
        self._log = log or (lambda event, **detail: None)
        self._lock = threading.RLock()
        self._torn_down = False
        self._tearing = False
        self._tools = []
        self._teardown_hooks = []
        self._unexpected_exits = []
        self._client_fd = None
        self.faketime_lib = _faketime_lib()
        for d in ("data", "logs", "clock"):
            os.makedirs(os.path.join(self.out_dir, d), exist_ok=True)

        self.prefix = self._alloc_prefix()
        atexit.register(self.teardown)
        if handle_signals and threading.current_thread() is threading.main_thread():
            self._prev_handlers = {}
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) != signal.SIG_IGN:   # e.g. SIGINT of a background job
                    self._prev_handlers[sig] = signal.signal(sig, self._on_signal)
        sweep(keep_prefix=self.prefix, say=lambda m: self._event("sweep", message=m))

        self.bridge_ns = self.prefix + "-br"
        self.client_ns = self.prefix + "-c"
        names = ["n%d" % i for i in range(1, nodes + spares + 1)]
        self.nodes = [Node(self, i + 1, nm) for i, nm in enumerate(names)]
        self.members = names[:nodes]           # the configuration, as we made it
        self.initial_voters = list(self.members)
        self.admin = ubsign.Identity("admin")
        try:
            self.certs = os.path.join(self.out_dir, "certs")
            self._make_certs(names)
            self._make_network()
        except BaseException:
            self.teardown()
            raise
        self._watch_stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="cluster-watch", daemon=True)
        self._watcher.start()

    # -- setup ---------------------------------------------------------------
    def _alloc_prefix(self):
        os.makedirs(OWNER_DIR, exist_ok=True)
        existing = netns_list()
        base = os.getpid() % 10000
        me = "%d %s" % (os.getpid(), _proc_start_time(os.getpid()))
        for k in range(10000):
            p = "ub%d" % ((base + k) % 10000)
            if any(n.startswith(p + "-") for n in existing) and _owner_alive(p):
                continue
            if _owner_alive(p):
                continue
            try:
                os.unlink(_marker(p))           # stale marker of a dead run
            except FileNotFoundError:
                pass
            try:
                fd = os.open(_marker(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            os.write(fd, me.encode())
            os.close(fd)
            # Leftovers of a dead run with the same prefix: sweep kills them.
            for ns in existing:
                if ns.startswith(p + "-"):
                    _kill_ns_processes(ns)
                    _run(["ip", "netns", "del", ns], check=False)
            return p
        raise RuntimeError("no free namespace prefix")

    def _make_certs(self, names):
        env = dict(os.environ, LD_PRELOAD=_faketime_lib("libfaketime.so.1"),
                   FAKETIME=CERT_BACKDATE, DONT_FAKE_MONOTONIC="1")
        env.pop("FAKETIME_TIMESTAMP_FILE", None)
        r = subprocess.run([os.path.join(SRC, "deploy/cluster/generate-cluster-certs.sh"),
                            "--out", self.certs] + names, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError("generate-cluster-certs.sh failed: " + r.stdout.decode())

    def _make_network(self):
        ipr = lambda *a: _run(["ip"] + list(a))  # noqa: E731
        br = self.bridge_ns
        ipr("netns", "add", br)
        ipr("-n", br, "link", "add", "br0", "type", "bridge")
        ipr("-n", br, "link", "set", "br0", "up")
        ipr("-n", br, "link", "set", "lo", "up")
        ends = [(n.ns, n.ip, "v-" + n.name) for n in self.nodes]
        ends.append((self.client_ns, CLIENT_IP, "v-c"))
        for ns, ip, port in ends:
            ipr("netns", "add", ns)
            ipr("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
                "netns", br)
            ipr("-n", br, "link", "set", port, "master", "br0")
            ipr("-n", br, "link", "set", port, "up")
            ipr("-n", ns, "addr", "add", ip + "/24", "dev", "eth0")
            ipr("-n", ns, "link", "set", "eth0", "up")
            ipr("-n", ns, "link", "set", "lo", "up")
        self._client_fd = os.open("/run/netns/" + self.client_ns, os.O_RDONLY)
        self._client_ino = os.fstat(self._client_fd).st_ino
        if self.root_has_route():
            self._event("warning", message="the root namespace has a route to %s.0/24 "
                        "(not ours)" % SUBNET)

    @staticmethod
    def root_has_route():
        """True if the root namespace (pid 1's) has a route, other than a
        default route, covering the test subnet. It must not."""
        import ipaddress
        r = subprocess.run(["nsenter", "--net=/proc/1/ns/net", "ip", "-4", "route", "show",
                            "table", "all"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ours = ipaddress.ip_network(SUBNET + ".0/24")
        for line in r.stdout.decode().splitlines():
            words = line.split()
            if words and words[0] in ("local", "broadcast", "unicast", "unreachable",
                                      "blackhole", "prohibit", "throw", "multicast"):
                words = words[1:]
            if not words or words[0] == "default":
                continue
            try:
                net = ipaddress.ip_network(words[0], strict=False)
            except ValueError:
                continue
            if net.prefixlen > 0 and net.overlaps(ours):
                return True
        return False

    # -- events, exits -------------------------------------------------------
    def _event(self, event, **detail):
        try:
            self._log(event, **detail)
        except Exception:  # the harness's logger must not break the cluster
            pass

    def _unexpected(self, ex):
        with self._lock:
            self._unexpected_exits.append(ex)
        self._event("node-exit-unexpected", **{k: v for k, v in ex.items() if k != "t"})

    def _watch(self):
        while not self._watch_stop.wait(0.2):
            for n in self.nodes:
                n._check_exit()

    def unexpected_exits(self):
        """Exits nobody asked for (crash, abort, exit on its own) and
        non-zero/hung exits after SIGTERM: a harness failure to report.
        List of {node, pid, rc, expected, how, t}."""
        for n in self.nodes:
            n._check_exit()
        with self._lock:
            return list(self._unexpected_exits)

    # -- nodes -----------------------------------------------------------------
    def node(self, name):
        if isinstance(name, Node):
            return name
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def member_nodes(self):
        return [self.node(nm) for nm in self.members]

    def spare_nodes(self):
        return [n for n in self.nodes if n.name not in self.members]

    def start(self, nodes=None):
        """Starts the initial members (or the given nodes)."""
        for n in (nodes or self.member_nodes()):
            self.node(n).start()
        return self

    def register_tool(self, proc):
        """A helper process (nfqdelay...) that teardown() must kill."""
        with self._lock:
            self._tools = [p for p in self._tools if p.poll() is None]
            self._tools.append(proc)
        return proc

    def on_teardown(self, fn):
        """fn() runs first in teardown() (nemesis threads stop there)."""
        self._teardown_hooks.append(fn)

    # -- client namespace ------------------------------------------------------
    def enter_client_ns(self):
        """Moves the calling thread (and threads it creates afterwards) into
        the client namespace."""
        _setns(self._client_fd)

    def in_client_ns(self):
        return _thread_ns_ino() == self._client_ino

    def client_thread(self, target, args=(), kwargs=None, name=None, daemon=True):
        """An unstarted threading.Thread that runs target in the client ns."""
        kwargs = kwargs or {}

        def run():
            self.enter_client_ns()
            target(*args, **kwargs)
        return threading.Thread(target=run, name=name, daemon=daemon)

    def run_in_clients(self, fn, *args, **kwargs):
        """Runs fn(*args, **kwargs) in a new thread inside the client
        namespace, waits, returns its result or raises its exception."""
        box = {}

        def run():
            try:
                self.enter_client_ns()
                box["r"] = fn(*args, **kwargs)
            except BaseException as e:  # noqa: B902
                box["e"] = e
        t = threading.Thread(target=run, name="client-call")
        t.start()
        t.join()
        if "e" in box:
            raise box["e"]
        return box.get("r")

    def client_socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM):
        """A socket that lives in the client namespace, from any thread."""
        if self._client_fd is None:
            raise RuntimeError("cluster torn down")
        if _thread_ns_ino() == self._client_ino:
            return socket.socket(family, type)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(self._client_fd)
            try:
                return socket.socket(family, type)
            finally:
                _setns(own)
        finally:
            os.close(own)

    def connect(self, addr, timeout=1.0):
        """TCP connection from the client namespace to addr=(ip, port)."""
        s = self.client_socket()
        try:
            s.settimeout(timeout)
            s.connect(addr)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except BaseException:
            s.close()
            raise

    def client_exec(self, argv):
        """argv prefixed to run a command in the client namespace."""
        return ["ip", "netns", "exec", self.client_ns] + list(argv)

    def ns_exec(self, node, argv):
        return ["ip", "netns", "exec", self.node(node).ns] + list(argv)

    # -- HTTP --------------------------------------------------------------------
    def http_request(self, node, method, path, body=None, ident=None, timeout=1.0,
                     headers=None):
        """One HTTP request from the client namespace to a node. Paths under
        /v1/ are signed by ident (an ubsign.Identity; default the cluster's
        admin; ident=False sends it unsigned). body: bytes, str or a
        JSON-able object. Returns (status, parsed JSON | raw bytes | None);
        network errors and timeouts raise OSError (socket.timeout is one)."""
        node = self.node(node)
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        headers = dict(headers or {})
        if path.startswith("/v1/") and ident is not False:
            ident = ident or self.admin
            headers["Authorization"] = ident.authorization(method, path, body or b"")
        conn = _NsHTTPConnection(self, node.ip, node.http_port, timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
        except http.client.HTTPException as e:
            raise ConnectionError("%s %s on %s: %r" % (method, path, node.name, e)) from e
        finally:
            conn.close()
        try:
            j = json.loads(data) if data else None
        except ValueError:
            j = data
        return r.status, j

    def kv_put(self, node, bucket, key, value, timeout=1.0, **q):
        return self.http_request(node, "PUT", _kv_path(bucket, key, **q), value, timeout=timeout)

    def kv_get(self, node, bucket, key, timeout=1.0, **q):
        """(status, value bytes or None, answer JSON)."""
        st, j = self.http_request(node, "GET", _kv_path(bucket, key, **q), timeout=timeout)
        v = base64.b64decode(j["value"]) if st == 200 and isinstance(j, dict) else None
        return st, v, j

    def health(self, node, timeout=0.5):
        """(status, /healthz JSON), or (None, None) if unreachable."""
        try:
            return self.http_request(node, "GET", "/healthz", timeout=timeout)
        except OSError:
            return None, None

    def leader_views(self, nodes=None, timeout=0.5):
        """{name: the leader it names or None} for the given nodes (default:
        live, unpaused members), asked in parallel."""
        nodes = [self.node(n) for n in nodes] if nodes else \
            [n for n in self.member_nodes() if n.alive() and not n.paused]
        views = {}

        def ask(n):
            st, j = self.health(n, timeout)
            views[n.name] = j.get("leader") if isinstance(j, dict) else None
        ts = [threading.Thread(target=ask, args=(n,)) for n in nodes]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return views

    def leader(self, nodes=None):
        """The Node most of the answering nodes name as leader, or None.
        A hint (leadership may change right after)."""
        views = self.leader_views(nodes)
        counts = {}
        for v in views.values():
            if v:
                counts[v] = counts.get(v, 0) + 1
        if not counts:
            return None
        best = sorted(counts.items(), key=lambda kv: -kv[1])
        if len(best) > 1 and best[0][1] == best[1][1]:
            return None
        try:
            n = self.node(best[0][0])
        except KeyError:
            return None
        return n if n.alive() else None

    def wait_leader(self, timeout=30, nodes=None, exclude=()):
        """Waits until every node in `nodes` (default: live, unpaused
        members) names the same live, unpaused leader that is not in
        `exclude` (names or Nodes: e.g. the old leader, to wait for a new
        one); returns it. TimeoutError."""
        exclude = {self.node(x).name for x in exclude}
        deadline = time.monotonic() + timeout
        views = {}
        while time.monotonic() < deadline:
            views = self.leader_views(nodes)
            names = set(views.values())
            if len(names) == 1 and None not in names and views:
                name = names.pop()
                try:
                    n = self.node(name)
                except KeyError:
                    n = None
                if n is not None and n.alive() and not n.paused and n.name not in exclude:
                    return n
            time.sleep(0.05)
        raise TimeoutError("no agreed leader within %ss: %r" % (timeout, views))

    # -- membership -----------------------------------------------------------
    def _admin_target(self, avoid=()):
        ld = self.leader()
        if ld is not None and ld.name not in avoid:
            return ld
        cands = [n for n in self.member_nodes()
                 if n.alive() and not n.paused and n.name not in avoid]
        if not cands:
            raise RuntimeError("no live member to send a cluster request to")
        return cands[0]

    def cluster_info(self, node=None, timeout=15):
        node = self.node(node) if node else self._admin_target()
        st, j = self.http_request(node, "GET", "/v1/cluster", timeout=timeout)
        if st != 200:
            raise RuntimeError("GET /v1/cluster on %s: %s %r" % (node.name, st, j))
        return j

    def roles(self, node=None):
        """{member name (or id when unnamed): role} from GET /v1/cluster."""
        return {m["name"] or m["id"]: m["role"] for m in self.cluster_info(node)["members"]}

    def voters(self, node=None):
        return sorted(k for k, v in self.roles(node).items() if v == "voter")

    def add_spare(self, name=None, timeout=90):
        """Starts a spare (default: the first node that is not a member) on
        an empty data dir with --routes to the members; it joins as standby
        (the cluster has its 3 voters), then POST /v1/cluster/members with
        role voter promotes it once caught up. Returns the node when it is a
        voter; raises on timeout/error (the node may then be a standby)."""
        node = self.node(name) if name else self.spare_nodes()[0]
        if node.name in self.members:
            raise RuntimeError("%s is already a member" % node.name)
        deadline = time.monotonic() + timeout
        self._event("member-add-begin", node=node.name)
        node.kill()
        node.wipe()
        node.start()
        while True:
            try:
                role = self.roles().get(node.name)
            except (OSError, RuntimeError):
                role = None
            if role in ("standby", "voter"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("%s did not join within %ss" % (node.name, timeout))
            time.sleep(0.2)
        body = {"name": node.name, "address": node.route, "role": "voter"}
        left = max(5.0, deadline - time.monotonic())
        st, j = self.http_request(self._admin_target(), "POST", "/v1/cluster/members",
                                  body, timeout=min(left, 75))
        if st != 200:
            raise RuntimeError("promoting %s: %s %r" % (node.name, st, j))
        while self.roles().get(node.name) != "voter":
            if time.monotonic() > deadline:
                raise TimeoutError("%s not a voter within %ss" % (node.name, timeout))
            time.sleep(0.2)
        with self._lock:
            if node.name not in self.members:
                self.members.append(node.name)
        self._event("member-added", node=node.name, voters=self.voters())
        return node

    def remove(self, node, timeout=75, min_voters=3):
        """DELETE /v1/cluster/members/{name} (sent to another member; removing
        the leader makes it hand over first), then waits until the
        configuration lacks it, kills it and moves its data dir aside (so the
        name can join again). Refuses to go below min_voters voters."""
        node = self.node(node)
        roles = self.roles()
        voters = [k for k, v in roles.items() if v == "voter"]
        if node.name in voters and len(voters) - 1 < min_voters:
            raise RuntimeError("refusing to remove %s: %d voters would be left (< %d)"
                               % (node.name, len(voters) - 1, min_voters))
        self._event("member-remove-begin", node=node.name)
        deadline = time.monotonic() + timeout
        target = self._admin_target(avoid=(node.name,))
        st, j = self.http_request(target, "DELETE", "/v1/cluster/members/" + node.name,
                                  timeout=timeout)
        if st != 200:
            raise RuntimeError("removing %s via %s: %s %r" % (node.name, target.name, st, j))
        with self._lock:
            if node.name in self.members:
                self.members.remove(node.name)
        while node.name in self.roles(self._admin_target(avoid=(node.name,))):
            if time.monotonic() > deadline:
                raise TimeoutError("%s still in the configuration" % node.name)
            time.sleep(0.2)
        node.kill()
        node.wipe()
        self._event("member-removed", node=node.name, voters=self.voters())
        return node

    # -- teardown -------------------------------------------------------------
    def _on_signal(self, sig, frame):
        self.teardown()
        prev = self._prev_handlers.get(sig)
        signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        if callable(prev):
            prev(sig, frame)
        else:
            os.kill(os.getpid(), sig)

    def teardown(self):
        """Stops everything we started and deletes our namespaces. Safe to
        call more than once, from atexit and from signal handlers. Output
        (logs, data, history) stays in out_dir."""
        with self._lock:
            if self._torn_down or self._tearing:
                return
            self._tearing = True
        try:
            for fn in reversed(self._teardown_hooks):
                try:
                    fn()
                except Exception as e:
                    sys.stderr.write("teardown hook %r: %r\n" % (fn, e))
            if getattr(self, "_watch_stop", None):
                self._watch_stop.set()
            for n in getattr(self, "nodes", []):
                try:
                    n.kill()
                except Exception as e:
                    sys.stderr.write("teardown: kill %s: %r\n" % (n.name, e))
            for p in self._tools:
                if p.poll() is None:
                    p.kill()
                p.wait()
            ours = [ns for ns in netns_list() if ns.startswith(self.prefix + "-")]
            for ns in ours:
                _run(["ip", "netns", "exec", ns, "iptables", "-F"], check=False)
                _run(["ip", "netns", "exec", ns, "nft", "flush", "ruleset"], check=False)
                left = _kill_ns_processes(ns)
                if left:
                    sys.stderr.write("teardown: processes %s left in %s\n" % (left, ns))
                _run(["ip", "netns", "del", ns], check=False)
            if self._client_fd is not None:
                os.close(self._client_fd)
                self._client_fd = None
            try:
                os.unlink(_marker(self.prefix))
            except OSError:
                pass
            self._event("teardown", prefix=self.prefix)
        finally:
            self._torn_down = True
            self._tearing = False

    close = teardown

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.teardown()


def _kv_path(bucket, key, **q):
    import urllib.parse
    p = "/v1/kv/" + urllib.parse.quote(bucket, safe="") + "/" + urllib.parse.quote(key, safe="/")
    if q:
        p += "?" + urllib.parse.urlencode(q)
    return p


if __name__ == "__main__":
    if sys.argv[1:] == ["--sweep"]:
        gone = sweep(say=print)
        print("swept %d namespaces" % len(gone))
    else:
        print("usage: cluster.py --sweep   (delete namespaces of dead harness runs)")
        sys.exit(2)
