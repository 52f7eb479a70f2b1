"""Workloads of the fault-injection harness (JEPSEN.md section 5).

Each module defines a class with the interface run.py drives:

    wl = Workload(ctx)       ctx: cluster, hist, args, log (run.py's Ctx)
    wl.start()               after the cluster has a leader, before the clients
    wl.run_op(pool, w, rng)  one operation (or group) of worker w, recorded
                             through pool.op(...) (generator.ClientPool)
    wl.stop()                after the clients stopped, before the final heal
    wl.final()               after the final heal: final reads / liveness probes
    wl.checks()              {name: {"valid": True|False|"unknown", ...}}: checks
                             the history checkers cannot do (run.py prints them
                             next to report.py's verdicts)

register    CAS register per key through the KV API
nonce       nonce uniqueness of signed control-plane requests
membership  register workload while nodes are added and removed
"""
from . import membership, nonce, register

WORKLOADS = {
    "register": register.Register,
    "nonce": nonce.Nonce,
    "membership": membership.Membership,
}
