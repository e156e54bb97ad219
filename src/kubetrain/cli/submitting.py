"""What the CLI does to send a job: pack and upload its code snapshot, then submit it.

:func:`attach_snapshot_document` is shared by every submitting command (``run``, ``submit -f``, ``sweep``).
:func:`run_quick` is ``kubetrain run`` on the fast path (:mod:`kubetrain.cli.quick`): plain documents over
:class:`~kubetrain.cli.wire.SocketClient`, no spec models loaded.  The master validates every spec
anyway; only when it refuses one is the spec validated here too, so the message is the one the full path
gives (with the CLI's own hints), not the API's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing itself costs milliseconds to import; annotations are strings here (PEP 563)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def job_body(document: dict[str, Any]) -> dict[str, Any]:
    """The part of a Job or Experiment document that says how its jobs run (``spec``, or its ``template``)."""
    spec = document["spec"]
    return spec["template"] if document.get("kind") == "Experiment" else spec


def attach_snapshot_document(client, document: dict[str, Any], *, home: Path | str,
                             say: Callable[[str], None]) -> dict[str, Any] | None:
    """Pack the working directory of ``document``, upload it (once per content) and return the document
    pointing at it; None when there is nothing to pack (no workingDir, or a snapshot named already).

    ``client``: anything with ``upload_snapshot(data, digest) -> bool`` (the SDK's client or the CLI's own).
    """
    from kubetrain.core.errors import SpecError
    from kubetrain.core.quantities import format_memory
    from kubetrain.sdk.snapshots import DEFAULT_MAX_BYTES, pack

    body = job_body(document)
    if body.get("snapshot") or not body.get("workingDir"):
        return None
    root = Path(body["workingDir"])
    if not root.is_dir():
        raise SpecError(f"workingDir {body['workingDir']!r} is not a directory on this machine")
    limit = int(os.environ.get("KUBETRAIN_SNAPSHOT_MAX") or DEFAULT_MAX_BYTES)
    data, digest, count = pack(root, max_bytes=limit, exclude=[Path(home)])
    sent = client.upload_snapshot(data, digest)
    say(f"code snapshot {digest[7:19]} of {root}: {count} files, {format_memory(len(data))}"
        + ("" if sent else " (already on the master)"))
    body["snapshot"] = digest
    body["workingDir"] = "."
    return document


def provenance_document(directory: Path) -> dict[str, Any]:
    """Who submits from where (user, host, directory, git), as the API takes it."""
    from kubetrain.sdk.provenance import capture_document

    return capture_document(directory)


def run_quick(*, command: list[str], name: str | None, cpu: str | None, memory: str | None, gpu: int | None,
              param: list[str], env: list[str], label: list[str], selector: str | None, priority: int | None,
              deadline: str | None, workdir: str | None, shell: bool, retries: int | None, volume: list[str],
              snapshot: bool, follow: bool, wait: bool, output: str | None, replicas: int | None = None,
              after: list[str] = (), array: str | None = None, queue: str | None = None) -> None:
    """``kubetrain run`` (its options, as ``app.run`` takes them) against this home's master through its socket;
    :class:`~kubetrain.cli.wire.Decline`, before anything is submitted, for what the full path must do:
    follow, wait, start the master."""
    from kubetrain.cli.flags import job_document
    from kubetrain.cli.wire import Decline, SocketClient, home_dir

    if follow or wait or array is not None:
        raise Decline("--follow, --wait and --array go through the full client")
    home = home_dir()
    client = SocketClient(home)
    if not os.path.exists(client.path):
        raise Decline("no master yet: the full path starts one")  # before packing anything
    document = job_document(command=command, name=name, cpu=cpu, memory=memory, gpu=gpu, params=param, env=env,
                            labels=label, selector=selector, priority=priority, deadline=deadline,
                            workdir=workdir, shell=shell, retries=retries, volumes=volume, replicas=replicas,
                            after=after, queue=queue)
    original = document
    notes: list[str] = []  # said once the job is in (a declined run is said again by the full path)
    if snapshot:
        original = {**document, "spec": dict(document["spec"])}
        document = attach_snapshot_document(client, document, home=home, say=notes.append) or document
    where = job_body(document)["workingDir"]
    provenance = provenance_document(Path(where if where.startswith("/") else "."))
    reply = client.request("POST", "/api/v1/jobs", body={"spec": document, "provenance": provenance}, check=False)
    if reply.status_code >= 400:
        from kubetrain.cli.wire import error_of

        error = error_of(reply)
        if getattr(error, "code", None) == "invalid_spec":
            from kubetrain.core.specs import validate_job

            validate_job(original)  # the CLI's own wording, said before any snapshot, as the full path does
        for note in notes:
            sys.stderr.write(note + "\n")
        raise error
    for note in notes:
        sys.stderr.write(note + "\n")
    record = reply.json()
    if output:
        from kubetrain.cli import render

        render.dump([record], output)
    else:
        sys.stdout.write(f"job/{record['name']} submitted ({record['state']})\n")
