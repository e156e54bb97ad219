"""Where the CLI keeps the tokens of remote masters: one file, mode 0600, in the user's config folder.

``kubetrain login URL`` writes it; every later command against that URL reads
it, so a token is typed once and never sits in shell history or the
environment.  Local masters need no token (the Unix socket says who you are).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kubetrain.core.errors import ConfigError


def credentials_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "kubetrain" / "credentials.json"


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); fix or delete it and run `kubetrain login URL` again") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def stored_token(url: str) -> str | None:
    return _read(credentials_file()).get(url.rstrip("/"))


def store_token(url: str, token: str) -> Path:
    """Save ``token`` for ``url``: written to a private temporary file, then renamed (never briefly readable)."""
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = _read(path)
    data[url.rstrip("/")] = token
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)
    return path
