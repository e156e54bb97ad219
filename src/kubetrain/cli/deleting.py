"""``kubetrain delete``: forget finished jobs, by name or all of one's finished jobs older than some age.

Each job is one ``DELETE /api/v1/jobs/{name}``: the master checks ownership (its owner or an admin) and
refuses a queued or running job; it removes the records and the engine removes the attempts' folders.
Called by the command in :mod:`kubetrain.cli.app`; every function returns how many deletes failed, each
failure already said on stderr.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from kubetrain.core.errors import KubetrainError, NotFoundError

if TYPE_CHECKING:
    from kubetrain.sdk.client import Client

#: The job states a delete takes (``JobState.terminal()``).
FINISHED = ["Succeeded", "Failed", "Cancelled"]


def _delete(client: Client, name: str) -> bool:
    try:
        client.delete_job(name)
    except KubetrainError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return False
    sys.stdout.write(f"job/{name} deleted\n")
    return True


def delete_named(client: Client, names: list[str]) -> int:
    """Delete each job named, going on past refusals (each is said); the number refused."""
    return sum(not _delete(client, name) for name in dict.fromkeys(names))


def delete_finished(client: Client, older_than: str | None, *, now: float | None = None) -> int:
    """Delete the caller's finished jobs (an admin's: everyone's) that ended more than ``older_than`` ago
    (all of them when None); trials stay with their experiments.  The number that could not be deleted."""
    from kubetrain.cli.identity import parse_duration

    cutoff = (now or time.time()) - (parse_duration(older_than, "--older-than") if older_than else 0)
    me = client.whoami()
    everyone = me.role == "admin" and me.via != "job"
    candidates = [job for job in client.list_jobs(states=FINISHED, limit=None, sort="oldest", view="summary")
                  if job.finished_at is not None and job.finished_at < cutoff and job.experiment is None
                  and (everyone or job.provenance.submitter == me.name)]
    failed = deleted = 0
    for job in candidates:
        try:
            client.delete_job(job.name)
        except NotFoundError:
            continue  # deleted meanwhile (another delete): what was asked is done
        except KubetrainError as exc:
            sys.stderr.write(f"error: {exc.message}\n")
            failed += 1
            continue
        deleted += 1
        sys.stdout.write(f"job/{job.name} deleted\n")
    whose = "" if everyone else f" of {me.name}'s"
    age = f" that ended more than {older_than} ago" if older_than else ""
    sys.stderr.write(f"deleted {deleted}{whose} finished job{'s' if deleted != 1 else ''}{age}"
                     + (f"; {failed} could not be deleted" if failed else "") + "\n")
    return failed
