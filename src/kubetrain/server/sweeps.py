"""Experiments: sample trials with Optuna, run each as a Job, prune, and summarise.

Optuna does the mathematics (grid / random / TPE samplers, median / ASHA
pruners); this module is the glue between an Optuna study and kubetrain's
jobs.  Each experiment's study lives in an append-only journal file under
``$KUBETRAIN_HOME/experiments/<name>/`` (Optuna's JournalStorage: crash-safe,
and no table names shared with our own database).

Restart safety: trial ``n`` of experiment ``E`` is the job named ``E-n``.  A
trial asked from Optuna but whose job was never created (the master died in
between) is found on the next pass and its job created then; a job name
cannot be created twice, so no trial runs twice.  Samplers are re-seeded per
trial (from a hash of the seed and ``n``), so a seeded sweep draws the same trials whether or not
the master restarted in the middle.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

from kubetrain.core.arrays import INDEX_LABEL
from kubetrain.core.errors import ConflictError
from kubetrain.core.experiments import ExperimentSpec
from kubetrain.core.records import ExperimentRecord, MetricPoint, Provenance, TrialRecord
from kubetrain.core.specs import JobSpec
from kubetrain.core.states import ExperimentState, JobState
from kubetrain.store.store import Store

log = logging.getLogger("kubetrain.sweeps")

EXPERIMENT_LABEL = "kubetrain.io/experiment"
TRIAL_LABEL = "kubetrain.io/trial"
#: How often the loop looks for running experiments when it knows of none (see SweepController).
IDLE_RECHECK_SECONDS = 1.0


def _optuna():
    import optuna  # imported lazily: only a master running experiments pays for it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def tell(study, number: int, *args: Any, **kwargs: Any) -> None:
    """``study.tell``, minus Optuna's grid quirk: once every grid point has been asked,
    ``GridSampler.after_trial`` calls ``study.stop()``, which raises outside ``study.optimize``.
    The trial's state is stored before that (in a ``finally``), so the error only means
    "the grid is used up" and must not abort the reconcile pass."""
    try:
        study.tell(number, *args, **kwargs)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def distributions(spec: ExperimentSpec) -> dict[str, Any]:
    dist = _optuna().distributions
    out: dict[str, Any] = {}
    for p in spec.spec.parameters:
        if p.type == "categorical":
            out[p.name] = dist.CategoricalDistribution(list(p.values or []))
        elif p.type == "int":
            out[p.name] = dist.IntDistribution(int(p.min), int(p.max), log=p.scale == "log", step=int(p.step or 1))
        else:
            out[p.name] = dist.FloatDistribution(float(p.min), float(p.max), log=p.scale == "log", step=p.step)
    return out


def base_seed(spec: ExperimentSpec) -> int:
    if spec.spec.algorithm.seed is not None:
        return spec.spec.algorithm.seed
    digest = hashlib.sha256((spec.metadata.name or "").encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def make_sampler(spec: ExperimentSpec, trial_number: int):
    """The sampler for trial ``trial_number``: seeded so that replays draw the same values."""
    optuna = _optuna()
    # A hash, not seed + n: experiments with neighbouring seeds must not share draws.
    digest = hashlib.sha256(f"{base_seed(spec)}:{trial_number}".encode()).digest()
    seed = int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
    name = spec.spec.algorithm.name
    if name == "grid":
        space = {p.name: p.grid_values() for p in spec.spec.parameters}
        return optuna.samplers.GridSampler(space, seed=base_seed(spec))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, max(spec.spec.max_trials // 3, 2)))


def make_pruner(spec: ExperimentSpec):
    """The Optuna pruner of the experiment's early-stopping rule.  ``minResource`` holds for every rule: no
    trial is pruned at a step below it (the median rule's warm-up is at least that long; successive halving's
    first rung is there)."""
    optuna = _optuna()
    rule = spec.spec.early_stopping
    if rule is None:
        return optuna.pruners.NopPruner()
    if rule.algorithm == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=rule.startup_trials,
                                           n_warmup_steps=max(rule.warmup_steps, rule.min_resource))
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=rule.min_resource,
                                                  reduction_factor=rule.reduction_factor)


class SweepController:
    """Called by the reconcile loop (``reconcile``) and by metric ingestion (``on_metrics``)."""

    def __init__(self, store: Store, home: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.home = home
        self.clock = clock
        self._lock = threading.RLock()
        self._storages: dict[str, Any] = {}
        # With no experiment running, the loop re-reads the table only every IDLE_RECHECK_SECONDS
        # (it runs on every submit: a plain job's path to its start should not pay for sweeps).
        # ``create`` bumps the generation, so a new experiment is seen on the very next pass.
        self._generation = 0
        self._recheck_generation = -1
        self._recheck_at = 0.0

    # -- studies -------------------------------------------------------------
    def _storage(self, name: str):
        storage = self._storages.get(name)
        if storage is None:
            optuna = _optuna()
            folder = self.home / "experiments" / name
            folder.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal"))
            storage = optuna.storages.JournalStorage(backend)
            self._storages[name] = storage
        return storage

    def _study(self, spec: ExperimentSpec, *, trial_number: int | None = None):
        """The experiment's study; with ``trial_number``, set up to sample that trial.

        Without one it gets a neutral sampler: GridSampler's ``after_trial`` calls
        ``study.stop()``, which raises outside ``optimize()``, so tells must not go through it.
        """
        optuna = _optuna()
        sampler = optuna.samplers.RandomSampler() if trial_number is None else make_sampler(spec, trial_number)
        return optuna.create_study(
            storage=self._storage(spec.metadata.name), study_name=spec.metadata.name, load_if_exists=True,
            direction=spec.spec.objective.goal if spec.spec.objective else "maximize", sampler=sampler,
            pruner=make_pruner(spec),
        )

    # -- submit --------------------------------------------------------------
    def create(self, spec: ExperimentSpec, provenance: Provenance) -> None:
        self.store.create_experiment(spec, provenance, now=self.clock())
        if not is_array(spec):  # an array searches nothing: no study
            with self._lock:
                self._study(spec)
        self._generation += 1

    def poke(self) -> None:
        """An experiment was created elsewhere (the API's process): look at the table on the next pass."""
        self._generation += 1

    # -- the loop ------------------------------------------------------------
    def reconcile(self) -> None:
        generation, now = self._generation, time.monotonic()
        if now < self._recheck_at and generation == self._recheck_generation:
            return
        rows = self.store.list_experiment_rows(running_only=True)
        self._recheck_at = now + IDLE_RECHECK_SECONDS if not rows else 0.0
        self._recheck_generation = generation
        for row in rows:
            try:
                with self._lock:
                    self._reconcile_one(row)
            except Exception:  # noqa: BLE001 - one broken experiment must not stop the others
                log.exception("experiment %s: reconcile failed", row.name)

    def _reconcile_one(self, row) -> None:
        spec = ExperimentSpec.model_validate(row.spec)
        if is_array(spec):
            self._reconcile_array(row, spec)
            return
        optuna = _optuna()
        TrialState = optuna.trial.TrialState
        study = self._study(spec)
        trials = {t["trial"]: t for t in self.store.trials(row.id)}
        objective = spec.spec.objective
        summary = self.store.objective_summary([t["job_id"] for t in trials.values()], objective.metric, objective.goal)
        frozen_trials = study.get_trials(deepcopy=False)
        for frozen in frozen_trials:
            if frozen.state != TrialState.RUNNING:
                continue
            job = trials.get(frozen.number)
            if job is None:
                if not row.cancel_requested:
                    self._create_trial_job(row.id, spec, frozen.number, frozen.params, _owner(row),
                                            _provenance(row))
                else:
                    tell(study, frozen.number, state=TrialState.FAIL, skip_if_finished=True)
                continue
            if not JobState(job["state"]).is_terminal():
                continue
            value = summary.get(job["job_id"], {}).get("last")
            if job["reason"] == "EarlyStopped":
                tell(study, frozen.number, state=TrialState.PRUNED, skip_if_finished=True)
            elif job["state"] == JobState.SUCCEEDED.value and value is not None:
                tell(study, frozen.number, value, skip_if_finished=True)
            else:
                tell(study, frozen.number, state=TrialState.FAIL, skip_if_finished=True)
        budget = spec.spec.trial_budget()
        count = len(frozen_trials)
        active = sum(1 for t in trials.values() if not JobState(t["state"]).is_terminal())
        while not row.cancel_requested and count < budget and active < spec.spec.parallelism:
            study = self._study(spec, trial_number=count)
            trial = study.ask(fixed_distributions=distributions(spec))
            self._create_trial_job(row.id, spec, trial.number, trial.params, _owner(row), _provenance(row))
            count += 1
            active += 1
        self._summarise(row, spec, budget)

    def _reconcile_array(self, row, spec: ExperimentSpec) -> None:
        """An array (core/arrays.py): task n is trial n with the n-th index, started in order, ``parallelism``
        at a time; no study, no objective."""
        indices = spec.spec.parameters[0].grid_values()[: spec.spec.trial_budget()]
        trials = self.store.trials(row.id)
        active = sum(1 for t in trials if not JobState(t["state"]).is_terminal())
        made = {t["trial"] for t in trials}
        for number, index in enumerate(indices):
            if row.cancel_requested or active >= spec.spec.parallelism:
                break
            if number in made:
                continue
            self._create_trial_job(row.id, spec, number, {spec.spec.parameters[0].name: index}, _owner(row),
                                   _provenance(row), extra_labels={INDEX_LABEL: str(index)})
            active += 1
        self._summarise(row, spec, len(indices))

    def _create_trial_job(self, experiment_id: int, spec: ExperimentSpec, number: int, params: dict[str, Any],
                          owner: str, provenance: Provenance | None = None,
                          extra_labels: dict[str, str] | None = None) -> None:
        template = spec.spec.template
        name = f"{spec.metadata.name}-{number}"
        labels = {**spec.metadata.labels, EXPERIMENT_LABEL: spec.metadata.name, TRIAL_LABEL: str(number),
                  **(extra_labels or {})}
        body = template.model_copy(update={"params": {**template.params, **params}})
        job = JobSpec(metadata={"name": name, "labels": labels}, spec=body)
        # A trial carries its experiment's provenance (who, from where, which commit), as a job from `submit -f`.
        source = provenance or Provenance()
        provenance = Provenance(submitter=owner, hostname=source.hostname, submit_dir=source.submit_dir,
                                git=source.git)
        try:
            self.store.create_job(JobSpec.model_validate(job.to_document()), provenance,
                                  now=self.clock(), experiment_id=experiment_id, trial=number)
        except ConflictError:
            pass  # created before a restart: never twice

    def _summarise(self, row, spec: ExperimentSpec, budget: int) -> None:
        record = self.describe(row.name, spec=spec, row=row)
        counts = record.counts
        done = counts.get("done", 0)
        best = record.best_trial
        best_text = ""
        if best is not None and spec.spec.objective is not None:
            trial = next(t for t in record.trials if t.trial == best)
            best_text = (f"; best trial {trial.trial} ({trial.job}): {spec.spec.objective.metric}="
                         f"{trial.objective:g} with {trial.params}")
        unfinished = len(record.trials) - done
        if row.cancel_requested and unfinished == 0:
            self.store.finish_experiment(row.name, ExperimentState.CANCELLED,
                                         f"cancelled after {done} trials{best_text}", now=self.clock(), best_trial=best)
        elif len(record.trials) >= budget and unfinished == 0:
            if is_array(spec):
                failed = counts.get("failed", 0)
                self.store.finish_experiment(
                    row.name, ExperimentState.FAILED if failed else ExperimentState.SUCCEEDED,
                    f"{done} array tasks: {counts.get('succeeded', 0)} succeeded, {failed} failed",
                    now=self.clock(), best_trial=None)
            elif best is None:
                self.store.finish_experiment(row.name, ExperimentState.FAILED,
                                             f"all {done} trials ended without reporting {spec.spec.objective.metric}",
                                             now=self.clock(), best_trial=None)
            else:
                self.store.finish_experiment(
                    row.name, ExperimentState.SUCCEEDED,
                    f"{done} trials ({counts.get('succeeded', 0)} succeeded, {counts.get('pruned', 0)} stopped early, "
                    f"{counts.get('failed', 0)} failed){best_text}", now=self.clock(), best_trial=best)
        else:
            self.store.set_experiment_progress(row.name, f"{done} of {budget} trials done{best_text}", best)

    # -- reads ---------------------------------------------------------------
    def describe(self, name: str, *, spec: ExperimentSpec | None = None, row=None) -> ExperimentRecord:
        row = row or self.store.get_experiment_row(name)
        spec = spec or ExperimentSpec.model_validate(row.spec)
        objective = spec.spec.objective
        trials = self.store.trials(row.id)
        summary = {} if objective is None else self.store.objective_summary(
            [t["job_id"] for t in trials], objective.metric, objective.goal)
        records = []
        for t in trials:
            stats = summary.get(t["job_id"], {})
            duration = (t["finished_at"] - t["started_at"]) if t["started_at"] and t["finished_at"] else None
            records.append(TrialRecord(
                trial=t["trial"], job=t["job"], state=t["state"], reason=t["reason"],
                params={p.name: t["params"].get(p.name) for p in spec.spec.parameters},
                objective=stats.get("last"), best=stats.get("best"), steps=stats.get("points", 0),
                last_step=stats.get("last_step"), duration=duration,
            ))
        # budget: the trials it makes (a grid's size when that is below maxTrials), what progress counts against.
        counts = {"budget": spec.spec.trial_budget(), "trials": len(records), "queued": 0, "running": 0,
                  "succeeded": 0, "pruned": 0, "failed": 0, "done": 0}
        for r in records:
            if r.reason == "EarlyStopped":
                counts["pruned"] += 1
            elif r.state == JobState.SUCCEEDED.value:
                counts["succeeded"] += 1
            elif JobState(r.state).is_terminal():
                counts["failed"] += 1
            else:
                counts[r.state.lower()] = counts.get(r.state.lower(), 0) + 1
            counts["done"] += JobState(r.state).is_terminal()
        scored = [r for r in records if r.objective is not None and r.state == JobState.SUCCEEDED.value
                  and r.reason != "EarlyStopped"]
        best = None
        if scored and objective is not None:
            pick = max if objective.goal == "maximize" else min
            best = pick(scored, key=lambda r: r.objective).trial
        return ExperimentRecord(name=row.name, state=row.state, message=row.message, spec=row.spec,
                                created_at=row.created_at, finished_at=row.finished_at, best_trial=best,
                                counts=counts, trials=records)

    def events(self, name: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """What happened to an experiment, oldest first: its creation, its trials' events (each naming its trial
        job) and its end; at most ``limit`` trial events, the newest."""
        row = self.store.get_experiment_row(name)
        spec = ExperimentSpec.model_validate(row.spec)
        budget = spec.spec.trial_budget()
        grid = f" (a grid of {spec.spec.grid_size()})" if spec.spec.algorithm.name == "grid" else ""
        what = (f"array of {budget} tasks" if is_array(spec) else
                f"{spec.spec.algorithm.name} search of {budget} trials{grid}")
        events = [{"time": row.created_at, "type": "Normal", "reason": "Created", "job": None,
                   "message": f"{what}, {spec.spec.parallelism} at a time"}]
        events += self.store.trial_events(row.id, limit=limit)
        if row.finished_at is not None:
            events.append({"time": row.finished_at, "type": "Normal" if row.state == "Succeeded" else "Warning",
                           "reason": str(row.state), "job": None, "message": row.message or ""})
        return events

    # -- metrics -------------------------------------------------------------
    def on_metrics(self, job: str, experiment_id: int, trial: int, points: list[MetricPoint]) -> PruneAnswer:
        """Feed the objective to Optuna and ask the pruner: whether the trial should stop, and which metric the
        pruner watches (the SDK waits for the answer to a report holding a new step of it; sdk/tracking.py)."""
        document = self.store.running_experiment_spec(experiment_id)  # on every trial's metrics POST
        if document is None:
            return PruneAnswer(False, None)
        spec = ExperimentSpec.model_validate(document)
        rule = spec.spec.early_stopping
        if rule is None or spec.spec.objective is None:
            return PruneAnswer(False, None)
        metric = spec.spec.objective.metric
        mine = [p for p in points if p.name == metric]
        if not mine:
            return PruneAnswer(False, metric)
        optuna = _optuna()
        with self._lock:
            study = self._study(spec)
            storage = study._storage
            trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial)
            frozen = storage.get_trial(trial_id)
            if frozen.state != optuna.trial.TrialState.RUNNING:
                return PruneAnswer(False, metric)
            # One step at a time, as trial.report + should_prune would: successive halving decides
            # at rung boundaries, and a batch of steps must not skip them.
            pruned_at = None
            for point in sorted(mine, key=lambda p: p.step):
                storage.set_trial_intermediate_value(trial_id, point.step, point.value)
                if point.step < rule.min_resource:
                    continue  # minResource holds for every rule: no trial is stopped before it
                if study.pruner.prune(study, storage.get_trial(trial_id)):
                    pruned_at = point
                    break
            if pruned_at is None:
                return PruneAnswer(False, metric)
        last = pruned_at
        stop = self.store.request_early_stop(
            job, now=self.clock(),
            message=f"{rule.algorithm} early stopping: {metric}={last.value:g} at step {last.step} trails the "
                    "other trials",
        )
        return PruneAnswer(stop, metric)


def is_array(spec: ExperimentSpec) -> bool:
    """A job array (core/arrays.py), not a search."""
    return spec.spec.algorithm.name == "array"


class PruneAnswer(NamedTuple):
    """What a trial's metrics POST is answered: stop now?  and the metric the pruner decides on."""

    stop: bool
    watch: str | None


def _provenance(row) -> Provenance:
    """The experiment's provenance (read leniently: a stored document may predate a field)."""
    try:
        return Provenance.model_validate(row.provenance or {})
    except ValueError:
        return Provenance()


def _owner(row) -> str:
    """A trial is its experiment owner's job: it runs as them and they may cancel it."""
    return (row.provenance or {}).get("submitter") or "experiment"
