"""Who is calling, and what they may do: the pure rules of a master shared by a team.

The master learns a caller's identity from something the caller cannot forge
(see ``server/auth.py``): the kernel's peer credentials on the Unix socket, a
token whose hash is stored, or a job's own token.  Nothing a client *says*
about itself (a ``submitter`` field, ``$USER``) is believed.

Rules, as Kubernetes RBAC's two default roles would put them:

* **admin** — may do everything, to anyone's objects, and manage users and tokens;
* **member** — sees every job and experiment (a team is a team), and may
  cancel, rerun or delete only what it owns (jobs, experiments, volumes, secrets);
* **job** — a running attempt's token: its own job's metrics, checkpoints and
  code snapshot, while the attempt runs; nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from kubetrain.core.errors import ForbiddenError, SpecError


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class Via(StrEnum):
    """How the caller proved who it is."""

    SOCKET = "socket"  # kernel peer credentials on the master's Unix socket
    TOKEN = "token"  # a user token (or the master's configured token) over TCP
    JOB = "job"  # a running attempt's token


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    role: Role
    via: Via
    #: The OS uid the caller's jobs run as (local users; remote users added with ``--uid``).
    uid: int | None = None
    #: For ``Via.JOB``: which job and attempt the token belongs to.
    job: str | None = None
    attempt: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN and self.via is not Via.JOB

    def may_manage(self, owner: str | None) -> bool:
        """Whether this caller may change (cancel, rerun, delete) something ``owner`` owns."""
        if self.via is Via.JOB:
            return False
        return self.is_admin or (owner is not None and owner == self.name)


def check_may_manage(caller: Identity, owner: str | None, what: str, verb: str) -> None:
    """Raise a 403 that names the owner and who could do it instead."""
    if caller.may_manage(owner):
        return
    if caller.via is Via.JOB:
        raise ForbiddenError(f"a job token may not {verb} {what}; it opens only its own job's metrics and files")
    raise ForbiddenError(
        f"{what} belongs to {owner or 'nobody'}; only {owner or 'its owner'} or an admin may {verb} it "
        f"(you are {caller.name}, {caller.role.value})",
        details={"owner": owner, "caller": caller.name},
    )


def check_admin(caller: Identity, verb: str) -> None:
    if not caller.is_admin:
        raise ForbiddenError(f"only an admin may {verb} (you are {caller.name}, {caller.role.value})",
                             details={"caller": caller.name})


#: POSIX-portable user names (what useradd accepts by default), so a kubetrain user can be an OS user.
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def validate_user_name(name: str, field: str = "name") -> str:
    if not _USER_NAME.match(name):
        raise SpecError(
            f"{field} {name!r}: a user name is 1-32 characters: lower-case letters, digits, '_', '.', '-', "
            "starting with a letter or '_' (as for useradd)",
            details={"field": field, "value": name},
        )
    return name


#: Secret names follow Kubernetes object names (DNS-1123 subdomain, shortened), keys its Secret data keys.
_SECRET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[A-Za-z0-9._-]{1,253}$")


def validate_secret_name(name: str) -> str:
    if not _SECRET_NAME.match(name):
        raise SpecError(f"secret name {name!r}: use lower-case letters, digits and '-' (at most 63), "
                        "starting and ending with a letter or digit", details={"field": "name", "value": name})
    return name


def validate_secret_key(key: str) -> str:
    if not _SECRET_KEY.match(key):
        raise SpecError(f"secret key {key!r}: use letters, digits, '.', '_' or '-'",
                        details={"field": "key", "value": key})
    return key


#: Team names are DNS labels, as queue names are (core/queues.py): they appear in ``scheduling.shares`` keys
#: and a queue's ``teams``, and may become Kubernetes labels.
_TEAM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def validate_team_name(team: str, field: str = "team") -> str:
    """A user's team (fair share per team): refused with the field, the value and the rule."""
    if not isinstance(team, str) or not _TEAM_NAME.match(team):
        raise SpecError(f"{field} {team!r}: a team name is 1-63 lower-case letters, digits and '-', starting and "
                        "ending with a letter or digit (a DNS label), e.g. ml-research",
                        details={"field": field, "value": team})
    return team
