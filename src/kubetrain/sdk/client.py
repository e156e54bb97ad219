"""The HTTP client every front end uses (CLI, scripts, notebooks).

Errors come back as the same classes the server raised: the JSON body's
``code`` picks the class from :mod:`kubetrain.core.errors`.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx

from kubetrain.core.errors import KubetrainError, MasterUnavailableError, OverloadedError, error_from_response
from kubetrain.core.experiments import ExperimentSpec
from kubetrain.core.queue_bodies import QueueBody, QueueRecord
from kubetrain.core.records import (ExperimentRecord, JobRecord, NodeRecord, Provenance, SecretRecord, TokenRecord,
                                    ShareRecord, UsageRecord, UserRecord, WhoAmI)
from kubetrain.core.specs import JobSpec
from kubetrain.sdk.retrying import Backoff, overload_details, retry_wait


#: Jobs per list request: a page the master answers in milliseconds, few enough requests for thousands.
PAGE_SIZE = 500


@dataclass(frozen=True)
class JobPage:
    """Jobs of one listing, and the token that continues it (None: nothing more matched)."""

    items: list[JobRecord]
    continue_token: str | None = None


def local_socket(home: str | None = None) -> str:
    """The Unix socket of the master of ``home`` (default ``$KUBETRAIN_HOME``, else ``~/.kubetrain``)."""
    home = home or os.environ.get("KUBETRAIN_HOME") or os.path.join(os.path.expanduser("~"), ".kubetrain")
    return os.path.join(os.path.abspath(home), "run", "kubetrain.sock")


class Client:
    """Talks to a master at ``url``: ``http(s)://host:port`` (with a token), or ``unix:///path/to/kubetrain.sock``.

    On the Unix socket no token is needed: the master learns who you are from
    the kernel.  ``Client.local()`` reaches this machine's master that way.
    A request the master refuses as overloaded is sent again with jittered
    backoff for up to ``retry_deadline`` seconds (``sdk/retrying.py``), then
    :class:`OverloadedError` is raised; ``retry_deadline=0`` raises at once.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0,
                 retry_deadline: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.backoff = Backoff(deadline_seconds=retry_deadline)
        self._rng = random.Random()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if self.url.startswith("unix://"):
            transport = httpx.HTTPTransport(uds=self.url.removeprefix("unix://"))
            self._http = httpx.Client(base_url="http://localhost", headers=headers, timeout=timeout,
                                      transport=transport)
        else:
            self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @classmethod
    def local(cls, home: str | None = None, **kwargs: Any) -> "Client":
        """The master of this machine's ``KUBETRAIN_HOME`` (yours, or a shared one), through its Unix socket."""
        return cls(f"unix://{local_socket(home)}", **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------
    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        raise error_from_response(response.status_code, response.read())

    def _request(self, method: str, path: str, *, stream: bool = False, check: bool = True,
                 **kwargs: Any) -> httpx.Response:
        """Send a request (``kwargs`` as for ``httpx.Client.request``), again and again while the master says
        it is overloaded, until ``retry_deadline``; every request to the master goes through here.

        ``stream``: the answer's body is left for the caller to read (and close).  ``check``: raise the
        server's error for a status of 400 or more.
        """
        first = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                response = self._http.send(self._http.build_request(method, path, **kwargs), stream=stream)
            except httpx.TransportError as exc:
                raise MasterUnavailableError(f"cannot reach the master at {self.url}: {exc}") from None
            if response.status_code == 503 and stream:
                response.read()
            asked = retry_wait(method, response, now=time.time())
            if asked is None:
                break
            left = first + self.backoff.deadline_seconds - time.monotonic()
            if left <= 0:
                raise self._overloaded(method, path, response, tries=tries, seconds=time.monotonic() - first)
            time.sleep(min(left, self.backoff.delay(tries, asked, self._rng)))
        if check and response.status_code >= 400:
            response.read()
            self._raise_for(response)
        return response

    def _overloaded(self, method: str, path: str, response: httpx.Response, *, tries: int,
                    seconds: float) -> OverloadedError:
        details = {**(overload_details(response) or {}), "tries": tries}
        busy = f" ({details['class']} requests at their limit of {details.get('limit')})" if "class" in details else ""
        return OverloadedError(
            f"the master at {self.url} is overloaded{busy}: it refused {method} {path} {tries} times in "
            f"{seconds:.0f} s; try again later (Client(retry_deadline=...) sets how long to keep trying), or "
            "ask its admin to raise limits.concurrency in its config.yaml",
            details=details,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- jobs ----------------------------------------------------------------
    def submit(self, spec: JobSpec | dict[str, Any], provenance: Provenance | None = None) -> JobRecord:
        document = spec.to_document() if isinstance(spec, JobSpec) else spec
        body = {"spec": document, "provenance": (provenance or Provenance()).model_dump(mode="json", exclude_none=True)}
        return JobRecord.model_validate(self._call("POST", "/api/v1/jobs", json=body))

    def get_job(self, name: str) -> JobRecord:
        return JobRecord.model_validate(self._call("GET", f"/api/v1/jobs/{name}"))

    def list_jobs(self, *, states: list[str] | None = None, selector: str = "", limit: int | None = 500,
                  sort: str = "newest", view: str = "full") -> list[JobRecord]:
        """Up to ``limit`` jobs (None: all of them), newest first unless ``sort`` is oldest or name.

        Fetched page by page (:meth:`jobs_page`), so any ``limit`` works and the
        master never builds one huge answer; ``view="summary"`` leaves out the
        spec and provenance a table does not show.
        """
        return self.jobs_page(states=states, selector=selector, limit=limit, sort=sort, view=view).items

    def iter_jobs(self, *, states: list[str] | None = None, selector: str = "", sort: str = "newest",
                  view: str = "full", page_size: int = PAGE_SIZE) -> Iterator[JobRecord]:
        """Every matching job, one page request at a time: each job that existed when the listing started comes
        exactly once, however many are submitted meanwhile."""
        token: str | None = None
        while True:
            page = self.jobs_page(states=states, selector=selector, sort=sort, view=view, limit=page_size,
                                  continue_token=token, page_size=page_size)
            yield from page.items
            token = page.continue_token
            if token is None:
                return

    def jobs_page(self, *, states: list[str] | None = None, selector: str = "", limit: int | None = 500,
                  sort: str = "newest", view: str = "full", continue_token: str | None = None,
                  page_size: int = PAGE_SIZE) -> JobPage:
        """Up to ``limit`` jobs after ``continue_token``, in requests of at most ``page_size``; the page's token
        resumes after its last job and is None exactly when no further job matched."""
        items: list[JobRecord] = []
        token = continue_token
        while limit is None or len(items) < limit:
            params: dict[str, Any] = {"limit": page_size if limit is None else min(page_size, limit - len(items)),
                                      "sort": sort, "view": view}
            if states:
                params["state"] = states
            if selector:
                params["selector"] = selector
            if token:
                params["continue"] = token
            response = self._request("GET", "/api/v1/jobs", params=params)
            items += [JobRecord.model_validate(j) for j in response.json()]
            token = response.headers.get("X-Continue") or None
            if token is None:
                break
        return JobPage(items=items, continue_token=token)

    # -- identity --------------------------------------------------------------
    def whoami(self) -> WhoAmI:
        return WhoAmI.model_validate(self._call("GET", "/api/v1/whoami"))

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/api/v1/info")

    def add_user(self, name: str, *, role: str = "member", uid: int | None = None,
                 team: str | None = None) -> UserRecord:
        body = {"name": name, "role": role, "uid": uid, "team": team}
        return UserRecord.model_validate(self._call("POST", "/api/v1/users", json=body))

    def set_user_team(self, name: str, team: str | None) -> UserRecord:
        """Move ``name`` to ``team`` (None: no team); admins only."""
        return UserRecord.model_validate(self._call("PATCH", f"/api/v1/users/{name}", json={"team": team}))

    def list_users(self) -> list[UserRecord]:
        return [UserRecord.model_validate(u) for u in self._call("GET", "/api/v1/users")]

    def remove_user(self, name: str) -> None:
        self._delete(f"/api/v1/users/{name}")

    def create_token(self, *, user: str | None = None, expires_seconds: int = 30 * 86400,
                     description: str | None = None) -> TokenRecord:
        body = {"user": user, "expires_seconds": expires_seconds, "description": description}
        return TokenRecord.model_validate(self._call("POST", "/api/v1/tokens", json=body))

    def list_tokens(self) -> list[TokenRecord]:
        return [TokenRecord.model_validate(t) for t in self._call("GET", "/api/v1/tokens")]

    def revoke_token(self, token_id: str) -> None:
        self._delete(f"/api/v1/tokens/{token_id}")

    def create_secret(self, name: str, data: dict[str, str]) -> SecretRecord:
        return SecretRecord.model_validate(self._call("POST", "/api/v1/secrets", json={"name": name, "data": data}))

    def list_secrets(self) -> list[SecretRecord]:
        return [SecretRecord.model_validate(s) for s in self._call("GET", "/api/v1/secrets")]

    def delete_secret(self, name: str) -> None:
        self._delete(f"/api/v1/secrets/{name}")

    def create_queue(self, queue: QueueBody | dict[str, Any], *, update: bool = False) -> QueueRecord:
        """Create a queue (admins only); ``update``: replace the one of that name instead."""
        body = queue.to_document() if isinstance(queue, QueueBody) else queue
        if update:
            return QueueRecord.model_validate(self._call("PUT", f"/api/v1/queues/{body.get('name')}", json=body))
        return QueueRecord.model_validate(self._call("POST", "/api/v1/queues", json=body))

    def list_queues(self) -> list[QueueRecord]:
        return [QueueRecord.model_validate(q) for q in self._call("GET", "/api/v1/queues")]

    def get_queue(self, name: str) -> QueueRecord:
        return QueueRecord.model_validate(self._call("GET", f"/api/v1/queues/{name}"))

    def delete_queue(self, name: str) -> None:
        self._delete(f"/api/v1/queues/{name}")

    def _delete(self, path: str) -> None:
        self._request("DELETE", path)

    def cancel(self, name: str) -> JobRecord:
        return JobRecord.model_validate(self._call("POST", f"/api/v1/jobs/{name}/cancel"))

    def nodes(self) -> list[NodeRecord]:
        return [NodeRecord.model_validate(n) for n in self._call("GET", "/api/v1/nodes")]

    def share(self) -> list[ShareRecord]:
        """Each submitter's decayed usage and place in fair-share order."""
        return [ShareRecord.model_validate(r) for r in self._call("GET", "/api/v1/share")]

    def top(self, job: str | None = None) -> list[UsageRecord]:
        """What running attempts use now (CPU, memory, GPUs) beside what they asked for."""
        params = {"job": job} if job else {}
        return [UsageRecord.model_validate(u) for u in self._call("GET", "/api/v1/top", params=params)]

    def delete_job(self, name: str) -> None:
        """Forget a finished job (records and attempt folders); a queued or running one is refused (409)."""
        self._request("DELETE", f"/api/v1/jobs/{name}")

    def reruns(self, name: str) -> list[str]:
        """The names of the jobs submitted as reruns of ``name``, oldest first."""
        return self._call("GET", f"/api/v1/jobs/{name}/reruns")

    def logs(self, name: str, *, attempt: int | None = None, follow: bool = False,
             tail: int | None = None, replica: int = 0, since: int | None = None,
             timestamps: bool = False) -> Iterator[bytes]:
        """An attempt's log (default: the latest); ``tail``: from its last that many lines; ``replica``: which
        replica's, for a distributed job (default: rank 0's)."""
        params: dict[str, Any] = {"follow": follow}
        if replica:
            params["replica"] = replica
        if since is not None:
            params["since"] = since
        if timestamps:
            params["timestamps"] = True
        if attempt is not None:
            params["attempt"] = attempt
        if tail is not None:
            params["tail"] = tail
        response = self._request("GET", f"/api/v1/jobs/{name}/logs", params=params, timeout=None, stream=True)
        try:
            yield from response.iter_raw()
        except httpx.TransportError as exc:
            raise MasterUnavailableError(f"lost the master at {self.url}: {exc}") from None
        finally:
            response.close()

    # -- experiments and metrics ----------------------------------------------
    def submit_experiment(self, spec: ExperimentSpec | dict[str, Any],
                          provenance: Provenance | None = None) -> ExperimentRecord:
        document = spec.to_document() if isinstance(spec, ExperimentSpec) else spec
        body = {"spec": document, "provenance": (provenance or Provenance()).model_dump(mode="json", exclude_none=True)}
        return ExperimentRecord.model_validate(self._call("POST", "/api/v1/experiments", json=body))

    def list_experiments(self) -> list[ExperimentRecord]:
        return [ExperimentRecord.model_validate(e) for e in self._call("GET", "/api/v1/experiments")]

    def get_experiment(self, name: str) -> ExperimentRecord:
        return ExperimentRecord.model_validate(self._call("GET", f"/api/v1/experiments/{name}"))

    def experiment_events(self, name: str) -> list[dict[str, Any]]:
        """The experiment's events: its creation, its trials' job events, its end (oldest first)."""
        return self._call("GET", f"/api/v1/experiments/{name}/events")

    def cancel_experiment(self, name: str) -> ExperimentRecord:
        return ExperimentRecord.model_validate(self._call("POST", f"/api/v1/experiments/{name}/cancel"))

    def metrics(self, job: str, *, names: list[str] | None = None, after: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"after": after}
        if names:
            params["metric"] = names
        return self._call("GET", f"/api/v1/jobs/{job}/metrics", params=params)

    # -- files ----------------------------------------------------------------
    def upload_snapshot(self, data: bytes, digest: str) -> bool:
        """Upload a packed snapshot unless the master has it already; True if bytes were sent."""
        head = self._request("HEAD", f"/api/v1/snapshots/{digest}", check=False)
        if head.status_code == 200:
            return False
        self._call("PUT", f"/api/v1/snapshots/{digest}", content=data,
                   headers={"Content-Type": "application/octet-stream"})
        return True

    def create_volume(self, name: str, size: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/api/v1/volumes", json={"name": name, "size": size})

    def list_volumes(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/v1/volumes")

    def delete_volume(self, name: str) -> None:
        self._delete(f"/api/v1/volumes/{name}")

    def artifacts(self, job: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/v1/jobs/{job}/artifacts")

    def rerun(self, job: str, params: dict[str, Any] | None = None) -> JobRecord:
        return JobRecord.model_validate(self._call("POST", f"/api/v1/jobs/{job}/rerun", json={"params": params or {}}))

    def download(self, url_path: str, destination: str) -> int:
        """Stream a file to ``destination``, resuming a partial ``.part`` file by HTTP range."""
        part = destination + ".part"
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._request("GET", url_path, headers=headers, timeout=None, stream=True, check=False)
        try:
            if response.status_code >= 400 and response.status_code != 416:
                response.read()
                self._raise_for(response)
            mode = "ab" if response.status_code == 206 else "wb"
            if response.status_code != 416:
                with open(part, mode) as fh:
                    for chunk in response.iter_bytes(1 << 20):
                        fh.write(chunk)
        except httpx.TransportError as exc:
            raise MasterUnavailableError(f"lost the master at {self.url}: {exc}") from None
        finally:
            response.close()
        os.replace(part, destination)
        return os.path.getsize(destination)

    def wait(self, name: str, *, timeout: float = 600.0, poll: float = 0.2) -> JobRecord:
        """Block until the job reaches a terminal state (or raise after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(name)
            if job.state in ("Succeeded", "Failed", "Cancelled"):
                return job
            if time.monotonic() > deadline:
                raise KubetrainError(f"job {name!r} still {job.state} after {timeout:.0f}s")
            time.sleep(poll)
