#!/usr/bin/python3
"""Fault-injection test runs against real membershipd nodes (JEPSEN.md).

    /usr/bin/python3 tests/jepsen/run.py --workload register --nemesis partition,kill \\
        --time-limit 60 [--seed N] [--concurrency 6] [--rate 50] [--out DIR]
    /usr/bin/python3 tests/jepsen/run.py --soak 60           # random combinations for 60 min

Needs root (network namespaces), iptables, libfaketime and, for the delay
fault, libnetfilter-queue-dev (tests/jepsen/ci.sh installs them).

One run: build the C tools, make a 3-node cluster (plus the spare n4) in
network namespaces, start it, wait for a leader, run the workload's clients
in the client namespace for --time-limit seconds while the seeded nemesis
schedule (generator.plan) injects faults in windows, each undone
explicitly; then heal everything (flush rules, SIGCONT, restart dead nodes,
reset clocks, stop delayers), wait for a leader, do the workload's final
reads / probes, stop the nodes with SIGTERM, tear down, and check the
history (report.py). Prints one verdict line per checker, the seed and the
command that replays the schedule. Everything is kept in the results
directory: history.jsonl, nemesis.jsonl (timeline), logs/ (nodes), run.json,
summary.json, report.txt, checks.json.

Exit status (the worst over all runs of this invocation): 0 valid,
1 anomaly (a checker found one, a node exited on its own, or the cluster
did not recover after the final heal), 2 unknown (checker budget exhausted,
harness error).
"""
import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import cluster as jcluster  # noqa: E402
import generator  # noqa: E402
import history  # noqa: E402
import nemesis as jnemesis  # noqa: E402
import report as jreport  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

DEFAULT_BINARY = os.path.join(SRC, "build", "src", "membershipd")
RESULTS = os.path.join(HERE, "results")
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
WORDS = {True: "VALID", False: "INVALID", "unknown": "UNKNOWN", None: "n/a"}
T0 = time.monotonic()


def say(msg):
    print("[%7.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def worst(codes):
    codes = list(codes)
    if 1 in codes:
        return 1
    if any(c not in (0, 1) for c in codes):
        return 2
    return 0


def verdict_code(v):
    return 0 if v is True else 1 if v is False else 2


def parse_nemesis(spec):
    spec = (spec or "none").strip()
    if spec in ("none", ""):
        return []
    if spec == "all":
        return list(generator.FAULTS)
    out = []
    for f in spec.split(","):
        f = f.strip()
        if f not in generator.FAULTS:
            raise argparse.ArgumentTypeError("unknown fault %r (known: %s, none, all)"
                                             % (f, ",".join(generator.FAULTS)))
        if f not in out:
            out.append(f)
    return out


class Timeline:
    """nemesis.jsonl: every nemesis and cluster event with the harness's
    monotonic time (the history's clock) and wall time; prints the
    interesting ones."""

    SILENT = ("node-start",)

    def __init__(self, path, verbose=False):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()
        self.verbose = verbose
        self.t_start = time.monotonic()

    def log(self, event, **detail):
        rec = {"t": time.monotonic_ns(), "wall": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event}
        rec.update(detail)
        with self.lock:
            if self.f:
                self.f.write(json.dumps(rec, default=str) + "\n")
        phase = detail.get("phase")
        if phase == "invoke" or (event in self.SILENT and not self.verbose):
            return
        if event.startswith("flap-") and not self.verbose:
            return
        show = {k: v for k, v in detail.items() if k not in ("phase", "took_ms")}
        txt = json.dumps(show, default=str, sort_keys=True)
        if len(txt) > 200 and not self.verbose:
            txt = txt[:197] + "..."
        say("  %s%s %s" % (event, "" if phase in (None, "ok") else " [%s]" % phase, txt))

    def close(self):
        with self.lock:
            if self.f:
                self.f.close()
                self.f = None


class Ctx:
    """What a workload sees of the run."""

    def __init__(self, cluster, hist, args, seed, log, membership=None):
        self.cluster = cluster
        self.hist = hist
        self.args = args
        self.seed = seed
        self.log = log
        self.membership = membership


def ensure_binary(args):
    if os.access(args.binary, os.X_OK):
        return args.binary
    if os.path.abspath(args.binary) != DEFAULT_BINARY:
        raise SystemExit("run.py: no executable membershipd at %s" % args.binary)
    build = os.path.dirname(os.path.dirname(DEFAULT_BINARY))
    say("building membershipd in %s (cmake)" % build)
    subprocess.run(["cmake", "-S", SRC, "-B", build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build, "--target", "membershipd", "-j",
                    str(os.cpu_count() or 2)], check=True)
    return args.binary


def build_tools(dirpath, faults):
    try:
        return jnemesis.build_tools(dirpath)
    except RuntimeError as e:
        if "delay" in faults:
            raise
        say("warning: the C tools did not build (%s); no delay fault needed"
            % str(e).strip().splitlines()[-1])
        return dirpath


def replay_cmd(args, workload, faults, seed, time_limit, profile):
    parts = ["tests/jepsen/run.py", "--workload", workload,
             "--nemesis", ",".join(faults) or "none", "--seed", str(seed),
             "--time-limit", "%g" % time_limit]
    defaults = DEFAULTS_BY_PROFILE[profile]
    for opt in ("concurrency", "rate", "interval", "rest", "op_timeout", "keys", "key_ops"):
        v = getattr(args, opt)
        if v is not None and v != defaults.get(opt):
            parts += ["--" + opt.replace("_", "-"), "%g" % v]
    if profile == "soak":
        parts += ["--profile", "soak"]
    if args.stale_reads:
        parts.append("--stale-reads")
    if os.path.abspath(args.binary) != DEFAULT_BINARY:
        parts += ["--binary", args.binary]
    return " ".join(shlex.quote(p) for p in parts)


DEFAULTS_BY_PROFILE = {
    "ci": {"concurrency": 6, "rate": 50, "interval": 5.0, "rest": None, "op_timeout": 1.0,
           "keys": 8, "key_ops": 400},
    "soak": {"concurrency": 10, "rate": 200, "interval": 10.0, "rest": None, "op_timeout": 2.0,
             "keys": 64, "key_ops": 1000},
}


def resolved(args, profile):
    """A copy of args with the profile's defaults filled in."""
    a = argparse.Namespace(**vars(args))
    for k, v in DEFAULTS_BY_PROFILE[profile].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def run_once(args, workload, faults, seed, time_limit, out, profile="ci", tools_dir=None):
    """One run; returns (exit code, info dict)."""
    a = resolved(args, profile)
    os.makedirs(out, exist_ok=True)
    replay = replay_cmd(args, workload, faults, seed, time_limit, profile)
    say("run: workload %s, nemesis %s, seed %d, %g s -> %s"
        % (workload, ",".join(faults) or "none", seed, time_limit, out))
    hist = history.History(os.path.join(out, "history.jsonl"))
    tl = Timeline(os.path.join(out, "nemesis.jsonl"), verbose=args.verbose)
    windows = generator.plan(seed, faults, time_limit, interval=a.interval, rest=a.rest,
                             profile=profile)
    meta = {"workload": workload, "nemesis": faults, "seed": seed, "time_limit": time_limit,
            "profile": profile, "concurrency": a.concurrency, "rate": a.rate,
            "interval": a.interval, "rest": a.rest, "op_timeout": a.op_timeout, "keys": a.keys,
            "key_ops": a.key_ops, "stale_reads": a.stale_reads, "binary": a.binary,
            "replay": replay, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "schedule": [w.to_dict() for w in windows]}

    def write_meta():
        with open(os.path.join(out, "run.json"), "w") as f:
            json.dump(meta, f, indent=1, default=str)
    write_meta()

    checks = {}
    warnings = []
    c = None
    stats = {}
    t_run = time.monotonic()
    try:
        c = jcluster.Cluster(a.binary, out, nodes=3, spares=1, seed=seed, log=tl.log)
        nem = jnemesis.Nemeses(c, log=tl.log, rng=random.Random("nemesis-%d" % seed),
                               tools_dir=tools_dir or build_tools(os.path.join(out, "tools"), faults))
        membership = None
        if workload == "membership" or "membership" in faults:
            membership = generator.MembershipDriver(c, hist, random.Random("membership-%d" % seed),
                                                    log=tl.log)
        ctx = Ctx(c, hist, a, seed, tl.log, membership)
        wl = WORKLOADS[workload](ctx)
        membership = ctx.membership
        t = time.monotonic()
        c.start()
        leader = c.wait_leader(timeout=30)
        say("cluster %s up, leader %s after %.1f s" % (c.prefix, leader.name, time.monotonic() - t))

        pool = generator.ClientPool(c, hist, wl, a.concurrency, a.rate, seed, log=tl.log)
        runner = generator.NemesisRunner(nem, hist, windows, membership=membership, log=tl.log)
        if membership is not None:
            membership.fault_state = runner.fault_state
        t_work = time.monotonic()
        wl.start()
        pool.start()
        runner.start()
        end = t_work + time_limit
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        runner.stop()
        wl.stop()
        if not pool.stop(timeout=a.op_timeout * 3 + 15):
            warnings.append("client threads still running after stop")
        stats["workload_seconds"] = round(time.monotonic() - t_work, 1)
        stats["client_ops"] = pool.ops
        warnings += runner.errors
        if pool.errors:
            checks["harness"] = {"valid": "unknown", "client_errors": pool.errors[:5]}

        say("final heal")
        hist.nemesis("heal_all")
        t = time.monotonic()
        nem.heal_all(restart=True)
        try:
            leader = c.wait_leader(timeout=a.recovery)
            stats["recovery_seconds"] = round(time.monotonic() - t, 2)
            say("recovered: leader %s %.1f s after the heal" % (leader.name, time.monotonic() - t))
            checks["recovery"] = {"valid": True, "seconds": stats["recovery_seconds"],
                                  "leader": leader.name}
        except TimeoutError as e:
            checks["recovery"] = {"valid": False, "error": "no agreed leader %s s after the final "
                                  "heal: %s" % (a.recovery, e)}
            say("NOT RECOVERED: %s" % e)
        if membership is not None:
            if not membership.stop(timeout=a.recovery + 40):
                warnings.append("a membership change was still running %g s after the heal"
                                % (a.recovery + 40))
            for s in membership.steps:
                if not s["ok"] and s.get("quiet"):
                    warnings.append("membership %s %s failed with no fault active (%.1f s): %s"
                                    % (s["op"], s["node"], s["seconds"], s.get("error")))
        wl.final()
        checks.update(wl.checks())
        if membership is not None and workload != "membership":
            checks["membership-voters"] = {
                "valid": all(len(v) >= 3 for _, v in membership.voter_samples if v is not None),
                "samples": len(membership.voter_samples),
                "changes": [{k: s.get(k) for k in ("op", "node", "ok", "error")}
                            for s in membership.steps]}

        # Clean shutdown: SIGTERM must end every node with status 0.
        for n in c.nodes:
            if n.alive():
                n.stop()
        bad = c.unexpected_exits()
        checks["node-exits"] = {"valid": not bad, "unexpected": bad,
                                "restarts": {n.name: n.starts for n in c.nodes}}
        if bad:
            say("UNEXPECTED NODE EXITS: %s" % json.dumps(bad, default=str))
    except Exception as e:  # noqa: BLE001 - harness failure: unknown
        tb = traceback.format_exc()
        say("harness error: %r" % e)
        sys.stderr.write(tb)
        checks["harness"] = {"valid": "unknown", "error": repr(e), "traceback": tb}
        if c is not None:
            try:
                bad = c.unexpected_exits()
                if bad:
                    checks["node-exits"] = {"valid": False, "unexpected": bad}
            except Exception:  # noqa: BLE001
                pass
    finally:
        if c is not None:
            c.teardown()
        hist.close()
        tl.close()
    stats["run_seconds"] = round(time.monotonic() - t_run, 1)
    meta["stats"] = stats
    meta["warnings"] = warnings
    meta["harness_checks"] = {k: v.get("valid") for k, v in checks.items()}
    write_meta()

    # Check the history (a separate process: it forks its pool workers).
    t = time.monotonic()
    r = subprocess.run([PY, os.path.join(HERE, "report.py"), out, "--quiet",
                        "--budget-s", "%g" % args.checker_budget_s,
                        "--workers", str(args.checker_workers)])
    stats["check_seconds"] = round(time.monotonic() - t, 1)
    summary = {}
    try:
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        checks.setdefault("report", {"valid": "unknown", "error": "no summary.json: %r (report.py "
                                     "exit %d)" % (e, r.returncode)})
    with open(os.path.join(out, "checks.json"), "w") as f:
        json.dump(checks, f, indent=1, default=str)

    codes = [r.returncode if summary else 2] + [verdict_code(v.get("valid")) for v in checks.values()]
    code = worst(codes)
    lines = ["verdicts (%s, nemesis %s, seed %d):" % (workload, ",".join(faults) or "none", seed)]
    for name, res in summary.get("checkers", {}).items():
        lines.append(jreport.checker_line(name, res))
    for name, res in checks.items():
        lines.append("  %-24s %-8s %s" % (name, WORDS.get(res.get("valid"), str(res.get("valid"))),
                                           _brief(name, res)))
    cnt = summary.get("counts", {})
    if cnt:
        lines.append("ops: %s; faults: %s" % (
            ", ".join("%s %d" % kv for kv in cnt.get("ops_by_type", {}).items()),
            ", ".join("%s %d" % kv for kv in sorted(cnt.get("faults_injected", {}).items())) or "none"))
    for w in warnings[:10]:
        lines.append("warning: %s" % w)
    lines.append("verdict: %s (exit %d); run %.0f s + check %.0f s"
                 % ({0: "VALID", 1: "INVALID", 2: "UNKNOWN"}[code], code,
                    stats["run_seconds"], stats["check_seconds"]))
    lines.append("seed: %d" % seed)
    lines.append("replay: %s" % replay)
    lines.append("results: %s" % out)
    text = "\n".join(lines)
    print(text, flush=True)
    # Keep the verdict with the report and the summary.
    try:
        with open(os.path.join(out, "report.txt"), "a") as f:
            f.write("\nHarness checks (run.py)\n")
            for name, res in checks.items():
                f.write("  %-24s %-8s %s\n" % (name, WORDS.get(res.get("valid"), str(res.get("valid"))),
                                               json.dumps(res, default=str)[:2000]))
            f.write("\n" + text + "\n")
        if summary:
            summary["harness_checks"] = checks
            summary["run_exit_code"] = code
            with open(os.path.join(out, "summary.json"), "w") as f:
                json.dump(jreport._clean(summary), f, indent=1, default=str)
    except OSError:
        pass
    meta["stats"] = stats
    meta["exit_code"] = code
    write_meta()
    return code, {"workload": workload, "nemesis": faults, "seed": seed, "exit": code, "out": out,
                  "replay": replay, "ops": cnt.get("ops_by_type", {})}


def _brief(name, res):
    keep = {k: v for k, v in res.items() if k not in ("valid", "traceback", "restarts")}
    s = json.dumps(keep, default=str, sort_keys=True)
    return s if len(s) <= 300 else s[:297] + "..."


def check_root():
    if os.geteuid() != 0:
        raise SystemExit("run.py: needs root to create network namespaces (euid %d)" % os.geteuid())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--workload", default="register", choices=sorted(WORKLOADS) + ["all"])
    ap.add_argument("--nemesis", default="partition,kill", type=parse_nemesis,
                    help="comma list of %s; or none / all (default partition,kill)"
                    % ",".join(generator.FAULTS))
    ap.add_argument("--time-limit", type=float, default=60, help="seconds of workload (default 60)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=None, help="client threads (6; soak 10)")
    ap.add_argument("--rate", type=float, default=None, help="total ops/s (50; soak 200)")
    ap.add_argument("--interval", type=float, default=None,
                    help="fault window seconds (5; soak 10-30 random)")
    ap.add_argument("--rest", type=float, default=None,
                    help="healed seconds between fault windows (default interval/2)")
    ap.add_argument("--op-timeout", type=float, default=None,
                    help="client timeout; a timeout after sending is info (1; soak 2)")
    ap.add_argument("--keys", type=int, default=None, help="register keys in use (8; soak 64)")
    ap.add_argument("--key-ops", type=int, default=None,
                    help="ops on a key before it is replaced by a fresh one (400; soak 1000)")
    ap.add_argument("--profile", choices=("ci", "soak"), default="ci")
    ap.add_argument("--stale-reads", action="store_true",
                    help="read with ?stale=true (broken on purpose: must be found invalid)")
    ap.add_argument("--recovery", type=float, default=30,
                    help="seconds after the final heal to agree on a leader (30)")
    ap.add_argument("--checker-budget-s", type=float, default=30, help="WGL seconds per key (30)")
    ap.add_argument("--checker-workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="results directory (default "
                    "tests/jepsen/results/<time>-<workload>-<seed>)")
    ap.add_argument("--soak", type=float, default=None, metavar="MINUTES",
                    help="run random workload/nemesis combinations until MINUTES are up")
    ap.add_argument("--binary", default=DEFAULT_BINARY,
                    help="membershipd (default build/src/membershipd, built if missing)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    check_root()
    args.binary = os.path.abspath(ensure_binary(args))
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    if args.soak:
        return soak(args, seed, stamp)

    workloads = sorted(WORKLOADS) if args.workload == "all" else [args.workload]
    if len(workloads) == 1:
        out = args.out or os.path.join(RESULTS, "%s-%s-%d" % (stamp, workloads[0], seed))
        code, _ = run_once(args, workloads[0], args.nemesis, seed, args.time_limit, out,
                           profile=args.profile)
        return code
    root = args.out or os.path.join(RESULTS, "%s-all-%d" % (stamp, seed))
    tools = build_tools(os.path.join(root, "tools"), args.nemesis)
    results = []
    for wl in workloads:
        code, info = run_once(args, wl, args.nemesis, seed, args.time_limit,
                              os.path.join(root, wl), profile=args.profile, tools_dir=tools)
        results.append(info)
    return summarize(results, root)


def summarize(results, root):
    print("\nsummary of %d runs (%s):" % (len(results), root))
    for r in results:
        print("  %-8s %-10s %-40s seed %-11d %s" % (
            {0: "VALID", 1: "INVALID", 2: "UNKNOWN"}[r["exit"]], r["workload"],
            ",".join(r["nemesis"]) or "none", r["seed"], r["out"]))
        if r["exit"]:
            print("           replay: %s" % r["replay"])
    code = worst(r["exit"] for r in results)
    print("overall: %s (exit %d)" % ({0: "VALID", 1: "INVALID", 2: "UNKNOWN"}[code], code))
    return code


def soak(args, seed, stamp):
    """Random workload x nemesis combinations until the time is up."""
    rng = random.Random("soak-%d" % seed)
    deadline = time.monotonic() + args.soak * 60
    root = args.out or os.path.join(RESULTS, "%s-soak-%d" % (stamp, seed))
    tools = build_tools(os.path.join(root, "tools"), ["delay"])
    overhead = 60.0        # setup, recovery, final phase, checking
    results = []
    n = 0
    say("soak for %g min, seed %d -> %s" % (args.soak, seed, root))
    while True:
        left = deadline - time.monotonic() - overhead
        if left < 60:
            break
        n += 1
        wl = rng.choice(sorted(WORKLOADS))
        pool = list(generator.FAULTS)
        faults = [f for f in pool if rng.random() < 0.4] or [rng.choice(pool)]
        tlimit = min(left, rng.choice((120, 300, 600)))
        rseed = rng.randrange(1 << 31)
        code, info = run_once(args, wl, faults, rseed, round(tlimit), os.path.join(
            root, "%03d-%s-%d" % (n, wl, rseed)), profile="soak", tools_dir=tools)
        results.append(info)
    if not results:
        print("soak: %g minutes is too short for one run (needs > 2 min)" % args.soak)
        return 2
    return summarize(results, root)


if __name__ == "__main__":
    sys.exit(main())
