"""The Experiment spec: a Job template, a parameter space, an objective, a budget.

```yaml
apiVersion: kubetrain/v1
kind: Experiment
metadata: {name: digits-sweep}
spec:
  template: {command: [python, train.py], resources: {cpu: 500m, memory: 1Gi}}
  parameters:
    - {name: lr, type: float, min: 0.001, max: 0.3, scale: log}
    - {name: hidden, type: categorical, values: [16, 32, 64]}
  algorithm: {name: tpe, seed: 7}          # grid | random | tpe | array (core/arrays.py: no objective)
  objective: {metric: val_accuracy, goal: maximize}
  maxTrials: 12
  parallelism: 2
  earlyStopping: {algorithm: asha}         # median | asha
```

Each trial is an ordinary Job whose params are the template's params plus
the sampled values.  Sampling and pruning are Optuna's; this module only
defines and checks the document (pure, no Optuna import).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kubetrain.core.errors import SpecError
from kubetrain.core.specs import PARAM_KEY_RE, JobBody, Metadata, StrictModel, validate_document

#: Trials are named ``<experiment>-<n>``; keep room for the suffix inside 63 characters.
MAX_EXPERIMENT_NAME = 52
MAX_GRID = 100_000
#: Labels and params every trial job gets on top of the experiment's (see server/sweeps.py);
#: the job's own limits (64 labels, 1024 params) must leave room for them.
TRIAL_LABELS = ("kubetrain.io/experiment", "kubetrain.io/trial")
MAX_LABELS = 64
MAX_PARAMS = 1024


class Parameter(StrictModel):
    name: str
    type: Literal["float", "int", "categorical"]
    min: float | None = None
    max: float | None = None
    step: float | None = None
    scale: Literal["linear", "log"] = "linear"
    values: list[str | int | float | bool] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PARAM_KEY_RE.match(value):
            raise ValueError(f"{value!r} is not a valid param name; use letters, digits, '_', '.', '-'")
        return value

    @model_validator(mode="after")
    def _shape(self) -> "Parameter":
        if self.type == "categorical":
            if not self.values:
                raise ValueError(f"parameter {self.name!r}: categorical needs a non-empty 'values' list")
            if self.min is not None or self.max is not None:
                raise ValueError(f"parameter {self.name!r}: categorical takes 'values', not min/max")
            return self
        if self.values is not None:
            raise ValueError(f"parameter {self.name!r}: {self.type} takes min/max; use type: categorical for a list")
        if self.min is None or self.max is None:
            raise ValueError(f"parameter {self.name!r}: {self.type} needs both min and max")
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min > self.max:
            raise ValueError(f"parameter {self.name!r}: need finite min <= max, got {self.min}..{self.max}")
        if self.scale == "log" and self.min <= 0:
            raise ValueError(f"parameter {self.name!r}: a log scale needs min > 0, got {self.min}")
        if self.type == "int" and (self.min != int(self.min) or self.max != int(self.max)):
            raise ValueError(f"parameter {self.name!r}: int bounds must be whole numbers")
        if self.step is not None and (self.step <= 0 or self.scale == "log"):
            raise ValueError(f"parameter {self.name!r}: step must be > 0 and needs a linear scale")
        if self.type == "int" and self.step is not None and self.step < 1:
            raise ValueError(f"parameter {self.name!r}: an int step must be 1 or more, got {self.step}")
        return self

    def grid_count(self) -> int:
        """How many values :meth:`grid_values` yields, counted without building them
        (``max: 1e12`` must be refused, not enumerated)."""
        if self.type == "categorical":
            return len(self.values or [])
        if self.type == "int":
            return (int(self.max) - int(self.min)) // int(self.step or 1) + 1
        if self.step is None:
            self.grid_values()  # raises the "needs a step" error
        span = (self.max - self.min) / self.step
        if not math.isfinite(span) or span >= 2**62:
            return 2**62
        return int(math.floor(span + 1e-9)) + 1

    def grid_values(self) -> list[Any]:
        """Every value a grid visits; floats need a step to be enumerable."""
        if self.type == "categorical":
            return list(self.values or [])
        if self.type == "int":
            step = int(self.step or 1)
            return list(range(int(self.min), int(self.max) + 1, step))
        if self.step is None:
            raise SpecError(
                f"spec.parameters: float parameter {self.name!r} needs a 'step' (or type: categorical) for grid search"
            )
        count = int(math.floor((self.max - self.min) / self.step + 1e-9)) + 1
        return [round(self.min + i * self.step, 12) for i in range(count)]


class Algorithm(StrictModel):
    #: ``array``: a job array (core/arrays.py): trial n runs the n-th value of the one parameter, in order.
    name: Literal["grid", "random", "tpe", "array"] = "tpe"
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


class Objective(StrictModel):
    metric: str = Field(min_length=1, max_length=128)
    goal: Literal["maximize", "minimize"] = "maximize"


class EarlyStopping(StrictModel):
    algorithm: Literal["median", "asha"]
    #: median: trials to complete before pruning starts; asha: ignored.
    startup_trials: int = Field(default=3, alias="startupTrials", ge=0, le=10_000)
    #: median: steps a trial runs before it may be pruned.
    warmup_steps: int = Field(default=1, alias="warmupSteps", ge=0, le=2**62)
    #: asha: the first rung's budget in steps, and the reduction factor between rungs.
    min_resource: int = Field(default=1, alias="minResource", ge=1, le=2**62)
    reduction_factor: int = Field(default=3, alias="reductionFactor", ge=2, le=100)


class ExperimentBody(StrictModel):
    template: JobBody
    parameters: list[Parameter] = Field(min_length=1, max_length=64)
    algorithm: Algorithm = Field(default_factory=Algorithm)
    #: What a search optimises; an ``array`` has none.
    objective: Objective | None = None
    max_trials: int = Field(default=10, alias="maxTrials", ge=1, le=10_000)
    parallelism: int = Field(default=1, ge=1, le=1_000)
    early_stopping: EarlyStopping | None = Field(default=None, alias="earlyStopping")

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> "ExperimentBody":
        names = [p.name for p in self.parameters]
        duplicate = {n for n in names if names.count(n) > 1}
        if duplicate:
            raise ValueError(f"parameter names must be unique; repeated: {sorted(duplicate)}")
        if len(set(self.template.params) | set(names)) > MAX_PARAMS:
            raise ValueError(f"template params and parameters together exceed {MAX_PARAMS} params per trial")
        if self.algorithm.name == "array":
            if len(self.parameters) != 1 or self.parameters[0].type == "float":
                raise ValueError("algorithm array takes exactly one int or categorical parameter (the index); "
                                 "kubetrain run --array 0-9%2 writes it for you")
            if self.early_stopping is not None:
                raise ValueError("earlyStopping: an array has no objective to stop trials on; remove it")
        elif self.objective is None:
            raise ValueError(f"objective is required for a {self.algorithm.name} search: e.g. "
                             "objective: {metric: val_accuracy, goal: maximize}")
        if self.algorithm.name in ("grid", "array"):
            size = 1
            for parameter in self.parameters:
                size *= parameter.grid_count()
                if size > MAX_GRID:
                    raise ValueError(f"the grid has more than {MAX_GRID} points; narrow it or use random/tpe")
        return self

    def grid_size(self) -> int:
        return math.prod(p.grid_count() for p in self.parameters)

    def trial_budget(self) -> int:
        """How many trials the experiment makes: maxTrials, or fewer if the grid is smaller."""
        if self.algorithm.name in ("grid", "array"):
            return min(self.max_trials, self.grid_size())
        return self.max_trials

    def grid(self) -> list[dict[str, Any]]:
        names = [p.name for p in self.parameters]
        return [dict(zip(names, combo)) for combo in itertools.product(*(p.grid_values() for p in self.parameters))]


class ExperimentSpec(StrictModel):
    api_version: Literal["kubetrain/v1"] = Field(default="kubetrain/v1", alias="apiVersion")
    kind: Literal["Experiment"] = "Experiment"
    metadata: Metadata = Field(default_factory=Metadata)
    spec: ExperimentBody

    @model_validator(mode="after")
    def _name(self) -> "ExperimentSpec":
        if len(set(self.metadata.labels) | set(TRIAL_LABELS)) > MAX_LABELS:
            raise ValueError(
                f"metadata.labels: at most {MAX_LABELS - len(TRIAL_LABELS)} labels; each trial job also gets "
                f"{', '.join(TRIAL_LABELS)}"
            )
        if self.metadata.name and len(self.metadata.name) > MAX_EXPERIMENT_NAME:
            raise ValueError(
                f"metadata.name {self.metadata.name!r} is longer than {MAX_EXPERIMENT_NAME} characters "
                "(trials are named <experiment>-<n>); shorten it"
            )
        return self

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def validate_experiment(document: Any, *, lines: dict[tuple, int] | None = None) -> ExperimentSpec:
    """Validate an Experiment document (already parsed from YAML or JSON)."""
    return validate_document(ExperimentSpec, "Experiment", document, lines=lines)
