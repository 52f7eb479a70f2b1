"""Checkers for the unibus fault-injection harness (JEPSEN.md sections 4 and 7).

wgl.py         linearizability (WGL search + Lowe's memo cache), per key
models.py      register/CAS, nonce test-and-set, FIFO queue
invariants.py  nonce uniqueness, availability per second, one leader per term
selftest.py    must-pass / must-fail histories and randomized tests
"""
