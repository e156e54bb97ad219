"""``kubetrain``: the entry point.  Runs a command line and turns whatever it raised into a message and an
exit status — never a traceback.

The command line goes to the fast path first (:mod:`kubetrain.cli.quick`: ``get jobs``, ``ls``, ``run``
with standard library imports only); whatever it does not take goes to the Typer app
(:mod:`kubetrain.cli.app`), built only then.  This module imports nothing heavy itself, so a command pays
only for what it uses.

Exit statuses: 0 done; 1 the command failed (the master said no, a job failed); 2 a usage error (click's
usage text) or an invalid spec; 130 interrupted.
"""

from __future__ import annotations

import sys


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def run(args: list[str]) -> int:
    """Run one command line; its exit status (exceptions included)."""
    try:
        from kubetrain.cli.quick import dispatch

        if dispatch(args):
            return 0
        from kubetrain.cli.app import app

        code = app(args=args, prog_name="kubetrain", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every exception ends as a message and a status
        return _report(exc)


def _report(exc: Exception) -> int:
    """Say what went wrong in ``exc``; the exit status it means."""
    from kubetrain.core.errors import KubetrainError

    if isinstance(exc, KubetrainError):
        _say(f"error: {exc.message}")
        return 2 if exc.code == "invalid_spec" else 1
    if "typer" in sys.modules:  # only the Typer app raises these, and then typer is loaded
        import typer

        if isinstance(exc, typer.Exit):
            return exc.exit_code
        if isinstance(exc, typer.Abort):
            _say("aborted")
            return 130
        # Typer ships its own click: its usage errors derive from TyperException, not click.ClickException.
        if isinstance(exc, typer.TyperException):
            show = getattr(exc, "show", None)
            if show is not None:
                show()
            else:
                _say(f"error: {exc.format_message()}")
            return exc.exit_code
    _say(f"error: unexpected {type(exc).__name__}: {exc} (please report this)")
    return 1


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
