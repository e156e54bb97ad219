"""The dashboard's Experiments, Experiment, Queue, Nodes and Users pages (issue 13, part 2).

Rendered on the server from the service, as the API would answer the same
caller: every signed-in user reads every experiment, the queue and the nodes
(as ``kubetrain get``/``nodes``/``top`` do); the Users page lists users and
every token, which is an admin's business, so a member gets 403 there.  The
data is shaped by ``insight_views.py`` (pure); the charts are drawn in the
browser by ``static/insights.js`` with the plotly.js bundle the dashboard
serves from the installed ``plotly`` package, from JSON embedded with
``tojson``.  One route serves JSON: a trial's curve, fetched when the user
ticks a trial the page did not embed (a sweep's every series would make the
page megabytes).
"""

from __future__ import annotations

import time
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from kubetrain.core.errors import NotFoundError
from kubetrain.core.fairshare import fair_keys
from kubetrain.server.auth import Authenticator
from kubetrain.server.dashboard import insight_views as views
from kubetrain.server.dashboard.web import page_caller, render
from kubetrain.server.services import JobService
from kubetrain.settings import Settings

#: Experiments the list page shows (newest first), as ``kubetrain experiments`` does by default.
EXPERIMENTS_SHOWN = 200
#: Points read per trial for a curve: the store returns a series oldest first, so a longer one is cut at its end.
POINTS_READ = 50_000


def add_insight_pages(app: FastAPI, service: JobService, auth: Authenticator, settings: Settings) -> None:
    """Add the pages to ``app`` (called by ``add_dashboard``; routes under ``/dashboard``)."""
    store = service.store

    def series(job: str, metric: str) -> dict[str, list]:
        job_id = store.job_ref(job)[0]
        return views.curve(store.metric_series(job_id, names=[metric], limit=POINTS_READ), metric)

    @app.get("/dashboard/experiments", response_class=HTMLResponse, include_in_schema=False)
    def experiments_page(request: Request) -> HTMLResponse:
        caller = page_caller(auth, request)
        rows = store.list_experiment_rows(limit=EXPERIMENTS_SHOWN)
        records = [service.sweeps.describe(r.name, row=r) for r in rows] if service.sweeps else []
        items = [{"record": r, "metric": views.objective_of(r.spec)[0], "goal": views.objective_of(r.spec)[1],
                  "best": next((t for t in r.trials if t.trial == r.best_trial), None)} for r in records]
        return render(request, "insights/experiments.html", caller=caller, page="experiments", items=items)

    @app.get("/dashboard/experiments/{name}", response_class=HTMLResponse, include_in_schema=False)
    def experiment_page(name: str, request: Request) -> HTMLResponse:
        caller = page_caller(auth, request)
        try:
            if service.sweeps is None:
                raise NotFoundError("this master does not run experiments")
            record = service.sweeps.describe(name)
        except NotFoundError as exc:
            return render(request, "error.html", caller=caller, page="experiments", status_code=404,
                          title=f"No experiment {name}", message=exc.message)
        table = views.trial_table(record)
        reporting = views.curve_trials(record)
        embedded = reporting[:views.DEFAULT_OVERLAID]
        curves = views.curves_payload(record, {t.job: series(t.job, table.metric) for t in embedded})
        data = {"experiment": record.name, "state": str(record.state), "done": record.counts.get("done", 0),
                "objective": views.objective_chart(record),
                "parcoords": views.parallel_coordinates(record), "curves": curves,
                "curve_url": f"/dashboard/experiments/{quote(record.name, safe='')}/curves/",
                "reporting": [t.trial for t in reporting]}
        best = next((t for t in record.trials if t.trial == record.best_trial), None)
        return render(request, "insights/experiment.html", caller=caller, page="experiments", record=record,
                      table=table, best=best, data=data)

    @app.get("/dashboard/experiments/{name}/curves/{trial}", include_in_schema=False)
    def experiment_curve(name: str, trial: int, request: Request) -> JSONResponse:
        """One trial's objective series, for the overlay chart (the page embeds only the best few)."""
        page_caller(auth, request)
        if service.sweeps is None:
            raise NotFoundError("this master does not run experiments")
        record = service.sweeps.describe(name)
        found = next((t for t in record.trials if t.trial == trial), None)
        if found is None:
            raise NotFoundError(f"experiment {name!r} has no trial {trial}")
        metric, _ = views.objective_of(record.spec)
        return JSONResponse({"trial": found.trial, "job": found.job, "best": found.trial == record.best_trial,
                             **series(found.job, metric)}, headers={"Cache-Control": "no-store"})

    @app.get("/dashboard/queue", response_class=HTMLResponse, include_in_schema=False)
    def queue_page(request: Request) -> HTMLResponse:
        caller = page_caller(auth, request)
        now = time.time()
        queued = store.queued()
        waiting_out_backoff = store.backing_off(now=now)
        ready = {req.key for req, _ in queued if req.key not in waiting_out_backoff}
        active = store.active_attempts()
        usage = (fair_keys(store.usage(now=now), store.user_teams(), settings.team_shares)
                 if settings.fair_share else None)
        rows = views.queue_rows(queued, ready=ready, fair_share=settings.fair_share,
                                running=views.running_per_owner(active), usage=usage)
        return render(request, "insights/queue.html", caller=caller, page="queue", rows=rows,
                      queues=store.queue_records(), fair_share=settings.fair_share)

    @app.get("/dashboard/nodes", response_class=HTMLResponse, include_in_schema=False)
    def nodes_page(request: Request) -> HTMLResponse:
        caller = page_caller(auth, request)
        active = store.active_attempts()
        nodes = service.engine.describe_nodes(active)
        live = service.engine.capabilities.live_usage
        rows = views.node_rows(nodes, service.top() if live else [], active)
        return render(request, "insights/nodes.html", caller=caller, page="nodes", rows=rows, live=live)

    @app.get("/dashboard/users", response_class=HTMLResponse, include_in_schema=False)
    def users_page(request: Request) -> HTMLResponse:
        caller = page_caller(auth, request)
        if not caller.is_admin:
            return render(request, "error.html", caller=caller, page="users", status_code=403,
                          title="Admins only", message="Users and tokens are for admins; ask one to change yours "
                                                       "(your own tokens: `kubetrain token ls`).")
        now = time.time()
        tokens = store.list_tokens()
        return render(request, "insights/users.html", caller=caller, page="users",
                      users=views.user_rows(store.list_users(), tokens, now), tokens=views.token_rows(tokens, now))

