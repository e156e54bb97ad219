"""The HTTP client every front end uses (CLI, scripts, notebooks).

Errors come back as the same classes the server raised: the JSON body's
``code`` picks the class from :mod:`kubetrain.core.errors`.
"""

from __future__ import annotations

from typing import Any, Iterator

import httpx

from kubetrain.core.errors import KubetrainError, MasterUnavailableError, error_from_dict
from kubetrain.core.experiments import ExperimentSpec
from kubetrain.core.records import ExperimentRecord, JobRecord, NodeRecord, Provenance
from kubetrain.core.specs import JobSpec


class Client:
    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

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
        try:
            body = response.json()
        except ValueError:
            body = {"code": "internal", "message": f"HTTP {response.status_code}: {response.text[:200]}"}
        if not isinstance(body, dict) or "message" not in body:
            body = {"code": "internal", "message": f"HTTP {response.status_code}"}
        raise error_from_dict(body)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise MasterUnavailableError(f"cannot reach the master at {self.url}: {exc}") from None
        self._raise_for(response)
        return response.json()

    # -- jobs ----------------------------------------------------------------
    def submit(self, spec: JobSpec | dict[str, Any], provenance: Provenance | None = None) -> JobRecord:
        document = spec.to_document() if isinstance(spec, JobSpec) else spec
        body = {"spec": document, "provenance": (provenance or Provenance()).model_dump(mode="json", exclude_none=True)}
        return JobRecord.model_validate(self._call("POST", "/api/v1/jobs", json=body))

    def get_job(self, name: str) -> JobRecord:
        return JobRecord.model_validate(self._call("GET", f"/api/v1/jobs/{name}"))

    def list_jobs(self, *, states: list[str] | None = None, selector: str = "", limit: int = 500) -> list[JobRecord]:
        params: dict[str, Any] = {"limit": limit}
        if states:
            params["state"] = states
        if selector:
            params["selector"] = selector
        return [JobRecord.model_validate(j) for j in self._call("GET", "/api/v1/jobs", params=params)]

    def cancel(self, name: str) -> JobRecord:
        return JobRecord.model_validate(self._call("POST", f"/api/v1/jobs/{name}/cancel"))

    def nodes(self) -> list[NodeRecord]:
        return [NodeRecord.model_validate(n) for n in self._call("GET", "/api/v1/nodes")]

    def logs(self, name: str, *, attempt: int | None = None, follow: bool = False) -> Iterator[bytes]:
        params: dict[str, Any] = {"follow": follow}
        if attempt is not None:
            params["attempt"] = attempt
        try:
            with self._http.stream("GET", f"/api/v1/jobs/{name}/logs", params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                yield from response.iter_raw()
        except httpx.TransportError as exc:
            raise MasterUnavailableError(f"lost the master at {self.url}: {exc}") from None

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
        try:
            head = self._http.head(f"/api/v1/snapshots/{digest}")
        except httpx.TransportError as exc:
            raise MasterUnavailableError(f"cannot reach the master at {self.url}: {exc}") from None
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
        try:
            response = self._http.delete(f"/api/v1/volumes/{name}")
        except httpx.TransportError as exc:
            raise MasterUnavailableError(f"cannot reach the master at {self.url}: {exc}") from None
        self._raise_for(response)

    def artifacts(self, job: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/v1/jobs/{job}/artifacts")

    def rerun(self, job: str, params: dict[str, Any] | None = None) -> JobRecord:
        return JobRecord.model_validate(self._call("POST", f"/api/v1/jobs/{job}/rerun", json={"params": params or {}}))

    def download(self, url_path: str, destination: str) -> int:
        """Stream a file to ``destination``, resuming a partial ``.part`` file by HTTP range."""
        import os

        part = destination + ".part"
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self._http.stream("GET", url_path, headers=headers, timeout=None) as response:
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
        os.replace(part, destination)
        return os.path.getsize(destination)

    def wait(self, name: str, *, timeout: float = 600.0, poll: float = 0.2) -> JobRecord:
        """Block until the job reaches a terminal state (or raise after ``timeout``)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(name)
            if job.state in ("Succeeded", "Failed", "Cancelled"):
                return job
            if time.monotonic() > deadline:
                raise KubetrainError(f"job {name!r} still {job.state} after {timeout:.0f}s")
            time.sleep(poll)
