"""The engine seam: the registry, declared capabilities, typed handles and phases, the local launch request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetrain import engines
from kubetrain.core.attempts import AttemptHandle, Phase
from kubetrain.core.errors import ConfigError
from kubetrain.engines.base import Capabilities, Engine, Observation
from kubetrain.engines.local.attempt_files import LAUNCH, LaunchRequest
from kubetrain.settings import load_settings
from tests.fakes import FakeClock, FakeEngine


@pytest.fixture
def fake_registered():
    engines.register("fake", lambda settings, *, master_url: FakeEngine(FakeClock()))
    yield
    engines.unregister("fake")


# -- the registry --------------------------------------------------------------------------------

def test_the_settings_take_any_engine_the_registry_knows_and_name_them_all_when_one_is_unknown(
        tmp_path: Path, fake_registered) -> None:
    env = {"KUBETRAIN_HOME": str(tmp_path)}
    assert load_settings(env).engine == engines.DEFAULT_ENGINE
    assert load_settings({**env, "KUBETRAIN_ENGINE": "fake"}).engine == "fake"
    with pytest.raises(ConfigError) as refused:
        load_settings({**env, "KUBETRAIN_ENGINE": "nomad"})
    assert "'nomad' is unknown" in refused.value.message
    assert all(name in refused.value.message for name in engines.engine_names())
    assert "KUBETRAIN_ENGINE" in refused.value.message


def test_an_engine_is_built_by_its_registered_builder(tmp_path: Path, fake_registered) -> None:
    settings = load_settings({"KUBETRAIN_HOME": str(tmp_path), "KUBETRAIN_ENGINE": "fake"})
    assert isinstance(engines.build_engine(settings, master_url=None), FakeEngine)
    engines.unregister("fake")
    with pytest.raises(ConfigError, match="'fake' is unknown"):
        engines.build_engine(settings, master_url=None)


def test_the_local_engine_is_built_from_its_package(tmp_path: Path) -> None:
    settings = load_settings({"KUBETRAIN_HOME": str(tmp_path)})
    engine = engines.build_engine(settings, master_url="http://127.0.0.1:1")
    assert engine.name == settings.engine and engine.master_url == "http://127.0.0.1:1"
    assert engine.capabilities.serves_snapshots and not engine.capabilities.claims_volumes


# -- capabilities --------------------------------------------------------------------------------

def test_an_engine_that_declares_an_ability_must_implement_it() -> None:
    with pytest.raises(TypeError, match="declares volumes but does not implement provision_volume, release_volume"):
        class Careless(FakeEngine):
            capabilities = Capabilities(volumes=True)


def test_volumes_are_claims_reads_the_capability() -> None:
    class Claims(FakeEngine):
        capabilities = Capabilities(volumes=True, claims_volumes=True)

        def provision_volume(self, name: str, size_bytes: int | None) -> None: ...

        def release_volume(self, name: str) -> None: ...

    assert Claims(FakeClock()).volumes_are_claims and not FakeEngine(FakeClock()).volumes_are_claims
    assert FakeEngine.capabilities == Capabilities() == Engine.capabilities


# -- handles and phases --------------------------------------------------------------------------

def test_a_handle_is_stored_flat_and_old_rows_load() -> None:
    handle = AttemptHandle(node="gpu-3", log_path="/h/attempts/a/1/output.log", limits_enforced=False,
                           data={"pod": "a-1-xyz"})
    stored = handle.to_json()
    assert stored == {"pod": "a-1-xyz", "node": "gpu-3", "log_path": "/h/attempts/a/1/output.log",
                      "limits_enforced": False}
    assert AttemptHandle.from_json(json.loads(json.dumps(stored))) == handle
    # A row written by an earlier version (the local engine's untyped dict), and an empty one.
    old = AttemptHandle.from_json({"attempt_dir": "/h/attempts/a/1", "log_path": "/h/attempts/a/1/output.log",
                                   "output_dir": "/h/volumes/results/a", "supervisor_pid": 42})
    assert (old.attempt_dir, old.log_path, old.node, old.limits_enforced) == (
        "/h/attempts/a/1", "/h/attempts/a/1/output.log", None, None)
    assert old.data == {"output_dir": "/h/volumes/results/a", "supervisor_pid": 42}
    assert AttemptHandle.from_json(None) == AttemptHandle() == AttemptHandle.of({})
    assert AttemptHandle.from_json({"limits_enforced": "yes"}).limits_enforced is None
    assert AttemptHandle.of(handle) is handle
    assert handle.with_data(job_pid=7).data == {"pod": "a-1-xyz", "job_pid": 7}


def test_an_observation_takes_a_phase_or_its_word_and_refuses_anything_else() -> None:
    assert Observation("a", 1, "ended").phase is Phase.ENDED
    assert Observation("a", 1, Phase.RELAUNCH).handle == AttemptHandle()
    with pytest.raises(ValueError):
        Observation("a", 1, "finished")


# -- the local engine's launch request -----------------------------------------------------------

def test_the_launch_request_round_trips_and_reads_files_of_earlier_versions(tmp_path: Path) -> None:
    request = LaunchRequest(job="a", attempt=1, token="t", argv=["python", "train.py"], env={"PATH": "/bin"},
                            cwd="/w", log_path=str(tmp_path / "output.log"), run_as={"user": "alice", "uid": 1000,
                                                                                     "gid": 1000, "groups": []},
                            deadline_seconds=60, cgroup_name="a-1-t")
    request.write(str(tmp_path))
    assert (tmp_path / LAUNCH).stat().st_mode & 0o777 == 0o600  # it holds the token and secret values
    assert LaunchRequest.read(str(tmp_path)) == request
    # An older engine's file: keys this version dropped are ignored, ones it added take their defaults.
    old = {"job": "a", "attempt": 1, "token": "t", "argv": ["true"], "env": {}, "cwd": "/", "log_path": "/l",
           "retired_key": 1}
    (tmp_path / LAUNCH).write_text(json.dumps(old))
    read = LaunchRequest.read(str(tmp_path))
    assert (read.argv, read.mounts, read.grace_seconds, read.wake_socket) == (["true"], [], 10.0, None)
