"""Safe YAML loading: line numbers, no aliases, capped size and depth."""

from __future__ import annotations

import time

import pytest

from kubetrain.core.documents import MAX_DEPTH, MAX_DOCUMENT_BYTES, load_yaml_documents
from kubetrain.core.errors import SpecError

JOB = """\
apiVersion: kubetrain/v1
kind: Job
metadata:
  name: digits
spec:
  command: [python, train.py]
  resources:
    cpu: 2
    memory: 4Gi
"""


def test_single_document_data_and_lines():
    [(data, lines)] = load_yaml_documents(JOB)
    assert data == {
        "apiVersion": "kubetrain/v1",
        "kind": "Job",
        "metadata": {"name": "digits"},
        "spec": {"command": ["python", "train.py"], "resources": {"cpu": 2, "memory": "4Gi"}},
    }
    assert lines[("apiVersion",)] == 1
    assert lines[("metadata",)] == 3
    assert lines[("metadata", "name")] == 4
    assert lines[("spec",)] == 5
    assert lines[("spec", "command")] == 6
    assert lines[("spec", "command", 1)] == 6
    assert lines[("spec", "resources")] == 7
    assert lines[("spec", "resources", "cpu")] == 8
    assert lines[("spec", "resources", "memory")] == 9


def test_block_sequence_items_have_their_own_lines():
    [(data, lines)] = load_yaml_documents("args:\n  - a\n  - b\n  - c\n")
    assert data == {"args": ["a", "b", "c"]}
    assert [lines[("args", i)] for i in range(3)] == [2, 3, 4]


def test_multiple_documents():
    text = "a: 1\n---\nb: 2\n---\nc: 3\n"
    docs = load_yaml_documents(text)
    assert [d for d, _ in docs] == [{"a": 1}, {"b": 2}, {"c": 3}]
    # Line numbers count from the top of the file, not the document.
    assert [lines[(key,)] for (_, lines), key in zip(docs, "abc")] == [1, 3, 5]


@pytest.mark.parametrize(
    "text",
    ["---\na: 1\n", "a: 1\n---\n", "a: 1\n---\n---\n", "---\n---\na: 1\n...\n"],
)
def test_empty_documents_between_separators_are_skipped(text):
    # A leading or trailing `---` must not turn into a bogus `None` document.
    assert [d for d, _ in load_yaml_documents(text)] == [{"a": 1}]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "---\n...\n"])
def test_empty_input_is_refused(text):
    with pytest.raises(SpecError, match="the document is empty"):
        load_yaml_documents(text, source="job.yaml")


def test_source_is_named_in_errors():
    with pytest.raises(SpecError, match=r"^jobs/train\.yaml: "):
        load_yaml_documents("", source="jobs/train.yaml")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: [1, 2\n", 2),
        ("a: 1\nb: c: d\n", 2),
        ("a: 1\n  b: 2\n", 2),
        ("spec:\n  command: [x]\n  env: {A: 1\n", 4),
        ("a: 1\n\tb: 2\n", 2),
        ("a: 'open\n", 2),
    ],
)
def test_malformed_yaml_names_the_line(text, line):
    with pytest.raises(SpecError) as info:
        load_yaml_documents(text, source="job.yaml")
    message = info.value.message
    assert message.startswith(f"job.yaml: line {line}: malformed YAML: ")
    assert info.value.code == "invalid_spec"


def test_malformed_yaml_error_is_not_chained():
    # `from None`: the user sees one clean message, not a PyYAML traceback.
    with pytest.raises(SpecError) as info:
        load_yaml_documents("a: [1\n")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_aliases_are_refused_with_the_line():
    text = "base: &base {cpu: 1}\nother: *base\n"
    with pytest.raises(SpecError) as info:
        load_yaml_documents(text)
    message = info.value.message
    assert "line 2" in message
    assert "aliases (*base) are not allowed" in message


def test_billion_laughs_is_refused_quickly():
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for index in range(1, 10):
        prev, cur = chr(ord("a") + index - 1), chr(ord("a") + index)
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "\n".join(levels) + "\n"
    started = time.monotonic()
    with pytest.raises(SpecError, match="aliases"):
        load_yaml_documents(text)
    assert time.monotonic() - started < 1.0


def test_anchor_without_alias_is_harmless():
    [(data, _)] = load_yaml_documents("a: &x 1\nb: 2\n")
    assert data == {"a": 1, "b": 2}


def test_alias_in_a_later_document_is_refused():
    with pytest.raises(SpecError, match="aliases"):
        load_yaml_documents("a: 1\n---\nb: &x 1\nc: *x\n")


def _nested_mapping(depth: int) -> str:
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(depth)) + f"{'  ' * depth}leaf\n"


def test_nesting_up_to_the_limit_is_accepted():
    [(data, lines)] = load_yaml_documents(_nested_mapping(MAX_DEPTH))
    path = tuple(f"k{i}" for i in range(MAX_DEPTH))
    node = data
    for key in path:
        node = node[key]
    assert node == "leaf"
    assert lines[path] == MAX_DEPTH


def test_nesting_past_the_limit_is_refused():
    with pytest.raises(SpecError, match=f"nests deeper than {MAX_DEPTH} levels"):
        load_yaml_documents(_nested_mapping(MAX_DEPTH + 1))


@pytest.mark.parametrize(
    ("depth", "fragment"),
    [
        (100, f"line 1: document nests deeper than {MAX_DEPTH} levels"),
        # Deep enough to blow PyYAML's own recursion while composing: still a SpecError.
        (5_000, "<input>: document nests too deeply"),
    ],
)
def test_deep_flow_nesting_is_refused_not_crashing(depth, fragment):
    with pytest.raises(SpecError) as info:
        load_yaml_documents("[" * depth + "]" * depth)
    assert fragment in info.value.message


def test_oversized_document_is_refused():
    text = "a: " + "x" * MAX_DOCUMENT_BYTES + "\n"
    with pytest.raises(SpecError, match="larger than 1024 KiB"):
        load_yaml_documents(text, source="big.yaml")


def test_size_is_measured_in_utf8_bytes():
    # Each 'é' is two bytes: under the cap in characters, over it in bytes.
    text = "a: " + "é" * (MAX_DOCUMENT_BYTES // 2 + 10) + "\n"
    assert len(text) < MAX_DOCUMENT_BYTES
    with pytest.raises(SpecError, match="larger than"):
        load_yaml_documents(text)


def test_python_tags_are_not_constructed():
    # The safe loader must never build arbitrary objects.
    with pytest.raises(SpecError, match="malformed YAML"):
        load_yaml_documents("a: !!python/object/apply:os.system ['true']\n")


def test_scalar_document_is_returned_for_validation_to_reject():
    [(data, _)] = load_yaml_documents("just a string\n")
    assert data == "just a string"


# -- duplicate keys and bytes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: 1\nb: 2\na: 3\n", "line 3: a is given twice, on lines 1 and 3"),
        ("spec:\n  env:\n    A: 1\n    A: 2\n", "line 4: spec.env.A is given twice, on lines 3 and 4"),
        ("items:\n  - {x: 1, x: 2}\n", "line 2: items[0].x is given twice, on line 2"),
        ("a: 1\n---\nb: 1\nb: 2\n", "line 4: b is given twice, on lines 3 and 4"),
    ],
)
def test_duplicate_keys_are_refused_with_both_lines(text, fragment):
    with pytest.raises(SpecError) as info:
        load_yaml_documents(text, source="job.yaml")
    assert info.value.message.startswith("job.yaml: ")
    assert fragment in info.value.message
    assert "keep one" in info.value.message


@pytest.mark.parametrize(
    "text",
    [
        "a: {x: 1}\nb: {x: 1}\n",  # the same key in two mappings
        "a: 1\n---\na: 2\n",  # or in two documents
        "1: a\n'1': b\n",  # a number and a string are different keys
    ],
)
def test_keys_repeated_elsewhere_are_not_duplicates(text):
    assert load_yaml_documents(text)


def test_bytes_are_decoded_as_utf8_and_a_bad_byte_is_named_with_its_line():
    [(data, _)] = load_yaml_documents("a: café\n".encode())
    assert data == {"a": "café"}
    [(data, _)] = load_yaml_documents("\ufeffa: 1\n".encode())  # a UTF-8 BOM is fine
    assert data == {"a": 1}
    with pytest.raises(SpecError) as info:
        load_yaml_documents(b"a: 1\nb: caf\xe9\n", source="job.yaml")
    assert info.value.message.startswith("job.yaml: line 2: byte 0xe9 is not UTF-8")
    assert "codec" not in info.value.message


def test_size_cap_applies_to_bytes_too():
    with pytest.raises(SpecError, match="larger than 1024 KiB"):
        load_yaml_documents(b"a: " + b"x" * MAX_DOCUMENT_BYTES + b"\n")


def test_loader_errors_name_the_source():
    for text in ("a: &x 1\nb: *x\n", "[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2)):
        with pytest.raises(SpecError) as info:
            load_yaml_documents(text, source="job.yaml")
        assert info.value.message.startswith("job.yaml: line ")
