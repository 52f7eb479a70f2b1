"""Faults for the Jepsen-style harness (JEPSEN.md sections 3 and 6).

    nem = Nemeses(cluster, log=history_log, rng=random.Random(seed))
    nem.partition.start(shape="isolate-leader")   ...   nem.partition.stop()
    nem.heal_all()                                 # undoes everything

Every nemesis has start(**options) and stop() (stop undoes what start did);
some have extra operations (Kill.restart, Clock.bump, Partition.isolate...).
Every action is reported through log(event, **detail) twice, like a Jepsen
nemesis op: phase="invoke" before, then phase="ok" (with what was done and
took_ms) or phase="fail" (with error, and the exception is re-raised). The
detail values are JSON-able (node names, numbers, lists).

Network faults are iptables rules (iptables-nft) inside the node namespaces,
in four chains of their own that INPUT/OUTPUT jump to, so each kind is
replaced or healed without touching the others; each change to a namespace
is one atomic iptables-restore --noflush:

    UB-PART-IN  (INPUT)   partitions: -s PEER -j DROP
    UB-PART-OUT (OUTPUT)  partitions: -d PEER -j DROP
    UB-LOSS     (OUTPUT)  loss:       -d PEER -m statistic ... -j DROP
    UB-DELAY    (INPUT)   delay:      -s PEER -j NFQUEUE --queue-num Q --queue-bypass

Delay is applied where packets arrive, not where they leave: a packet held
in NFQUEUE on the sender's OUTPUT is still charged to the sending socket, and
TCP Small Queues then lets only a few packets per delay period through
(measured: a 2 MB transfer with 50 ms did not finish in 10 s; netem avoids
this by orphaning packets). On the receiver's INPUT the same delay moves
20 MB in 1.6 s at 100 ms RTT.

Rules match only node addresses (10.88.0.1-4): the client namespace
(10.88.0.100) keeps reaching every node, so a client may talk to a minority
node (as in Jepsen, where that exposes stale reads).
"""
import os
import select
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cluster as _cluster  # noqa: E402

CHAINS = {  # key: (chain, built-in chain that jumps to it), in jump order
    "part-in": ("UB-PART-IN", "INPUT"),
    "part-out": ("UB-PART-OUT", "OUTPUT"),
    "loss": ("UB-LOSS", "OUTPUT"),
    "delay": ("UB-DELAY", "INPUT"),        # after UB-PART-IN: NFQUEUE ends the traversal
}


def build_tools(out_dir):
    """Builds tools/*.c into out_dir (tools/build.sh); returns out_dir."""
    r = subprocess.run(["sh", os.path.join(HERE, "tools", "build.sh"), out_dir],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError("building the jepsen tools failed:\n" + r.stdout.decode())
    return out_dir


class Firewall:
    """The UB-* chains of every node namespace."""

    def __init__(self, cluster):
        self.c = cluster
        self.lock = threading.RLock()    # re-entrant: teardown may run in a signal handler
        self._ready = set()

    def _restore_all(self, scripts):
        """scripts: {Node: [iptables-restore lines]}; one process per
        namespace, all in parallel."""
        procs = []
        for node, lines in scripts.items():
            text = "*filter\n" + "".join(l + "\n" for l in lines) + "COMMIT\n"
            p = subprocess.Popen(["ip", "netns", "exec", node.ns, "iptables-restore",
                                  "--noflush"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append((node, p, text))
        errors = []
        for node, p, text in procs:
            out, err = p.communicate(text.encode(), timeout=30)
            if p.returncode != 0:
                errors.append("%s: %s\n%s" % (node.name, err.decode().strip(), text))
        if errors:
            raise RuntimeError("iptables-restore failed: " + "; ".join(errors))

    def _ensure(self, nodes):
        todo = [n for n in nodes if n.name not in self._ready]
        if not todo:
            return
        lines = [":%s - [0:0]" % ch for ch, _ in CHAINS.values()]
        lines += ["-A %s -j %s" % (hook, ch) for ch, hook in CHAINS.values()]
        self._restore_all({n: lines for n in todo})
        self._ready.update(n.name for n in todo)

    def set(self, rules):
        """rules: {Node: {chain key: [rule, ...]}}. Each listed chain of each
        listed node is replaced by the given rules (an empty list flushes)."""
        with self.lock:
            self._ensure(list(rules))
            scripts = {}
            for node, chains in rules.items():
                lines = []
                for key, rs in chains.items():
                    ch = CHAINS[key][0]
                    lines.append("-F " + ch)
                    lines += ["-A %s %s" % (ch, r) for r in rs]
                scripts[node] = lines
            self._restore_all(scripts)

    def flush(self, keys=None, nodes=None):
        keys = list(keys or CHAINS)
        nodes = nodes or self.c.nodes
        self.set({n: {k: [] for k in keys} for n in nodes})

    def show(self, node):
        r = subprocess.run(["ip", "netns", "exec", node.ns, "iptables", "-S"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return r.stdout.decode()


class Nemesis:
    name = "nemesis"

    def __init__(self, nem):
        self.nem = nem
        self.c = nem.cluster

    def _act(self, event, fn, **detail):
        self.nem.log(event, phase="invoke", **detail)
        t0 = time.monotonic()
        try:
            res = fn() or {}
        except Exception as e:
            self.nem.log(event, phase="fail", error=repr(e),
                         took_ms=round((time.monotonic() - t0) * 1000, 1), **detail)
            raise
        out = dict(detail)
        out.update(res)
        self.nem.log(event, phase="ok", took_ms=round((time.monotonic() - t0) * 1000, 1), **out)
        return res

    @property
    def active(self):
        return False


def _names(nodes):
    return [n.name for n in nodes]


class Partition(Nemesis):
    """Replaces the current partition by a new one; stop() heals.

    shapes:
      isolate          `node` (default: a random member) cut from every other node
      isolate-leader   the current leader (a random member if none is known)
      majority-minority  members shuffled; a minority of (n-1)//2 nodes cut
                       from the majority (with 3 members = isolate a random one)
      bridge           cut the two members of `pair` (default: a random pair)
                       from each other only; the rest sees both
      groups           `groups`=[[names], ...]: nodes in different groups are cut;
                       nodes in no group keep every link
      pairs            `pairs`=[(a, b), ...]: exactly these links are cut
    mode: "drop" (silent, as a real partition) or "reject" (TCP reset: fast fail).
    """
    name = "partition"

    def __init__(self, nem):
        super().__init__(nem)
        self.cuts = set()

    @property
    def active(self):
        return bool(self.cuts)

    def plan(self, shape="isolate", node=None, pair=None, groups=None, pairs=None):
        """The set of cut links for a shape, as frozensets of two names."""
        rng = self.nem.rng
        members = self.c.member_nodes()
        if shape in ("isolate", "isolate-leader"):
            if shape == "isolate-leader":
                node = self.c.leader() or rng.choice(members)
            node = self.c.node(node) if node else rng.choice(members)
            return {frozenset((node.name, o.name)) for o in self.c.nodes if o is not node}
        if shape in ("majority-minority", "split"):
            shuffled = list(members)
            rng.shuffle(shuffled)
            k = max(1, (len(shuffled) - 1) // 2)
            groups = [_names(shuffled[:k]), _names(shuffled[k:])]
        elif shape == "bridge":
            a, b = pair or rng.sample(_names(members), 2)
            return {frozenset((self.c.node(a).name, self.c.node(b).name))}
        elif shape == "pairs":
            return {frozenset((self.c.node(a).name, self.c.node(b).name)) for a, b in pairs}
        elif shape != "groups":
            raise ValueError("unknown partition shape %r" % shape)
        cuts = set()
        for i, g in enumerate(groups):
            for h in groups[i + 1:]:
                for a in g:
                    for b in h:
                        cuts.add(frozenset((self.c.node(a).name, self.c.node(b).name)))
        return cuts

    def _apply(self, cuts, mode="drop"):
        rules = {}
        for n in self.c.nodes:
            peers = sorted(next(iter(cut - {n.name})) for cut in cuts if n.name in cut)
            # The RST that REJECT in OUTPUT makes comes back in over lo with
            # the peer's address as source: let it through.
            ins, outs = (["-i lo -j RETURN"] if peers and mode == "reject" else []), []
            for p in peers:
                ip = self.c.node(p).ip
                if mode == "reject":
                    ins.append("-s %s -p tcp -j REJECT --reject-with tcp-reset" % ip)
                    outs.append("-d %s -p tcp -j REJECT --reject-with tcp-reset" % ip)
                ins.append("-s %s -j DROP" % ip)
                outs.append("-d %s -j DROP" % ip)
            rules[n] = {"part-in": ins, "part-out": outs}
        self.nem.firewall.set(rules)
        self.cuts = set(cuts)
        return {"cuts": sorted(sorted(c) for c in cuts)}

    def start(self, shape="isolate", node=None, pair=None, groups=None, pairs=None,
              mode="drop"):
        def go():
            cuts = self.plan(shape, node=node, pair=pair, groups=groups, pairs=pairs)
            with self.nem.lock:
                return self._apply(cuts, mode)
        return self._act("partition-start", go, shape=shape, mode=mode)

    def isolate(self, node=None, mode="drop"):
        return self.start("isolate", node=node, mode=mode)

    def isolate_leader(self, mode="drop"):
        return self.start("isolate-leader", mode=mode)

    def split(self, groups=None, mode="drop"):
        """groups=None: a random majority/minority split."""
        if groups is None:
            return self.start("majority-minority", mode=mode)
        return self.start("groups", groups=groups, mode=mode)

    def bridge(self, a=None, b=None, mode="drop"):
        return self.start("bridge", pair=(a, b) if a and b else None, mode=mode)

    def stop(self):
        def go():
            with self.nem.lock:
                healed = sorted(sorted(c) for c in self.cuts)
                self.nem.firewall.flush(["part-in", "part-out"])
                self.cuts = set()
                return {"healed": healed}
        return self._act("partition-stop", go)

    heal = stop


class Flap(Nemesis):
    """A thread that alternates a partition shape (re-planned each time, so
    isolate/isolate-leader pick afresh) and healing, each phase lasting a
    uniform random time in `period` seconds. Shares the partition chains
    with Partition: do not run both at once. stop() ends it healed."""
    name = "flap"

    def __init__(self, nem):
        super().__init__(nem)
        self._thread = None
        self._stop = threading.Event()

    @property
    def active(self):
        return self._thread is not None

    def start(self, shape="isolate", period=(1.0, 2.0), mode="drop", **shape_kw):
        if self._thread:
            self.stop()
        self._stop = threading.Event()
        stop = self._stop
        part = self.nem.partition
        rng = self.nem.rng

        def loop():
            while not stop.is_set():
                try:
                    cuts = part.plan(shape, **shape_kw)
                    with self.nem.lock:
                        if stop.is_set():
                            break
                        res = part._apply(cuts, mode)
                    self.nem.log("flap-cut", phase="ok", shape=shape, **res)
                except Exception as e:
                    self.nem.log("flap-cut", phase="fail", error=repr(e))
                if stop.wait(rng.uniform(*period)):
                    break
                try:
                    with self.nem.lock:
                        part._apply(set())
                    self.nem.log("flap-heal", phase="ok")
                except Exception as e:
                    self.nem.log("flap-heal", phase="fail", error=repr(e))
                stop.wait(rng.uniform(*period))

        def go():
            self._thread = threading.Thread(target=loop, name="nemesis-flap", daemon=True)
            self._thread.start()
        return self._act("flap-start", go, shape=shape, period=list(period), mode=mode)

    def stop(self):
        def go():
            t = self._thread
            self._stop.set()
            if t:
                t.join(30)
            self._thread = None
            with self.nem.lock:
                self.nem.partition._apply(set())
        return self._act("flap-stop", go)


class Kill(Nemesis):
    """SIGKILL (and wait) nodes; stop() restarts the ones this nemesis
    killed, on their data dirs. targets: see Nemeses.targets."""
    name = "kill"

    def __init__(self, nem):
        super().__init__(nem)
        self.killed = set()

    @property
    def active(self):
        return bool(self.killed)

    def start(self, targets="one"):
        def go():
            nodes = self.nem.targets(targets, [n for n in self.c.member_nodes() if n.alive()])
            for n in nodes:
                n.kill()
                self.killed.add(n.name)
            return {"nodes": _names(nodes)}
        return self._act("kill-start", go, targets=_spec(targets))

    def kill(self, node):
        return self.start([node])

    def restart(self, node):
        """Restart one node (kill first if it runs)."""
        def go():
            n = self.c.node(node)
            n.restart()
            self.killed.discard(n.name)
            return {"pid": n.pid}
        return self._act("kill-restart", go, node=self.c.node(node).name)

    def stop(self):
        def go():
            started = []
            for name in sorted(self.killed):
                n = self.c.node(name)
                if not n.alive() and name in self.c.members:
                    n.start()
                    started.append(name)
            self.killed = set()
            return {"nodes": started}
        return self._act("kill-stop", go)


class Pause(Nemesis):
    """SIGSTOP nodes; stop() sends SIGCONT to the ones it paused."""
    name = "pause"

    def __init__(self, nem):
        super().__init__(nem)
        self.paused = set()

    @property
    def active(self):
        return bool(self.paused)

    def start(self, targets="one"):
        def go():
            pool = [n for n in self.c.member_nodes() if n.alive() and not n.paused]
            nodes = self.nem.targets(targets, pool)
            for n in nodes:
                if n.pause():
                    self.paused.add(n.name)
            return {"nodes": _names(nodes)}
        return self._act("pause-start", go, targets=_spec(targets))

    def stop(self):
        def go():
            resumed = []
            for name in sorted(self.paused):
                if self.c.node(name).resume():
                    resumed.append(name)
            self.paused = set()
            return {"nodes": resumed}
        return self._act("pause-stop", go)


class Clock(Nemesis):
    """Wall-clock faults through each node's libfaketime timestamp file
    (CLOCK_MONOTONIC stays real: DONT_FAKE_MONOTONIC=1).

    start(op="bump", targets, delta_ms): add delta_ms to the nodes' offsets
          (default delta: random +-[250, 30000] ms)
    start(op="strobe", targets, delta_ms, period_ms, duration_s): a thread
          alternates each node between offset and offset+delta every
          period_ms for duration_s, then leaves the offset as it was
    start(op="reset", targets="all"): offsets back to 0
    stop(): ends strobes, resets every node to 0.
    Signed HTTP requests carry the harness's real time and a node accepts
    them within --auth-skew (60 s): keep |offset| below that, or pass
    --auth-skew through Cluster(extra_args=...), unless 401s are wanted.
    """
    name = "clock"

    def __init__(self, nem):
        super().__init__(nem)
        self._strobes = []

    @property
    def active(self):
        return any(n.clock_offset_ms for n in self.c.nodes) or \
            any(t.is_alive() for t, _ in self._strobes)

    def start(self, op="bump", targets="one", delta_ms=None, period_ms=50, duration_s=5.0):
        if op == "bump":
            return self.bump(targets, delta_ms)
        if op == "strobe":
            return self.strobe(targets, delta_ms, period_ms, duration_s)
        if op == "reset":
            return self.reset(targets if targets != "one" else "all")
        raise ValueError("unknown clock op %r" % op)

    def _delta(self, delta_ms):
        if delta_ms is not None:
            return delta_ms
        return self.nem.rng.choice((-1, 1)) * self.nem.rng.randint(250, 30000)

    def bump(self, targets="one", delta_ms=None):
        def go():
            d = self._delta(delta_ms)
            nodes = self.nem.targets(targets, self.c.nodes)
            for n in nodes:
                n.set_clock(n.clock_offset_ms + d)
            return {"nodes": _names(nodes), "delta_ms": d,
                    "offsets_ms": {n.name: n.clock_offset_ms for n in nodes}}
        return self._act("clock-bump", go, targets=_spec(targets))

    def strobe(self, targets="one", delta_ms=None, period_ms=50, duration_s=5.0):
        def go():
            d = self._delta(delta_ms)
            nodes = self.nem.targets(targets, self.c.nodes)
            stop = threading.Event()
            base = {n.name: n.clock_offset_ms for n in nodes}

            def loop():
                end = time.monotonic() + duration_s
                on = False
                while not stop.is_set() and time.monotonic() < end:
                    on = not on
                    for n in nodes:
                        n.set_clock(base[n.name] + (d if on else 0))
                    stop.wait(period_ms / 1000.0)
                for n in nodes:
                    n.set_clock(base[n.name])
            t = threading.Thread(target=loop, name="nemesis-strobe", daemon=True)
            t.start()
            self._strobes.append((t, stop))
            return {"nodes": _names(nodes), "delta_ms": d, "period_ms": period_ms,
                    "duration_s": duration_s}
        return self._act("clock-strobe", go, targets=_spec(targets))

    def _end_strobes(self):
        for t, stop in self._strobes:
            stop.set()
        for t, _ in self._strobes:
            t.join(10)
        self._strobes = []

    def reset(self, targets="all"):
        def go():
            nodes = self.nem.targets(targets, self.c.nodes)
            for n in nodes:
                n.set_clock(0)
            return {"nodes": _names(nodes)}
        return self._act("clock-reset", go, targets=_spec(targets))

    def stop(self):
        def go():
            self._end_strobes()
            for n in self.c.nodes:
                n.set_clock(0)
        return self._act("clock-stop", go)


def _links(c, links, symmetric, pool=None):
    """Directed (src Node, dst Node) pairs; default every ordered pair of
    distinct nodes of the pool (default all nodes, spares included)."""
    pool = pool or c.nodes
    if links is None:
        return [(a, b) for a in pool for b in pool if a is not b]
    out = []
    for a, b in links:
        a, b = c.node(a), c.node(b)
        out.append((a, b))
        if symmetric:
            out.append((b, a))
    seen, res = set(), []
    for a, b in out:
        if (a.name, b.name) not in seen:
            seen.add((a.name, b.name))
            res.append((a, b))
    return res


class Loss(Nemesis):
    """Random packet loss on node-to-node links (iptables statistic, applied
    on the sender's OUTPUT). start(prob=0.1, links=None, symmetric=True):
    links [(a, b), ...]; default every link in both directions. Replaces
    any previous loss; stop() removes it."""
    name = "loss"

    def __init__(self, nem):
        super().__init__(nem)
        self.links = []

    @property
    def active(self):
        return bool(self.links)

    def start(self, prob=0.1, links=None, symmetric=True):
        def go():
            pairs = _links(self.c, links, symmetric)
            rules = {n: {"loss": []} for n in self.c.nodes}
            for a, b in pairs:
                rules[a]["loss"].append("-d %s -m statistic --mode random --probability %.4f -j DROP"
                                        % (b.ip, prob))
            with self.nem.lock:
                self.nem.firewall.set(rules)
            self.links = [[a.name, b.name] for a, b in pairs]
            return {"links": self.links}
        return self._act("loss-start", go, prob=prob)

    def stop(self):
        def go():
            with self.nem.lock:
                self.nem.firewall.flush(["loss"])
            self.links = []
        return self._act("loss-stop", go)


class Delay(Nemesis):
    """Latency on node-to-node links with tools/nfqdelay: for every directed
    link (src, dst), an nfqdelay bound to queue src.index in dst's namespace
    and an INPUT rule -s src -j NFQUEUE --queue-bypass there (receiver side:
    see the module doc on TCP Small Queues). ms +- jitter_ms per
    packet, FIFO (no reordering), drop_pct percent dropped. A link delayed
    both ways adds 2*ms to a round trip (a TCP connect costs ~2*ms).
    start(ms=50, jitter_ms=0, drop_pct=0, links=None, symmetric=True)
    replaces any previous delay; stop() removes the rules, then stops the
    delayers (they release what they hold)."""
    name = "delay"

    def __init__(self, nem):
        super().__init__(nem)
        self.procs = []
        self.links = []

    @property
    def active(self):
        return bool(self.procs)

    def _spawn(self, src, dst, ms, jitter_ms, drop_pct):
        tool = self.nem.tool("nfqdelay")
        logp = os.path.join(self.c.out_dir, "logs", "nfqdelay-%s-%s.log" % (src.name, dst.name))
        errf = open(logp, "ab")
        try:
            p = subprocess.Popen(["ip", "netns", "exec", dst.ns, tool, str(src.index),
                                  "%g" % ms, "%g" % jitter_ms, "%g" % drop_pct],
                                 stdout=subprocess.PIPE, stderr=errf,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            errf.close()
        self.c.register_tool(p)
        r, _, _ = select.select([p.stdout], [], [], 5.0)
        line = p.stdout.readline() if r else b""
        if line.strip() != b"ready":
            p.kill()
            p.wait()
            raise RuntimeError("nfqdelay %s->%s did not start (see %s)" % (src.name, dst.name, logp))
        return p

    def start(self, ms=50, jitter_ms=0, drop_pct=0, links=None, symmetric=True):
        def go():
            if self.procs:
                self._stop()
            pairs = _links(self.c, links, symmetric)
            rules = {n: {"delay": []} for n in self.c.nodes}
            try:
                for a, b in pairs:
                    self.procs.append(self._spawn(a, b, ms, jitter_ms, drop_pct))
                    rules[b]["delay"].append("-s %s -j NFQUEUE --queue-num %d --queue-bypass"
                                             % (a.ip, a.index))
                with self.nem.lock:
                    self.nem.firewall.set(rules)
            except BaseException:
                self._stop()
                raise
            self.links = [[a.name, b.name] for a, b in pairs]
            return {"links": self.links}
        return self._act("delay-start", go, ms=ms, jitter_ms=jitter_ms, drop_pct=drop_pct)

    def _stop(self):
        with self.nem.lock:
            self.nem.firewall.flush(["delay"])
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        bad = []
        for p in self.procs:
            try:
                rc = p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            if rc != 0:
                bad.append(rc)
            if p.stdout:
                p.stdout.close()
        self.procs = []
        self.links = []
        return bad

    def stop(self):
        def go():
            bad = self._stop()
            return {"tool_exit_errors": bad} if bad else {}
        return self._act("delay-stop", go)


class Membership(Nemesis):
    """One membership change per call, through the cluster API, never below
    3 voters. start(op=None|"add"|"remove", node=None): add joins a spare
    (default the first non-member) and promotes it to voter; remove takes a
    member (default a random one) out, kills it and moves its data aside.
    op=None: add if a spare exists, else remove. stop() reverts to the
    initial voters (adds back first, then removes)."""
    name = "membership"

    @property
    def active(self):
        return sorted(self.c.members) != sorted(self.c.initial_voters)

    def start(self, op=None, node=None):
        if op is None:
            op = "add" if self.c.spare_nodes() else "remove"
        if op == "add":
            return self.add(node)
        if op == "remove":
            return self.remove(node)
        raise ValueError("unknown membership op %r" % op)

    def add(self, node=None):
        def go():
            n = self.c.add_spare(node)
            return {"node": n.name, "members": list(self.c.members)}
        return self._act("membership-add", go, node=_spec(node))

    def remove(self, node=None):
        def go():
            n = self.c.node(node) if node else self.nem.rng.choice(self.c.member_nodes())
            self.c.remove(n)
            return {"node": n.name, "members": list(self.c.members)}
        return self._act("membership-remove", go, node=_spec(node))

    def stop(self):
        def go():
            for name in self.c.initial_voters:
                if name not in self.c.members:
                    self.c.add_spare(name)
            for name in list(self.c.members):
                if name not in self.c.initial_voters:
                    self.c.remove(name)
            return {"members": list(self.c.members)}
        return self._act("membership-stop", go)


def _spec(x):
    """A targets spec as something JSON-able for the log."""
    if x is None or isinstance(x, (str, int, float)):
        return x
    if hasattr(x, "name"):
        return x.name
    try:
        return [_spec(y) for y in x]
    except TypeError:
        return repr(x)


class Nemeses:
    """All nemeses of one cluster, sharing a lock, the rng and the log."""

    def __init__(self, cluster, log=None, rng=None, tools_dir=None):
        self.cluster = cluster
        self._log = log or (lambda event, **detail: None)
        self.rng = rng or cluster.rng
        self.lock = threading.RLock()
        self.tools_dir = tools_dir
        self.firewall = Firewall(cluster)
        self.partition = Partition(self)
        self.flap = Flap(self)
        self.kill = Kill(self)
        self.pause = Pause(self)
        self.clock = Clock(self)
        self.loss = Loss(self)
        self.delay = Delay(self)
        self.membership = Membership(self)
        self.firewall.flush()         # makes the chains in every namespace
        cluster.on_teardown(self._teardown)

    def all(self):
        return {n.name: n for n in (self.partition, self.flap, self.kill, self.pause,
                                    self.clock, self.loss, self.delay, self.membership)}

    def log(self, event, **detail):
        try:
            self._log(event, **detail)
        except Exception:
            pass

    def tool(self, name):
        if self.tools_dir is None:
            self.tools_dir = build_tools(os.path.join(self.cluster.out_dir, "tools"))
        path = os.path.join(self.tools_dir, name)
        if not os.access(path, os.X_OK):
            build_tools(self.tools_dir)
        return path

    def targets(self, spec, pool):
        """Nodes for a spec, from pool (list of Nodes): "one"/"random"/None
        (one random), "leader" (the current leader, else a random one),
        "followers" (all but the leader), "minority" ((n-1)//2, at least
        1), "majority" (n//2+1), "all", a name, a Node, or a list of those."""
        pool = list(pool)
        rng = self.rng
        if spec is None or spec in ("one", "random"):
            return [rng.choice(pool)] if pool else []
        if spec == "all":
            return pool
        if spec in ("leader", "followers"):
            ld = self.cluster.leader()
            if spec == "leader":
                if ld is not None and ld in pool:
                    return [ld]
                return [rng.choice(pool)] if pool else []
            return [n for n in pool if n is not ld]
        if spec == "minority":
            return rng.sample(pool, max(1, (len(pool) - 1) // 2)) if pool else []
        if spec == "majority":
            return rng.sample(pool, min(len(pool), len(pool) // 2 + 1))
        if isinstance(spec, (str, _cluster.Node)):
            return [self.cluster.node(spec)]
        return [self.cluster.node(s) for s in spec]

    def heal_all(self, restart=True, revert_membership=False):
        """Undoes every fault: stops flapping and strobes, SIGCONT every
        paused node, flushes every UB-* chain, stops the delayers, resets
        every clock, and (restart=True) starts every member that is not
        running. revert_membership=True also goes back to the initial
        voters (needs a working cluster: done last)."""
        def go():
            done = {}
            if self.flap.active:
                self.flap.stop()
            self.clock._end_strobes()
            done["resumed"] = [n.name for n in self.cluster.nodes if n.paused and n.resume()]
            self.kill.killed, self.pause.paused = set(), set()
            with self.lock:
                self.firewall.flush()
                self.partition.cuts = set()
                self.loss.links = []
            done["delay_tool_errors"] = self.delay._stop()
            for n in self.cluster.nodes:
                n.set_clock(0)
            started = []
            if restart:
                for n in self.cluster.member_nodes():
                    if not n.alive():
                        n.start()
                        started.append(n.name)
            done["restarted"] = started
            if revert_membership and self.membership.active:
                self.membership.stop()
            return done
        return self.partition._act("heal-all", go)

    def _teardown(self):
        """Cluster teardown: stop threads and delayers (no restarts)."""
        self.flap._stop.set()
        self.clock._end_strobes()
        try:
            self.delay._stop()
        except Exception:
            pass
