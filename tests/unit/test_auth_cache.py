"""The Authenticator believes a user token the store vouched for, for a few seconds; never a job token."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from kubetrain.core.errors import UnauthorizedError
from kubetrain.core.identity import Role, Via
from kubetrain.core.records import UserRecord
from kubetrain.server.auth import TOKEN_CACHE_SECONDS, Authenticator


@dataclass
class CountingStore:
    """Just what the Authenticator asks of a store, counting the token lookups."""

    valid: dict[str, str] = field(default_factory=dict)
    lookups: int = 0

    def user_for_token(self, token: str, *, now: float) -> UserRecord | None:
        self.lookups += 1
        name = self.valid.get(token)
        return UserRecord(name=name, role="member", uid=1000, created_at=0.0) if name else None

    def attempt_for_token(self, job: str, token: str) -> int | None:
        self.lookups += 1
        return 1 if token == "job-token" else None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def request(token: str, name: str | None = None):
    return SimpleNamespace(scope={}, headers={"authorization": f"Bearer {token}"},
                           path_params={"name": name} if name else {})


@pytest.fixture
def setup():
    store, clock = CountingStore(valid={"kt_alice": "alice"}), Clock()
    settings = SimpleNamespace(token=None)
    return Authenticator(settings, store, clock=clock), store, clock  # type: ignore[arg-type]


def test_a_vouched_token_is_believed_until_the_cache_time_passes(setup) -> None:
    auth, store, clock = setup
    first = auth.identify(request("kt_alice"))
    assert (first.name, first.role, first.via) == ("alice", Role.MEMBER, Via.TOKEN)
    for _ in range(5):
        assert auth.identify(request("kt_alice")) == first
    assert store.lookups == 1
    clock.now += TOKEN_CACHE_SECONDS + 0.1
    auth.identify(request("kt_alice"))
    assert store.lookups == 2


def test_a_revocation_elsewhere_counts_once_the_cache_time_passed_and_here_at_once(setup) -> None:
    auth, store, clock = setup
    auth.identify(request("kt_alice"))
    store.valid.clear()  # revoked through another API process
    assert auth.identify(request("kt_alice")).name == "alice"
    clock.now += TOKEN_CACHE_SECONDS + 0.1
    with pytest.raises(UnauthorizedError):
        auth.identify(request("kt_alice"))
    store.valid["kt_alice"] = "alice"
    auth.identify(request("kt_alice"))
    store.valid.clear()
    auth.forget_tokens()  # revoked through this process
    with pytest.raises(UnauthorizedError):
        auth.identify(request("kt_alice"))


def test_unknown_tokens_and_job_tokens_are_asked_every_time(setup) -> None:
    auth, store, _clock = setup
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            auth.identify(request("kt_nobody"))
    assert store.lookups == 3
    before = store.lookups
    for _ in range(3):
        assert auth.identify(request("job-token", name="train-1")).via is Via.JOB
    assert store.lookups - before == 6  # a user-token lookup, then the job's: each time
