"""--array's Slurm syntax (core/arrays.py) and the array Experiment it becomes."""

from __future__ import annotations

import pytest

from kubetrain.core.arrays import ArraySpec, parse_array
from kubetrain.core.errors import SpecError
from kubetrain.core.experiments import validate_experiment


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0-9", ArraySpec(tuple(range(10)), 10)),
        ("0-5%2", ArraySpec(tuple(range(6)), 2)),
        ("1,3,5", ArraySpec((1, 3, 5), 3)),
        ("0-15:4", ArraySpec((0, 4, 8, 12), 4)),
        ("7", ArraySpec((7,), 1)),
        ("0-3,10-11%9", ArraySpec((0, 1, 2, 3, 10, 11), 6)),  # a limit above the size is the size
    ],
)
def test_slurm_array_syntax(text, expected):
    assert parse_array(text) == expected


@pytest.mark.parametrize(
    "text, words",
    [
        ("", ["--array ''", "is not an index"]),
        ("9-0", ["'9-0' runs backwards"]),
        ("0-3,2", ["an index is given twice"]),
        ("0-9%0", ["%0 is not a positive number"]),
        ("0-9%x", ["%x is not a positive number"]),
        ("a-b", ["'a-b' is not an index"]),
        ("0-99999", ["more than 10000 tasks"]),
    ],
)
def test_bad_arrays_say_what_and_how(text, words):
    with pytest.raises(SpecError) as caught:
        parse_array(text)
    for word in words + ["e.g. 0-9, 0-9%2"]:
        assert word in str(caught.value)


def experiment(**body) -> dict:
    return {"kind": "Experiment", "metadata": {"name": "arr"},
            "spec": {"template": {"command": ["python", "t.py"]},
                     "parameters": [{"name": "index", "type": "categorical", "values": [0, 1, 2]}], **body}}


def test_an_array_needs_no_objective_and_its_budget_is_its_size():
    spec = validate_experiment(experiment(algorithm="array", maxTrials=10, parallelism=2)).spec
    assert spec.objective is None and spec.trial_budget() == 3


@pytest.mark.parametrize(
    "body, words",
    [
        ({"algorithm": "tpe"}, ["objective is required for a tpe search"]),
        ({"algorithm": "array", "earlyStopping": {"algorithm": "median"}}, ["an array has no objective"]),
    ],
)
def test_what_an_array_or_a_search_refuses(body, words):
    with pytest.raises(SpecError) as caught:
        validate_experiment(experiment(**body))
    for word in words:
        assert word in str(caught.value)
