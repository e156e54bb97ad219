"""The closed sets of values some options take, as enums Typer turns into choices: an unknown value is a
usage error (exit 2) that lists the valid ones.  (``--state`` takes ``core.states.JobState``.)"""

from __future__ import annotations

from enum import StrEnum


class Output(StrEnum):
    """``-o`` of commands that print records."""

    JSON = "json"
    YAML = "yaml"


class Export(StrEnum):
    """``-o`` of commands that print a table of numbers (``compare``, ``metrics``)."""

    JSON = "json"
    CSV = "csv"


class Sort(StrEnum):
    """``--sort`` of job lists (the API's ``SortOrder``)."""

    NEWEST = "newest"
    OLDEST = "oldest"
    NAME = "name"
