"""``kubetrain k8s manifests``: YAML on stdout that kubectl can apply, and bad flags refused by name.

In-process through :func:`kubetrain.cli.main.run` (what the ``kubetrain`` script runs); no master and no
cluster are needed, and none is contacted (``KUBETRAIN_URL`` points nowhere).  The documents themselves are
checked in ``tests/k8s/test_deploy_manifests.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubetrain.cli.main import run


@pytest.fixture(autouse=True)
def no_master(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBETRAIN_URL", "http://127.0.0.1:9")


def manifests(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, list[dict], str]:
    code = run(["k8s", "manifests", *flags])
    captured = capsys.readouterr()
    documents = list(yaml.safe_load_all(captured.out)) if code == 0 else []
    return code, documents, captured.err


def test_prints_every_object_for_the_namespace(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, documents, err = manifests(capsys, "--namespace", "ml", "--storage-class", "local-path",
                                     "--image", "registry.example/kubetrain-master:1")
    assert code == 0, err
    kinds = [d["kind"] for d in documents]
    assert kinds.count("Deployment") == 1 and {"Role", "ClusterRole", "Service", "NetworkPolicy"} <= set(kinds)
    assert {d["metadata"].get("namespace") for d in documents if not d["kind"].startswith("Cluster")} == {"ml"}
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/kubetrain-master:1"
    assert not (tmp_path / "home").exists(), "printing manifests needs no master and makes no home"


def test_postgres_moves_the_records_to_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+psycopg://kt:pw@db.example:5432/kt"
    code, documents, err = manifests(capsys, "--postgres", url, "--results-access-mode", "ReadWriteMany")
    assert code == 0, err
    secrets = [d for d in documents if d["kind"] == "Secret"]
    assert [s["stringData"] for s in secrets] == [{"url": url}]
    claims = {d["metadata"]["name"]: d["spec"]["accessModes"] for d in documents if d["kind"] == "PersistentVolumeClaim"}
    assert claims == {"kubetrain-master": ["ReadWriteOnce"], "kubetrain-results": ["ReadWriteMany"]}


@pytest.mark.parametrize(("flags", "named"), [
    (("--namespace", "Not_A_Namespace"), "--namespace"),
    (("--results-access-mode", "ReadWriteSometimes"), "--results-access-mode"),
    (("--postgres", "sqlite:////tmp/k.db"), "--postgres"),
    (("--home-size", "lots"), "--home-size"),
    (("--storage-class", "Fast SSD"), "--storage-class"),
    (("--job-image", ""), "--job-image"),
])
def test_a_bad_flag_is_refused_by_name_before_anything_is_printed(capsys: pytest.CaptureFixture[str],
                                                                  flags: tuple[str, str], named: str) -> None:
    code = run(["k8s", "manifests", *flags])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert named in captured.err and "Traceback" not in captured.err


def test_a_postgres_password_is_not_echoed_in_a_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["k8s", "manifests", "--postgres", "mysql://kt:hunter2@db/kt"]) == 2
    assert "hunter2" not in capsys.readouterr().err
