"""Selector matching for the fake cluster: label and field selectors (API side), node placement and taints (scheduler).

Why a module of its own: both the fake API server (``labelSelector``/``fieldSelector`` on list, watch and
delete-collection, which kmock ignores) and the fake scheduler (``nodeSelector``, required node affinity)
need it, and it is the part most worth reading when a selector behaves unexpectedly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import kmock


def _bad_request(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=400, reason="BadRequest", message=message, details=None)


_REQUIREMENT = re.compile(r"\s*(!?)\s*([A-Za-z0-9._/-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)"
                          r"|\s+(in|notin)\s*\(([^)]*)\))?\s*")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in parts + [current] if p.strip()]


def label_matcher(text: str) -> Callable[[dict[str, str]], bool]:
    """kubectl label-selector syntax: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``, ``k``, ``!k``."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_top(text or ""):
        m = _REQUIREMENT.fullmatch(part)
        if not m or (m[1] and (m[3] or m[5])):
            raise _bad_request(f"unable to parse requirement: {part!r} in labelSelector {text!r}")
        neg, key, op, value, set_op, values = m.groups()
        members = {v.strip() for v in (values or "").split(",") if v.strip()}
        if neg:
            checks.append(lambda labels, k=key: k not in labels)
        elif op in ("=", "=="):
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif op == "!=":
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif set_op == "in":
            checks.append(lambda labels, k=key, s=members: k in labels and labels[k] in s)
        elif set_op == "notin":
            checks.append(lambda labels, k=key, s=members: labels.get(k) not in s)
        else:
            checks.append(lambda labels, k=key: k in labels)
    return lambda labels: all(check(labels) for check in checks)


def field_matcher(text: str) -> Callable[[dict[str, Any]], bool]:
    """Field selectors: ``metadata.name=x``, ``status.phase!=Running``, ``spec.nodeName=n`` (any dotted path)."""
    checks = []
    for part in _split_top(text or ""):
        m = re.fullmatch(r"\s*([A-Za-z0-9.]+)\s*(==|=|!=)\s*(\S*)\s*", part)
        if not m:
            raise _bad_request(f"invalid field selector: {part!r}")
        path, op, value = m.groups()

        def check(obj: dict[str, Any], path: str = path, op: str = op, value: str = value) -> bool:
            current: Any = obj
            for step in path.split("."):
                current = current.get(step) if isinstance(current, dict) else None
            text = "" if current is None else str(current).lower() if isinstance(current, bool) else str(current)
            return (text == value) == (op != "!=")
        checks.append(check)
    return lambda obj: all(check(obj) for check in checks)


def expression_ok(labels: dict[str, str], expr: dict[str, Any]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and labels[key].lstrip("-").isdigit():
        return int(labels[key]) > int(values[0]) if op == "Gt" else int(labels[key]) < int(values[0])
    return False


def placement_ok(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod["spec"].get("nodeSelector") or {}).items()):
        return False
    required = (((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(all(expression_ok(labels, e) for e in t.get("matchExpressions") or []) for t in terms)


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Kubernetes' ``Toleration.ToleratesTaint``: an empty key with Exists matches every key, an empty effect
    every effect; Equal (the default) needs the same value."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return bool(toleration.get("key")) and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated(pod: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | None:
    """The node's first ``NoSchedule``/``NoExecute`` taint the pod does not tolerate; None when it may go there.
    ``PreferNoSchedule`` is a preference the scheduler scores, never a bar."""
    tolerations = pod["spec"].get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(_tolerates(t, taint) for t in tolerations):
            return taint
    return None
