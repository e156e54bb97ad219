"""Fuzzing the spec edge: any text in, a valid spec or one SpecError out — never anything else.

``load_yaml_documents`` + ``validate_job`` / ``validate_experiment`` are what
``kubetrain submit -f`` runs on a user's file and what the API runs on a JSON
body.  Whatever they accept is stored and read back by the reconcile loop, so
an accepted spec must also survive a JSON round trip unchanged, name only
safe paths, and (for experiments) be something Optuna can sample.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from pathlib import Path

import optuna
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from kubetrain.core.documents import MAX_DEPTH, MAX_DOCUMENT_BYTES, load_yaml_documents
from kubetrain.core.errors import SpecError
from kubetrain.core.experiments import ExperimentSpec, validate_experiment
from kubetrain.core.quantities import parse_cpu, parse_memory
from kubetrain.core.selectors import format_selector, parse_selector
from kubetrain.core.specs import JobSpec, validate_job
from kubetrain.server.sweeps import EXPERIMENT_LABEL, TRIAL_LABEL, distributions, make_sampler
from tests.fuzz import strategies as fs

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: Generous: every input here is small; a slow one is a denial of service, not a slow machine.
SECONDS_PER_INPUT = 5.0
SAFE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ATTEMPTS = Path("/home/kubetrain/attempts")


# -- checks --------------------------------------------------------------------------

def assert_clean_spec_error(exc: SpecError) -> None:
    """A SpecError a CLI can print and an API can send as JSON."""
    assert type(exc) is SpecError
    assert isinstance(exc.message, str) and exc.message.strip(), "empty message"
    assert "Traceback" not in exc.message
    body = exc.to_dict()
    assert body["code"] == "invalid_spec"
    # The API sends it as UTF-8 JSON: lone surrogates in a message would make that a 500.
    json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")


def assert_safe_name(name: str | None) -> None:
    if name is None:
        return
    assert SAFE_NAME.match(name) and len(name) <= 63, name
    # Names become folders (attempts/<job>/<n>): an accepted name never leaves its parent.
    assert (ATTEMPTS / name).resolve().parent == ATTEMPTS


def stored_and_read_back(document: dict) -> dict:
    """What the store keeps (JSON, and PostgreSQL refuses NaN) and what the loop reads back."""
    return json.loads(json.dumps(document, allow_nan=False))


def check_job(spec: JobSpec) -> None:
    assert isinstance(spec, JobSpec)
    assert_safe_name(spec.metadata.name)
    if spec.metadata.generate_name is not None:
        assert re.match(r"^[a-z0-9][-a-z0-9]*$", spec.metadata.generate_name)
    body = spec.spec
    assert body.command and all("\x00" not in a for a in body.argv)
    assert parse_cpu(body.resources.cpu) >= 1
    assert parse_memory(body.resources.memory) >= 4 * 2**20
    assert format_selector(parse_selector(body.selector)) == body.selector
    system = {"/", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/lib", "/sbin"}
    for volume in body.volumes:
        # Whatever spelling: a volume never lands on (hides) a system folder, nor climbs out with '..'.
        parts = [p for p in volume.mount_path.split("/") if p not in ("", ".")]
        assert volume.mount_path.startswith("/") and ".." not in parts, volume.mount_path
        assert "/" + "/".join(parts) not in system, f"mountPath {volume.mount_path!r} hides a system folder"
        if volume.sub_path is not None:
            assert not volume.sub_path.startswith("/") and ".." not in volume.sub_path.split("/"), volume.sub_path
    if body.snapshot is not None and body.working_dir is not None:
        assert not body.working_dir.startswith("/") and ".." not in body.working_dir.split("/"), body.working_dir
    again = validate_job(stored_and_read_back(spec.to_document()))
    assert again == spec, "a stored spec must read back as the same spec"


def check_experiment(spec: ExperimentSpec) -> None:
    assert isinstance(spec, ExperimentSpec)
    assert_safe_name(spec.metadata.name)
    again = validate_experiment(stored_and_read_back(spec.to_document()))
    assert again == spec, "a stored experiment must read back as the same experiment"
    body = spec.spec
    if body.algorithm.name == "grid":
        size = body.grid_size()
        assert size <= 100_000
        if size <= 2_000:
            assert len(body.grid()) == size
    # What the master does at submit and on each pass: build the sampler, ask a trial, make its job.
    with warnings.catch_warnings():
        # Optuna narrows a float range its step does not divide, with a UserWarning: its business.
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction=body.objective.goal, sampler=make_sampler(spec, 0))
        trial = study.ask(fixed_distributions=distributions(spec))
    name = spec.metadata.name or "sweep-x7k2m"
    labels = {**spec.metadata.labels, EXPERIMENT_LABEL: name, TRIAL_LABEL: str(trial.number)}
    job = {"metadata": {"name": f"{name}-{trial.number}", "labels": labels},
           "spec": body.template.model_copy(update={"params": {**body.template.params, **trial.params}})
           .model_dump(mode="json", by_alias=True)}
    check_job(validate_job(stored_and_read_back(job)))


def outcome(function, *args, **kwargs):
    """('ok', result) or ('error', SpecError); anything else propagates and fails the test."""
    started = time.perf_counter()
    try:
        result = ("ok", function(*args, **kwargs))
    except SpecError as exc:
        assert_clean_spec_error(exc)
        result = ("error", exc)
    elapsed = time.perf_counter() - started
    assert elapsed < SECONDS_PER_INPUT, f"{function.__name__} took {elapsed:.1f}s"
    return result


def check_text(text: str) -> None:
    status, docs = outcome(load_yaml_documents, text, source="fuzz.yaml")
    event(f"yaml: {status}")
    if status == "error":
        assert docs.message.startswith("fuzz.yaml") or docs.message.startswith("line "), docs.message
        return
    assert docs, "an empty document must be an error, not an empty list"
    for data, lines in docs:
        assert data is not None and isinstance(lines, dict)
        status, spec = outcome(validate_job, data, lines=lines)
        event(f"job: {status}")
        if status == "ok":
            check_job(spec)
        status, spec = outcome(validate_experiment, data, lines=lines)
        event(f"experiment: {status}")
        if status == "ok":
            check_experiment(spec)


# -- texts ---------------------------------------------------------------------------

@given(fs.yaml_texts)
@example("a: 2001-02-30")  # an impossible date: PyYAML raised ValueError
@example("spec: {activeDeadlineSeconds: 2001-13-01}")
@example("a: " + "9" * 4301)  # Python refuses to parse an int of more than 4300 digits
@example("spec: {priority: !!int ten}")
@example("spec: {priority: !!float ten}")
@example("a: 2001-12-14t21:59:43.10-99:00")
@example("a: !!float\n")  # an empty scalar: PyYAML's float constructor raised IndexError
@example("a: !!int ''\n")
@example("a: !!timestamp soon\n")  # AttributeError inside PyYAML
@example("a: !!binary '%%%'")
@example("? [1]\n: 2")
@example("\ufeffkind: Job\nspec: {command: [true]}")
@example(fs.VALID_JOB_YAML)
def test_any_yaml_text_is_a_spec_or_a_spec_error(text: str) -> None:
    check_text(text)


@given(fs.yaml_bombs())
def test_yaml_bombs_are_refused_at_once(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(SpecError, match="aliases"):
        load_yaml_documents(text)
    assert time.perf_counter() - started < 1.0


@given(st.sampled_from(["&a [x, y]", "&a {k: v}", "&a x"]), st.sampled_from(["*a", "<<: *a"]))
def test_any_alias_is_refused(anchor: str, alias: str) -> None:
    text = f"base: {anchor}\nspec:\n  {alias}\n" if alias.startswith("<<") else f"base: {anchor}\nspec: {alias}\n"
    with pytest.raises(SpecError, match="aliases"):
        load_yaml_documents(text)


@settings(max_examples=30)  # past ~1000 levels each input costs PyYAML a second of recursion
@given(fs.deep_nesting())
def test_deep_nesting_is_capped(case: tuple[str, int]) -> None:
    text, depth = case
    started = time.perf_counter()
    if depth > MAX_DEPTH:
        with pytest.raises(SpecError, match="deep"):
            load_yaml_documents(text)
    else:
        check_text(text)
    assert time.perf_counter() - started < SECONDS_PER_INPUT  # bounded by the recursion limit


@settings(max_examples=10)
@given(st.integers(-64, 64), st.sampled_from(["a", "é", "\U0001f600"]))
def test_documents_over_the_size_cap_are_refused_by_bytes(offset: int, char: str) -> None:
    width = len(char.encode())
    body = char * ((MAX_DOCUMENT_BYTES - 6) // width + offset)  # "a: " prefix + quotes + newline
    text = f'a: "{body}"\n'
    size = len(text.encode())
    if size > MAX_DOCUMENT_BYTES:
        with pytest.raises(SpecError, match="larger than"):
            load_yaml_documents(text)
    else:
        [(data, _)] = load_yaml_documents(text)
        assert data == {"a": body}


# -- structured documents ------------------------------------------------------------------

@given(fs.job_documents)
@example({"spec": {"command": ["true"], "resources": {"cpu": float("nan")}}})
@example({"spec": {"command": ["true"], "resources": {"memory": 10**400}}})
@example({"metadata": {"name": "../../etc"}, "spec": {"command": ["true"]}})
@example({"spec": {"command": ["true"], "params": {"x": [float("inf")]}}})
@example({"spec": {"command": ["true"], "env": [{"name": "A"}, "B"]}})
@example({"spec": {"command": ["true"], "selector": {"a": None}}})
@example({"spec": {"command": ["true"], "volumes": [{"name": "v", "mountPath": "/etc/."}]}})  # hid /etc
@example({"spec": {"command": ["true"], "volumes": [{"name": "v", "mountPath": "//proc"}]}})
@example({"spec": {"command": ["true"], "volumes": [{"name": "a", "mountPath": "/data"},
                                                    {"name": "b", "mountPath": "/data/."}]}})
def test_job_documents_validate_or_raise_spec_error(document) -> None:
    status, spec = outcome(validate_job, document)
    event(f"job: {status}")
    if status == "ok":
        check_job(spec)
    # The same tree written as YAML and read back gives the same verdict.
    text = fs.dump(document, allow_unicode=False)
    if text is None or not isinstance(document, dict):
        return
    loaded_status, docs = outcome(load_yaml_documents, text)
    if loaded_status == "error":
        return  # e.g. a tree PyYAML writes but that nests past MAX_DEPTH
    [(data, lines)] = docs
    again_status, again = outcome(validate_job, data, lines=lines)
    assert again_status == status, (status, again_status, text)
    if status == "ok":
        assert again == spec


@given(fs.experiment_documents)
@example({"spec": {"template": {"command": ["true"]}, "objective": {"metric": "m"}, "algorithm": "grid",
                   "parameters": [{"name": "a", "type": "int", "min": 0, "max": 1e12}]}})
@example({"spec": {"template": {"command": ["true"]}, "objective": {"metric": "m"}, "algorithm": "grid",
                   "parameters": [{"name": "a", "type": "float", "min": 0, "max": 1, "step": 1e-9}]}})
@example({"spec": {"template": {"command": ["true"]}, "objective": {"metric": "m"}, "algorithm": "grid",
                   "parameters": [{"name": "a", "type": "float", "min": -1e308, "max": 1e308, "step": 1}]}})
@example({"spec": {"template": {"command": ["true"]}, "objective": {"metric": "m"}, "algorithm": "random",
                   "parameters": [{"name": "a", "type": "int", "min": 0, "max": 10, "step": 0.5}]}})
@example({"metadata": {"labels": {f"k{i}": "v" for i in range(64)}},
          "spec": {"template": {"command": ["true"]}, "objective": {"metric": "m"},
                   "parameters": [{"name": "a", "type": "categorical", "values": [1]}]}})
def test_experiment_documents_validate_or_raise_spec_error(document) -> None:
    status, spec = outcome(validate_experiment, document)
    event(f"experiment: {status}")
    if status == "ok":
        check_experiment(spec)


@given(fs.job_documents, fs.experiment_documents)
def test_a_document_is_never_both_kinds(job_document, experiment_document) -> None:
    for document in (job_document, experiment_document):
        job_status, _ = outcome(validate_job, document)
        experiment_status, _ = outcome(validate_experiment, document)
        assert not (job_status == "ok" and experiment_status == "ok"), document


@settings(max_examples=40)
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(), st.sampled_from(["cpu", "memory"]))
def test_quantity_numbers_never_crash(value, field: str) -> None:
    status, spec = outcome(validate_job, {"spec": {"command": ["true"], "resources": {field: value}}})
    if status == "ok":
        check_job(spec)
        assert math.isfinite(float(value))
