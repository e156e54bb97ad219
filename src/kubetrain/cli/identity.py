"""``kubetrain user|token|secret|login|whoami``: identities on a master shared by a team."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer

from kubetrain.cli import render
from kubetrain.cli.choices import Output as OutputFormat
from kubetrain.cli.credentials import store_token
from kubetrain.core.errors import SpecError
from kubetrain.core.identity import validate_team_name

if TYPE_CHECKING:
    from kubetrain.sdk.client import Client

Output = Annotated[Optional[OutputFormat], typer.Option("--output", "-o", help="json or yaml instead of a table")]

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, field: str = "--expires") -> int:
    """``30d``, ``12h``, ``90m``, ``2w`` -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise SpecError(f"{field} {text!r}: use a number and a unit, e.g. 30d, 12h, 90m or 2w",
                        details={"field": field, "value": text})
    return int(match.group(1)) * _UNIT[match.group(2)]


def _pairs(items: list[str], field: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"{field} {item!r}: use KEY=VALUE", details={"field": field, "value": item})
        out.append((key, value))
    return out


def _show(records: list, output: str | None, headers: list[str], row: Callable[[Any], list[str]]) -> None:
    if output:
        render.dump([r.model_dump(mode="json") for r in records], output)
    else:
        render.table(headers, [row(r) for r in records])


def register(app: typer.Typer, client: Callable[[], Client]) -> None:
    user_app = typer.Typer(help="Users of this master (admins manage them).", no_args_is_help=True)
    token_app = typer.Typer(help="API tokens for remote use (stored hashed; shown once).", no_args_is_help=True)
    secret_app = typer.Typer(help="Named secrets for jobs (env valueFrom.secretKeyRef).", no_args_is_help=True)
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")
    app.add_typer(secret_app, name="secret")

    @app.command()
    def whoami(output: Output = None) -> None:
        """Who the master thinks you are, and how it knows."""
        with client() as c:
            me = c.whoami()
        if output:
            render.dump(me.model_dump(mode="json"), output)
        else:
            typer.echo(f"{me.name} ({me.role}, via {me.via}{'' if me.uid is None else f', uid {me.uid}'})")

    @app.command()
    def login(url: Annotated[str, typer.Argument(help="the master's URL, e.g. https://kubetrain.example:8080")],
              token: Annotated[Optional[str], typer.Option(help="the token (default: read from a prompt or stdin)")] = None
              ) -> None:
        """Store a token for URL (mode 0600 in ~/.config/kubetrain) after checking it works."""
        if token is None:
            token = (typer.prompt("token", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline()).strip()
        if not token:
            raise SpecError("no token given; paste the one `kubetrain token create` printed", details={"field": "token"})
        from kubetrain.sdk.client import Client

        with Client(url, token=token) as c:
            me = c.whoami()
        path = store_token(url, token)
        typer.echo(f"logged in to {url.rstrip('/')} as {me.name} ({me.role}); token saved in {path}")

    def user_add(name: str,
                 role: Annotated[str, typer.Option(help="admin or member")] = "member",
                 uid: Annotated[Optional[int], typer.Option(help="the OS uid this user's jobs run as")] = None,
                 team: Annotated[Optional[str], typer.Option(
                     help="the team whose fair share their usage counts for (a DNS label, e.g. ml-research)")] = None,
                 ) -> None:
        """Add a user (admins only)."""
        if role not in ("admin", "member"):
            raise SpecError(f"--role {role!r}: use admin or member", details={"field": "role", "value": role})
        if team is not None:
            validate_team_name(team, "--team")
        with client() as c:
            user = c.add_user(name, role=role, uid=uid, team=team)
        typer.echo(f"user/{user.name} added ({user.role}{'' if user.team is None else f', team {user.team}'})")

    user_app.command("add")(user_add)
    user_app.command("create", hidden=True)(user_add)  # as `token create` and `secret create` are spelled

    @user_app.command("set-team")
    def user_set_team(name: str,
                      team: Annotated[Optional[str], typer.Argument(
                          help="the new team (a DNS label); leave out with --none to take them out of any")] = None,
                      none: Annotated[bool, typer.Option("--none", help="no team: a team of one for fair share")] = False,
                      ) -> None:
        """Move a user to a team (admins only); fair share counts their usage for it from now on."""
        if (team is None) == (not none):
            raise SpecError("give a TEAM, or --none to take the user out of any team",
                            details={"field": "team", "value": team})
        if team is not None:
            validate_team_name(team, "TEAM")
        with client() as c:
            user = c.set_user_team(name, team)
        typer.echo(f"user/{user.name} {'is in team ' + user.team if user.team else 'is in no team'}")

    @user_app.command("set-webhook")
    def user_set_webhook(name: str,
                         url: Annotated[Optional[str], typer.Argument(
                             help="http(s) URL POSTed a JSON message when one of the user's jobs ends")] = None,
                         none: Annotated[bool, typer.Option("--none", help="no default webhook")] = False,
                         ) -> None:
        """Set a user's default webhook (the user themself or an admin); a job's spec.notifications wins."""
        if (url is None) == (not none):
            raise SpecError("give a URL, or --none to remove the user's webhook",
                            details={"field": "url", "value": url})
        if url is not None:
            from kubetrain.core.notifications import check_webhook_url

            try:
                check_webhook_url(url, "URL")
            except ValueError as exc:
                raise SpecError(str(exc), details={"field": "url", "value": url[:200]}) from None
        with client() as c:
            answer = c._call("PUT", f"/api/v1/users/{name}/webhook", json={"url": url})
        typer.echo(f"user/{name} {'notifies ' + answer['url'] if answer.get('url') else 'has no webhook'}")

    @user_app.command("ls")
    def user_ls(output: Output = None) -> None:
        """List users."""
        with client() as c:
            users = c.list_users()
        _show(users, output, ["NAME", "ROLE", "UID", "TEAM"],
              lambda u: [u.name, u.role, "" if u.uid is None else str(u.uid), u.team or ""])

    @user_app.command("rm")
    def user_rm(name: str) -> None:
        """Remove a user and revoke their tokens (admins only)."""
        with client() as c:
            c.remove_user(name)
        typer.echo(f"user/{name} removed")

    @token_app.command("create")
    def token_create(user: Annotated[Optional[str], typer.Option(help="for this user (admins only); default: you")] = None,
                     expires: Annotated[str, typer.Option(help="lifetime, e.g. 30d, 12h (at most 366d)")] = "30d",
                     description: Annotated[Optional[str], typer.Option(help="what it is for")] = None) -> None:
        """Create a token; it is printed once, on stdout (keep it: only its hash is stored)."""
        with client() as c:
            record = c.create_token(user=user, expires_seconds=parse_duration(expires), description=description)
        typer.echo(f"token {record.id} for {record.user}, expires {render.timestamp(record.expires_at)}", err=True)
        typer.echo(record.token)

    @token_app.command("ls")
    def token_ls(output: Output = None) -> None:
        """Your tokens (all tokens, for an admin); never their values."""
        with client() as c:
            tokens = c.list_tokens()
        _show(tokens, output, ["ID", "USER", "CREATED", "EXPIRES", "STATE", "DESCRIPTION"], lambda t: [
            t.id, t.user, render.timestamp(t.created_at), render.timestamp(t.expires_at),
            "revoked" if t.revoked else "active", t.description or ""])

    @token_app.command("revoke")
    def token_revoke(token_id: str) -> None:
        """Revoke a token at once."""
        with client() as c:
            c.revoke_token(token_id)
        typer.echo(f"token {token_id} revoked")

    @secret_app.command("create")
    def secret_create(
        name: str,
        from_literal: Annotated[list[str], typer.Option("--from-literal", help="KEY=VALUE (repeatable)")] = [],
        from_file: Annotated[list[str], typer.Option("--from-file", help="KEY=PATH (repeatable)")] = [],
    ) -> None:
        """Create a secret (as kubectl create secret generic); jobs reference it, its values never show."""
        data = dict(_pairs(from_literal, "--from-literal"))
        for key, path in _pairs(from_file, "--from-file"):
            try:
                data[key] = Path(path).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise SpecError(f"--from-file {key}={path}: cannot read it as text ({exc})",
                                details={"field": "--from-file", "value": path}) from None
        if not data:
            raise SpecError("give at least one --from-literal KEY=VALUE or --from-file KEY=PATH",
                            details={"field": "--from-literal"})
        with client() as c:
            record = c.create_secret(name, data)
        typer.echo(f"secret/{record.name} created (keys: {', '.join(record.keys)})")

    @secret_app.command("ls")
    def secret_ls(output: Output = None) -> None:
        """Secrets: names, owners and keys, never values."""
        with client() as c:
            items = c.list_secrets()
        _show(items, output, ["NAME", "OWNER", "KEYS", "CREATED"],
              lambda s: [s.name, s.owner, ",".join(s.keys), render.timestamp(s.created_at)])

    @secret_app.command("rm")
    def secret_rm(name: str) -> None:
        """Delete a secret (yours, or any as an admin)."""
        with client() as c:
            c.delete_secret(name)
        typer.echo(f"secret/{name} deleted")
