"""The CLI's fast path: ``get jobs``, ``ls`` and ``run`` without loading Typer, Rich, httpx or pydantic.

Typer is what defines the CLI (:mod:`kubetrain.cli.app`): every command, its help, its usage errors.  But
importing it and building its command tree costs several times a bare interpreter's start, too much for
the commands people type in loops and scripts.  So :func:`dispatch` first tries to read the command line
with the tables below — the same options as Typer's, copied, and checked against Typer's command tree by
``tests/cli/test_quick.py`` so the two cannot drift — and runs those few commands directly against this
home's master on its Unix socket (:mod:`kubetrain.cli.wire`).

It only ever takes the easy case.  Anything it does not fully understand — ``--help``, an unknown or
misspelt option, a missing or invalid value, grouped short flags, ``KUBETRAIN_URL`` set, no master
running — returns False before anything is done, and the command runs through Typer as always, which
gives the usual usage message or starts the master.  (``KUBETRAIN_URL=unix://$KUBETRAIN_HOME/run/kubetrain.sock``
sends every command through Typer and the SDK client, should this path ever be in doubt.)
"""

from __future__ import annotations

import os

from kubetrain.cli.listing import SORTS, STATES

TYPE_CHECKING = False  # typing itself costs milliseconds to import; annotations are strings here (PEP 563)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

FLAG, ONE, MANY = "flag", "one", "many"
#: Value types: str, "int", ("min", N) for an int of at least N, ("choice", values, case_sensitive).
OUTPUTS = ("json", "yaml")


def option(opts: tuple[str, ...], dest: str, kind: str = ONE, value: Any = str, default: Any = None,
           off: tuple[str, ...] = ()) -> tuple:
    """One option: its flags, where its value goes, one value / a list / a flag (``off``: the flags that
    set it false), the value's type and the default."""
    return (opts, off, dest, kind, value, [] if kind == MANY and default is None else default)


LIST_OPTIONS = (
    option(("--state", "-s"), "state", MANY, ("choice", STATES, False)),
    option(("--selector", "-l"), "selector"),
    option(("--output", "-o"), "output", value=("choice", OUTPUTS, True)),
    option(("--limit",), "limit", value=("min", 1), default=500),
    option(("--sort",), "sort", value=("choice", SORTS, True), default="newest"),
)

RUN_OPTIONS = (
    option(("--name", "-n"), "name"),
    option(("--cpu",), "cpu"),
    option(("--memory",), "memory"),
    option(("--gpu",), "gpu", value="int"),
    option(("--replicas",), "replicas", value="int"),
    option(("--after",), "after", MANY),
    option(("--array",), "array"),
    option(("--param", "-p"), "param", MANY),
    option(("--env", "-e"), "env", MANY),
    option(("--label",), "label", MANY),
    option(("--selector", "-l"), "selector"),
    option(("--priority",), "priority", value="int"),
    option(("--queue",), "queue"),
    option(("--deadline",), "deadline"),
    option(("--workdir", "-w"), "workdir"),
    option(("--shell",), "shell", FLAG, default=False, off=("--no-shell",)),
    option(("--retries",), "retries", value="int"),
    option(("--volume", "-v"), "volume", MANY),
    option(("--snapshot",), "snapshot", FLAG, default=True, off=("--no-snapshot",)),
    option(("--follow", "-f"), "follow", FLAG, default=False),
    option(("--wait",), "wait", FLAG, default=False, off=("--no-wait",)),
    option(("--output", "-o"), "output", value=("choice", OUTPUTS, True)),
)


def _list(**values: Any) -> None:
    from kubetrain.cli.listing import list_quick

    list_quick(**values)


def _run(**values: Any) -> None:
    from kubetrain.cli.submitting import run_quick

    run_quick(**values)


#: The commands taken here: words -> (options, arguments as (name, nargs, required), interspersed, run).
#: nargs -1: all the rest.  ``interspersed`` False: options end at the first argument (``run``).
COMMANDS: dict[tuple[str, ...], tuple[tuple, tuple, bool, Callable[..., None]]] = {
    ("get", "jobs"): (LIST_OPTIONS, (("names", -1, False),), True, _list),
    ("ls",): (LIST_OPTIONS, (("names", -1, False),), True, _list),
    ("run",): (RUN_OPTIONS, (("command", -1, True),), False, _run),
}


class _Unsure(Exception):
    """The command line is not one this module reads with certainty: Typer reads it."""


def _convert(text: str, kind: Any) -> Any:
    if kind is str:
        return text
    if kind == "int" or (isinstance(kind, tuple) and kind[0] == "min"):
        try:
            number = int(text)
        except ValueError:
            raise _Unsure from None
        if isinstance(kind, tuple) and number < kind[1]:
            raise _Unsure
        return number
    _, choices, case_sensitive = kind
    for choice in choices:
        if choice == text or (not case_sensitive and choice.casefold() == text.casefold()):
            return choice
    raise _Unsure


def parse(options: tuple, arguments: tuple, interspersed: bool, args: list[str]) -> dict[str, Any]:
    """``args`` read as click reads them, for the forms used every day: ``--opt value``, ``--opt=value``,
    ``-o value``, ``-ovalue``, flags, ``--``.  Raises :class:`_Unsure` on anything else."""
    table = {}
    for opts, off, dest, kind, value, _default in options:
        for flag in opts:
            table[flag] = (dest, kind, value, True)
        for flag in off:
            table[flag] = (dest, kind, value, False)
    values: dict[str, Any] = {}
    positional: list[str] = []
    at, only_arguments = 0, False
    while at < len(args):
        arg = args[at]
        at += 1
        if only_arguments or arg == "-" or not arg.startswith("-"):
            positional.append(arg)
            only_arguments = only_arguments or not interspersed
            continue
        if arg == "--":
            only_arguments = True
            continue
        if arg.startswith("--"):
            name, equals, inline = arg.partition("=")
            attached = bool(equals)
        else:
            name, inline = arg[:2], arg[2:]
            attached = bool(inline)
        if name not in table:
            raise _Unsure  # unknown, -h/--help, or grouped short flags
        dest, kind, value, on = table[name]
        if kind == FLAG:
            if attached:
                raise _Unsure
            values[dest] = on
            continue
        if not attached:
            if at >= len(args):
                raise _Unsure
            inline = args[at]
            at += 1
        converted = _convert(inline, value)
        if kind == MANY:
            values.setdefault(dest, []).append(converted)
        else:
            values[dest] = converted
    for _opts, _off, dest, _kind, _value, default in options:
        values.setdefault(dest, list(default) if isinstance(default, list) else default)
    for name, nargs, required in arguments:
        if nargs == -1:
            taken, positional = positional, []
        else:
            taken, positional = positional[:nargs], positional[nargs:]
        if required and not taken:
            raise _Unsure
        values[name] = taken if nargs == -1 else (taken[0] if taken else None)
    if positional:
        raise _Unsure  # an extra argument: Typer says so
    return values


def dispatch(args: list[str]) -> bool:
    """Run ``args`` on the fast path if it can; False (nothing done) when Typer must."""
    if os.environ.get("KUBETRAIN_URL"):
        return False  # a remote master: tokens, TLS and proxies are the SDK client's
    for words, (options, arguments, interspersed, run) in COMMANDS.items():
        if tuple(args[:len(words)]) == words:
            break
    else:
        return False
    try:
        values = parse(options, arguments, interspersed, args[len(words):])
    except _Unsure:
        return False
    from kubetrain.cli.wire import Decline

    try:
        run(**values)
    except Decline:
        return False
    return True
