"""Layers import downward only (the rule kopf checks with import-linter, here with ast).

Engines are plug-ins: each is a package ``engines/<name>/`` that only the
registry (``engines/__init__.py``) finds, by listing the packages.  No other
module names an engine, engines do not import each other, and the server sees
only the engine interface (``kubetrain.engines`` and ``kubetrain.engines.base``).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "kubetrain"

#: Which kubetrain packages each layer may import (its own always allowed).
ALLOWED = {
    "core": {"core"},
    "store": {"core", "store"},
    "engines": {"core", "engines", "settings", "processes"},
    "sdk": {"core", "sdk"},
    "server": {"core", "store", "engines", "sdk", "server", "settings", "processes", "__init__"},
    "cli": {"core", "sdk", "server", "cli", "settings", "processes"},
    "settings": {"core"},
    "processes": set(),
}
#: Single modules a layer may import besides its packages: the settings check the engine's name with the
#: registry (which imports no engine and, at run time, not the settings).
#: The CLI adds engines' own commands (``k8s manifests``) that the registry hands it.
ALLOWED_MODULES = {"settings": {"kubetrain.engines"}, "cli": {"kubetrain.engines"}}
REGISTRY = "engines/__init__.py"
ENGINES_DIR = SRC / "engines"
#: Modules of the server that name an engine today, with why; each must go (see the test that keeps this list true).
KNOWN_LEAKS: dict[str, str] = {}
#: In-job helpers must stay standard library only: training code imports them.
STDLIB_ONLY = {"sdk/tracking.py", "sdk/job_env.py", "sdk/checkpoints.py"}
#: The supervisor path is forked per attempt: no heavy third-party imports.
LIGHT = {"engines/local/supervisor.py", "engines/local/cgroups.py", "engines/local/agent.py",
         "engines/local/workspace.py", "engines/local/preparation.py", "engines/local/gang.py",
         "engines/local/environments.py", "engines/local/logpump.py",
         "engines/local/volume_images.py"}


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
        assert target in ALLOWED[layer] or name in ALLOWED_MODULES.get(layer, ()), f"{rel} ({layer}) imports {name}"


@pytest.mark.parametrize("rel", sorted(STDLIB_ONLY | LIGHT))
def test_in_job_and_per_attempt_modules_stay_light(rel: str) -> None:
    third_party = set()
    for name in imports(SRC / rel):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        if top == "kubetrain" and "/".join(name.split(".")[1:]) + ".py" in STDLIB_ONLY:
            continue  # another standard-library-only module
        if top == "kubetrain" and rel not in STDLIB_ONLY:
            assert name.split(".")[1] in ("core", "engines", "processes"), name
            continue
        third_party.add(name)
    assert not third_party, f"{rel} imports {sorted(third_party)}"


# -- engines are plug-ins ------------------------------------------------------------------------------

def engine_packages() -> list[str]:
    return sorted(p.name for p in ENGINES_DIR.iterdir() if (p / "__init__.py").is_file())


def engine_of(path: Path) -> str | None:
    """The engine whose package holds ``path``, or None for a module outside every engine."""
    rel = path.relative_to(SRC).parts
    return rel[1] if len(rel) > 2 and rel[0] == "engines" and rel[1] in engine_packages() else None


def names_engine(text: str, engine: str) -> bool:
    """Does source ``text`` name the engine package (an import, a module path in a string, a file path)?"""
    return re.search(rf"\bengines[./]{re.escape(engine)}\b", text) is not None


def test_the_registry_finds_every_engine_package() -> None:
    from kubetrain.engines import engine_names

    assert set(engine_packages()) <= set(engine_names())
    assert {"local", "kubernetes"} <= set(engine_packages())


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_outside_an_engine_names_it(path: Path) -> None:
    rel = str(path.relative_to(SRC))
    if rel == REGISTRY:
        return
    mine = engine_of(path)
    text = path.read_text()
    named = [e for e in engine_packages() if e != mine and names_engine(text, e)]
    named = [e for e in named if KNOWN_LEAKS.get(rel) != f"engines.{e}"]
    assert not named, f"{rel} names engine(s) {named}: reach an engine through the registry and the Engine interface"


def test_known_leaks_are_still_there() -> None:
    """Remove an entry of KNOWN_LEAKS once its module stops naming the engine, so the list never hides a new one."""
    for rel, leak in KNOWN_LEAKS.items():
        assert names_engine((SRC / rel).read_text(), leak.split(".")[1]), f"{rel} no longer names {leak}: drop it"


@pytest.mark.parametrize("path", [p for p in modules() if p.relative_to(SRC).parts[0] == "engines"],
                         ids=lambda p: str(p.relative_to(SRC)))
def test_engines_do_not_import_each_other(path: Path) -> None:
    mine = engine_of(path)
    for name in imports(path):
        parts = name.split(".")
        if parts[:2] == ["kubetrain", "engines"] and len(parts) > 2 and parts[2] in engine_packages():
            assert parts[2] == mine, f"{path.relative_to(SRC)} imports {name}: engines are independent of each other"


@pytest.mark.parametrize("path", [p for p in modules() if p.relative_to(SRC).parts[0] == "server"],
                         ids=lambda p: str(p.relative_to(SRC)))
def test_the_server_sees_only_the_engine_interface(path: Path) -> None:
    for name in imports(path):
        if name == "kubetrain.engines" or name.startswith("kubetrain.engines."):
            assert name in ("kubetrain.engines", "kubetrain.engines.base"), f"{path.relative_to(SRC)} imports {name}"


def test_importing_the_registry_and_the_settings_imports_no_engine() -> None:
    """The engine is imported when it is built, not when its name is checked (the CLI must start fast)."""
    code = ("import sys, kubetrain.engines, kubetrain.settings, kubetrain.engines.base; "
            "kubetrain.engines.engine_names(); "
            "print(sorted(m for m in sys.modules if m.count('.') >= 2 and m.startswith('kubetrain.engines.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['kubetrain.engines.base']"
