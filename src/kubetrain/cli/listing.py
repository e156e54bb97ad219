"""``kubetrain get jobs`` / ``kubetrain ls``: one page of jobs as a table, JSON or YAML.

Jobs are handled as the API's JSON (plain dicts), so a table needs neither pydantic nor Rich.  The fast
path (:mod:`kubetrain.cli.quick`) fetches them through :class:`~kubetrain.cli.wire.SocketClient`; the full
path through :class:`~kubetrain.sdk.client.Client`.  Both print through :func:`show_jobs`.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing itself costs milliseconds to import; annotations are strings here (PEP 563)
if TYPE_CHECKING:
    from typing import Any

#: What ``--state`` takes (``core.states.JobState``; tests/cli checks they agree).
STATES = ("Queued", "Running", "Succeeded", "Failed", "Cancelled")
#: What ``--sort`` takes (the API's ``SortOrder``).
SORTS = ("newest", "oldest", "name")
#: Jobs per list request (``sdk.client.PAGE_SIZE``).
PAGE_SIZE = 500


def check_names(names: list[str], *, state: list[str], selector: str | None) -> None:
    """Jobs named on the command line are shown as they are: a filter beside them would mean nothing."""
    if names and (state or selector):
        from kubetrain.core.errors import SpecError

        raise SpecError("give job names or filters (--state, -l), not both: `kubetrain get jobs NAME...` shows "
                        "the named jobs whatever their state")


def list_quick(*, names: list[str], state: list[str], selector: str | None, output: str | None, limit: int,
               sort: str) -> None:
    """The fast path: this home's master through its socket (:class:`~kubetrain.cli.wire.Decline` if none)."""
    from kubetrain.cli.wire import SocketClient, home_dir

    check_names(names, state=state, selector=selector)
    client = SocketClient(home_dir())
    if names:
        # One get per name, in the order given (kubectl's `get pods A B`); the first unknown one is an error
        # naming it, before anything is printed.
        named = [client.request("GET", f"/api/v1/jobs/{quote_name(name)}").json() for name in names]
        show_jobs(named, output=output, more=False, sort=sort)
        return
    items: list[dict[str, Any]] = []
    token: str | None = None
    # A table needs no spec or provenance: the summary view leaves them in the database.
    params: dict[str, Any] = {"sort": sort, "view": "full" if output else "summary"}
    if state:
        params["state"] = state
    if selector:
        params["selector"] = selector
    while len(items) < limit:  # as Client.jobs_page: pages of at most PAGE_SIZE
        params["limit"] = min(PAGE_SIZE, limit - len(items))
        if token:
            params["continue"] = token
        reply = client.request("GET", "/api/v1/jobs", params=params)
        items += reply.json()
        token = reply.headers.get("x-continue") or None
        if token is None:
            break
    show_jobs(items, output=output, more=token is not None, sort=sort)


def list_full(client, *, names: list[str], state: list[str], selector: str | None, output: str | None, limit: int,
              sort: str) -> None:
    """The same through the SDK's client (a remote master, or one this command had to start)."""
    check_names(names, state=state, selector=selector)
    if names:
        named = [client.get_job(name).model_dump(mode="json") for name in names]
        show_jobs(named, output=output, more=False, sort=sort)
        return
    page = client.jobs_page(states=state or None, selector=selector or "", limit=limit, sort=sort,
                            view="full" if output else "summary")
    show_jobs([r.model_dump(mode="json") for r in page.items], output=output, more=page.continue_token is not None,
              sort=sort)


def quote_name(name: str) -> str:
    """A job name as one path segment (names are DNS labels; anything else is escaped, and then not found)."""
    from kubetrain.cli.wire import quote

    return quote(name)


def show_jobs(items: list[dict[str, Any]], *, output: str | None, more: bool, sort: str) -> None:
    from kubetrain.cli import render

    if output:
        render.dump(items, output)
    else:
        render.jobs_table(items)
    if more:
        order = {"newest": "newest first", "oldest": "oldest first"}.get(sort, f"by {sort}")
        sys.stderr.write(f"showing the first {len(items)} jobs ({order}); more exist: raise --limit, "
                         "or narrow the list with --state / -l\n")
