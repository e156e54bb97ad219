"""Environments are built once, remembered when they fail, and can import the in-job SDK (engines/local/environments.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kubetrain.engines.local import environments
from kubetrain.engines.local.workspace import WorkspaceError

BROKEN = "/nonexistent/kubetrain-test-broken-1.0-py3-none-any.whl"  # pip refuses it at once, with no network


def build(envs: Path, requirements: list[str], *, rebuild: str | None = None, said: list[str] | None = None):
    said = said if said is not None else []
    return environments.ensure_environment(str(envs), None, requirements, said.append, rebuild=rebuild,
                                           sdk=environments.sdk_sources())


def test_an_environment_can_import_the_sdk_and_is_built_once(tmp_path: Path):
    said: list[str] = []
    bin_dir, _ = build(tmp_path, [], said=said)
    build(tmp_path, [], said=said)
    assert ["building" in line for line in said] == [True, False] and "using environment" in said[1]
    code = ("import os, kubetrain; os.environ['KUBETRAIN_PARAMS'] = '{\"lr\": 0.1}'; "
            "print(kubetrain.params(), kubetrain.__file__)")
    done = subprocess.run([f"{bin_dir}/python", "-c", code], capture_output=True, text=True, timeout=60,
                          env={"KUBETRAIN_PARAMS": '{"lr": 0.1}', "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    where = done.stdout.split()[-1]
    assert "{'lr': 0.1}" in done.stdout and "kubetrain-sdk" in where, done.stdout


def test_a_failed_build_fails_every_later_job_at_once_until_rebuilt(tmp_path: Path):
    with pytest.raises(environments.BuildFailed) as first:
        build(tmp_path, [BROKEN])
    message = str(first.value)
    assert "failed to build" in message and "ERROR" in message and "--rebuild" in message, message
    logs = list(tmp_path.glob("*.build.log"))
    said: list[str] = []
    with pytest.raises(environments.BuildFailed) as second:  # no second build: the same words, at once
        build(tmp_path, [BROKEN], said=said)
    assert str(second.value) == message and said == []
    assert list(tmp_path.glob("*.build.log")) == logs and len(logs) == 1
    with pytest.raises(environments.BuildFailed):  # a new token builds again (once)
        build(tmp_path, [BROKEN], rebuild="r1", said=said)
    assert len([line for line in said if "building" in line]) == 1
    with pytest.raises(environments.BuildFailed):
        build(tmp_path, [BROKEN], rebuild="r1", said=said)
    assert len([line for line in said if "building" in line]) == 1


def test_a_python_this_node_lacks_names_the_ones_it_has(monkeypatch):
    monkeypatch.setattr(environments.shutil, "which", lambda name: None)  # no uv either
    with pytest.raises(WorkspaceError) as caught:
        environments.interpreter_for("3.99")
    text = str(caught.value)
    assert "environment.python '3.99'" in text and "this node has: " in text
    assert "3.11" in text.split("this node has: ")[1]


def test_the_preparation_step_runs_under_limits_of_its_own():
    from kubetrain.engines.local import cgroups, preparation

    group = cgroups.create(f"kt-test-build-{os.getpid()}", cpu_millis=1000, memory_bytes=4 << 30, pids_max=512)
    try:
        if not group.enforced:
            pytest.skip("no writable cgroups here: " + "; ".join(group.notes))
        seen = preparation.run_as_user(None, lambda: {"cgroups": Path("/proc/self/cgroup").read_text()}, group=group)
        memory = group.dirs.get("memory") or group.dirs.get("unified")
        assert memory.split("/sys/fs/cgroup/")[-1].split("/", 1)[-1] in seen["cgroups"], (memory, seen)
        assert str(os.getpid()) not in Path(memory, "cgroup.procs").read_text()  # the supervisor stays out
    finally:
        group.remove()


def test_build_limits_are_the_jobs_with_room_for_a_build():
    from types import SimpleNamespace

    from kubetrain.engines.local.preparation import build_limits

    small = SimpleNamespace(cpu_millis=100, memory_bytes=64 << 20, pids_max=4096)
    big = SimpleNamespace(cpu_millis=8000, memory_bytes=32 << 30, pids_max=4096)
    assert build_limits(small) == {"cpu_millis": 1000, "memory_bytes": 4 << 30, "pids_max": 4096}
    assert build_limits(big) == {"cpu_millis": 8000, "memory_bytes": 32 << 30, "pids_max": 4096}
