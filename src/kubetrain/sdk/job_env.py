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
