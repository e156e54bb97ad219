"""The base of every user-facing model (strict at the edge), and how its errors read.

:class:`StrictModel` rejects unknown fields.  :func:`explain_errors` turns
pydantic's error list into one :class:`~kubetrain.core.errors.SpecError` in
kubetrain's words: the field, the value given and the fix.  An unknown field
that is a real field elsewhere ("name" at the top of a Job) is told where it
belongs; a misspelt one gets "did you mean"; a value of the wrong type is told
the type and, where it is a range, the bounds.  Called by
:func:`kubetrain.core.specs.format_validation_error` (CLI, SDK, services) and
meant for the API's 422 handler too, so every route says the same thing.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from kubetrain.core.errors import SpecError


class StrictModel(BaseModel):
    """Rejects unknown fields; accepts camelCase (YAML) and snake_case (Python)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def field_path(loc: Iterable[Any]) -> str:
    """``("spec", "command", 1)`` -> ``spec.command[1]``: how messages name a field."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


# -- walking a model by the keys a document uses ---------------------------------------

_ITEM = "[]"  # a list item in a home path
_MAX_WALK = 8


def _choices(annotation: Any) -> list[Any]:
    """The types an annotation may hold: ``X | None`` -> [X], ``Annotated[X, ...]`` -> [X]."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _choices(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [c for arg in typing.get_args(annotation) for c in _choices(arg)]
    return [annotation]


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _field(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a document writes: the alias where there is one (camelCase)."""
    return [info.alias or name for name, info in model.model_fields.items()]


def _step(annotation: Any, segment: Any) -> Any:
    for kind in _choices(annotation):
        origin = typing.get_origin(kind)
        if isinstance(segment, int) and origin in (list, tuple, set, frozenset):
            return typing.get_args(kind)[0]
        if isinstance(segment, str) and _is_model(kind):
            info = _field(kind, segment)
            if info is not None:
                return info.annotation
        if isinstance(segment, str) and origin is dict:
            return typing.get_args(kind)[1]
    return None


def _annotation_at(root: type[BaseModel] | None, loc: tuple) -> Any:
    annotation: Any = root
    for segment in loc:
        if annotation is None:
            return None
        annotation = _step(annotation, segment)
    return annotation


def _model_at(root: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    return next((k for k in _choices(_annotation_at(root, loc)) if _is_model(k)), None)


@functools.lru_cache(maxsize=32)
def _homes(root: type[BaseModel]) -> dict[str, tuple]:
    """Every key a document of ``root`` may use, with the shallowest place it goes (breadth first)."""
    homes: dict[str, tuple] = {}
    queue: list[tuple[type[BaseModel], tuple]] = [(root, ())]
    seen: set[type[BaseModel]] = set()
    while queue:
        model, path = queue.pop(0)
        if model in seen or len(path) > _MAX_WALK:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            key = info.alias or name
            homes.setdefault(key, path + (key,))
            for kind in _choices(info.annotation):
                origin = typing.get_origin(kind)
                if _is_model(kind):
                    queue.append((kind, path + (key,)))
                elif origin in (list, tuple) and _is_model(typing.get_args(kind)[0]):
                    queue.append((typing.get_args(kind)[0], path + (key, _ITEM)))
    return homes


def _bounds(info: Any) -> str:
    """``Field(ge=-1000, le=1000)`` -> `` (from -1000 to 1000)``; "" when unbounded."""
    ge = gt = le = lt = None
    for item in getattr(info, "metadata", ()):
        ge, gt = getattr(item, "ge", ge), getattr(item, "gt", gt)
        le, lt = getattr(item, "le", le), getattr(item, "lt", lt)
    if ge is not None and le is not None:
        return f" (from {ge} to {le})"
    parts = [text for bound, text in ((ge, f"{ge} or more"), (gt, f"more than {gt}"),
                                      (le, f"at most {le}"), (lt, f"less than {lt}")) if bound is not None]
    return f" ({', '.join(parts)})" if parts else ""


# -- rendering values ----------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9_./@+-][A-Za-z0-9_./@+ -]{0,40}$")
# Plain words YAML would read as something else than text: numbers, booleans, null.
_TYPED = re.compile(r"^([-+]?(\d[\d_]*)?\.?\d*([eE][-+]?\d+)?|true|false|yes|no|on|off|y|n|null|~)$", re.IGNORECASE)


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _flow(value: Any, depth: int = 0) -> str:
    """A value as the user would write it in YAML flow style (short; ``...`` past a few items)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _TYPED.match(value):
            return f'"{value}"'
        return value if _PLAIN.match(value) and value.strip() == value else _shown(value, 40)
    if depth > 1:
        return "..."
    if isinstance(value, list):
        items = [_flow(v, depth + 1) for v in value[:4]] + (["..."] if len(value) > 4 else [])
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        items = [f"{_flow(k, 2)}: {_flow(v, depth + 1)}" for k, v in list(value.items())[:3]]
        return "{" + ", ".join(items + (["..."] if len(value) > 3 else [])) + "}"
    return "..."


def _nest(path: tuple, key: str, value: Any) -> str:
    """``("spec", "template"), "command", [python]`` -> ``spec: {template: {command: [python]}}``."""
    text = f"{key}: {_flow(value)}"
    for segment in reversed(path):
        text = f"{segment}: {{{text}}}"
    return text


def _place(parent: tuple) -> str:
    """Where to move a key: ``under spec.template:``, ``to the top level``, ``into each item of spec.volumes``."""
    if not parent:
        return "to the top level"
    if parent[-1] == _ITEM:
        return f"into each item of {'.'.join(parent[:-1])}"
    return f"under {'.'.join(parent)}:"


def _closest(word: str, options: Iterable[str], cutoff: float = 0.7) -> str | None:
    """The option ``word`` most likely misspells: same letters ignoring case, '_' and '-' first, then difflib."""
    import difflib  # only on an error: the CLI imports this module on every spec it reads

    options = list(options)

    def squash(text: str) -> str:
        return text.lower().replace("_", "").replace("-", "")

    for option in options:
        if squash(option) == squash(word):
            return option
    by_lower = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[close[0]] if close else None


# -- one error in our words -------------------------------------------------------------

_TYPE_WORDS = {
    "string_type": "text", "int_type": "a whole number", "int_parsing": "a whole number",
    "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false", "dict_type": "a mapping (key: value)",
    "model_type": "a mapping", "model_attributes_type": "a mapping", "tuple_type": "a list", "set_type": "a list",
    "none_required": "nothing (null)", "finite_number": "a finite number",
}
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|bytes|(list|dict|set|tuple|frozenset|literal)\[.*\])$")
_TAG_WORDS = {"str": "text", "int": "a number", "float": "a number", "bool": "true/false",
              "none": "null", "bytes": "text"}
#: What a missing section looks like, keyed by (model, path): the common ones a new user leaves out.
_MISSING_HINTS = {
    ("JobSpec", "spec"): "a Job puts what to run under spec:, e.g. spec: {command: [python, train.py]}",
    ("ExperimentSpec", "spec"): "e.g. spec: {template: {command: [python, train.py]}, parameters: [...], "
                                "objective: {metric: val_accuracy}}",
    ("ExperimentSpec", "spec.template"): "the job every trial runs, e.g. template: {command: [python, train.py]}",
    ("ExperimentSpec", "spec.objective"): "e.g. objective: {metric: val_accuracy, goal: maximize}",
    ("ExperimentSpec", "spec.parameters"): "e.g. parameters: [{name: lr, type: float, min: 0.001, max: 0.1}]",
}


def _type_fix(kind: str, value: Any, loc: tuple, root: type[BaseModel] | None) -> str:
    """What to write instead, for a value of the wrong type."""
    if kind == "string_type" and isinstance(value, (bool, int, float)):
        return f"; quote it: \"{_flow(value)}\""
    if kind in ("model_type", "model_attributes_type"):
        model = _model_at(root, loc)
        if model is not None:
            return f" with the fields {', '.join(_keys(model))}"
    if kind == "dict_type" and loc and loc[-1] == "labels":
        return ", e.g. labels: {team: ml}"
    if kind.startswith("int") or kind.startswith("float"):
        return _bounds(_field_info(root, loc))
    return ""


def _field_info(root: type[BaseModel] | None, loc: tuple) -> Any:
    container = _model_at(root, loc[:-1]) if loc else None
    return _field(container, loc[-1]) if container is not None and isinstance(loc[-1], str) else None


def _get(document: Any, path: tuple) -> Any:
    """The part of the document at ``path`` (aliases or field names as written), or None."""
    for segment in path:
        if isinstance(document, dict) and segment in document:
            document = document[segment]
        elif isinstance(document, list) and isinstance(segment, int) and 0 <= segment < len(document):
            document = document[segment]
        else:
            return None
    return document


def _given(container: type[BaseModel], mapping: Any) -> set[str]:
    """The keys (as documents write them) of the fields ``mapping`` already gives, under either spelling."""
    if not isinstance(mapping, dict):
        return set()
    given = set()
    for key in mapping:
        info = _field(container, key) if isinstance(key, str) else None
        if info is not None:
            given.add(next(k for k in _keys(container) if _field(container, k) is info))
    return given


def _unknown_field(loc: tuple, value: Any, root: type[BaseModel] | None,
                   document: Any) -> tuple[str, tuple | None]:
    """An extra field: where it belongs, what it misspells, or what the place takes. Also the path it points at."""
    path = field_path(loc)
    key = loc[-1] if loc else ""
    parent = tuple(loc[:-1])
    container = _model_at(root, parent) if root is not None else None
    if container is None or not isinstance(key, str):
        return f"unknown field {path!r}; remove it or check its spelling", None
    homes = _homes(root)
    home = homes.get(key)
    if home is not None and home[:-1] != parent and _near(parent, home):
        where, example = home[:-1], ""
        if _ITEM not in where:
            if _get(document, home) is not None:
                return f"unknown field {path!r}: remove it; {field_path(home)} is already given", home
            example = f", e.g. {_nest(where, key, value)}"
        return f"unknown field {path!r}: move it {_place(where)}{example}", home
    # A field the mapping already has is not what this key misspells (typo: beside type: is not 'type').
    free = [k for k in _keys(container) if k not in _given(container, _get(document, parent))]
    local = _closest(key, free)
    if local is not None:
        target = field_path(parent + (local,))
        return f"unknown field {path!r}; check its spelling: did you mean {target!r}?", parent + (local,)
    remote = _closest(key, homes, cutoff=0.85)
    if (remote is not None and homes[remote][:-1] != parent and _near(parent, homes[remote])
            and _get(document, homes[remote]) is None):
        where = homes[remote][:-1]
        return (f"unknown field {path!r}; check its spelling: did you mean {remote!r}, moved {_place(where)}?",
                homes[remote])
    place = field_path(parent) or "the top level"
    return (f"unknown field {path!r}; remove it or check its spelling ({place} takes "
            f"{', '.join(_keys(container))})"), None


def _near(parent: tuple, home: tuple) -> bool:
    """Worth suggesting: a section swapped at the top, a key one level too deep, or one level too shallow."""
    return len(parent) <= 1 or home[: len(parent)] == parent or parent[: len(home) - 1] == home[:-1]


def _literal(path: str, value: Any, expected: str) -> str:
    options = re.findall(r"'([^']*)'", expected)
    text = f"{path}: got {_shown(value)}, input should be {expected}"
    if isinstance(value, str):
        guess = _closest(value, options, cutoff=0.6) or next(
            (o for o in options if value and o.lower().startswith(value.lower())), None)
        if guess is not None and guess != value:
            text += f"; did you mean {guess!r}?"
    if path == "kind":
        text += " (kubetrain reads kind: Job and kind: Experiment; the case matters)"
    return text


def _explain_one(err: Mapping[str, Any], loc: tuple, root: type[BaseModel] | None) -> str:
    path = field_path(loc) or "the document"
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    msg = str(err.get("msg", "invalid"))
    if kind == "missing":
        hint = _MISSING_HINTS.get((root.__name__ if root else "", path))
        return f"{path}: required field is missing" + (f"; {hint}" if hint else "")
    if kind == "literal_error":
        return _literal(path, value, str(ctx.get("expected", "")))
    if kind == "invalid_key":
        where = field_path(loc[:-1]) or "the top level"
        return f"{where}: the key {_shown(value)} is not text; quote it, e.g. \"{_flow(value)}\":"
    if kind in ("value_error", "assertion_error"):
        # A whole-document check (ExperimentSpec's) names its own fields.
        text = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return f"{path}: {text}" if loc else text
    if kind == "list_type":
        fix = "a list, e.g. [a, b]"
        item = next((k for k in _choices(_step(_annotation_at(root, loc), 0)) if _is_model(k)), None)
        if item is not None:
            required = [info.alias or name for name, info in item.model_fields.items() if info.is_required()]
            fix = "a list of mappings, e.g. [{" + ", ".join(f"{key}: ..." for key in required or _keys(item)[:2]) + "}]"
        elif isinstance(value, str) and _annotation_at(root, loc) in (list[str], None):
            import shlex  # only on an error, like difflib

            try:
                words = shlex.split(value)
            except ValueError:
                words = value.split()
            fix = "[" + ", ".join(_flow(w) for w in words[:8]) + (", ..." if len(words) > 8 else "") + "]"
        return f"{path}: got {_shown(value)}, which is not a valid list; write it as {fix}"
    if kind in _TYPE_WORDS:
        return f"{path}: got {_shown(value)}, expected {_TYPE_WORDS[kind]}{_type_fix(kind, value, loc, root)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()), "?")
        rule = {"greater_than": f"it must be more than {bound}",
                "greater_than_equal": f"the smallest allowed is {bound}",
                "less_than": f"it must be less than {bound}",
                "less_than_equal": f"the largest allowed is {bound}"}[kind]
        if "seconds" in path.lower() and isinstance(bound, int) and bound >= 86400 and bound % 86400 == 0:
            rule += f" ({bound // 86400} days)"
        return f"{path}: got {_shown(value)}; {rule}"
    if kind in ("too_short", "string_too_short"):
        unit = "item" if kind == "too_short" else "character"
        least = ctx.get("min_length", 1)
        return f"{path}: got {_shown(value)}; give at least {least} {unit}{'s' if least != 1 else ''}"
    if kind in ("too_long", "string_too_long"):
        unit = "items" if kind == "too_long" else "characters"
        size = ctx.get("actual_length") or (len(value) if hasattr(value, "__len__") else "more")
        return f"{path}: has {size} {unit}; at most {ctx.get('max_length')} are allowed"
    if kind == "string_pattern_mismatch":
        return f"{path}: got {_shown(value)}, which does not have the form {ctx.get('pattern')}"
    return f"{path}: got {_shown(value)}: {msg[:1].lower()}{msg[1:]}"


def _merge_unions(errors: list[tuple[tuple, Mapping[str, Any]]]) -> list[tuple[tuple, Mapping[str, Any] | str]]:
    """A value that fits none of a union's types gives one error per type: say it once, naming them all."""
    tagged: dict[tuple, list[str]] = {}
    for loc, err in errors:
        if loc and isinstance(loc[-1], str) and _UNION_TAG.match(loc[-1]) and err["type"] in _TYPE_WORDS:
            tagged.setdefault(loc[:-1], []).append(loc[-1])
    merged: list[tuple[tuple, Mapping[str, Any] | str]] = []
    done: set[tuple] = set()
    for loc, err in errors:
        prefix = loc[:-1]
        if loc and len(tagged.get(prefix, ())) > 1 and loc[-1] in tagged[prefix]:
            if prefix not in done:
                done.add(prefix)
                words = [_TAG_WORDS.get(t, f"a {t.split('[')[0]}") for t in tagged[prefix]]
                words = list(dict.fromkeys(words))
                expected = ", ".join(words[:-1]) + " or " + words[-1]
                merged.append((prefix, f"{field_path(prefix)}: got {_shown(err.get('input'))}, expected {expected}"))
            continue
        merged.append((loc, err))
    return merged


def _line_of(lines: Mapping[tuple, int], loc: tuple, *, exact: bool) -> int | None:
    """The YAML line of a field, else of the nearest enclosing one (a missing field has no line of its own)."""
    if exact:
        return lines.get(loc)
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _clean(text: str) -> str:
    """One line of UTF-8, whatever the document held: the CLI prints it and the API sends it as JSON."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def explain_errors(errors: Iterable[Mapping[str, Any]], *, model: type[BaseModel] | None = None,
                   lines: Mapping[tuple, int] | None = None, document: Any = None) -> SpecError:
    """pydantic's errors (``exc.errors()``, locations relative to ``model``) as one SpecError.

    ``model`` is the document's model (JobSpec, ExperimentSpec): with it an unknown field is told
    where it belongs or what it misspells; with ``document`` (what was validated), fields it already gives
    are not suggested.  ``lines`` maps field paths to YAML lines (see
    :func:`kubetrain.core.documents.load_yaml_documents`); messages are ordered by line.
    """
    raw = []
    for err in errors:
        loc = tuple(p for p in err.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-")))
        raw.append((loc, err))
    explained: list[tuple[tuple, str]] = []
    pointed: list[tuple] = []  # paths an unknown field was told to use: a "missing" there is the same mistake
    for loc, err in _merge_unions(raw):
        if isinstance(err, str):
            explained.append((loc, err))
        elif err["type"] == "extra_forbidden":
            text, target = _unknown_field(loc, err.get("input"), model, document)
            explained.append((loc, text))
            if target is not None:
                pointed.append(target)
        else:
            explained.append((loc, _explain_one(err, loc, model)))
    missing = {loc for loc, err in raw if not isinstance(err, str) and err["type"] == "missing"}
    explained = [(loc, text) for loc, text in explained
                 if not (loc in missing and any(t[: len(loc)] == loc for t in pointed))]
    numbered = []
    for loc, text in explained:
        line = _line_of(lines or {}, loc, exact=loc in missing)
        numbered.append((line, loc, f"line {line}: {text}" if line is not None else text))
    numbered.sort(key=lambda item: (item[0] is None, item[0] or 0))
    messages = [_clean(text) for _, _, text in numbered]
    fields = [field_path(loc) for _, loc, _ in numbered]
    return SpecError("; ".join(messages) or "invalid document", details={"fields": fields})
