"""A queue as people write it (core/queue_bodies.py): what it means to the planner, and every refusal in words."""

from __future__ import annotations

import pytest

from kubetrain.core.errors import ForbiddenError, SpecError
from kubetrain.core.queue_bodies import QueueBody, choose_queue, spec_of_document, validate_queue
from kubetrain.core.queues import Amount, PreemptionPolicy, QueueSpec
from kubetrain.core.specs import validate_job

GI = 2**30


@pytest.mark.parametrize(("document", "expected"), [
    ({"name": "vision"}, QueueSpec("vision")),
    ({"name": "vision", "nominalQuota": {"cpu": "64", "memory": "512Gi", "gpu": 8}},
     QueueSpec("vision", quota=Amount(64_000, 512 * GI, 8))),
    ({"name": "small", "nominalQuota": {"cpu": "500m"}}, QueueSpec("small", quota=Amount(cpu_millis=500))),
    ({"name": "ints", "nominalQuota": {"cpu": 2, "memory": 1024, "gpu": "2"}},
     QueueSpec("ints", quota=Amount(2000, 1024, 2))),
    ({"name": "none-capped", "nominalQuota": {"cpu": None, "memory": None, "gpu": None}}, QueueSpec("none-capped")),
    ({"name": "a", "cohort": "research", "preemption": "reclaimBorrowed"},
     QueueSpec("a", cohort="research", preemption=PreemptionPolicy.RECLAIM_BORROWED)),
    ({"name": "b", "preemption": "lowerPriority", "perUser": {"maxRunningJobs": 4, "maxGPUs": 0}},
     QueueSpec("b", preemption=PreemptionPolicy.LOWER_PRIORITY, max_running_jobs=4, max_gpus=0)),
    ({"name": "c", "users": ["alice", "bob", "alice"], "teams": ["ml-research"]},
     QueueSpec("c", users=("alice", "bob"), teams=("ml-research",))),
    ({"name": "snake", "nominal_quota": {"gpu": 1}, "per_user": {"max_running_jobs": 1}},
     QueueSpec("snake", quota=Amount(gpu=1), max_running_jobs=1)),
])
def test_valid_bodies_mean_this_to_the_planner(document: dict, expected: QueueSpec) -> None:
    assert validate_queue(document).to_spec() == expected


@pytest.mark.parametrize("spec", [
    QueueSpec("vision", quota=Amount(64_000, 512 * GI, 8), cohort="research",
              preemption=PreemptionPolicy.LOWER_PRIORITY, max_running_jobs=3, max_gpus=4, users=("alice",),
              teams=("vision",)),
    QueueSpec("bare"),
    QueueSpec("odd", quota=Amount(cpu_millis=1500, memory_bytes=500_000_000)),
])
def test_from_spec_round_trips(spec: QueueSpec) -> None:
    body = QueueBody.from_spec(spec)
    assert body.to_spec() == spec
    assert validate_queue(body.to_document()).to_spec() == spec


def test_the_document_is_camel_case_and_keeps_quantities_readable() -> None:
    document = validate_queue({"name": "v", "nominalQuota": {"cpu": 64, "memory": "512Gi"}}).to_document()
    assert document["nominalQuota"] == {"cpu": "64", "memory": "512Gi", "gpu": None}
    assert document["perUser"] == {"maxRunningJobs": None, "maxGPUs": None}
    assert document["preemption"] == "never"


@pytest.mark.parametrize(("document", "message"), [
    ({"name": "v", "nominalQuota": {"memory": "5GB"}}, "nominalQuota.memory: '5GB' is not a quantity; use e.g. 512Gi"),
    ({"name": "v", "nominalQuota": {"cpu": "lots"}}, "nominalQuota.cpu: 'lots' is not a quantity; use e.g. 64 or 500m"),
    ({"name": "v", "nominalQuota": {"cpu": True}}, "nominalQuota.cpu: True is not a quantity"),
    ({"name": "v", "nominalQuota": {"gpu": -1}}, "nominalQuota.gpu: -1 is negative; use 0 or more GPUs"),
    ({"name": "v", "nominalQuota": {"gpu": 1.5}}, "nominalQuota.gpu: 1.5 is not a whole number of GPUs"),
    ({"name": "v", "nominalQuota": {"gpus": 1}}, "did you mean 'nominalQuota.gpu'?"),
    ({"name": "Vision"}, "name: 'Vision' is not a queue name; use 1-63 lowercase letters"),
    ({"name": "v", "cohort": "re search"}, "cohort: 're search' is not a queue name"),
    ({"name": "v", "preemption": "lower"}, "preemption: got 'lower'"),
    ({"name": "v", "preemption": "lower"}, "did you mean 'lowerPriority'?"),
    ({"name": "v", "perUser": {"maxRunningJobs": 0}}, "perUser.maxRunningJobs: got 0; the smallest allowed is 1"),
    ({"name": "v", "perUser": {"maxGPUs": -2}}, "perUser.maxGPUs: got -2; the smallest allowed is 0"),
    ({"name": "v", "users": ["Bob!"]}, "users: 'Bob!' is not a user name"),
    ({"name": "v", "teams": ["ML_team"]}, "teams: 'ML_team' is not a team name"),
    ({"name": "v", "users": "alice"}, "users: got 'alice', which is not a valid list"),
    ({"nominalQuota": {}}, "name: required field is missing"),
    ({"name": "v", "quota": {}}, "unknown field 'quota'"),
])
def test_each_bad_field_is_named_with_its_value_and_fix(document: dict, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate_queue(document)
    assert message in caught.value.message


def test_a_document_that_is_not_a_mapping_is_refused_in_words() -> None:
    with pytest.raises(SpecError, match="a queue must be a mapping"):
        validate_queue(["vision"])


def test_a_job_names_its_queue_with_the_same_rule() -> None:
    assert validate_job({"spec": {"command": ["true"], "queue": "vision"}}).spec.queue == "vision"
    assert validate_job({"spec": {"command": ["true"]}}).spec.queue is None
    with pytest.raises(SpecError, match=r"spec.queue: 'Vision!' is not a queue name.*kubetrain queue ls"):
        validate_job({"spec": {"command": ["true"], "queue": "Vision!"}})


QUEUES = {q.name: q for q in (QueueSpec("default"), QueueSpec("vision", users=("alice",), teams=("vision",)),
                               QueueSpec("open"))}


@pytest.mark.parametrize(("requested", "user", "team", "admin", "expected"), [
    (None, "alice", None, False, "vision"),  # listed by name
    (None, "carol", "vision", False, "vision"),  # by team
    (None, "bob", None, False, "default"),  # nobody lists bob: the default queue
    ("open", "bob", None, False, "open"),  # a queue that lists no one is anyone's
    ("vision", "alice", None, False, "vision"),
    ("vision", "bob", None, True, "vision"),  # an admin may use any queue
])
def test_choose_queue(requested, user, team, admin, expected) -> None:
    assert choose_queue(requested, QUEUES, user, team, admin=admin) == expected


def test_without_queues_a_job_goes_to_none() -> None:
    assert choose_queue(None, {}, "alice", "vision") is None


def test_a_queue_that_does_not_exist_is_refused_naming_the_field() -> None:
    with pytest.raises(SpecError) as caught:
        choose_queue("nosuch", QUEUES, "alice", None)
    assert "spec.queue: no queue 'nosuch'" in caught.value.message
    assert "kubetrain queue ls" in caught.value.message
    assert caught.value.details == {"field": "spec.queue", "value": "nosuch"}


def test_a_queue_for_others_is_refused_naming_who_may_use_it() -> None:
    with pytest.raises(ForbiddenError) as caught:
        choose_queue("vision", QUEUES, "bob", "nlp", field="spec.template.queue")
    message = caught.value.message
    assert message.startswith("spec.template.queue: queue 'vision' is for users alice and teams vision")
    assert "bob (team nlp) may not submit to it" in message


@pytest.mark.parametrize("spec", [
    QueueSpec("vision", quota=Amount(64_000, 512 * GI, 8), cohort="research",
              preemption=PreemptionPolicy.LOWER_PRIORITY, max_running_jobs=3, max_gpus=4, users=("alice",),
              teams=("vision",)),
    QueueSpec("bare"),
])
def test_the_planner_reads_stored_documents_as_validated(spec: QueueSpec) -> None:
    assert spec_of_document(QueueBody.from_spec(spec).to_document()) == spec


def test_a_stored_document_from_a_later_version_still_reads() -> None:
    document = {"name": "v", "nominalQuota": {"cpu": "2", "tpu": 4}, "preemption": "someNewPolicy", "later": True}
    assert spec_of_document(document) == QueueSpec("v", quota=Amount(cpu_millis=2000))
