"""Experiment specs and the Optuna glue (samplers, seeding), without a master."""

from __future__ import annotations

import math
import statistics

import optuna
import pytest

from kubetrain.core.errors import SpecError
from kubetrain.core.experiments import validate_experiment
from kubetrain.server.sweeps import distributions, make_pruner, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def doc(**spec) -> dict:
    body = {"template": {"command": ["true"]}, "objective": {"metric": "acc"},
            "parameters": [{"name": "lr", "type": "float", "min": 0.001, "max": 1.0, "scale": "log"}]}
    body.update(spec)
    return {"apiVersion": "kubetrain/v1", "kind": "Experiment", "metadata": {"name": "exp"}, "spec": body}


def test_grid_enumerates_the_cartesian_product_exactly() -> None:
    spec = validate_experiment(doc(algorithm="grid", maxTrials=100, parameters=[
        {"name": "lr", "type": "categorical", "values": [0.1, 0.01, 0.001]},
        {"name": "depth", "type": "int", "min": 2, "max": 3},
    ]))
    assert spec.spec.trial_budget() == 6
    assert {tuple(sorted(p.items())) for p in spec.spec.grid()} == {
        (("depth", d), ("lr", lr)) for lr in (0.1, 0.01, 0.001) for d in (2, 3)
    }


@pytest.mark.parametrize(("parameters", "needle"), [
    ([{"name": "lr", "type": "float", "min": 0, "max": 1, "scale": "log"}], "log scale needs min > 0"),
    ([{"name": "lr", "type": "float", "min": 2, "max": 1}], "min <= max"),
    ([{"name": "h", "type": "categorical"}], "non-empty 'values'"),
    ([{"name": "h", "type": "int", "min": 1}], "needs both min and max"),
    ([{"name": "h", "type": "int", "min": 1, "max": 3}, {"name": "h", "type": "int", "min": 1, "max": 3}], "unique"),
    ([{"name": "h", "type": "float", "min": 1, "max": 3, "typo": 1}], "unknown field"),
])
def test_bad_parameter_spaces_are_named(parameters, needle) -> None:
    with pytest.raises(SpecError, match=needle):
        validate_experiment(doc(parameters=parameters))


def test_grid_over_a_float_range_needs_a_step() -> None:
    with pytest.raises(SpecError, match="needs a 'step'"):
        validate_experiment(doc(algorithm="grid"))


def test_unknown_algorithm_and_goal_are_refused() -> None:
    with pytest.raises(SpecError, match="algorithm"):
        validate_experiment(doc(algorithm="bayes"))
    with pytest.raises(SpecError, match="goal"):
        validate_experiment(doc(objective={"metric": "acc", "goal": "up"}))


def _sample(spec, n: int) -> list[dict]:
    study = optuna.create_study(direction="maximize")
    out = []
    for number in range(n):
        study.sampler = make_sampler(spec, number)
        trial = study.ask(fixed_distributions=distributions(spec))
        out.append(trial.params)
        study.tell(trial, 0.0)
    return out


def test_random_with_a_seed_gives_the_same_trials_twice_and_another_seed_differs() -> None:
    spec = validate_experiment(doc(algorithm={"name": "random", "seed": 11}, parameters=[
        {"name": "lr", "type": "float", "min": 0.001, "max": 1.0, "scale": "log"},
        {"name": "h", "type": "categorical", "values": [8, 16, 32]},
    ]))
    other = validate_experiment(doc(algorithm={"name": "random", "seed": 12}, parameters=spec.to_document()["spec"]["parameters"]))
    assert _sample(spec, 8) == _sample(spec, 8)
    assert _sample(spec, 8) != _sample(other, 8)


def _optimise(algorithm: str, seed: int, trials: int) -> float:
    """Best value of a smooth 2-D objective with a known optimum (0 at lr=0.01, h=40)."""
    spec = validate_experiment(doc(algorithm={"name": algorithm, "seed": seed}, objective={"metric": "loss", "goal": "minimize"}, parameters=[
        {"name": "lr", "type": "float", "min": 1e-4, "max": 1.0, "scale": "log"},
        {"name": "h", "type": "float", "min": 0, "max": 100},
    ]))
    study = optuna.create_study(direction="minimize")
    for number in range(trials):
        study.sampler = make_sampler(spec, number)
        trial = study.ask(fixed_distributions=distributions(spec))
        value = (math.log10(trial.params["lr"]) + 2) ** 2 + ((trial.params["h"] - 40) / 25) ** 2
        study.tell(trial, value)
    return study.best_value


def test_tpe_beats_random_on_average_with_a_margin() -> None:
    seeds = range(6)
    tpe = statistics.mean(_optimise("tpe", s, 40) for s in seeds)
    rnd = statistics.mean(_optimise("random", s, 40) for s in seeds)
    # Random search's mean best on this objective is several times TPE's; demand at least 2x.
    assert tpe * 2 < rnd, (tpe, rnd)


@pytest.mark.parametrize(("rule", "first_step"), [
    ({"algorithm": "median", "minResource": 4, "warmupSteps": 1}, 4),
    ({"algorithm": "median", "minResource": 1, "warmupSteps": 3}, 3),
    ({"algorithm": "asha", "minResource": 4}, 4),
])
def test_no_rule_prunes_before_min_resource(rule: dict, first_step: int) -> None:
    # Two trials finished with 1.0 at every step; a third reports 0.0 from step 1 and is pruned at first_step.
    spec = validate_experiment(doc(earlyStopping={"startupTrials": 0, **rule}))
    study = optuna.create_study(direction="maximize", pruner=make_pruner(spec))
    for _ in range(2):
        good = study.ask()
        for step in range(1, 10):
            good.report(1.0, step)
            assert not good.should_prune()  # (successive halving records rung values when asked)
        study.tell(good, 1.0)
    bad = study.ask()
    pruned_at = None
    for step in range(1, 10):
        bad.report(0.0, step)
        if bad.should_prune():
            pruned_at = step
            break
    assert pruned_at == first_step
