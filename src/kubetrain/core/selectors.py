"""Kubernetes label selectors, in the string syntax ``kubectl -l`` accepts.

``gpu-type=a100,zone in (a, b),!spot,tier notin (low),fast`` parses to a list of
requirements; :func:`matches` checks them against a node's labels.  The string
form is what users write in YAML ``selector:`` and on ``--selector``; a mapping
form (``{gpu-type: a100}``) is accepted as equality requirements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Mapping

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]

# A label key: optional DNS prefix, then a name of up to 63 characters.
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_SET_EXPR = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\(([^)]*)\)\s*$", re.IGNORECASE)


class SelectorError(ValueError):
    """The selector text is malformed; the message shows the accepted forms."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return labels.get(self.key) in self.values
        # NotIn: like Kubernetes, a node without the key satisfies NotIn.
        return labels.get(self.key) not in self.values

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        if self.operator == "In" and len(self.values) == 1:
            return f"{self.key}={self.values[0]}"
        if self.operator == "NotIn" and len(self.values) == 1:
            return f"{self.key}!={self.values[0]}"
        word = "in" if self.operator == "In" else "notin"
        return f"{self.key} {word} ({', '.join(self.values)})"


_HELP = ("the operators allowed are key=value, key==value, key!=value, key in (a,b), key notin (a,b), "
         "key (exists) and !key (does not exist)")
_MAX_LENGTH = 4096
# Operators from other query languages that users try: ``gpu > 2``, ``name=~a.*``, ``gpu >= 2``.
_FOREIGN_OPERATOR = re.compile(r"(=~|!~|>=|<=|[<>~])")
_SET_WITHOUT_PARENS = re.compile(r"^\S+\s+(in|notin)\s+[^\s(]", re.IGNORECASE)
_EXISTS_WORD = re.compile(r"^(\S+)\s+(exists|doesnotexist|does\s+not\s+exist)$", re.IGNORECASE)


def _inside(part: str, text: str) -> str:
    return "" if part == text else f" in {text!r}"


def _check_key(key: str, text: str) -> str:
    if not _KEY.match(key):
        raise SelectorError(
            f"{key!r}{_inside(key, text)} is not a valid label key (up to 63 letters, digits, '-', '_', '.', "
            f"optionally after a prefix like example.com/); {_HELP}"
        )
    return key


def _check_value(value: str, text: str) -> str:
    if not _VALUE.match(value):
        raise SelectorError(
            f"{value!r}{_inside(value, text)} is not a valid label value (up to 63 letters, digits, '-', '_', '.'); "
            f"{_HELP}"
        )
    return value


def _check_operator(term: str, text: str) -> None:
    """Refuse, by name, the operators a user brings from elsewhere, before they read as a bad key."""
    foreign = _FOREIGN_OPERATOR.search(term)
    if foreign:
        raise SelectorError(f"{term!r}{_inside(term, text)} uses {foreign.group(1)!r}, which is not a selector "
                            f"operator; {_HELP}")
    if _SET_WITHOUT_PARENS.match(term):
        key, word = term.split()[:2]
        raise SelectorError(f"{term!r}{_inside(term, text)}: the values after {word!r} go in parentheses, e.g. "
                            f"{key} {word.lower()} (a, b); {_HELP}")
    exists = _EXISTS_WORD.match(term)
    if exists:
        key = exists.group(1)
        raise SelectorError(f"{term!r}{_inside(term, text)}: write {key!r} for exists and '!{key}' for does not "
                            f"exist; {_HELP}")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in {text!r}; {_HELP}")
        elif char == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    if depth != 0:
        raise SelectorError(f"unbalanced '(' in {text!r}; {_HELP}")
    terms.append(text[start:])
    return terms


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """Parse the ``kubectl -l`` string syntax into requirements."""
    if len(text) > _MAX_LENGTH:
        raise SelectorError(f"selector is longer than {_MAX_LENGTH} characters ({len(text)}); "
                            "use fewer requirements, e.g. one label that names the node group")
    requirements: list[Requirement] = []
    for raw in _split_terms(text):
        term = raw.strip()
        if not term:
            if text.strip():
                raise SelectorError(f"empty requirement in {text!r}; {_HELP}")
            continue
        set_match = _SET_EXPR.match(term)
        if not set_match:
            _check_operator(term, text)
        if set_match:
            key, word, inner = set_match.groups()
            values = tuple(_check_value(v.strip(), text) for v in inner.split(",") if v.strip())
            if not values:
                raise SelectorError(f"{term!r} needs at least one value; {_HELP}")
            op: Operator = "In" if word.lower() == "in" else "NotIn"
            requirements.append(Requirement(_check_key(key, text), op, values))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            requirements.append(
                Requirement(_check_key(key.strip(), text), "NotIn", (_check_value(value.strip(), text),))
            )
        elif "=" in term:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            requirements.append(
                Requirement(_check_key(key.strip(), text), "In", (_check_value(value.strip(), text),))
            )
        elif term.startswith("!"):
            requirements.append(Requirement(_check_key(term[1:].strip(), text), "DoesNotExist"))
        else:
            requirements.append(Requirement(_check_key(term, text), "Exists"))
    return tuple(requirements)


def selector_from_mapping(mapping: Mapping[str, str]) -> tuple[Requirement, ...]:
    """``{gpu-type: a100}`` -> equality requirements (the ``nodeSelector`` form)."""
    return tuple(
        Requirement(_check_key(str(k), str(k)), "In", (_check_value(str(v), str(v)),))
        for k, v in mapping.items()
    )


def matches(requirements: tuple[Requirement, ...], labels: Mapping[str, str]) -> bool:
    return all(req.matches(labels) for req in requirements)


def format_selector(requirements: tuple[Requirement, ...]) -> str:
    return ",".join(str(req) for req in requirements)
