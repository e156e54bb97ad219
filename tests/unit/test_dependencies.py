"""Dependencies judged as a table (core/dependencies.py), and spec.dependsOn's words."""

from __future__ import annotations

import pytest

from kubetrain.core.dependencies import Doomed, Hold, Ready, judge
from kubetrain.core.errors import SpecError
from kubetrain.core.specs import validate_job


@pytest.mark.parametrize(
    "condition, state, verdict",
    [
        ("Succeeded", "Succeeded", Ready()),
        ("Succeeded", "Running", Hold("waiting for job 'prep' to succeed (it is Running)")),
        ("Succeeded", "Queued", Hold("waiting for job 'prep' to succeed (it is Queued)")),
        ("Succeeded", "Failed", Doomed("dependency 'prep' ended Failed; this job needed it to succeed "
                                       "(dependsOn condition Succeeded)")),
        ("Succeeded", "Cancelled", Doomed("dependency 'prep' ended Cancelled; this job needed it to succeed "
                                          "(dependsOn condition Succeeded)")),
        ("Failed", "Failed", Ready()),
        ("Failed", "Cancelled", Ready()),
        ("Failed", "Succeeded", Doomed("dependency 'prep' ended Succeeded; this job needed it to fail "
                                       "(dependsOn condition Failed)")),
        ("Finished", "Succeeded", Ready()),
        ("Finished", "Failed", Ready()),
        ("Finished", "Running", Hold("waiting for job 'prep' to finish (it is Running)")),
        ("Succeeded", None, Doomed("dependency 'prep' no longer exists (deleted); this job needed it to succeed")),
    ],
)
def test_one_dependency(condition, state, verdict):
    states = {} if state is None else {"prep": state}
    assert judge([("prep", condition)], states) == verdict


def test_every_dependency_must_be_met_and_a_doomed_one_decides_first():
    states = {"a": "Succeeded", "b": "Running", "c": "Failed"}
    assert judge([("a", "Succeeded"), ("b", "Succeeded")], states) == \
        Hold("waiting for job 'b' to succeed (it is Running)")
    assert isinstance(judge([("b", "Succeeded"), ("c", "Succeeded")], states), Doomed)
    assert judge([("a", "Succeeded"), ("c", "Finished")], states) == Ready()


def job(**body) -> dict:
    return {"metadata": {"name": "train"}, "spec": {"command": ["python", "train.py"], **body}}


def test_depends_on_reads_back_with_its_default_condition():
    spec = validate_job(job(dependsOn=[{"job": "prep"}, {"job": "eval", "condition": "Finished"}]))
    assert [(d.job, d.condition.value) for d in spec.spec.depends_on] == [("prep", "Succeeded"), ("eval", "Finished")]
    assert validate_job(spec.to_document()) == spec


@pytest.mark.parametrize(
    "entries, words",
    [
        ([{"job": "Prep_1"}], ["spec.dependsOn[0].job", "'Prep_1'", "lowercase"]),
        ([{"job": "prep", "condition": "Done"}], ["spec.dependsOn[0].condition", "Done", "Succeeded"]),
        ([{"job": "prep"}, {"job": "prep", "condition": "Failed"}], ["dependsOn", "'prep' is named twice"]),
        ([{"name": "prep"}], ["spec.dependsOn[0]"]),
    ],
)
def test_bad_dependencies_name_field_value_and_fix(entries, words):
    with pytest.raises(SpecError) as caught:
        validate_job(job(dependsOn=entries))
    for word in words:
        assert word in str(caught.value), str(caught.value)
