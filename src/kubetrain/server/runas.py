"""Whom each job runs as, and the secret values it gets: decided by the master, per launch.

Rules (the threat model: every local user and every job is untrusted):

* A master that is not root cannot switch users: its jobs run as its own OS
  user, and ``server status`` says so.  One person's laptop needs no more.
* A root master runs each attempt as its submitter: the OS account of the
  same name, or the uid an admin gave a remote user (``user add --uid``), or
  ``defaults.runAsUser`` for a user with neither.  Never as root unless
  ``security.allowRootJobs`` says so.  A job that could never run is refused
  at submit with what to change, not left to fail at launch.
* Secret values are read from the store at launch and handed to the engine
  in the launch order only; the spec holds the reference.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
from typing import TYPE_CHECKING

from kubetrain.core.attempts import LaunchOrder, RunAs
from kubetrain.core.errors import ForbiddenError, NotFoundError, SpecError
from kubetrain.core.identity import Identity
from kubetrain.core.specs import JobSpec

if TYPE_CHECKING:
    from kubetrain.settings import SecuritySettings
    from kubetrain.store.store import Store


def _account(user: str | int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        return None


def _run_as(entry: pwd.struct_passwd, name: str) -> RunAs:
    try:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        groups = (entry.pw_gid,)
    return RunAs(user=name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups, home=entry.pw_dir or "/")


class RunAsPolicy:
    def __init__(self, security: "SecuritySettings", store: "Store", *, can_switch: bool | None = None) -> None:
        self.security = security
        self.store = store
        #: Only root may switch users (setuid); anything else runs jobs as itself.
        self.can_switch = os.geteuid() == 0 if can_switch is None else can_switch

    def describe(self) -> str:
        """One line for ``server status``: what isolation this master gives its users."""
        if not self.can_switch:
            me = _account(os.geteuid())
            return (f"jobs run as {me.pw_name if me else os.geteuid()} (the master's own user): it is not root, so "
                    "it cannot run each job as its submitter; every job can read what this user can")
        root = "allowed" if self.security.allow_root_jobs else "refused"
        fallback = self.security.run_as_user or "none (such jobs are refused)"
        return f"jobs run as their submitter; root jobs {root}; users without an account run as {fallback}"

    def resolve(self, owner: str) -> RunAs | None:
        """The identity ``owner``'s jobs take, or raise a SpecError naming what an admin must set."""
        if not self.can_switch:
            return None
        user = self.store.get_user(owner) if owner else None
        entry = _account(user.uid) if user is not None and user.uid is not None else None
        if user is not None and user.uid is not None:
            if entry is None:  # a uid with no passwd entry: its own group, no others
                return RunAs(user=owner, uid=user.uid, gid=user.uid, groups=(user.uid,), home="/")
        elif owner:
            entry = _account(owner)
        if entry is not None and (entry.pw_uid != 0 or self.security.allow_root_jobs):
            return _run_as(entry, owner)
        fallback = self.security.run_as_user
        if fallback:
            account = _account(int(fallback)) if fallback.isdigit() else _account(fallback)
            if account is None:
                raise SpecError(f"defaults.runAsUser {fallback!r} is not a user of this machine; an admin fixes "
                                "config.yaml (or KUBETRAIN_RUN_AS_USER)")
            if account.pw_uid == 0 and not self.security.allow_root_jobs:
                raise SpecError("defaults.runAsUser is root, but security.allowRootJobs is off; pick an unprivileged user")
            return _run_as(account, owner or account.pw_name)
        if entry is not None:  # root
            raise SpecError(
                f"jobs of {owner} would run as root, which this master does not allow: submit as your own user, or an "
                "admin sets `defaults: {runAsUser: nobody}` (KUBETRAIN_RUN_AS_USER) or `security: {allowRootJobs: true}` "
                "in config.yaml", details={"field": "owner", "value": owner})
        raise SpecError(
            f"user {owner!r} has no account on this machine, so there is no one to run the job as: an admin runs "
            f"`kubetrain user add {owner} --uid N` or sets `defaults: {{runAsUser: NAME}}` in config.yaml",
            details={"field": "owner", "value": owner})

    # -- at submit -----------------------------------------------------------
    def check_submit(self, spec: JobSpec, caller: Identity) -> None:
        """Refuse now what could never launch: no one to run as, a secret that is missing or not theirs."""
        self.resolve(caller.name)
        for variable, ref in spec.spec.secret_env.items():
            try:
                owner = self.store.secret_owner(ref.name)
            except NotFoundError:
                raise SpecError(f"spec.secretEnv.{variable}: secret {ref.name!r} not found; create it with "
                                f"`kubetrain secret create {ref.name} --from-literal {ref.key}=...`",
                                details={"field": f"env.{variable}", "value": ref.name}) from None
            if not caller.may_manage(owner):
                raise ForbiddenError(f"spec.secretEnv.{variable}: secret {ref.name!r} belongs to {owner}; "
                                     "a job may use only its submitter's secrets",
                                     details={"field": f"env.{variable}", "owner": owner})
            if ref.key not in self.store.secret_values(ref.name):
                raise SpecError(f"spec.secretEnv.{variable}: secret {ref.name!r} has no key {ref.key!r}",
                                details={"field": f"env.{variable}", "value": ref.key})

    def _is_admin(self, name: str) -> bool:
        user = self.store.get_user(name) if name else None
        return user is not None and user.role == "admin"

    # -- at launch -----------------------------------------------------------
    def prepare(self, order: LaunchOrder) -> LaunchOrder:
        """The launch order completed with whom it runs as and its secret values (for the reconciler)."""
        spec = JobSpec.model_validate(order.spec)
        values: dict[str, str] = {}
        for variable, ref in spec.spec.secret_env.items():
            # Checked again at each launch: the secret may have been deleted and re-made by someone else
            # since the submit (a queued job, an experiment's later trials).
            owner = self.store.secret_owner(ref.name)
            if owner != order.owner and not self._is_admin(order.owner):
                raise ForbiddenError(f"env {variable}: secret {ref.name!r} now belongs to {owner}, not to the job's "
                                     f"owner {order.owner}; a job may use only its submitter's secrets")
            data = self.store.secret_values(ref.name)
            if ref.key not in data:
                raise SpecError(f"secret {ref.name!r} has no key {ref.key!r} any more (env {variable})")
            values[variable] = str(data[ref.key])
        return dataclasses.replace(order, run_as=self.resolve(order.owner), secret_env=values)
