"""B2: planning 10,000 queued jobs onto 1,000 synthetic nodes, with durable decisions.

Setup (not timed into the rates, but reported):
* a real SQLite store on a temporary file (``Store("sqlite:///...")`` + ``migrate()``, WAL as in the master);
* 10,000 jobs created through ``validate_job`` + ``Store.create_job``, one transaction each, as the API
  does: mixed CPU/memory/GPU requests, priorities, and label selectors (``zone=b``, ``zone in (a,b)``,
  ``!spot``, ``gpu-type=a100``, ``gpu-type in (a100,h100)``, ...), about 3% that no node can ever hold;
* 1,000 synthetic ``NodeCapacity`` nodes: CPU pools, A100 / H100 / T4 GPU nodes, zones a-d, spot nodes,
  a few cordoned ones.

Then the reconcile loop's scheduling step, in the rounds the loop itself would run
(``Reconciler._schedule``: ``store.queued()`` -> ``free_capacity`` -> ``plan()`` -> ``store.commit_plan()``):

* round 1 — cold queue: all 10,000 jobs queued, nothing running;
* round 2 — the next pass, nothing changed: still-queued jobs re-planned against what round 1 placed
  (unchanged wait reasons are not rewritten, as in the loop);
* round 3 — churn: half of the running attempts are recorded as finished (``finish_attempts``,
  untimed), then a pass places queued jobs onto the freed capacity.

Distributed jobs (issue 12): ``--gangs 0.2`` (the default) turns a fifth of the jobs that can fit into
gangs of 2-8 replicas (``spec.replicas``; each replica the job's request), admitted all or nothing.
After every round the bench checks what the planner promised: every running gang holds exactly its
replicas, and no node is over-committed by what is placed on it ("partial admissions: 0,
over-committed nodes: 0"; anything else exits 1).

Figures per round: decisions = placements + waits + unschedulable; "plan+commit" rate =
decisions / (plan() + commit_plan()) seconds, the target being >= 1,000/s; the whole pass
(with queued() and free_capacity) is shown too.  The pure plan() rate is the best of 3 runs of
plan() on round 1's input.

Scheduling policy (issue 14): by default (``--no-policy`` turns it off, for the peer figure) every job
goes to its team's queue (vision, nlp, rl: one cohort, each with a nominal quota of 30 % of the cluster's
CPU, memory and GPUs, so the cohort caps at 90 % and queues borrow), rl caps each user at 40 running jobs,
30 submitters take turns under fair share with decayed usage (some injected), and 30 % of jobs carry an
``activeDeadlineSeconds`` (deadline-aware backfill).  The pass is then the loop's whole one: queue specs,
usage and fair keys read from the store, live attempts as RunningJob.  After every round the bench also
checks that no cohort holds more than its quotas together ("over quota: 0").

Usage: .venv/bin/python bench/b2_planning.py [--jobs 10000] [--nodes 1000] [--seed 7] [--gangs 0.2] [--no-policy]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, header

from kubetrain.core.fairshare import fair_keys
from kubetrain.core.planning import NodeCapacity, Plan, Situation, plan
from kubetrain.core.queue_bodies import QueueBody
from kubetrain.core.records import Provenance
from kubetrain.core.specs import validate_job
from kubetrain.core.states import Reason
from kubetrain.server.reconciler import free_capacity, running_jobs
from kubetrain.store.store import Outcome, Store

GI = 2**30
TARGET = 1000.0
ZONES = ("a", "b", "c", "d")
TEAMS = ("vision", "nlp", "rl")
USERS = 30


def make_nodes(count: int, rng: random.Random) -> list[NodeCapacity]:
    """CPU pools (60%), A100 (25%), H100 (10%), T4 (5%); ~1% cordoned; zones a-d; some spot."""
    nodes = []
    for index in range(count):
        share = index / count
        zone = ZONES[index % len(ZONES)]
        labels = {"kubernetes.io/hostname": f"node-{index:04d}", "zone": zone}
        if share < 0.60:
            labels["node-pool"] = "cpu"
            cpu, mem, gpus = 32_000, 128 * GI, ()
        elif share < 0.85:
            labels.update({"node-pool": "gpu", "gpu-type": "a100"})
            cpu, mem, gpus = 64_000, 512 * GI, tuple(range(8))
        elif share < 0.95:
            labels.update({"node-pool": "gpu", "gpu-type": "h100"})
            cpu, mem, gpus = 96_000, 1024 * GI, tuple(range(8))
        else:
            labels.update({"node-pool": "gpu", "gpu-type": "t4"})
            cpu, mem, gpus = 16_000, 64 * GI, tuple(range(4))
        if gpus:
            labels["nvidia.com/gpu.present"] = "true"
        if rng.random() < 0.2:
            labels["spot"] = "true"
        nodes.append(NodeCapacity(name=f"node-{index:04d}", cpu_millis=cpu, memory_bytes=mem, gpus=gpus,
                                  labels=labels, schedulable=rng.random() >= 0.01))
    return nodes


def make_job(index: int, rng: random.Random, gangs: float = 0.0, policy: bool = False) -> dict:
    roll = rng.random()
    replicas = rng.choice([2, 2, 4, 4, 8]) if rng.random() < gangs and roll < 0.97 else 1
    zone = rng.choice(ZONES)
    if roll < 0.57:  # CPU jobs
        resources = {"cpu": rng.choice(["500m", "1", "2", "4", "8", "16"]),
                     "memory": rng.choice(["512Mi", "1Gi", "2Gi", "4Gi", "16Gi", "64Gi"])}
        selector = rng.choices(
            ["", f"zone={zone}", "zone in (a,b)", "!spot", f"node-pool=cpu,zone!={zone}", "!gpu-type"],
            weights=[40, 25, 12, 10, 8, 5])[0]
    elif roll < 0.97:  # GPU jobs
        gpu = rng.choice([1, 1, 2, 4, 8])
        resources = {"cpu": str(rng.choice([4, 8, 16, 32])), "memory": f"{rng.choice([16, 32, 64, 128, 256])}Gi",
                     "gpu": gpu}
        selector = rng.choices(
            ["gpu-type=a100", "gpu-type=h100", "gpu-type in (a100,h100)", f"gpu-type=a100,zone={zone}",
             "nvidia.com/gpu.present", "gpu-type=t4"],
            weights=[35, 25, 20, 10, 5, 5])[0]
        if selector == "gpu-type=t4":
            resources = {"cpu": "4", "memory": "16Gi", "gpu": rng.choice([1, 2])}
    else:  # never fits: too many GPUs, too much memory, or no matching node
        resources, selector = rng.choice([
            ({"cpu": "8", "memory": "64Gi", "gpu": 16}, "gpu-type=h100"),
            ({"cpu": "8", "memory": "4Ti"}, ""),
            ({"cpu": "2", "memory": "4Gi", "gpu": 1}, "gpu-type=tpu-v5"),
            ({"cpu": "200", "memory": "4Gi"}, f"zone={zone}"),
        ])
    document = {
        "apiVersion": "kubetrain/v1",
        "kind": "Job",
        "metadata": {"name": f"job-{index:05d}", "labels": {"team": rng.choice(["vision", "nlp", "rl"])}},
        "spec": {
            "command": ["python", "train.py"],
            "args": [f"--seed={index}"],
            "params": {"lr": rng.choice([0.1, 0.01, 0.001]), "batch": rng.choice([32, 64, 128])},
            "resources": resources,
            "selector": selector,
            "priority": rng.choices([0, 10, -5], weights=[80, 12, 8])[0],
            "replicas": replicas,
        },
    }
    if policy:
        document["spec"]["queue"] = document["metadata"]["labels"]["team"]
        if rng.random() < 0.3:
            document["spec"]["activeDeadlineSeconds"] = rng.choice([600, 3600, 4 * 3600])
    return document


def make_queues(store: Store, nodes: list[NodeCapacity]) -> None:
    """One queue per team in cohort ``research``, each 30 % of the schedulable cluster; rl caps users at 40 jobs."""
    up = [n for n in nodes if n.schedulable]
    cpu, mem, gpus = (sum(n.cpu_millis for n in up), sum(n.memory_bytes for n in up), sum(len(n.gpus) for n in up))
    for team in TEAMS:
        body = {"name": team, "cohort": "research",
                "nominalQuota": {"cpu": f"{cpu * 3 // 10}m", "memory": str(mem * 3 // 10), "gpu": gpus * 3 // 10}}
        if team == "rl":
            body["perUser"] = {"maxRunningJobs": 40}
        store.create_queue(QueueBody.model_validate(body), now=time.time())


def check_quotas(store: Store) -> int:
    """Resources by which the cohort holds more than its queues' quotas together (0: none)."""
    specs = store.queue_specs()
    held = {"cpu": 0, "memory": 0, "gpu": 0}
    for job in running_jobs(store.active_attempts()):
        if job.queue in specs:
            held["cpu"] += sum(s.cpu_millis for s in job.slots)
            held["memory"] += sum(s.memory_bytes for s in job.slots)
            held["gpu"] += sum(len(s.gpus) for s in job.slots)
    caps = {"cpu": sum(q.quota.cpu_millis or 0 for q in specs.values()),
            "memory": sum(q.quota.memory_bytes or 0 for q in specs.values()),
            "gpu": sum(q.quota.gpu or 0 for q in specs.values())}
    over = sum(1 for k in held if held[k] > caps[k])
    if specs:
        print(f"     cohort holds {held['gpu']:,}/{caps['gpu']:,} GPUs, {held['cpu'] // 1000:,}/{caps['cpu'] // 1000:,} "
              f"CPUs of its quotas; over quota: {over}")
    return over


def count(p: Plan) -> int:
    return len(p.placements) + len(p.waiting) + len(p.unschedulable)


def scheduling_pass(store: Store, nodes: list[NodeCapacity], now: float, policy: bool = False) -> dict:
    """What Reconciler._schedule does, timed step by step (with ``policy``: queues, fair share, deadlines)."""
    t0 = time.perf_counter()
    active = store.active_attempts()
    t1 = time.perf_counter()
    free = free_capacity(nodes, active)
    t2 = time.perf_counter()
    queued = store.queued()
    t3 = time.perf_counter()
    previous = {req.key: reason for req, reason in queued}
    if policy:
        usage = fair_keys(store.usage(now=now), store.user_teams(), {})
        situation = Situation(queues=store.queue_specs(), running=running_jobs(active), now=now)
        decisions = plan([req for req, _ in queued], free, fair_share=True, usage=usage, situation=situation)
    else:
        decisions = plan([req for req, _ in queued], free)
    t4 = time.perf_counter()
    orders = store.commit_plan(decisions, previous, now=now)
    t5 = time.perf_counter()
    rewritten = sum(1 for w in decisions.waiting if previous.get(w.key) != w.reason)
    return {
        "queued": len(queued), "active_before": len(active),
        "placements": len(decisions.placements), "waiting": len(decisions.waiting),
        "waits_rewritten": rewritten, "unschedulable": len(decisions.unschedulable),
        "decisions": count(decisions), "orders": len(orders),
        "t_active": t1 - t0, "t_free": t2 - t1, "t_queued": t3 - t2, "t_plan": t4 - t3, "t_commit": t5 - t4,
        "t_pass": t5 - t0,
    }


def check_gangs(store: Store, nodes: list[NodeCapacity]) -> tuple[int, int, int]:
    """(running gangs, partial admissions, over-committed nodes) as the store holds them now."""
    active = store.active_attempts()
    gangs = [a for a in active if int(a.spec["spec"].get("replicas") or 1) > 1]
    partial = sum(1 for a in gangs if len(a.replicas) != int(a.spec["spec"]["replicas"]))
    over = sum(1 for n in free_capacity(nodes, active) if n.schedulable and (
        (n.free_cpu_millis or 0) < 0 or (n.free_memory_bytes or 0) < 0))
    gpu_owners: dict[tuple[str, int], int] = {}
    for attempt in active:
        for slot in attempt.holdings():
            for gpu in slot.gpus:
                gpu_owners[(slot.node, gpu)] = gpu_owners.get((slot.node, gpu), 0) + 1
    over += sum(1 for owners in gpu_owners.values() if owners > 1)
    print(f"     gangs running: {len(gangs):,}; partial admissions: {partial}; over-committed nodes/GPUs: {over}")
    return len(gangs), partial, over


def report(label: str, r: dict) -> dict:
    plan_commit = r["t_plan"] + r["t_commit"]
    rate = r["decisions"] / plan_commit if plan_commit else float("inf")
    pass_rate = r["decisions"] / r["t_pass"]
    print(f"   {label}: {r['queued']} queued, {r['active_before']} running before -> {r['placements']} placed, "
          f"{r['waiting']} waiting ({r['waits_rewritten']} reasons written), {r['unschedulable']} unschedulable")
    print(f"     active_attempts {r['t_active']:.3f}s  free_capacity {r['t_free']:.3f}s  queued() {r['t_queued']:.3f}s  "
          f"plan() {r['t_plan']:.3f}s  commit_plan() {r['t_commit']:.3f}s  | pass {r['t_pass']:.3f}s")
    print(f"     decisions/s: plan+commit {rate:,.0f}/s   whole pass {pass_rate:,.0f}/s   "
          f"(target >= {TARGET:,.0f}/s: {'met' if rate >= TARGET else 'NOT met'})")
    return {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()},
            "rate_plan_commit": round(rate, 1), "rate_pass": round(pass_rate, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gangs", type=float, default=0.2, help="share of jobs with 2-8 replicas (issue 12)")
    parser.add_argument("--no-policy", dest="policy", action="store_false",
                        help="no queues, quotas, fair share or deadlines (issue 14's peer figure)")
    args = parser.parse_args()

    header(f"B2 planning: {args.jobs:,} queued jobs onto {args.nodes:,} synthetic nodes, SQLite store")
    rng = random.Random(args.seed)
    nodes = make_nodes(args.nodes, rng)
    root = Path(tempfile.mkdtemp(prefix="kubetrain-bench-b2-"))
    store = Store(f"sqlite:///{root / 'kubetrain.db'}")
    try:
        store.migrate()
        documents = [make_job(i, rng, args.gangs, args.policy) for i in range(args.jobs)]
        if args.policy:
            make_queues(store, nodes)
            for user in range(USERS):  # yesterday's usage, for some: fair share orders by it
                if rng.random() < 0.5:
                    store.add_usage(f"user-{user:02d}", rng.uniform(0, 1e6), rng.uniform(0, 1e5), now=time.time())
        words = (f"queues vision/nlp/rl (cohort research, 30 % each), fair share over {USERS} users, 30 % with "
                 "deadlines") if args.policy else "none (--no-policy)"
        print(f"   policy: {words}")
        print(f"   {sum(1 for d in documents if d['spec']['replicas'] > 1):,} of the jobs are gangs "
              f"(--gangs {args.gangs})")
        t0 = time.perf_counter()
        base = time.time()
        for index, document in enumerate(documents):
            store.create_job(validate_job(document), Provenance(submitter=f"user-{index % USERS:02d}"),
                             now=base + index * 1e-6)
        t_create = time.perf_counter() - t0
        print(f"   setup: {args.jobs:,} jobs validated + created in {t_create:.1f}s "
              f"({args.jobs / t_create:,.0f} jobs/s, one transaction each)")

        # Pure planner rate on round 1's exact input (the store's view of the queue, idle nodes).
        queued = store.queued()
        requests = [req for req, _ in queued]
        free = free_capacity(nodes, [])
        plan_times = []
        situation = Situation(queues=store.queue_specs(), now=time.time())
        usage = fair_keys(store.usage(now=time.time()), store.user_teams(), {})
        for _ in range(3):
            t0 = time.perf_counter()
            pure = (plan(requests, free, fair_share=True, usage=usage, situation=situation) if args.policy
                    else plan(requests, free))
            plan_times.append(time.perf_counter() - t0)
        best = min(plan_times)
        print(f"   pure plan(): {count(pure):,} decisions in {best:.3f}s (best of 3: "
              f"{', '.join(f'{t:.3f}' for t in plan_times)}) = {count(pure) / best:,.0f} decisions/s")

        results = {}
        now = time.time()
        checks = []
        results["round1"] = report("round 1 (cold queue)", scheduling_pass(store, nodes, now, args.policy))
        checks.append((*check_gangs(store, nodes), check_quotas(store)))
        results["round2"] = report("round 2 (next pass, no change)", scheduling_pass(store, nodes, now + 1, args.policy))
        checks.append((*check_gangs(store, nodes), check_quotas(store)))

        active = store.active_attempts()
        finished = [(a.job, a.number, Outcome(Reason.COMPLETED, "exited 0", exit_code=0))
                    for a in active[::2]]
        t0 = time.perf_counter()
        store.finish_attempts(finished, now=now + 2)
        t_finish = time.perf_counter() - t0
        print(f"   ({len(finished):,} attempts recorded finished in {t_finish:.2f}s before round 3)")
        results["round3"] = report("round 3 (after half finished)", scheduling_pass(store, nodes, now + 3, args.policy))
        checks.append((*check_gangs(store, nodes), check_quotas(store)))

        total_dec = sum(r["decisions"] for r in results.values())
        total_pc = sum(r["t_plan"] + r["t_commit"] for r in results.values())
        print(f"   all rounds: {total_dec:,} decisions, plan+commit {total_dec / total_pc:,.0f}/s")
        emit({"bench": "B2", "jobs": args.jobs, "nodes": args.nodes, "create_jobs_per_s": round(args.jobs / t_create, 1),
              "pure_plan_decisions": count(pure), "pure_plan_s": round(best, 4),
              "pure_plan_rate": round(count(pure) / best, 1), **results,
              "all_rounds_rate_plan_commit": round(total_dec / total_pc, 1), "gangs_share": args.gangs,
              "gangs_running": [c[0] for c in checks], "partial_admissions": sum(c[1] for c in checks),
              "overcommitted": sum(c[2] for c in checks), "policy": args.policy,
              "over_quota": sum(c[3] for c in checks)})
        if any(c[1] or c[2] or c[3] for c in checks):
            print("   FAILED: a gang was admitted in part, a node over-committed, or a cohort over its quotas")
            sys.exit(1)
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
