"""A gang's replicas as the store keeps them: ``attempts.replicas``, one entry per replica (issue 12).

Plain conversions between the planner's :class:`ReplicaSlot`, the engines'
:class:`ReplicaEnd` and the JSON column; the store calls them, no policy here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kubetrain.core.attempts import ReplicaEnd
from kubetrain.core.planning import Placement, ReplicaSlot


def slots_of(stored: list[dict[str, Any]] | None) -> tuple[ReplicaSlot, ...]:
    """A stored ``attempts.replicas`` as slots (empty: one replica)."""
    return tuple(ReplicaSlot(node=r["node"], gpus=tuple(r.get("gpus") or ()), cpu_millis=int(r.get("cpu_millis") or 0),
                             memory_bytes=int(r.get("memory_bytes") or 0)) for r in stored or ())


def placement_words(placement: Placement) -> str:
    """"node n1 GPUs 0,1" for one replica; "3 replicas: n1 (GPUs 0,1), n1 (GPUs 2,3), n2 (GPUs 0,1)" for a gang."""
    def gpus(slot: ReplicaSlot, before: str) -> str:
        return f"{before}GPUs {','.join(map(str, slot.gpus))}" if slot.gpus else ""

    if not placement.replicas:
        return f"node {placement.node}{gpus(placement.slots[0], ' ')}"
    parts = [slot.node + (f" ({gpus(slot, '')})" if slot.gpus else "") for slot in placement.replicas]
    return f"{len(parts)} replicas: {', '.join(parts)}"


def with_ends(stored: list[dict[str, Any]] | None, ends: tuple[ReplicaEnd, ...]) -> list[dict[str, Any]]:
    """The stored replica list with each replica's end merged in (a new list: the JSON column sees the change)."""
    out = [dict(r) for r in stored or ()]
    for end in ends:
        while len(out) <= end.replica:
            out.append({"node": None, "gpus": []})
        fields = {k: v for k, v in dataclasses.asdict(end).items() if k != "replica" and v is not None}
        out[end.replica].update(fields)
    return out
