"""What a job's environment tells its code: its parameters and its output folder (standard library only)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def params() -> dict[str, Any]:
    """This job's (or trial's) hyperparameters; ``{}`` outside kubetrain."""
    try:
        value = json.loads(os.environ.get("KUBETRAIN_PARAMS") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def output_dir() -> Path:
    """Where to write models and results (kept across attempts); ``./outputs`` outside kubetrain."""
    return _output_folder(os.environ.get("KUBETRAIN_OUTPUT_DIR"))


def _output_folder(value: str | None) -> Path:
    path = Path(value or "outputs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def reports_metrics() -> bool:
    """Whether this process's ``report()`` calls are sent: in a distributed job only rank 0's are (by
    convention), so that every rank may call it and each step is kept once, not once per replica.

    The rank is torch's ``RANK`` when set (torchrun sets it per process), else the replica's."""
    rank = os.environ.get("RANK") or os.environ.get("KUBETRAIN_REPLICA") or "0"
    return rank.strip() == "0"
