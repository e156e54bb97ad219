"""The CLI's command tree as click sees it (built from the Typer app), for tests that walk every command."""

from __future__ import annotations

from collections.abc import Iterator

import typer

from kubetrain.cli.app import app


def root():
    return typer.main.get_command(app)


def walk(command=None, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """Every command and group below ``command`` (default: the root), as (words after `kubetrain`, command)."""
    command = command or root()
    if path:
        yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


def required(command) -> list:
    """The parameters the command cannot run without (its required arguments and options)."""
    return [p for p in command.params if p.required]


def dummies(command) -> list[str]:
    """Placeholder values for every required parameter (``x`` for each), so later checks get that far."""
    args: list[str] = []
    for param in required(command):
        if param.param_type_name == "argument":
            args.append("x")
        else:
            args += [param.opts[0], "x"]
    return args
