"""Who may do what (core/identity.py), whom a job runs as (server/runas.py), and secret references in specs."""

from __future__ import annotations

import pwd

import pytest

from kubetrain.core.errors import ForbiddenError, SpecError
from kubetrain.core.identity import Identity, Role, Via, check_may_manage, validate_team_name, validate_user_name
from kubetrain.core.specs import validate_job
from kubetrain.server.runas import RunAsPolicy
from kubetrain.settings import SecuritySettings
from kubetrain.store.store import Store

ALICE = Identity("alice", Role.MEMBER, Via.SOCKET, uid=1001)
ADMIN = Identity("root", Role.ADMIN, Via.SOCKET, uid=0)
JOB = Identity("job:x", Role.MEMBER, Via.JOB, job="x", attempt=1)
ADMIN_JOB = Identity("job:y", Role.ADMIN, Via.JOB, job="y", attempt=1)


@pytest.mark.parametrize("caller, owner, allowed", [
    (ALICE, "alice", True),      # her own
    (ALICE, "bob", False),       # a colleague's
    (ALICE, None, False),        # nobody's (made before owners were recorded): admins only
    (ADMIN, "bob", True),        # admins manage everything
    (JOB, "x", False),           # a job token manages nothing, whoever it names
    (ADMIN_JOB, "bob", False),   # not even with an admin role attached
])
def test_may_manage(caller: Identity, owner: str | None, allowed: bool) -> None:
    assert caller.may_manage(owner) is allowed


def test_the_refusal_names_the_owner_and_the_caller() -> None:
    with pytest.raises(ForbiddenError) as info:
        check_may_manage(ALICE, "bob", "job 'train-1'", "cancel")
    assert "belongs to bob" in info.value.message and "alice" in info.value.message
    assert info.value.http_status == 403


@pytest.mark.parametrize("name, ok", [("alice", True), ("_svc", True), ("a.b-c_1", True), ("Alice", False),
                                      ("1x", False), ("", False), ("a" * 33, False), ("../x", False)])
def test_user_names_follow_useradd(name: str, ok: bool) -> None:
    if ok:
        assert validate_user_name(name) == name
    else:
        with pytest.raises(SpecError):
            validate_user_name(name)


@pytest.mark.parametrize("team, ok", [("ml", True), ("ml-research", True), ("7", True), ("a" * 63, True),
                                      ("ML", False), ("-ml", False), ("ml-", False), ("", False), ("a" * 64, False),
                                      ("ml_research", False), ("ml.research", False)])
def test_team_names_are_dns_labels(team: str, ok: bool) -> None:
    if ok:
        assert validate_team_name(team) == team
    else:
        with pytest.raises(SpecError) as info:
            validate_team_name(team, "--team")
        assert info.value.details == {"field": "--team", "value": team} and "a team name is" in info.value.message


def test_env_value_from_secret_key_ref_keeps_only_the_reference() -> None:
    job = validate_job({"spec": {"command": ["x"], "env": [
        {"name": "A", "value": "1"}, {"name": "HF", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]}})
    assert job.spec.env == {"A": "1"}
    assert job.to_document()["spec"]["secretEnv"] == {"HF": {"name": "hf", "key": "token"}}
    assert validate_job(job.to_document()).spec.secret_env == job.spec.secret_env  # round trip


@pytest.mark.parametrize("env, fragment", [
    ([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}], "only {secretKeyRef"),
    ([{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}], "only {secretKeyRef"),
    ([{"name": "KUBETRAIN_X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}], "reserved"),
    ([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}], "secretEnv.A.name"),
])
def test_bad_secret_references_name_the_field(env: list, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_job({"spec": {"command": ["x"], "env": env}})
    assert fragment in info.value.message


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    yield store
    store.close()


NOBODY = pwd.getpwnam("nobody")


def policy(store: Store, **security) -> RunAsPolicy:
    return RunAsPolicy(SecuritySettings(**security), store, can_switch=True)


def test_a_master_that_cannot_switch_users_runs_jobs_as_itself(store: Store) -> None:
    assert RunAsPolicy(SecuritySettings(), store, can_switch=False).resolve("anyone") is None


def test_an_os_user_runs_as_itself(store: Store) -> None:
    run_as = policy(store).resolve("nobody")
    assert (run_as.uid, run_as.gid, run_as.user) == (NOBODY.pw_uid, NOBODY.pw_gid, "nobody")


def test_root_is_refused_unless_allowed_or_mapped(store: Store) -> None:
    with pytest.raises(SpecError) as info:
        policy(store).resolve("root")
    assert "allowRootJobs" in info.value.message and "runAsUser" in info.value.message
    assert policy(store, allow_root_jobs=True).resolve("root").uid == 0
    assert policy(store, run_as_user="nobody").resolve("root").uid == NOBODY.pw_uid


def test_a_remote_user_runs_as_its_uid_or_the_default(store: Store) -> None:
    with pytest.raises(SpecError) as info:
        policy(store).resolve("carol")
    assert "user add carol --uid" in info.value.message
    store.add_user("carol", "member", 4242, now=0)
    assert policy(store).resolve("carol").uid == 4242
    assert policy(store, run_as_user=str(NOBODY.pw_uid)).resolve("dave").uid == NOBODY.pw_uid


def test_a_job_may_use_only_its_submitters_secrets(store: Store) -> None:
    store.create_secret("hf", "bob", {"token": "v"}, now=0)
    spec = validate_job({"spec": {"command": ["x"], "env": [
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]}})
    nobody = Identity("nobody", Role.MEMBER, Via.SOCKET)
    with pytest.raises(ForbiddenError) as info:
        policy(store).check_submit(spec, nobody)
    assert "belongs to bob" in info.value.message
    missing = validate_job({"spec": {"command": ["x"], "env": [
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "token"}}}]}})
    with pytest.raises(SpecError) as info:
        policy(store).check_submit(missing, nobody)
    assert "secret create nope" in info.value.message


def test_a_secret_remade_by_someone_else_is_refused_at_launch(store: Store) -> None:
    """Owners are checked again at each launch: a queued job or a later trial must not get another's secret."""
    from kubetrain.core.attempts import LaunchOrder

    store.add_user("mallory", "member", NOBODY.pw_uid, now=0)
    store.create_secret("hf", "mallory", {"token": "mine"}, now=0)
    spec = validate_job({"spec": {"command": ["x"], "env": [
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]}})
    order = LaunchOrder("j", 1, "t", spec.to_document(), "node", (), owner="mallory")
    assert policy(store).prepare(order).secret_env == {"T": "mine"}
    store.delete_secret("hf")
    store.create_secret("hf", "alice", {"token": "alices"}, now=0)
    with pytest.raises(ForbiddenError) as info:
        policy(store).prepare(order)
    assert "now belongs to alice" in info.value.message
