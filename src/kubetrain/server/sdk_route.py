"""``GET /api/v1/jobs/{name}/sdk`` and ``GET /api/v1/sdk``: the in-job SDK as a tar.gz, for images without kubetrain.

A pod's init container fetches it (the Kubernetes engine's Job manifest) into a folder put first on the
job's ``PYTHONPATH``, so any image with ``python3`` runs ``import kubetrain; kubetrain.report(...)``
and speaks exactly this master's protocol.  Only the modules a job uses, and only those that need
nothing but the standard library: ``kubetrain/__init__.py`` and ``kubetrain/sdk/{__init__, job_env,
tracking, checkpoints}.py`` (``sdk/__init__`` imports the HTTP ``Client`` lazily, and the archive
leaves it out).  Both ``__init__`` files get one line extending the package path, so an image that
does have kubetrain installed still finds the rest of it (``kubetrain.sdk.client``...).

The job route takes the job's own token (``X-Kubetrain-Job-Token``) like the snapshot route, because a
job token is scoped by the job name in the path; the plain route is for users (e.g. to bake the SDK
into an image).  The archive is built once per process from the installed package's files, byte for
byte the same each time (sorted, zero times and owners), so its ETag is stable.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import tarfile
from importlib import resources

from fastapi import Depends, FastAPI, Request, Response

from kubetrain.server.auth import Authenticator

#: The in-job SDK: standard library only (tests/integration/test_sdk_route.py imports it under ``python3 -I -S``).
MODULES = ("kubetrain/__init__.py", "kubetrain/sdk/__init__.py", "kubetrain/sdk/job_env.py",
           "kubetrain/sdk/tracking.py", "kubetrain/sdk/checkpoints.py")
#: Appended to both packages' ``__init__.py`` in the archive: the rest of an installed kubetrain stays importable.
EXTEND_PATH = ("\n\n# Added by the master's SDK archive: an installed kubetrain's other modules stay importable.\n"
               "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n")
MEDIA_TYPE = "application/gzip"
#: How OpenAPI says "bytes": clients (and the API fuzzer) must not read the archive as text.
BINARY = {"schema": {"type": "string", "format": "binary"}}


@functools.cache
def sdk_archive() -> bytes:
    """The SDK's tar.gz, built once per process (deterministic: the same bytes for the same files)."""
    package = resources.files("kubetrain")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path in MODULES:
                data = package.joinpath(path.removeprefix("kubetrain/")).read_bytes()
                if path.endswith("__init__.py"):
                    data += EXTEND_PATH.encode()
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def add_sdk_route(app: FastAPI, auth: Authenticator) -> None:
    def answer(request: Request) -> Response:
        data = sdk_archive()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(data, media_type=MEDIA_TYPE, headers={"ETag": etag})

    @app.get("/api/v1/jobs/{name}/sdk", dependencies=[Depends(auth.job_or_user)],
             responses={200: {"content": {MEDIA_TYPE: BINARY}, "description": "the in-job SDK, a tar.gz"}})
    def job_sdk(name: str, request: Request) -> Response:
        """The in-job SDK (a .tar.gz): what a pod's init container fetches with the job's token."""
        del name  # the same archive for every job; the name scopes the job token
        return answer(request)

    @app.get("/api/v1/sdk", dependencies=[Depends(auth.user)],
             responses={200: {"content": {MEDIA_TYPE: BINARY}, "description": "the in-job SDK, a tar.gz"}})
    def sdk(request: Request) -> Response:
        """The in-job SDK (a .tar.gz) for users, e.g. to put it into a training image."""
        return answer(request)
