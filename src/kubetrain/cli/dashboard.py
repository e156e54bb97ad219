"""``kubetrain dashboard``: open the master's web dashboard, logged in, with a one-time link.

The master makes the link for whoever asks (over the Unix socket the kernel
says who; over TCP the token does), so the browser becomes that user without
a token being pasted or put in a URL that lasts: the link works once, within
a minute, and what the browser keeps is an HttpOnly session cookie.  The link
points at the master's TCP address, since a browser cannot use its socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Callable

import typer

if TYPE_CHECKING:
    from kubetrain.sdk.client import Client


def dashboard_base(client_url: str) -> str:
    """Where a browser reaches the master: the client's own URL over TCP, else the address the master wrote
    into its home when it started (``run/master.json``)."""
    if not client_url.startswith("unix://"):
        return client_url.rstrip("/")
    from kubetrain.core.errors import MasterUnavailableError
    from kubetrain.server.daemon import read_master
    from kubetrain.settings import load_settings

    info = read_master(load_settings()) or {}
    url = str(info.get("url") or "")
    if not url.startswith(("http://", "https://")):
        raise MasterUnavailableError("this master's web address is unknown (no run/master.json in KUBETRAIN_HOME); "
                                     "set KUBETRAIN_URL to its http:// address")
    return url.rstrip("/")


def register(app: typer.Typer, client: Callable[[], Client]) -> None:
    @app.command()
    def dashboard(
        url_only: Annotated[bool, typer.Option("--url-only", help="print the login link instead of opening a "
                                                                 "browser (it works once, within a minute)")] = False,
    ) -> None:
        """Open the web dashboard in a browser, logged in as you (a one-time link)."""
        c = client()
        link = c._call("POST", "/api/v1/dashboard/links")
        url = dashboard_base(c.url) + str(link["path"])
        if url_only:
            typer.echo(url)
            return
        import webbrowser

        if webbrowser.open(url):
            typer.echo(f"opened the dashboard as {link.get('user')} in a browser", err=True)
        else:
            typer.echo("no browser to open here; open this link (it works once, within a minute):", err=True)
            typer.echo(url)
