"""Who submits what from where: user, host, directory and git state, captured at submit.

Git is asked through its own CLI (argv, short timeout); a directory that is
not a repository, or a machine without git, simply records no git info.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI captures provenance as plain data, before pydantic is loaded
    from kubetrain.core.records import GitInfo, Provenance

MAX_DIFF = 256 * 1024


def _git(directory: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_document(directory: Path) -> dict[str, Any] | None:
    """:func:`git_info` as plain data (no None values)."""
    commit = _git(directory, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    branch = _git(directory, "rev-parse", "--abbrev-ref", "HEAD")
    diff = _git(directory, "diff", "HEAD", "--no-color", "--", ".")
    info = {
        "commit": commit,
        "branch": None if branch in (None, "HEAD") else branch,
        "dirty": bool(status) if status is not None else None,
        "remote": _git(directory, "config", "--get", "remote.origin.url") or None,
        "diff": (diff[:MAX_DIFF] + "\n[... diff cut at 256 KiB]") if diff and len(diff) > MAX_DIFF else (diff or None),
    }
    return {k: v for k, v in info.items() if v is not None}


def git_info(directory: Path) -> GitInfo | None:
    from kubetrain.core.records import GitInfo

    info = git_document(directory)
    return None if info is None else GitInfo.model_validate(info)


def capture_document(directory: Path | None = None) -> dict[str, Any]:
    """:func:`capture` as the API's JSON (no None values), standard library only: the CLI sends this."""
    directory = (directory or Path.cwd()).absolute()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    document: dict[str, Any] = {"submitter": user, "hostname": socket.gethostname(), "submit_dir": str(directory)}
    git = git_document(directory)
    if git is not None:
        document["git"] = git
    return document


def capture(directory: Path | None = None) -> Provenance:
    from kubetrain.core.records import Provenance

    return Provenance.model_validate(capture_document(directory))
