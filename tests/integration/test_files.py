"""Code snapshots, environments, named volumes, artifacts and reruns through the master."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kubetrain.engines.local.workspace import can_mount
from tests.conftest import PYTHON, wait_until

ROOT = Path(__file__).resolve().parents[2]
needs_mounts = pytest.mark.skipif(not can_mount(), reason="bind mounts need root (CAP_SYS_ADMIN)")


def submitted(result) -> str:
    return json.loads(result.stdout)[0]["name"]


def test_snapshot_skips_ignored_files_and_uploads_a_tree_once(master, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / ".gitignore").write_text("big.bin\n")
    (project / ".kubetrainignore").write_text("scratch/\n")
    (project / "train.py").write_text("import os\nprint(sorted(os.listdir('.')))\n")
    (project / "scratch").mkdir()
    (project / "scratch" / "notes.txt").write_text("not for the job")
    with open(project / "big.bin", "wb") as fh:  # 1 GiB, sparse: costs no disk here
        fh.truncate(2**30)
    first = master.cli("run", "-o", "json", "--cpu", "100m", "--", PYTHON, "train.py", cwd=project, check=True)
    assert "2 files" in first.stderr and "already on the master" not in first.stderr
    job = master.wait_state(submitted(first))
    assert job.state == "Succeeded"
    assert master.cli("logs", job.name).stdout.strip() == "['.gitignore', 'train.py']"
    second = master.cli("run", "-o", "json", "--cpu", "100m", "--", PYTHON, "train.py", cwd=project, check=True)
    assert "already on the master" in second.stderr
    assert master.client.get_job(submitted(second)).spec["spec"]["snapshot"] == job.spec["spec"]["snapshot"]
    snapshots = list((master.home / "snapshots").glob("*.tar.gz"))
    assert len(snapshots) == 1 and snapshots[0].stat().st_size < 10_000


def test_oversized_snapshot_is_refused_naming_the_largest_files(master, tmp_path: Path) -> None:
    project = tmp_path / "heavy"
    project.mkdir()
    (project / "data.bin").write_bytes(b"x" * 3_000_000)
    (project / "train.py").write_text("print(1)\n")
    env = {**master.env, "KUBETRAIN_SNAPSHOT_MAX": "1000000"}
    result = subprocess.run([str(Path(PYTHON).with_name("kubetrain")), "run", "--", PYTHON, "train.py"], cwd=project,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "data.bin" in result.stderr and ".kubetrainignore" in result.stderr
    assert master.client.list_jobs() == []


def test_same_requirements_build_one_environment_with_the_pinned_version(master, tmp_path: Path) -> None:
    doc = ("apiVersion: kubetrain/v1\nkind: Job\nmetadata: {generateName: env-}\nspec:\n"
           "  command: [python, -c, 'import six; print(six.__version__)']\n"
           "  resources: {cpu: 500m}\n"
           "  environment: {requirements: ['six==1.16.0']}\n")
    path = tmp_path / "env.yaml"
    path.write_text(doc + "---\n" + doc)
    result = master.cli("submit", "-f", str(path), "-o", "json", check=True)
    names = [j["name"] for j in json.loads(result.stdout)]
    logs = []
    for name in names:
        job = master.wait_state(name, timeout=300)
        assert job.state == "Succeeded", job.message
        logs.append(master.cli("logs", name).stdout)
    assert all(log.strip().endswith("1.16.0") for log in logs)
    assert sum("building environment" in log for log in logs) == 1
    assert sum("using environment" in log for log in logs) == 1
    envs = [p for p in (master.home / "envs").iterdir() if p.is_dir()]
    assert len(envs) == 1
    packages = Path(master.client.get_job(names[0]).attempts[0].attempt_dir) / "packages.txt"
    assert "six==1.16.0" in packages.read_text()


@needs_mounts
def test_volumes_share_files_by_name_and_read_only_is_enforced(master) -> None:
    master.cli("volume", "create", "shared", "--size", "1Gi", check=True)
    writer = submitted(master.cli("run", "-o", "json", "--cpu", "100m", "-v", "shared:/mnt/shared", "--", PYTHON, "-c",
                                  "open('/mnt/shared/model.pt', 'w').write('weights-v1')", check=True))
    assert master.wait_state(writer).state == "Succeeded"
    reader = submitted(master.cli("run", "-o", "json", "--cpu", "100m", "-v", "shared:/mnt/shared:ro", "--", PYTHON, "-c",
                                  "import os\nprint(open('/mnt/shared/model.pt').read(), os.environ['KUBETRAIN_VOLUME_SHARED'])\n"
                                  "open('/mnt/shared/evil', 'w')", check=True))
    job = master.wait_state(reader)
    log = master.cli("logs", reader).stdout
    assert "weights-v1 /mnt/shared" in log
    assert job.state == "Failed" and "Read-only file system" in log
    assert not (master.home / "volumes" / "shared" / "evil").exists()
    table = master.cli("volume", "ls", check=True).stdout
    assert "shared" in table and "1Gi" in table


def test_volume_in_use_cannot_be_removed_and_unknown_volume_is_refused(master, tmp_path: Path) -> None:
    master.cli("volume", "create", "busy", check=True)
    gate = tmp_path / "gate"
    name = submitted(master.cli("run", "-o", "json", "--cpu", "100m", "-v", "busy:/mnt/busy", "--", PYTHON, "-c",
                                f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)",
                                check=True))
    master.wait_state(name, "Running")
    refused = master.cli("volume", "rm", "busy")
    assert refused.returncode != 0 and name in refused.stderr
    gate.write_text("go")
    master.wait_state(name)
    assert master.cli("volume", "rm", "busy", check=True).returncode == 0
    missing = master.cli("run", "-v", "nope:/mnt/nope", "--", "true")
    assert missing.returncode != 0 and "kubetrain volume create nope" in missing.stderr


@pytest.mark.parametrize("source", ["job-x:../../etc/passwd", "job-x:/etc/passwd", "volume/../etc:passwd",
                                    "volume/results:../../kubetrain.db", "volume/Bad_Name:x"])
def test_cp_refuses_paths_that_escape(master, source: str, tmp_path: Path) -> None:
    result = master.cli("cp", source, str(tmp_path / "out"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:")
    assert not (tmp_path / "out").exists()


def test_api_refuses_escaping_artifact_paths(master) -> None:
    import httpx

    name = submitted(master.cli("run", "-o", "json", "--cpu", "100m", "--", "true", check=True))
    master.wait_state(name)
    for path in ("..%2F..%2Fkubetrain.db", "%2Fetc%2Fpasswd", "a/%2E%2E/%2E%2E/%2E%2E/kubetrain.db"):
        response = httpx.get(f"{master.url}/api/v1/jobs/{name}/artifacts/{path}", headers=master.auth)
        assert response.status_code in (404, 422), (path, response.status_code)
        assert "root:" not in response.text and "SQLite" not in response.text


def test_digits_artifacts_cp_and_rerun_reproduce_the_run(master, tmp_path: Path) -> None:
    result = master.cli("submit", "-f", str(ROOT / "examples" / "digits" / "job.yaml"), "-o", "json", check=True)
    name = submitted(result)
    original = master.wait_state(name, timeout=120)
    assert original.state == "Succeeded", original.message
    files = {f["path"] for f in master.client.artifacts(name)}
    assert {"model.pkl", "metrics.json"} <= files
    master.cli("cp", f"{name}:metrics.json", str(tmp_path), check=True)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val_accuracy"] > 0.9
    again = submitted(master.cli("rerun", name, "-o", "json", check=True))
    rerun = master.wait_state(again, timeout=120)
    assert rerun.state == "Succeeded"
    assert rerun.provenance.rerun_of == name
    assert rerun.params == original.params
    assert rerun.spec["spec"]["snapshot"] == original.spec["spec"]["snapshot"]
    changed = master.client.get_job(submitted(master.cli("rerun", name, "-p", "hidden=8", "-o", "json", check=True)))
    assert changed.params == {**original.params, "hidden": 8}
    wait_until(lambda: master.client.get_job(changed.name).state == "Succeeded", timeout=120, what="the changed rerun")


def test_a_pod_fetches_its_code_snapshot_with_its_own_token(master_factory, tmp_path: Path) -> None:
    """The Kubernetes init container's script, run for real against a master that requires tokens."""
    import httpx

    from kubetrain.engines.kubernetes.manifests import FETCH_SNAPSHOT

    master = master_factory(KUBETRAIN_TOKEN="s3cret")
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "model.py").write_text("WIDTH = 64\n")
    # Each job prints its token and stays running: a job token works only while its attempt runs.
    (project / "show_token.py").write_text(
        "import os, time\nprint(os.environ['KUBETRAIN_JOB_TOKEN'], flush=True)\ntime.sleep(120)\n")
    names = [submitted(master.cli("run", "-o", "json", "--cpu", "100m", "--", PYTHON, "show_token.py",
                                  cwd=project, check=True)) for _ in range(2)]
    tokens = []
    for name in names:
        tokens.append(wait_until(lambda: master.cli("logs", name).stdout.strip(), what=f"{name}'s token"))
    url = f"{master.url}/api/v1/jobs/{names[0]}/snapshot"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"X-Kubetrain-Job-Token": tokens[1]}).status_code == 401  # another job's token
    code = tmp_path / "code"
    fetched = subprocess.run([PYTHON, "-c", FETCH_SNAPSHOT], capture_output=True, text=True, timeout=60, env={
        "KUBETRAIN_SNAPSHOT_URL": url, "KUBETRAIN_JOB_TOKEN": tokens[0], "KUBETRAIN_CODE_DIR": str(code)})
    assert fetched.returncode == 0, fetched.stderr
    assert (code / "pkg" / "model.py").read_text() == "WIDTH = 64\n" and (code / "show_token.py").exists()
    master.client.cancel(names[0])
    master.wait_state(names[0])
    after = httpx.get(url, headers={"X-Kubetrain-Job-Token": tokens[0]})
    assert after.status_code == 401, "a job's token must stop working when its attempt ends"
    master.client.cancel(names[1])
    plain = master.cli("run", "-o", "json", "--cpu", "100m", "--no-snapshot", "--", "true", check=True)
    no_code = httpx.get(f"{master.url}/api/v1/jobs/{submitted(plain)}/snapshot",
                        headers={"Authorization": "Bearer s3cret"})
    assert no_code.status_code == 404 and "no code snapshot" in no_code.json()["message"]
