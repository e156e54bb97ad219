"""The HTTP client every front end uses (CLI, scripts, notebooks).

Errors come back as the same classes the server raised: the JSON body's
``code`` picks the class from :mod:`kubetrain.core.errors`.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import httpx

from kubetrain.core.errors import KubetrainError, MasterUnavailableError, error_from_dict
from kubetrain.core.experiments import ExperimentSpec
from kubetrain.core.records import (ExperimentRecord, JobRecord, NodeRecord, Provenance, SecretRecord, TokenRecord,
                                    UserRecord, WhoAmI)
from kubetrain.core.specs import JobSpec


def local_socket(home: str | None = None) -> str:
    """The Unix socket of the master of ``home`` (default ``$KUBETRAIN_HOME``, else ``~/.kubetrain``)."""
    home = home or os.environ.get("KUBETRAIN_HOME") or os.path.join(os.path.expanduser("~"), ".kubetrain")
    return os.path.join(os.path.abspath(home), "run", "kubetrain.sock")


class Client:
    """Talks to a master at ``url``: ``http(s)://host:port`` (with a token), or ``unix:///path/to/kubetrain.sock``.

    On the Unix socket no token is needed: the master learns who you are from
    the kernel.  ``Client.local()`` reaches this machine's master that way.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
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

    # -- identity --------------------------------------------------------------
    def whoami(self) -> WhoAmI:
        return WhoAmI.model_validate(self._call("GET", "/api/v1/whoami"))

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/api/v1/info")

    def add_user(self, name: str, *, role: str = "member", uid: int | None = None) -> UserRecord:
        return UserRecord.model_validate(self._call("POST", "/api/v1/users", json={"name": name, "role": role, "uid": uid}))

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

    def _delete(self, path: str) -> None:
        try:
            response = self._http.delete(path)
        except httpx.TransportError as exc:
            raise MasterUnavailableError(f"cannot reach the master at {self.url}: {exc}") from None
        self._raise_for(response)

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
        self._delete(f"/api/v1/volumes/{name}")

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
