"""Membership change under faults (JEPSEN.md 5.4).

The register workload runs (clients use whatever nodes are members at the
time) while generator.MembershipDriver changes the configuration one step
at a time, resting 2-5 s between steps: add the spare n4 (join as
standby, promote to voter), remove a member (the leader half of the time;
it is killed and its data moved aside, so it becomes the spare), re-add
it, and so on, never going below three voters. The --nemesis faults
(partition, kill, ...) run at the same time.

Checks besides the register's:
  membership-voters  every voter list sampled after a change had >= 3 voters
  membership-final   after the final heal the configuration's voters are the
                     members the harness asked for (a node whose last change
                     ended in an error may be either way; it is reported)
"""
import random
import time

from generator import MembershipDriver
from workloads.register import Register


class Membership(Register):
    name = "membership"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.driver = ctx.membership or MembershipDriver(
            self.c, self.hist, random.Random("membership-%s" % ctx.seed), log=ctx.log)
        ctx.membership = self.driver
        self.final_config = None

    def start(self):
        self.driver.start_loop()

    def stop(self):
        # The loop stops here; a change in flight is waited for after the
        # final heal (run.py), when it can complete.
        self.driver._loop_stop.set()

    def final(self, deadline_s=30.0):
        self.final_config = self._final_config()
        super().final(deadline_s)

    def _final_config(self, deadline_s=20.0):
        c = self.c
        end = time.monotonic() + deadline_s
        voters, err = None, None
        while time.monotonic() < end:
            try:
                voters = c.voters()
                break
            except Exception as e:  # noqa: BLE001
                err = repr(e)
                time.sleep(0.5)
        if voters is None:
            return {"valid": "unknown", "error": "cannot read the configuration: %s" % err}
        wanted = sorted(c.members)
        extra = sorted(set(voters) - set(wanted))
        missing = sorted(set(wanted) - set(voters))
        uncertain = sorted(self.driver.uncertain)
        unexplained = [n for n in extra + missing if n not in uncertain]
        return {"valid": len(voters) >= 3 and not unexplained,
                "voters": voters, "members": wanted, "extra_voters": extra,
                "missing_voters": missing, "uncertain_nodes": uncertain}

    def checks(self):
        out = super().checks()
        samples = [v for _, v in self.driver.voter_samples if v is not None]
        low = [v for v in samples if len(v) < 3]
        steps = self.driver.steps
        out["membership-voters"] = {
            "valid": not low, "samples": len(samples), "below_three": low[:10],
            "changes": {"add_ok": sum(1 for s in steps if s["op"] == "add" and s["ok"]),
                        "add_failed": sum(1 for s in steps if s["op"] == "add" and not s["ok"]),
                        "remove_ok": sum(1 for s in steps if s["op"] == "remove" and s["ok"]),
                        "remove_failed": sum(1 for s in steps if s["op"] == "remove" and not s["ok"])},
            "errors": [s.get("error") for s in steps if not s["ok"]][:10],
            # Informational: a change that failed although no fault window
            # was active at any moment of it (liveness, not safety).
            "failed_while_quiet": [{k: s.get(k) for k in ("id", "op", "node", "seconds", "error")}
                                   for s in steps if not s["ok"] and s.get("quiet")],
        }
        out["membership-final"] = self.final_config or {"valid": "unknown", "note": "not run"}
        return out
