"""Hypothesis strategies for hostile spec documents: YAML texts and near-valid Job/Experiment trees.

Three families:

* **texts** — arbitrary unicode (control characters and lone surrogates
  included), YAML token soup (anchors, aliases, tags, timestamps, huge
  numbers, flow and block syntax), mutations of a valid Job, YAML bombs and
  deep nesting;
* **values** — what a user (or an attacker) may put in any field: huge
  integers, NaN and infinities, booleans where strings belong, path-like
  names such as ``../../etc``, control characters, nested containers;
* **documents** — Job and Experiment trees that are valid except for a few
  fields replaced, dropped or added, so that validation goes deep.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from hypothesis import strategies as st

PYTHON = sys.executable

# -- values --------------------------------------------------------------------

PATHLIKE = [
    "../../etc", "../../etc/passwd", "..", ".", "/", "/etc/passwd", "a/b", "a/../../b", "./x", "~root",
    "C:\\Windows", "\\\\server\\share", "%2e%2e%2f", "job\x00name", "job\nname", "job\tname", " job", "job ",
    "-job", "job-", "JOB", "jöb", "job\u202ename", "\u0430pple", "a" * 63, "a" * 64, "", " ",
]

HUGE_NUMBERS = [
    0, -1, 1, 2**31, 2**31 - 1, -(2**31), 2**63, 2**63 - 1, -(2**63), 2**64, 10**20, 10**100, -(10**100),
    float("inf"), float("-inf"), float("nan"), 1e308, -1e308, 5e-324, -0.0, 0.1, 1e-9,
]

QUANTITY_TEXTS = [
    "1", "0", "500m", "0.5", "1.5", "100m", "1m", "0m", "-1", "+1", "1e3", "1E-3", "1e30", "1e31", "1e-31",
    ".5", "5.", "4Gi", "512Mi", "64Mi", "4Mi", "3Mi", "1Ki", "1Ei", "8Ei", "9Ei", "1k", "1K", "1M", "1m",
    "1Gb", "1GB", "1gi", "4XB", "Gi", "m", "", " ", " 4Gi ", "4 Gi", "0x10", "1_000", "nan", "NaN", "inf",
    "Infinity", "١", "𝟙", "1\x00", "1" * 400, "9" * 5000 + "Gi", "1e999", "1e-999m",
]

SELECTOR_TEXTS = [
    "", "gpu=a100", "gpu!=a100", "gpu==a100", "gpu in (a, b)", "gpu notin (a)", "!spot", "fast",
    "a=b,c in (d,e),!f,g", "a in ()", "a in (b", "a)", "=", "!", ",", "a,,b", "a=b=c", "a in (b=c)",
    "kubernetes.io/hostname=x", "x/y/z=1", "a" * 64 + "=b", "a=" + "b" * 64, "a in (b, c", "  ", "a b",
    "gpu IN (a)", "a=\x00", "a=\n", "a in (b)) ,c",
]

control_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Ll", "Lu", "Nd", "Po", "So"]),
    max_size=40,
)
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)  # lone surrogates too
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(HUGE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(PATHLIKE),
    st.sampled_from(QUANTITY_TEXTS),
    control_text,
    any_text,
)
keys = st.one_of(st.sampled_from(["name", "value", "cpu", "memory", "gpu", "a", "lr", "KUBETRAIN_X", "PATH", ""]),
                 st.sampled_from(PATHLIKE), control_text)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=12,
)

# -- documents -------------------------------------------------------------------
#
# A valid tree first (each field drawn from plausible values), then 0-3 mutations:
# a field replaced by a hostile value, dropped, or joined by an unknown one.  About
# a third of the documents stay valid, so validation is exercised to the end.

good_names = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")
good_label_keys = st.from_regex(r"\A([a-z0-9]{1,8}\.io/)?[a-z][-a-z0-9_.]{0,10}[a-z0-9]\Z")
good_label_values = st.from_regex(r"\A([A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?)?\Z")
good_env_names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z").filter(lambda n: not n.startswith("KUBETRAIN_"))
good_param_keys = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,12}\Z")
good_strings = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), good_strings),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(good_strings, children, max_size=3)),
    max_leaves=8,
)
good_cpu = st.one_of(st.sampled_from(["100m", "250m", "1", "2", "0.5", "1.5", "1e3m", 1, 2, 0.25]),
                     st.integers(1, 64_000).map(lambda m: f"{m}m"))
good_memory = st.one_of(st.sampled_from(["64Mi", "512Mi", "4Gi", "1G", "1.5Gi", "4096Ki", 2**30]),
                        st.integers(4, 65_536).map(lambda m: f"{m}Mi"))
good_selectors = st.one_of(
    st.sampled_from(["", "gpu=a100", "gpu!=a100", "gpu in (a, b)", "tier notin (low)", "!spot", "fast",
                     "a=b,c in (d,e),!f,g", "kubernetes.io/os=linux"]),
    st.dictionaries(good_label_keys, good_label_values, max_size=2),
)
good_rules = st.one_of(
    st.fixed_dictionaries({"action": st.sampled_from(["Retry", "Ignore", "FailJob"]),
                           "onExitCodes": st.fixed_dictionaries(
                               {"values": st.lists(st.integers(0, 255), min_size=1, max_size=4)},
                               optional={"operator": st.sampled_from(["In", "NotIn"])})}),
    st.fixed_dictionaries({"action": st.sampled_from(["Retry", "Ignore", "FailJob"]),
                           "onReasons": st.lists(st.sampled_from(["Error", "OOMKilled", "Lost", "Evicted",
                                                                  "LaunchFailed"]), min_size=1, max_size=3)}),
)
good_retry = st.fixed_dictionaries({}, optional={
    "maxRetries": st.integers(0, 1000), "maxInfraRetries": st.integers(0, 1000),
    "backoffSeconds": st.floats(0, 86400), "maxBackoffSeconds": st.floats(0, 86400),
    "rules": st.lists(good_rules, max_size=3),
})
MOUNT_PATHS = ["/data", "/mnt/cache", "/data/", "/work/in", "/etc", "/etc/", "/etc/.", "/./etc", "//etc", "/proc",
               "/usr//", "/", "/data/../etc", "data", "/data\x00", "/dev/./", "/sys/fs/.."]
SUB_PATHS = ["runs/exp1", "a/./b", "./a", "a//b/", ".", "", "../../etc", "a/../../b", "/abs", "a\\b", "a\x00"]
good_volumes = st.lists(
    st.fixed_dictionaries(
        {"name": st.one_of(good_names, st.just("results")), "mountPath": st.sampled_from(MOUNT_PATHS)},
        optional={"readOnly": st.booleans(), "subPath": st.sampled_from(SUB_PATHS)}),
    max_size=3,
)
good_environments = st.fixed_dictionaries({}, optional={
    "python": st.sampled_from(["3.11", "3.12", "3.1", "3", "4.0", "3.11.2"]),
    "requirements": st.lists(st.sampled_from(["numpy==2.1.0", "torch>=2", "-e .", "--index-url=http://x", "",
                                              "a\nb", "scikit-learn"]), max_size=3),
    "requirementsFile": st.sampled_from(["requirements.txt", "../../etc/passwd", "/etc/passwd", "a/./r.txt"]),
})
good_snapshots = st.one_of(st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
                           st.sampled_from(["sha256:", "sha256:" + "0" * 63, "sha256:" + "G" * 64, "md5:abc"]))

good_job_bodies = st.fixed_dictionaries(
    {"command": st.lists(st.one_of(st.sampled_from(["true", PYTHON, "-c", "print(1)", "train.py"]), good_strings),
                         min_size=1, max_size=4)},
    optional={
        "args": st.lists(good_strings, max_size=4),
        "workingDir": st.sampled_from(["/tmp", "/", "/data/runs", "/a/../b", "src", "./src", "../..", "src/../.."]),
        "env": st.one_of(st.dictionaries(good_env_names, st.one_of(good_strings, st.integers(), st.floats(-1e9, 1e9)),
                                         max_size=3),
                         st.lists(st.fixed_dictionaries({"name": good_env_names}, optional={"value": good_strings}),
                                  max_size=3)),
        "params": st.dictionaries(good_param_keys, json_values, max_size=4),
        "resources": st.fixed_dictionaries({}, optional={"cpu": good_cpu, "memory": good_memory,
                                                         "gpu": st.integers(0, 8)}),
        "selector": good_selectors,
        "priority": st.integers(-1000, 1000),
        "activeDeadlineSeconds": st.integers(1, 366 * 24 * 3600),
        "shell": st.booleans(),
        "retryPolicy": good_retry,
        "volumes": good_volumes,
        "environment": good_environments,
        "snapshot": good_snapshots,
        "image": st.one_of(st.sampled_from(["python:3.11", "ghcr.io/x/y@sha256:" + "a" * 64]), good_strings),
    },
)
good_metadata = st.fixed_dictionaries({}, optional={
    "name": good_names,
    "generateName": st.from_regex(r"\A[a-z0-9][-a-z0-9]{0,10}\Z"),
    "labels": st.dictionaries(good_label_keys, good_label_values, max_size=3),
})
good_jobs = st.fixed_dictionaries({"spec": good_job_bodies}, optional={
    "apiVersion": st.just("kubetrain/v1"), "kind": st.just("Job"), "metadata": good_metadata})

good_parameters = st.one_of(
    st.fixed_dictionaries({"name": good_param_keys, "type": st.just("categorical"),
                           "values": st.lists(st.one_of(st.integers(-5, 5), st.floats(-2, 2), st.booleans(),
                                                        st.text(max_size=5)), min_size=1, max_size=5)}),
    st.builds(lambda name, low, span, scale, step: {
        "name": name, "type": "float", "min": low if scale == "linear" else abs(low) + 1e-3,
        "max": (low if scale == "linear" else abs(low) + 1e-3) + span, "scale": scale,
        **({"step": step} if step and scale == "linear" else {})},
        good_param_keys, st.floats(-1e3, 1e3), st.floats(0, 1e3), st.sampled_from(["linear", "log"]),
        st.one_of(st.none(), st.sampled_from([0.1, 0.25, 1.0, 1e-9]))),
    st.builds(lambda name, low, span, step: {
        "name": name, "type": "int", "min": low, "max": low + span, **({"step": step} if step else {})},
        good_param_keys, st.integers(-100, 100), st.one_of(st.integers(0, 50), st.sampled_from([10**6, 10**12])),
        st.one_of(st.none(), st.integers(1, 5))),
)
good_experiment_bodies = st.fixed_dictionaries(
    {"template": good_job_bodies,
     "parameters": st.lists(good_parameters, min_size=1, max_size=3, unique_by=lambda p: p["name"]),
     "objective": st.fixed_dictionaries({"metric": st.sampled_from(["acc", "loss", "val/acc"])},
                                        optional={"goal": st.sampled_from(["maximize", "minimize"])})},
    optional={
        "algorithm": st.one_of(st.sampled_from(["grid", "random", "tpe"]),
                               st.fixed_dictionaries({"name": st.sampled_from(["grid", "random", "tpe"])},
                                                     optional={"seed": st.integers(0, 2**31 - 1)})),
        "maxTrials": st.integers(1, 10_000),
        "parallelism": st.integers(1, 1000),
        "earlyStopping": st.fixed_dictionaries(
            {"algorithm": st.sampled_from(["median", "asha"])},
            optional={"startupTrials": st.integers(0, 10_000), "warmupSteps": st.integers(0, 5),
                      "minResource": st.integers(1, 5), "reductionFactor": st.integers(2, 100)}),
    },
)
good_experiments = st.fixed_dictionaries({"spec": good_experiment_bodies}, optional={
    "apiVersion": st.just("kubetrain/v1"), "kind": st.just("Experiment"),
    "metadata": st.one_of(good_metadata, st.builds(lambda n: {"labels": {f"team{i}.io/k": "v" for i in range(n)}},
                                                   st.integers(60, 64)))})


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.extend(_paths(value, prefix + (key,)))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            out.extend(_paths(value, prefix + (index,)))
    return out


def _mutated(base: st.SearchStrategy[dict]) -> st.SearchStrategy[Any]:
    @st.composite
    def build(draw):
        doc = draw(base)
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
            path = draw(st.sampled_from(_paths(doc)))
            if not path:
                if draw(st.integers(0, 9)) == 0:
                    return draw(values)  # not even a mapping
                doc[draw(keys)] = draw(values)
                continue
            parent = doc
            for step in path[:-1]:
                parent = parent[step]
            op = draw(st.sampled_from(["replace", "replace", "drop", "extra"]))
            if op == "replace":
                parent[path[-1]] = draw(values)
            elif op == "drop":
                del parent[path[-1]]
            elif isinstance(parent[path[-1]], dict):
                parent[path[-1]][draw(keys)] = draw(values)
            else:
                parent[path[-1]] = draw(st.one_of(values, st.sampled_from(PATHLIKE)))
        return doc

    return build()


job_documents = _mutated(good_jobs)
experiment_documents = _mutated(good_experiments)

# -- texts ---------------------------------------------------------------------------

VALID_JOB_YAML = f"""\
apiVersion: kubetrain/v1
kind: Job
metadata:
  name: digits-lr01
  labels: {{team: vision}}
spec:
  command: [{PYTHON}, train.py]
  args: ["--epochs", "3"]
  env: {{SEED: "7"}}
  params: {{lr: 0.1, layers: [64, 32]}}
  resources:
    cpu: 500m
    memory: 1Gi
  selector: kubernetes.io/os=linux
  retryPolicy:
    maxRetries: 2
    rules:
      - {{action: FailJob, onExitCodes: {{values: [3]}}}}
"""

YAML_TOKENS = [
    "a", "name", "spec", "command", "apiVersion", "kubetrain/v1", "kind", "Job", "Experiment", "metadata",
    "resources", "cpu", "memory", "params", "env", ":", ": ", " ", "  ", "\n", "\n  ", "\n    ", "\t", "- ",
    "-", "[", "]", "{", "}", ",", "?", "? ", "&a ", "*a", "&b ", "*b", "<<: ", "<<: *a", "!!int ", "!!float ",
    "!!str ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!!python/object:os.system ", "!local ",
    "!<tag:yaml.org,2002:int> ", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "---", "--- ", "...", "|", "|-", ">",
    "'", '"', "\\", "#", " # c", "~", "null", "yes", "no", "on", "off", "True", ".inf", "-.inf", ".nan",
    "0x1F", "0o17", "0b101", "1_000", "1:20", "2001-02-30", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
    "2001-13-01", "0000-01-01", "1" * 50, "9" * 4301, "1e999", "-0", "0.", "+.5", "\u00e9", "\u200b", "\ufeff",
    "\x85", "\u2028", "\x7f", "\x1b[31m", "../../etc", "/etc/passwd", "\U0001f600", "\ud800",
]

yaml_soup = st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join)


@st.composite
def mutated_valid_yaml(draw) -> str:
    """The valid Job with a few characters or tokens inserted, deleted or replaced."""
    text = VALID_JOB_YAML
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        token = draw(st.one_of(st.sampled_from(YAML_TOKENS), any_text))
        span = draw(st.integers(1, 8))
        if op == "insert":
            text = text[:pos] + token + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + span:]
        else:
            text = text[:pos] + token + text[pos + span:]
    return text


@st.composite
def yaml_bombs(draw) -> str:
    """Billion laughs: each level's list repeats the previous level's alias."""
    width = draw(st.integers(2, 12))
    depth = draw(st.integers(1, 12))
    lines = ["a0: &a0 [lol]"]
    for level in range(1, depth + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    lines.append(f"spec: {{command: *a{depth}}}")
    return "\n".join(lines) + "\n"


@st.composite
def deep_nesting(draw) -> tuple[str, int]:
    depth = draw(st.one_of(st.integers(1, 2 * 32 + 2), st.integers(1, 1500)))  # around the cap, and far past it
    style = draw(st.sampled_from(["flow-list", "flow-map", "block-map", "block-list", "mixed"]))
    if style == "flow-list":
        return "[" * depth + "1" + "]" * depth, depth
    if style == "flow-map":
        return "{a: " * depth + "1" + "}" * depth, depth
    depth = min(depth, 400)  # block styles grow quadratically with indentation
    if style == "block-map":
        return "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "1\n", depth
    if style == "block-list":
        return "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + "1\n", depth
    return "spec: " + "[{a: " * (depth // 2) + "1" + "}]" * (depth // 2), 2 * (depth // 2) + 1


def dump(document: Any, *, allow_unicode: bool = True) -> str | None:
    """YAML for a generated tree, or None if PyYAML cannot write it (lone surrogates, 4300+ digit ints).

    With ``allow_unicode`` PyYAML writes some line breaks (NEL, U+2028) raw and reads them
    back changed: its own round trip, not ours, so equivalence checks turn it off.
    """
    try:
        return yaml.safe_dump(document, allow_unicode=allow_unicode, sort_keys=False)
    except (yaml.YAMLError, ValueError, UnicodeError):
        return None


yaml_texts = st.one_of(
    any_text.map(lambda t: t * 3),
    st.text(max_size=200),
    yaml_soup,
    mutated_valid_yaml(),
    job_documents.map(dump).filter(lambda t: t is not None),
    experiment_documents.map(dump).filter(lambda t: t is not None),
)
