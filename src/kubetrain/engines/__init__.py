"""Engines run attempts; this is their registry: an engine's name to its builder.

Each engine is a package here (``engines/<name>/``) whose ``__init__`` defines
``build_engine(settings, *, master_url)``; that builder reads the engine's own
section of the settings and returns a :class:`kubetrain.engines.base.Engine`.
The registry finds the packages without importing them, and imports the one
asked for only when it is built, so ``import kubetrain.engines`` (done by the
settings to check a name) costs nothing and loads no engine.  Nothing outside
an engine's package names that engine (``tests/unit/test_layers.py`` checks it):
a new engine is a new package, and the master, the settings and the CLI learn
of it from here.

Who calls it: ``settings.py`` (is the configured name known?) and
``server/controller.py`` (``make_engine``).  Tests may :func:`register` an
engine of their own.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engines import the settings; the settings import this module: no cycle at run time
    from kubetrain.engines.base import Engine
    from kubetrain.settings import Settings

#: Builds an engine from the settings; ``master_url`` is where jobs on this machine reach the master.
Builder = Callable[..., "Engine"]

#: The engine a master runs when its settings name none.
DEFAULT_ENGINE = "local"

#: Engines registered at run time (tests, plug-ins), by name; they win over packages of the same name.
_registered: dict[str, Builder] = {}


def engine_names() -> tuple[str, ...]:
    """Every engine that can be built, sorted: the packages under ``engines/`` and those registered."""
    packages = {info.name for info in pkgutil.iter_modules(__path__) if info.ispkg}
    return tuple(sorted(packages | set(_registered)))


def register(name: str, builder: Builder) -> None:
    """Make ``name`` buildable with ``builder(settings, master_url=...)`` (an engine outside this package)."""
    _registered[name] = builder


def unregister(name: str) -> None:
    _registered.pop(name, None)


def builder_for(name: str) -> Builder:
    """The builder of engine ``name``, importing its package now; KeyError for a name :func:`engine_names` lacks."""
    if name in _registered:
        return _registered[name]
    if name not in engine_names():
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}").build_engine


def engine_commands() -> list[Callable[..., None]]:
    """The ``register(app)`` of every engine package that adds CLI commands of its own (a ``cli`` module, e.g.
    ``kubetrain k8s manifests``), so the CLI learns them here and names no engine.  Finding them imports only
    those small modules, never an engine."""
    out = []
    for name in engine_names():
        if name not in _registered and importlib.util.find_spec(f"{__name__}.{name}.cli") is not None:
            out.append(importlib.import_module(f"{__name__}.{name}.cli").register)
    return out


def build_engine(settings: Settings, *, master_url: str | None) -> Engine:
    """The engine ``settings.engine`` names, built from its own section of the settings."""
    from kubetrain.core.errors import ConfigError

    try:
        builder = builder_for(settings.engine)
    except KeyError:
        raise ConfigError(f"engine {settings.engine!r} is unknown; use one of {', '.join(engine_names())} "
                          "(KUBETRAIN_ENGINE or engine: in config.yaml)") from None
    return builder(settings, master_url=master_url)


def stop_helpers(settings: Settings) -> None:
    """Stop what the configured engine keeps running for the master on this machine (the local engine's idle
    node agent), when the master stops; running attempts keep running.  Engines without helpers do nothing."""
    if settings.engine in _registered or settings.engine not in engine_names():
        return
    hook = getattr(importlib.import_module(f"{__name__}.{settings.engine}"), "stop_helpers", None)
    if hook is not None:
        hook(settings)
