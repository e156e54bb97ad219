"""What a user reads for a bad Job or Experiment document: the field, the value and the fix, in our words.

Each row is a document as a user would write it and fragments its one-line message must hold.  Every
message is also checked for pydantic's or a codec's own wording, which must never reach the user.
"""

from __future__ import annotations

import pytest

from kubetrain.core.documents import MAX_DEPTH, load_yaml_documents
from kubetrain.core.errors import SpecError
from kubetrain.core.experiments import validate_experiment
from kubetrain.core.specs import JobSpec, validate_job
from kubetrain.core.strict import explain_errors

JOB = "apiVersion: kubetrain/v1\nkind: Job\n"
EXPERIMENT = "apiVersion: kubetrain/v1\nkind: Experiment\nmetadata: {name: sweep}\n"
PARAMETERS = "  parameters: [{name: lr, type: float, min: 0.001, max: 0.1}]\n"
#: Words of pydantic, PyYAML's Python side or the codecs: a message holding one was not rewritten.
FOREIGN = ("Input should", "Value error", "validation error", "[type=", "pydantic", "For further information",
           "codec can't", "invalid literal", "keys should be strings", "String should match", "List should")


def message_for(text: str | bytes) -> str:
    """What ``submit -f`` would say: parse, then validate each document by its kind."""
    with pytest.raises(SpecError) as info:
        for document, lines in load_yaml_documents(text, source="job.yaml"):
            kind = document.get("kind") if isinstance(document, dict) else None
            (validate_experiment if kind == "Experiment" else validate_job)(document, lines=lines)
    assert info.value.code == "invalid_spec"
    return info.value.message


CASES = {
    # -- duplicate keys: refused, with both lines -------------------------------------------------------
    "duplicate key": (
        JOB + "spec:\n  command: [python, a.py]\n  command: [python, b.py]\n",
        ["job.yaml: line 5: ", "spec.command is given twice", "lines 4 and 5", "keep one"],
    ),
    "duplicate section": (
        JOB + "spec:\n  command: [a]\nspec:\n  command: [b]\n",
        ["spec is given twice", "lines 3 and 5"],
    ),
    "duplicate key in a flow mapping": (
        JOB + "spec: {command: [a], priority: 1, priority: 2}\n",
        ["spec.priority is given twice, on line 3"],
    ),
    # -- a flat spec: where each key belongs, not "remove it" ------------------------------------------
    "top-level name": (
        "name: digits\nspec:\n  command: [python, train.py]\n",
        ["line 1: unknown field 'name'", "move it under metadata:", "metadata: {name: digits}"],
    ),
    "top-level command": (
        JOB + "command: [python, train.py]\n",
        ["line 3: unknown field 'command'", "move it under spec:", "spec: {command: [python, train.py]}"],
    ),
    "top-level image": (
        JOB + "image: pytorch/pytorch:2.3\nspec:\n  command: [python]\n",
        ["unknown field 'image'", "move it under spec:"],
    ),
    "name under spec": (
        JOB + "spec:\n  name: digits\n  command: [python]\n",
        ["unknown field 'spec.name'", "move it under metadata:"],
    ),
    "name twice": (
        JOB + "name: a\nmetadata: {name: b}\nspec:\n  command: [python]\n",
        ["unknown field 'name'", "remove it; metadata.name is already given"],
    ),
    "experiment command beside the template": (
        EXPERIMENT + "spec:\n  command: [python, train.py]\n  objective: {metric: acc}\n" + PARAMETERS,
        ["unknown field 'spec.command'", "move it under spec.template:", "spec: {template: {command:"],
    ),
    # -- did you mean -----------------------------------------------------------------------------------
    "misspelt section": (
        JOB + "spec:\n  command: [python]\n  resorces: {cpu: 1}\n",
        ["line 5: unknown field 'spec.resorces'", "did you mean 'spec.resources'?"],
    ),
    "misspelt resource": (
        JOB + "spec:\n  command: [python]\n  resources: {memmory: 1Gi}\n",
        ["did you mean 'spec.resources.memory'?"],
    ),
    "snake_case of a camelCase field": (
        JOB + "spec:\n  command: [python]\n  retryPolicy: {max_retry: 2}\n",
        ["unknown field 'spec.retryPolicy.max_retry'", "did you mean 'spec.retryPolicy.maxRetries'?"],
    ),
    "nothing close: the fields are listed": (
        JOB + "spec:\n  command: [python]\n  zzz: 1\n",
        ["unknown field 'spec.zzz'", "remove it", "spec takes command, args"],
    ),
    "misspelt value of a fixed set": (
        EXPERIMENT + "spec:\n  template: {command: [python]}\n  objective: {metric: acc, goal: max}\n" + PARAMETERS,
        ["spec.objective.goal: got 'max'", "'maximize' or 'minimize'", "did you mean 'maximize'?"],
    ),
    "kind in lowercase": (
        "apiVersion: kubetrain/v1\nkind: experiment\nspec: {command: [python]}\n",
        ["kind: got 'experiment'", "kind: Job and kind: Experiment", "the case matters"],
    ),
    # -- limits named -------------------------------------------------------------------------------------
    "memory over the largest": (
        JOB + "spec:\n  command: [python]\n  resources: {memory: 99999Ei}\n",
        ["spec.resources.memory: '99999Ei' is too large", "the largest memory", "8Ei", "e.g. 512Mi"],
    ),
    "memory under the smallest": (
        JOB + "spec:\n  command: [python]\n  resources: {memory: 1Mi}\n",
        ["'1Mi' is below 4Mi", "512Mi"],
    ),
    "cpu over the largest": (
        JOB + "spec:\n  command: [python]\n  resources: {cpu: 99999999}\n",
        ["spec.resources.cpu", "too large", "1000000 cores"],
    ),
    "memory unit misspelt": (
        JOB + "spec:\n  command: [python]\n  resources: {memory: 4GB}\n",
        ["'4GB' has an unknown unit 'GB'", "did you mean 'Gi' or 'G'?"],
    ),
    "memory with a space": (
        JOB + "spec:\n  command: [python]\n  resources: {memory: 4 Gi}\n",
        ["'4 Gi' is not a quantity", "without a space", "4Gi"],
    ),
    "memory as a list": (
        JOB + "spec:\n  command: [python]\n  resources: {memory: [4Gi]}\n",
        ["spec.resources.memory: got ['4Gi'], which is not a quantity", "512Mi or 4Gi"],
    ),
    "nesting past the deepest": (
        JOB + "spec:\n  command: [python]\n  params: " + "[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2) + "\n",
        [f"nests deeper than {MAX_DEPTH} levels", "at spec.params", "the deepest kubetrain reads", "flatten"],
    ),
    "a range": (
        JOB + "spec:\n  command: [python]\n  priority: 5000\n",
        ["spec.priority: got 5000", "the largest allowed is 1000"],
    ),
    "a deadline past a year": (
        JOB + "spec:\n  command: [python]\n  activeDeadlineSeconds: 99999999999\n",
        ["spec.activeDeadlineSeconds: got 99999999999", "31622400 (366 days)"],
    ),
    "a word for a number": (
        JOB + "spec:\n  command: [python]\n  priority: high\n",
        ["spec.priority: got 'high', expected a whole number (from -1000 to 1000)"],
    ),
    # -- selectors: the operators allowed ----------------------------------------------------------------
    "selector with >": (
        JOB + "spec:\n  command: [python]\n  selector: 'gpu-count > 2'\n",
        ["spec.selector: 'gpu-count > 2' uses '>'", "not a selector operator",
         "the operators allowed are key=value, key==value, key!=value, key in (a,b), key notin (a,b)",
         "!key (does not exist)"],
    ),
    "selector regex": (
        JOB + "spec:\n  command: [python]\n  selector: 'gpu-type=~a100'\n",
        ["uses '=~'", "the operators allowed are"],
    ),
    "selector set without parentheses": (
        JOB + "spec:\n  command: [python]\n  selector: 'zone in a,b'\n",
        ["'zone in a'", "go in parentheses", "zone in (a, b)"],
    ),
    "selector exists as a word": (
        JOB + "spec:\n  command: [python]\n  selector: 'spot exists'\n",
        ["write 'spot' for exists and '!spot' for does not exist"],
    ),
    # -- types, in words ---------------------------------------------------------------------------------
    "command as one string": (
        JOB + "spec:\n  command: python train.py --lr 0.1\n",
        ["spec.command: got 'python train.py --lr 0.1'", "not a valid list", '[python, train.py, --lr, "0.1"]'],
    ),
    "a number where text goes": (
        JOB + "metadata: {labels: {version: 2}}\nspec:\n  command: [python]\n",
        ["metadata.labels.version: got 2, expected text", "quote it: \"2\""],
    ),
    "python version read as a number": (
        JOB + "spec:\n  command: [python]\n  environment: {python: 3.10}\n",
        ["spec.environment.python: got the number 3.1", "python: \"3.11\""],
    ),
    "python version of another form": (
        JOB + "spec:\n  command: [python]\n  environment: {python: '2.7'}\n",
        ["'2.7' is not a Python version of the form 3.N"],
    ),
    "secret name": (
        JOB + "spec:\n  command: [python]\n  secretEnv: {TOKEN: {name: My_Secret, key: token}}\n",
        ["spec.secretEnv.TOKEN.name: 'My_Secret' is not a secret name", "lowercase letters"],
    ),
    "a list of mappings": (
        JOB + "spec:\n  command: [python]\n  volumes: data\n",
        ["spec.volumes: got 'data'", "a list of mappings, e.g. [{name: ..., mountPath: ...}]"],
    ),
    "a mapping": (
        JOB + "spec:\n  command: [python]\n  resources: 4Gi\n",
        ["spec.resources: got '4Gi', expected a mapping with the fields cpu, memory, gpu"],
    ),
    "a value of none of a union's types": (
        EXPERIMENT + "spec:\n  template: {command: [python]}\n  objective: {metric: acc}\n"
        "  parameters: [{name: opt, type: categorical, values: [{a: 1}]}]\n",
        ["spec.parameters[0].values[0]: got {'a': 1}, expected text, a number or true/false"],
    ),
    "no spec at all": (
        JOB + "metadata: {name: x}\n",
        ["spec: required field is missing", "spec: {command: [python, train.py]}"],
    ),
    # -- YAML and bytes ---------------------------------------------------------------------------------
    "non-UTF-8 bytes": (
        (JOB + "spec:\n  command: [echo, caf\xe9]\n").encode("latin-1"),
        ["job.yaml: line 4: byte 0xe9 is not UTF-8", "near: command: [echo, caf\\xe9]", "save the file as UTF-8"],
    ),
    "an unclosed list": (
        JOB + "spec:\n  command: [python\n",
        ["job.yaml: line 5: malformed YAML", "from line 4", "close the list with ']'"],
    ),
    "a tab": (
        JOB + "spec:\n\tcommand: [python]\n",
        ["line 4: malformed YAML", "indent with spaces"],
    ),
    "a control character": (
        JOB + "spec:\n  command: [python\x07]\n",
        ["job.yaml: line 4: malformed YAML: character U+0007", "remove it"],
    ),
    "an impossible date": (
        JOB + "spec:\n  command: [python]\n  params: {since: 2001-02-30}\n",
        ["line 5: cannot read '2001-02-30' as timestamp", "quote it to keep it as text"],
    ),
    "a word tagged as an int": (
        JOB + "spec:\n  command: [python]\n  params: {n: !!int ten}\n",
        ["cannot read 'ten' as int", "remove the !!int tag"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_message_names_the_field_the_value_and_the_fix(case):
    text, fragments = CASES[case]
    message = message_for(text)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    for words in FOREIGN:
        assert words not in message, f"{words!r} in {message!r}"
    assert "\n" not in message and "Traceback" not in message


def test_a_flat_spec_is_not_also_told_that_spec_is_missing():
    message = message_for("name: digits\ncommand: [python, train.py]\n")
    assert message == ("line 1: unknown field 'name': move it under metadata:, e.g. metadata: {name: digits}; "
                       "line 2: unknown field 'command': move it under spec:, e.g. spec: {command: [python, train.py]}")
    assert "remove it" not in message


def test_a_misspelling_is_not_matched_to_a_field_already_given():
    # `typo` beside `type`: suggesting 'type' would be wrong; the fields are listed instead.
    message = message_for(EXPERIMENT + "spec:\n  template: {command: [python]}\n  objective: {metric: acc}\n"
                          "  parameters: [{name: lr, type: float, min: 0, max: 1, typo: 1}]\n")
    assert "did you mean" not in message
    assert "spec.parameters[0] takes name, type, min, max" in message


def test_several_messages_are_in_line_order_and_each_names_its_field():
    error = None
    try:
        for document, lines in load_yaml_documents(
                JOB + "spec:\n  command: [python]\n  resources: {memory: 4GB}\n  priority: high\n"):
            validate_job(document, lines=lines)
    except SpecError as exc:
        error = exc
    assert error is not None
    assert error.message.startswith("line 5: spec.resources.memory: ")
    assert "; line 6: spec.priority: " in error.message
    assert error.details == {"fields": ["spec.resources.memory", "spec.priority"]}


def test_a_utf16_file_with_a_bom_is_read():
    text = JOB + "spec:\n  command: [python]\n"
    [(document, _)] = load_yaml_documents(text.encode("utf-16"))
    assert document["spec"] == {"command": ["python"]}


def test_messages_stay_utf8_whatever_the_document_holds():
    # A lone surrogate in a key: the message must still be sendable as UTF-8 JSON.
    with pytest.raises(SpecError) as info:
        validate_job({"spec": {"command": ["python"], "bad\ud800": 1}})
    info.value.message.encode("utf-8")


def test_explain_errors_reads_the_api_s_error_list():
    """The API's 422 handler gets pydantic's list from FastAPI; the same words come out."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({"name": "x", "spec": {"command": "python train.py"}})
    error = explain_errors(info.value.errors(), model=JobSpec)
    assert "unknown field 'name': move it under metadata:" in error.message
    assert "spec.command: got 'python train.py', which is not a valid list; write it as [python, train.py]" \
        in error.message


@pytest.mark.parametrize(("memory", "stored"), [(2.0 * 2**30, str(2**31)), (4194304.0, "4194304")])
def test_whole_float_memory_is_still_accepted(memory, stored):
    # Messages changed, acceptance did not: stored specs are read back with the same model.
    assert validate_job({"spec": {"command": ["x"], "resources": {"memory": memory}}}).spec.resources.memory == stored
