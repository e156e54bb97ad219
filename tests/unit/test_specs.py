"""Job spec validation: strict at the edge, every error names field, value and fix."""

from __future__ import annotations

import textwrap

import pytest

from kubetrain.core.documents import load_yaml_documents
from kubetrain.core.errors import SpecError
from kubetrain.core.selectors import Requirement
from kubetrain.core.specs import API_VERSION, JobSpec, check_name, validate_job

GOOD = """\
apiVersion: kubetrain/v1
kind: Job
metadata:
  name: digits-lr01
  labels:
    team: ml
    example.com/project: digits
spec:
  command: [python, train.py]
  args: ["--lr", "0.01"]
  workingDir: /work/digits
  env:
    SEED: "7"
  params:
    lr: 0.01
    layers: [64, 32]
  resources:
    cpu: 500m
    memory: 4Gi
    gpu: 2
  selector: gpu-type=a100,!spot
  priority: 10
  activeDeadlineSeconds: 3600
"""


def from_yaml(text: str) -> JobSpec:
    [(document, lines)] = load_yaml_documents(textwrap.dedent(text))
    return validate_job(document, lines=lines)


def body(**spec) -> dict:
    return {"apiVersion": API_VERSION, "kind": "Job", "spec": {"command": ["python", "train.py"], **spec}}


def error_for(document) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate_job(document)
    return info.value


# -- good documents -----------------------------------------------------------


def test_full_document_is_accepted():
    job = from_yaml(GOOD)
    assert job.metadata.name == "digits-lr01"
    assert job.metadata.labels == {"team": "ml", "example.com/project": "digits"}
    assert job.spec.argv == ["python", "train.py", "--lr", "0.01"]
    assert job.spec.working_dir == "/work/digits"
    assert job.spec.env == {"SEED": "7"}
    assert job.spec.params == {"lr": 0.01, "layers": [64, 32]}
    assert job.spec.resources.cpu_millis == 500
    assert job.spec.resources.memory_bytes == 4 * 2**30
    assert job.spec.resources.gpu == 2
    assert job.spec.requirements == (
        Requirement("gpu-type", "In", ("a100",)),
        Requirement("spot", "DoesNotExist"),
    )
    assert job.spec.priority == 10
    assert job.spec.active_deadline_seconds == 3600


def test_minimal_document_gets_defaults():
    job = validate_job({"spec": {"command": ["true"]}})
    assert job.api_version == "kubetrain/v1"
    assert job.kind == "Job"
    assert job.metadata.name is None
    resources = job.spec.resources
    assert (resources.cpu_millis, resources.memory_bytes, resources.gpu) == (1000, 2 * 2**30, 0)
    assert job.spec.selector == ""
    assert job.spec.requirements == ()
    assert job.spec.shell is False


def test_document_round_trips_through_to_document():
    job = from_yaml(GOOD)
    document = job.to_document()
    assert document["spec"]["workingDir"] == "/work/digits"
    assert document["spec"]["activeDeadlineSeconds"] == 3600
    assert document["apiVersion"] == "kubetrain/v1"
    assert validate_job(document) == job


def test_snake_case_names_are_accepted_too():
    job = validate_job(body(working_dir="/tmp", active_deadline_seconds=5))
    assert job.spec.working_dir == "/tmp"
    assert job.spec.active_deadline_seconds == 5


def test_with_name_returns_a_renamed_copy():
    job = validate_job(body())
    renamed = job.with_name("other")
    assert renamed.metadata.name == "other"
    assert job.metadata.name is None


@pytest.mark.parametrize(
    ("cpu", "stored", "millis"),
    [("500m", "500m", 500), (2, "2", 2000), (0.5, "500m", 500), ("1.5", "1500m", 1500), ("2000m", "2", 2000)],
)
def test_cpu_is_normalised(cpu, stored, millis):
    resources = validate_job(body(resources={"cpu": cpu})).spec.resources
    assert resources.cpu == stored
    assert resources.cpu_millis == millis


@pytest.mark.parametrize(
    ("memory", "num_bytes"),
    [("4Gi", 4 * 2**30), ("100Mi", 100 * 2**20), ("1G", 10**9), (2**30, 2**30), ("1.5Gi", 3 * 2**29)],
)
def test_memory_is_accepted(memory, num_bytes):
    assert validate_job(body(resources={"memory": memory})).spec.resources.memory_bytes == num_bytes


@pytest.mark.parametrize(("gpu", "count"), [(0, 0), (1, 1), (8, 8), ("2", 2)])
def test_gpu_counts(gpu, count):
    assert validate_job(body(resources={"gpu": gpu})).spec.resources.gpu == count


# -- errors name the field, the value and the fix ------------------------------


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (body(resorces={"gpu": 1}), "unknown field 'spec.resorces'"),
        (body(resources={"gpus": 1}), "unknown field 'spec.resources.gpus'"),
        ({**body(), "metdata": {}}, "unknown field 'metdata'"),
        ({**body(), "metadata": {"nmae": "x"}}, "unknown field 'metadata.nmae'"),
    ],
)
def test_unknown_fields_are_named(document, fragment):
    error = error_for(document)
    assert fragment in error.message
    assert "check its spelling" in error.message


@pytest.mark.parametrize(
    ("resources", "field", "fragments"),
    [
        ({"memory": "4XB"}, "spec.resources.memory", ["'4XB'", "unknown unit 'XB'", "4Gi"]),
        ({"memory": "abc"}, "spec.resources.memory", ["'abc'", "not a quantity"]),
        ({"memory": "1Mi"}, "spec.resources.memory", ["'1Mi'", "below 4Mi"]),
        ({"memory": True}, "spec.resources.memory", ["True", "not a quantity"]),
        ({"cpu": "4Gi"}, "spec.resources.cpu", ["'4Gi'", "unknown unit"]),
        ({"cpu": 0}, "spec.resources.cpu", ["0", "zero"]),
        ({"cpu": "-1"}, "spec.resources.cpu", ["'-1'", "not a quantity"]),
        # YAML reads `cpu: yes` as True; it must not silently become 1 core.
        ({"cpu": True}, "spec.resources.cpu", ["True", "not a quantity"]),
        ({"cpu": float("nan")}, "spec.resources.cpu", ["nan", "not a finite number"]),
        ({"gpu": -1}, "spec.resources.gpu", ["-1", "negative"]),
        ({"gpu": 1.5}, "spec.resources.gpu", ["1.5", "whole number"]),
        ({"gpu": "two"}, "spec.resources.gpu", ["'two'", "whole number"]),
        ({"gpu": True}, "spec.resources.gpu", ["True", "whole number"]),
        ({"gpu": 1025}, "spec.resources.gpu", ["1025", "more than any node has"]),
    ],
)
def test_resource_errors(resources, field, fragments):
    error = error_for(body(resources=resources))
    assert error.message.startswith(f"{field}: ")
    for fragment in fragments:
        assert fragment in error.message
    assert error.details == {"fields": [field]}


def test_several_errors_are_reported_together():
    error = error_for(body(resources={"memory": "4XB", "gpu": -1}))
    assert error.details["fields"] == ["spec.resources.memory", "spec.resources.gpu"]
    assert "'4XB'" in error.message and "-1 is negative" in error.message


@pytest.mark.parametrize(
    "name", ["Digits", "digits_lr", "-digits", "digits-", "", "a" * 64, "digits.lr", "dígits"]
)
def test_bad_names_are_rejected(name):
    error = error_for({**body(), "metadata": {"name": name}})
    assert error.message.startswith("metadata.name: ")
    assert repr(name) in error.message
    assert "lowercase letters, digits and '-'" in error.message


@pytest.mark.parametrize("name", ["a", "digits", "digits-lr01", "0", "a" * 63])
def test_good_names(name):
    assert check_name(name) == name
    assert validate_job({**body(), "metadata": {"name": name}}).metadata.name == name


@pytest.mark.parametrize(
    ("document", "field", "fragment"),
    [
        ({"spec": {}}, "spec.command", "required field is missing"),
        ({}, "spec", "required field is missing"),
        (body(command=[]), "spec.command", "at least 1 item"),
        (body(command="python train.py"), "spec.command", "valid list"),
        (body(args=["ok", "bad\x00"]), "spec.args", "NUL byte"),
        (body(workingDir="relative/dir"), "spec.workingDir", "not an absolute path"),
        (body(priority=1001), "spec.priority", "got 1001"),
        (body(priority=-1001), "spec.priority", "got -1001"),
        (body(activeDeadlineSeconds=0), "spec.activeDeadlineSeconds", "got 0"),
        ({**body(), "apiVersion": "kubetrain/v2"}, "apiVersion", "got 'kubetrain/v2'"),
        # The expected literal keeps its case: the fix must be 'Job', not 'job'.
        ({**body(), "kind": "Pod"}, "kind", "got 'Pod', input should be 'Job'"),
        ({**body(), "metadata": {"labels": {"bad key": "x"}}}, "metadata.labels", "label key 'bad key'"),
        ({**body(), "metadata": {"labels": {"team": "a b"}}}, "metadata.labels", "invalid value"),
    ],
)
def test_field_errors(document, field, fragment):
    error = error_for(document)
    assert field in error.details["fields"]
    assert fragment in error.message


@pytest.mark.parametrize("document", [None, [], "spec: x", 3])
def test_document_must_be_a_mapping(document):
    error = error_for(document)
    assert "a Job document must be a mapping" in error.message
    assert type(document).__name__ in error.message


def test_spec_error_is_an_invalid_spec():
    error = error_for(body(resources={"gpu": -1}))
    assert error.code == "invalid_spec"
    assert error.http_status == 422


# -- env ----------------------------------------------------------------------


def test_env_mapping_values_become_strings():
    assert validate_job(body(env={"A": "x", "B": 1, "C": 1.5})).spec.env == {"A": "x", "B": "1", "C": "1.5"}


def test_env_list_form_is_accepted():
    env = [{"name": "A", "value": "1"}, {"name": "B"}]
    assert validate_job(body(env=env)).spec.env == {"A": "1", "B": ""}


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"KUBETRAIN_HOME": "/x"}, "'KUBETRAIN_HOME' is reserved"),
        ([{"name": "KUBETRAIN_TOKEN", "value": "x"}], "'KUBETRAIN_TOKEN' is reserved"),
        ({"1A": "x"}, "env name '1A' is invalid"),
        ({"A-B": "x"}, "env name 'A-B' is invalid"),
        ({"A": True}, "value must be a string, got bool"),
        ({"A": None}, "value must be a string, got NoneType"),
        ({"A": "x\x00y"}, "NUL byte"),
        (["A=1"], "env list items must be {name: ..., value: ...}"),
        ("A=1", "env must be a mapping"),
        ([{"name": "A", "valu": "1"}], "unknown field"),
    ],
)
def test_env_errors(env, fragment):
    error = error_for(body(env=env))
    assert fragment in error.message
    assert error.details["fields"][0].startswith("spec.env")


@pytest.mark.parametrize("name", ["KUBETRAIN", "MY_KUBETRAIN_X", "kubetrain_home"])
def test_only_the_kubetrain_prefix_is_reserved(name):
    assert name in validate_job(body(env={name: "x"})).spec.env


# -- params -------------------------------------------------------------------


def test_params_accept_json_values_and_dotted_keys():
    params = {"lr": 0.01, "_seed": 7, "model.depth": 3, "opt-name": "adam", "flags": [1, "a"], "nested": {"a": None}}
    assert validate_job(body(params=params)).spec.params == params


@pytest.mark.parametrize("key", ["1lr", "bad key", "-x", ".x", "a" * 65, "", "lr=1"])
def test_bad_param_keys(key):
    error = error_for(body(params={key: 1}))
    assert f"param name {key!r} is invalid" in error.message
    assert error.details == {"fields": ["spec.params"]}


# -- selector -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "stored"),
    [
        ({"gpu-type": "a100", "zone": "b"}, "gpu-type=a100,zone=b"),
        ("gpu-type=a100,zone in (a,b),!spot", "gpu-type=a100,zone in (a, b),!spot"),
        ("tier notin (low)", "tier!=low"),
        (None, ""),
        ("", ""),
    ],
)
def test_selector_forms_are_normalised(selector, stored):
    job = validate_job(body(selector=selector))
    assert job.spec.selector == stored


def test_selector_mapping_matches_like_equality():
    job = validate_job(body(selector={"gpu-type": "a100"}))
    assert job.spec.requirements == (Requirement("gpu-type", "In", ("a100",)),)


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        ("zone in (a", "unbalanced '('"),
        ("gpu type=a100", "not a valid label key"),
        ({"gpu-type": "a 100"}, "not a valid label value"),
        (5, "selector must be a string"),
        (["a=b"], "selector must be a string"),
    ],
)
def test_selector_errors(selector, fragment):
    error = error_for(body(selector=selector))
    assert error.message.startswith("spec.selector: ")
    assert fragment in error.message


# -- YAML line numbers ----------------------------------------------------------


def yaml_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        from_yaml(text)
    return info.value


def test_unknown_field_error_carries_its_line():
    error = yaml_error(
        """\
        apiVersion: kubetrain/v1
        kind: Job
        spec:
          command: [python, train.py]
          resorces:
            gpu: 1
        """
    )
    assert error.message == "line 5: unknown field 'spec.resorces'; check its spelling: did you mean 'spec.resources'?"


def test_value_errors_carry_the_line_of_their_key():
    error = yaml_error(
        """\
        spec:
          command: [python, train.py]
          resources:
            cpu: 2
            memory: 4XB
            gpu: -1
        """
    )
    parts = error.message.split("; line ")
    assert parts[0].startswith("line 5: spec.resources.memory: '4XB' has an unknown unit 'XB'")
    assert parts[-1].startswith("6: spec.resources.gpu: -1 is negative")


def test_list_item_errors_carry_the_item_line():
    error = yaml_error(
        """\
        spec:
          command:
            - python
            - [not, a, string]
        """
    )
    assert error.message.startswith("line 4: spec.command[1]: ")


def test_env_list_error_carries_the_env_line():
    error = yaml_error(
        """\
        spec:
          command: [python]
          env:
            - name: KUBETRAIN_HOME
              value: /x
        """
    )
    assert error.message.startswith("line 3: spec.env: env name 'KUBETRAIN_HOME' is reserved")


def test_missing_field_has_no_line_but_still_names_the_field():
    error = yaml_error("metadata:\n  name: x\nspec:\n  args: [a]\n")
    assert error.message == "spec.command: required field is missing"


def test_without_lines_errors_have_no_line_prefix():
    error = error_for(body(resorces={}))
    assert not error.message.startswith("line ")


def test_yaml_booleans_are_not_quantities():
    error = yaml_error("spec:\n  command: [x]\n  resources:\n    cpu: yes\n")
    assert error.message.startswith("line 4: spec.resources.cpu: True is not a quantity")


def test_yaml_nan_cpu_is_a_spec_error_not_a_crash():
    error = yaml_error("spec:\n  command: [x]\n  resources:\n    cpu: .nan\n")
    assert error.message.startswith("line 4: spec.resources.cpu: ")
