"""Job arrays: ``kubetrain run --array 0-9%2`` (Slurm's syntax), run as an Experiment of algorithm ``array``.

An array is N copies of one command that differ only by an index
(``KUBETRAIN_ARRAY_INDEX``; ``params()["index"]`` too), at most K running at
once.  It is an Experiment so that everything that works on experiments works
on arrays — ``describe``, ``compare``, ``cancel``, the trials as ordinary jobs —
but without a search: trial *n* gets the *n*-th index, in order, and nothing
is optimised (no objective needed).  The array succeeds when every task did.

Syntax, as ``sbatch --array``: comma-separated items, each an index ``7``, a
range ``0-9`` or a stepped range ``0-15:4``; then optionally ``%K``, the most
tasks running at once (default: all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubetrain.core.errors import SpecError

#: The most tasks one array may have (an experiment's trial budget).
MAX_ARRAY_TASKS = 10_000
#: The trial parameter that carries the index, and the label that says a trial is an array task.
INDEX_PARAM = "index"
INDEX_LABEL = "kubetrain.io/array-index"
_ITEM = re.compile(r"^(\d{1,9})(?:-(\d{1,9})(?::(\d{1,9}))?)?$")


@dataclass(frozen=True, slots=True)
class ArraySpec:
    indices: tuple[int, ...]
    #: The most tasks running at once.
    parallelism: int


def parse_array(text: str) -> ArraySpec:
    """``0-9%2`` -> indices 0..9, two at a time; errors name the flag, the value and the fix."""
    def bad(why: str) -> SpecError:
        return SpecError(f"--array {text!r}: {why}; use Slurm's syntax, e.g. 0-9, 0-9%2, 1,3,5 or 0-15:4",
                         details={"field": "--array", "value": text})

    items, _, limit = text.strip().partition("%")
    indices: list[int] = []
    for item in items.split(","):
        match = _ITEM.match(item.strip())
        if not match:
            raise bad(f"{item.strip()!r} is not an index, a range A-B or a stepped range A-B:S")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = int(match.group(3) or 1)
        if last < first or step < 1:
            raise bad(f"{item.strip()!r} runs backwards or has a zero step")
        if (last - first) // step + 1 + len(indices) > MAX_ARRAY_TASKS:
            raise bad(f"more than {MAX_ARRAY_TASKS} tasks")
        indices.extend(range(first, last + 1, step))
    if len(set(indices)) != len(indices):
        raise bad("an index is given twice")
    if limit and not limit.isdigit() or limit == "0":
        raise bad(f"%{limit} is not a positive number of tasks at once")
    return ArraySpec(tuple(indices), min(int(limit), len(indices)) if limit else len(indices))
