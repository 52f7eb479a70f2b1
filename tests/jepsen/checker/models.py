"""Sequential specifications for the linearizability checker (JEPSEN.md 4.3).

A model has init() -> state and step(state, op) -> (legal, new_state); states
are hashable (they go into the WGL memo cache with the linearized bitset).

`op` is an Op (below). op.ok is False for an `info` op: its outcome is
unknown, so the model must accept it in any state, applying it the way it
would have been applied had it happened at that point. Placing it nowhere
(the search never has to place an op whose return is +inf) is "it never
happened". Info reads are dropped before the search (is_read()).
"""


def freeze(v):
    """JSON value -> hashable value (lists become tuples, dicts sorted tuples)."""
    if isinstance(v, list):
        return tuple(freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, freeze(x)) for k, x in v.items()))
    return v


class Op:
    """One operation: an invoke paired with its completion.

    value is the invoke's argument (write value, [expected, new] for cas,
    enqueue value), out the completion's result (read value, dequeued value,
    claim accepted?), both frozen. ret_t is +inf for info ops."""

    __slots__ = ("id", "i", "proc", "f", "key", "value", "out", "ok", "applied",
                 "rev", "node", "call_t", "ret_t", "ci")

    def __init__(self, id, i, proc, f, key, value, out, ok, applied, rev, node,
                 call_t, ret_t, ci):
        self.id = id            # index within its key's op list
        self.i = i              # history index of the invoke event
        self.ci = ci            # history index of the completion (None: none)
        self.proc = proc
        self.f = f
        self.key = key
        self.value = value
        self.out = out
        self.ok = ok
        self.applied = applied  # cas: True/False for ok ops, None otherwise
        self.rev = rev          # revision returned by an ok op, or None
        self.node = node
        self.call_t = call_t
        self.ret_t = ret_t

    def __getstate__(self):
        return tuple(getattr(self, s) for s in Op.__slots__)

    def __setstate__(self, st):
        for s, v in zip(Op.__slots__, st):
            setattr(self, s, v)

    def to_dict(self):
        d = {"i": self.i, "proc": self.proc, "f": self.f, "key": self.key,
             "type": "ok" if self.ok else "info", "value": self.value,
             "node": self.node, "call_t": self.call_t,
             "ret_t": None if self.ret_t == float("inf") else self.ret_t}
        if self.ok:
            d["out"] = self.out
        if self.applied is not None:
            d["applied"] = self.applied
        if self.rev is not None:
            d["rev"] = self.rev
        return d

    def __repr__(self):
        return "Op(%s)" % self.to_dict()


class Register:
    """Read/write/CAS register; state = value (None: never written).

    read: ok legal iff out == state. write v: -> v. cas [a, b]: applied:true
    legal iff state == a, -> b; applied:false legal iff state != a, unchanged;
    info: -> b if state == a, else unchanged."""

    name = "register"
    fs = ("read", "write", "cas")

    def init(self):
        return None

    def is_read(self, op):
        return op.f == "read"

    def step(self, state, op):
        f = op.f
        if f == "read":
            return (op.out == state if op.ok else True), state
        if f == "write":
            return True, op.value
        if f == "cas":
            a, b = op.value
            if not op.ok:
                return True, (b if state == a else state)
            if op.applied is False:
                return state != a, state
            return state == a, b
        raise ValueError("register model: unknown f %r" % (f,))

    def prune(self, ops):
        """Drop info writes and info CASes whose resulting value v nobody can
        have observed: no ok read returned v, no cas (ok or info) expected
        v, and no ok cas applied:false could have run after the op was
        invoked. Exact: take a linearization that places such an op; while
        the key holds v the only ops that can run are writes, info CASes
        that do not apply (drop them too) and ops that change nothing
        observable, so removing it leaves a linearization of the rest (with
        the same revisions); and "never happened" is always allowed for an
        info op. Each unobservable info op would otherwise double the
        configurations the search may visit."""
        read_vals = {op.out for op in ops if op.ok and op.f == "read"}
        expected = {op.value[0] for op in ops if op.f == "cas"}
        nack = [op.ret_t for op in ops if op.ok and op.f == "cas" and op.applied is False]
        last_nack = max(nack) if nack else None

        def unobservable(op):
            if op.f == "write":
                v = op.value
            elif op.f == "cas":
                v = op.value[1]
            else:
                return False
            return (v not in read_vals and v not in expected
                    and (last_nack is None or last_nack < op.call_t))

        return [op for op in ops if op.ok or not unobservable(op)]

    def read_only(self, op):
        """An ok op whose legal step never changes the state."""
        return op.f == "read" or (op.f == "cas" and op.applied is False)

    def priority(self, op):
        """Candidate order hint for the search: by returned revision, a
        mutation before the reads of its revision; None without a rev."""
        if op.rev is None:
            return None
        if op.f == "write" or (op.f == "cas" and op.applied is not False):
            return (op.rev, 0)
        return (op.rev, 1)

    def mutates(self, state, op):
        """Did op, stepped from state, create a new revision of the key?"""
        if op.f == "write":
            return True
        if op.f == "cas":
            return (op.applied is not False) and state == op.value[0]
        return False


class RegisterRev(Register):
    """Register whose state also tracks revisions: (value, rev, floor).

    rev is the key's current revision if known, None after an info mutation
    (then the current revision is only known to be > floor); floor is the
    largest revision that must precede the current one. A mutation's rev must
    exceed floor; a read (or cas applied:false) must return the current rev
    (or one > floor when it is unknown). Ops without a rev are unconstrained.
    Used to confirm a failed witness-order revision check (wgl.py)."""

    name = "register-rev"

    def read_only(self, op):
        return False    # a read pins an unknown revision: it changes state

    def init(self):
        return (None, 0, 0)

    def step(self, state, op):
        value, rev, floor = state
        legal, v2 = Register.step(self, value, op)
        if not legal:
            return False, state
        r = op.rev if op.ok else None
        if Register.mutates(self, value, op):
            if r is None:   # info, or ok without a revision: unknown rev > floor
                return True, (v2, None, floor)
            if r <= floor or (rev is not None and r <= rev):
                return False, state
            return True, (v2, r, r)
        if r is None:
            return True, (v2, rev, floor)
        if rev is not None:
            return r == rev, state
        if r <= floor:
            return False, state
        return True, (v2, r, r)


class Nonce:
    """Test-and-set per nonce (f "claim"); state = used?

    ok true (accepted) legal iff not used -> used; ok false (refused as
    reused) legal iff used; info -> used (accepted if it was fresh)."""

    name = "nonce"
    fs = ("claim",)

    def init(self):
        return False

    def is_read(self, op):
        return False

    def read_only(self, op):
        return op.out is not True   # a refusal

    def priority(self, op):
        """By returned revision: the accepting claim before refusals."""
        if op.rev is None:
            return None
        return (op.rev, 0 if op.out is True else 1)

    def step(self, state, op):
        if op.f != "claim":
            raise ValueError("nonce model: unknown f %r" % (op.f,))
        if not op.ok:
            return True, True
        if op.out is True:
            return (not state), True
        return state, state


class Queue:
    """FIFO queue; state = tuple of queued values (small histories only).

    enqueue x -> append; dequeue ok x legal iff head == x -> pop; dequeue ok
    None (empty) legal iff empty; info dequeue pops the head if any."""

    name = "queue"
    fs = ("enqueue", "dequeue")

    def init(self):
        return ()

    def is_read(self, op):
        return False

    def prune(self, ops):
        """Drop info enqueues whose value no ok dequeue returned. Exact: in
        any linearization that places such an enqueue, its value is never
        at the head when an ok dequeue runs, so removing it (and an info
        dequeue that took it) leaves a linearization of the rest; and "it
        never happened" is always allowed for an info op. Without this a
        phantom element multiplies the queue states the search visits."""
        seen = {op.out for op in ops if op.ok and op.f == "dequeue"}
        return [op for op in ops if op.ok or op.f != "enqueue" or op.value in seen]

    def read_only(self, op):
        return op.f == "dequeue" and op.out is None

    def step(self, state, op):
        f = op.f
        if f == "enqueue":
            return True, state + (op.value,)
        if f == "dequeue":
            if not op.ok:
                return True, state[1:]
            if op.out is None:
                return state == (), state
            if state and state[0] == op.out:
                return True, state[1:]
            return False, state
        raise ValueError("queue model: unknown f %r" % (f,))


MODELS = {
    "register": Register,
    "register-rev": RegisterRev,
    "nonce": Nonce,
    "queue": Queue,
}


def get(name):
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError("unknown model %r (have %s)" % (name, ", ".join(sorted(MODELS))))
