"""Layers import downward only (the rule kopf checks with import-linter, here with ast)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "kubetrain"

#: Which kubetrain packages each layer may import (its own always allowed).
ALLOWED = {
    "core": {"core"},
    "store": {"core", "store"},
    "engines": {"core", "engines", "settings"},
    "sdk": {"core", "sdk"},
    "server": {"core", "store", "engines", "sdk", "server", "settings", "__init__"},
    "cli": {"core", "sdk", "server", "cli", "settings"},
    "settings": {"core"},
}
#: In-job helpers must stay standard library only: training code imports them.
STDLIB_ONLY = {"sdk/tracking.py", "sdk/checkpoints.py"}
#: The supervisor path is forked per attempt: no heavy third-party imports.
LIGHT = {"engines/local/supervisor.py", "engines/local/cgroups.py", "engines/local/agent.py",
         "engines/local/workspace.py", "engines/local/preparation.py"}


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_layer_imports_point_down(path: Path) -> None:
    rel = path.relative_to(SRC)
    layer = rel.parts[0].removesuffix(".py")
    if layer not in ALLOWED:
        return
    for name in imports(path):
        if name == "kubetrain" or not name.startswith("kubetrain."):
            continue
        target = name.split(".")[1]
        assert target in ALLOWED[layer], f"{rel} ({layer}) imports {name}"


@pytest.mark.parametrize("rel", sorted(STDLIB_ONLY | LIGHT))
def test_in_job_and_per_attempt_modules_stay_light(rel: str) -> None:
    third_party = set()
    for name in imports(SRC / rel):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        if top == "kubetrain" and rel not in STDLIB_ONLY:
            assert name.split(".")[1] in ("core", "engines"), name
            continue
        third_party.add(name)
    assert not third_party, f"{rel} imports {sorted(third_party)}"
