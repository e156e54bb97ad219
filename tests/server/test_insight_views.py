"""The dashboard's Experiment, Queue, Nodes and Users pages' data, shaped without a server (insight_views.py)."""

from __future__ import annotations

from kubetrain.core.attempts import ActiveAttempt
from kubetrain.core.holdings import ReplicaSlot
from kubetrain.core.planning import JobRequest
from kubetrain.core.records import (
    ExperimentRecord,
    NodeRecord,
    TokenRecord,
    TrialRecord,
    UsageRecord,
    UserRecord,
)
from kubetrain.server.dashboard import insight_views as views

GI = 1 << 30


def experiment(goal: str = "maximize", trials: list[TrialRecord] | None = None, best: int | None = None,
               ) -> ExperimentRecord:
    spec = {"spec": {"objective": {"metric": "acc", "goal": goal},
                     "parameters": [{"name": "lr", "type": "float"}, {"name": "opt", "type": "categorical"}]}}
    return ExperimentRecord(name="sweep", state="Succeeded", spec=spec, created_at=0.0, best_trial=best,
                            trials=trials or [])


def trial(n: int, objective: float | None, lr: float = 0.1, opt: str = "sgd", state: str = "Succeeded",
          steps: int = 3, reason: str | None = None) -> TrialRecord:
    return TrialRecord(trial=n, job=f"sweep-{n}", state=state, params={"lr": lr, "opt": opt},
                       objective=objective, steps=steps, reason=reason, duration=75.0)


def test_trial_table_is_compares_order_best_first_and_values_last() -> None:
    record = experiment(trials=[trial(1, 0.5), trial(2, None, state="Running"), trial(3, 0.9), trial(4, 0.7)],
                        best=3)
    table = views.trial_table(record)
    assert [r.trial for r in table.rows] == [3, 4, 1, 2]
    assert [r.best for r in table.rows] == [True, False, False, False]
    keys = [c.key for c in table.columns]
    assert keys == ["trial", "job", "state", "reason", "param-lr", "param-opt", "objective", "steps", "duration"]
    numeric = {c.key: c.numeric for c in table.columns}
    assert numeric["param-lr"] and not numeric["param-opt"] and numeric["objective"] and not numeric["job"]
    assert table.columns[keys.index("objective")].label == "acc"
    objective = keys.index("objective")
    assert [r.cells[objective].sort for r in table.rows] == ["0.9", "0.7", "0.5", ""]
    assert table.rows[-1].cells[objective].text == "-"
    assert table.rows[0].cells[keys.index("duration")].text == "1m15s"


def test_minimize_puts_the_lowest_first() -> None:
    # The page's order is ExperimentRecord.best_first, the same one `kubetrain compare` prints.
    record = experiment("minimize", trials=[trial(1, 0.5), trial(2, 0.1), trial(3, 0.3), trial(4, None)], best=2)
    assert [t.trial for t in record.best_first()] == [2, 3, 1, 4]
    maximize = experiment("maximize", trials=[trial(1, 0.5), trial(2, 0.1), trial(3, 0.9), trial(4, None)], best=3)
    assert [t.trial for t in maximize.best_first()] == [3, 1, 2, 4]


def test_objective_chart_tracks_the_best_so_far_by_goal_and_marks_the_best() -> None:
    record = experiment("minimize", trials=[trial(3, 0.2), trial(1, 0.5), trial(2, None), trial(4, 0.4)], best=3)
    chart = views.objective_chart(record)
    assert chart["trials"] == [1, 3, 4] and chart["values"] == [0.5, 0.2, 0.4]
    assert chart["best_so_far"] == [0.5, 0.2, 0.2]
    assert chart["best"] == {"trial": 3, "job": "sweep-3", "value": 0.2}
    assert views.objective_chart(experiment(trials=[trial(1, None)]))["best"] is None


def test_parallel_coordinates_number_axes_and_category_ticks() -> None:
    record = experiment(trials=[trial(1, 0.5, lr=0.01, opt="adam"), trial(2, 0.7, lr=0.1, opt="sgd"),
                                trial(3, None, lr=1.0, opt="rms"), trial(4, 0.6, lr=0.05, opt="adam")], best=2)
    data = views.parallel_coordinates(record)
    lr, opt, acc = data["dimensions"]
    assert lr == {"label": "lr", "values": [0.01, 0.1, 0.05]}
    assert opt["ticktext"] == ["adam", "sgd"] and opt["values"] == [0, 1, 0] and opt["tickvals"] == [0, 1]
    assert acc == {"label": "acc", "values": [0.5, 0.7, 0.6]}
    assert data["color"] == [0.5, 0.7, 0.6] and data["trials"] == [1, 2, 4] and data["best"] == 2


def test_curve_keeps_the_latest_attempt_sorted_and_thinned() -> None:
    points = ([{"name": "acc", "step": s, "value": s / 10, "attempt": 1} for s in range(5)]
              + [{"name": "acc", "step": s, "value": s, "attempt": 2} for s in range(2000, -1, -1)]
              + [{"name": "loss", "step": 1, "value": 9.0, "attempt": 2}])
    line = views.curve(points, "acc", limit=11)
    assert line["steps"] == [0, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000]
    assert line["values"] == line["steps"]
    assert views.curve([], "acc") == {"steps": [], "values": []}
    assert views.thin([1, 2, 3], 1) == [3]


def test_curves_payload_embeds_reporting_trials_best_first_and_selects_the_best_few() -> None:
    record = experiment(trials=[trial(1, 0.5), trial(2, 0.9), trial(3, None, steps=0), trial(4, 0.7)], best=2)
    series = {f"sweep-{n}": {"steps": [1], "values": [0.1 * n]} for n in (1, 2, 4)}
    payload = views.curves_payload(record, series, overlaid=2)
    assert [c["trial"] for c in payload["curves"]] == [2, 4, 1]
    assert payload["curves"][0]["best"] is True and payload["selected"] == [2, 4]
    assert payload["metric"] == "acc"


def request(key: str, seq: int, *, owner: str = "ann", priority: int = 0, gpu: int = 0, replicas: int = 1,
            queue: str | None = None) -> JobRequest:
    return JobRequest(key=key, seq=seq, cpu_millis=500, memory_bytes=GI, gpu=gpu, priority=priority, owner=owner,
                      replicas=replicas, queue=queue)


def test_queue_rows_follow_the_planners_order_with_its_reasons() -> None:
    queued = [(request("a", 1), "needs 1 GPU; none free"), (request("b", 2, priority=5, gpu=2), None),
              (request("c", 3, owner="bob", replicas=2, queue="vision"), "waits for job a")]
    rows = views.queue_rows(queued)
    assert [r.job for r in rows] == ["b", "a", "c"] and [r.position for r in rows] == [1, 2, 3]
    assert rows[0].reason.startswith("not considered yet") and rows[0].request == "500m CPU, 1Gi, 2 GPU"
    assert rows[1].reason == "needs 1 GPU; none free"
    assert rows[2].request == "2 × (500m CPU, 1Gi)" and rows[2].queue == "vision" and rows[2].owner == "bob"
    # Fair share: ann already runs two, so bob's job goes first among equal priorities.
    fair = views.queue_rows(queued, fair_share=True, running={"ann": 2})
    assert [r.job for r in fair] == ["b", "c", "a"]
    backing = views.queue_rows(queued, ready={"b", "c"})
    assert backing[1].reason.startswith("backing off") and "none free" in backing[1].reason


def attempt(job: str, node: str | None, owner: str = "ann", replicas: tuple[ReplicaSlot, ...] = ()) -> ActiveAttempt:
    return ActiveAttempt(job=job, number=1, state="Running", node=node, gpus=(), cpu_millis=500,
                         memory_bytes=GI, token="t", spec={}, handle=None, created_at=0.0, started_at=0.0,
                         cancel_requested=False, owner=owner, replicas=replicas)


def test_node_rows_show_capacity_allocated_used_and_attempts() -> None:
    nodes = [NodeRecord(name="n1", engine="local", labels={"zone": "a", "gpu": "h200"}, cpu_millis=8000,
                        memory_bytes=32 * GI, gpus=[0, 1], gpu_names=["H200", "H200"], free_cpu_millis=6000,
                        free_memory_bytes=24 * GI, free_gpus=[1], running=2),
             NodeRecord(name="n2", engine="local", cpu_millis=4000, memory_bytes=8 * GI, free_cpu_millis=4000,
                        free_memory_bytes=8 * GI)]
    usage = [UsageRecord(job="a", attempt=1, node="n1", cpu_millis=300, memory_bytes=GI, gpu_utilization=80.0,
                         gpu_memory_bytes=2 * GI),
             UsageRecord(job="g", attempt=1, node="n1", cpu_millis=200, memory_bytes=GI, gpu_utilization=40.0)]
    active = [attempt("a", "n1"), attempt("g", "n1", replicas=(ReplicaSlot("n1"), ReplicaSlot("n2")))]
    one, two = views.node_rows(nodes, usage, active)
    assert one.capacity == {"cpu": "8", "memory": "32Gi", "gpu": "2 (H200)"}
    assert one.allocated == {"cpu": "2", "memory": "8Gi", "gpu": "1"}
    assert one.used == {"cpu": "500m", "memory": "2Gi", "gpu": "60%", "gpu_memory": "2Gi"}
    assert one.labels == ["gpu=h200", "zone=a"] and one.attempts == ["a#1", "g#1"]
    assert one.allocated_percent == {"cpu": 25.0, "memory": 25.0, "gpu": 50.0}
    assert two.used == {"cpu": "-", "memory": "-", "gpu": "-", "gpu_memory": "-"}
    assert two.attempts == ["g#1"] and two.allocated_percent["gpu"] == 0.0


def test_users_and_tokens_count_only_live_tokens_and_never_show_values() -> None:
    tokens = [TokenRecord(id="t1", user="ann", created_at=10.0, expires_at=1000.0),
              TokenRecord(id="t2", user="ann", created_at=20.0, expires_at=50.0),
              TokenRecord(id="t3", user="bob", created_at=30.0, revoked=True, description="ci", token="secret")]
    users = [UserRecord(name="ann", role="admin", uid=1000), UserRecord(name="bob", role="member", team="vision")]
    rows = views.user_rows(users, tokens, now=100.0)
    assert [(r.name, r.active_tokens, r.team, r.uid) for r in rows] == [("ann", 1, "-", "1000"), ("bob", 0, "vision", "-")]
    listed = views.token_rows(tokens, now=100.0)
    assert [(t.id, t.status) for t in listed] == [("t3", "revoked"), ("t2", "expired"), ("t1", "active")]
    assert not any("secret" in str(vars(t)) for t in listed)
