"""The results claim and how a master outside the cluster reads it: through a short-lived helper pod's log.

The helper pod's own program runs for real here (a local ``python3``), behind a stub of the four API
calls ``fetch_outputs`` makes, so the whole path (tar, base64 lines, trailer, safe unpack, swap,
delete) is checked in milliseconds; tests/k8s runs it on the fake cluster.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")

from kubetrain.core.errors import EngineError  # noqa: E402
from kubetrain.core.specs import validate_job  # noqa: E402
from kubetrain.engines.kubernetes import results  # noqa: E402
from kubetrain.engines.kubernetes.manifests import KubernetesSettings  # noqa: E402

VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
SETTINGS = KubernetesSettings(namespace="ml", master_id="kt-1", image="python:3.12-slim")


def spec(experiment: str | None = None):
    labels = {"kubetrain.io/experiment": experiment} if experiment else {}
    return validate_job({"apiVersion": "kubetrain/v1", "kind": "Job",
                         "metadata": {"name": "digits", "labels": labels}, "spec": {"command": ["true"]}})


class _Log:
    def __init__(self, data: bytes) -> None:
        self.data, self.released = data, False

    def stream(self, size: int):
        for at in range(0, len(self.data), size):
            yield self.data[at:at + size]

    def release_conn(self) -> None:
        self.released = True


class StubCore:
    """The pod calls of ``fetch_outputs``: the pod's program runs at once, the claim is a local folder."""

    def __init__(self, claim: Path, *, phase: str = "Succeeded", mangle=lambda log: log) -> None:
        self.claim, self.phase, self.mangle = claim, phase, mangle
        self.pods: dict[str, dict] = {}
        self.logs: dict[str, bytes] = {}
        self.deleted: list[str] = []

    def create_namespaced_pod(self, namespace: str, body: dict) -> dict:
        (container,) = body["spec"]["containers"]
        mount = container["volumeMounts"][0]["mountPath"]
        env = {e["name"]: e["value"].replace(mount, str(self.claim), 1) for e in container["env"]}
        run = subprocess.run([sys.executable, *container["command"][1:]], env={**env, "PATH": os.environ["PATH"]},
                             capture_output=True, timeout=60, check=True)
        self.pods[body["metadata"]["name"]] = body
        self.logs[body["metadata"]["name"]] = self.mangle(run.stdout)
        return body

    def read_namespaced_pod(self, name: str, namespace: str) -> dict:
        return {"status": {"phase": self.phase}}

    def read_namespaced_pod_log(self, name: str, namespace: str, **_kwargs) -> _Log:
        return _Log(self.logs[name])

    def delete_namespaced_pod(self, name: str, namespace: str, **_kwargs) -> None:
        self.deleted.append(name)


def call(method, *args, what: str, allow: tuple[int, ...] = (), **kwargs):
    del what, allow
    return method(*args, **kwargs)


@pytest.fixture
def claim(tmp_path: Path) -> Path:
    folder = tmp_path / "claim"
    (folder / "sweep" / "digits" / "checkpoints").mkdir(parents=True)
    (folder / "sweep" / "digits" / "model.json").write_text('{"acc": 0.97}')
    (folder / "sweep" / "digits" / "checkpoints" / "step-10.pt").write_bytes(os.urandom(200_000))
    (folder / "other").mkdir()
    (folder / "other" / "secret.txt").write_text("not digits'")
    return folder


@pytest.mark.parametrize("version", VERSIONS)
def test_the_reader_pod_is_valid_small_read_only_and_labelled_as_ours(version: str) -> None:
    pod = results.render_reader_pod("sweep/digits", SETTINGS, "kubetrain-results-ab12", deadline_seconds=90)
    kubernetes_validate.validate(pod, version, strict=True)
    assert pod["metadata"]["labels"] == {"kubetrain.io/master": "kt-1", "kubetrain.io/role": "results-reader"}
    body = pod["spec"]
    assert (body["restartPolicy"], body["activeDeadlineSeconds"]) == ("Never", 90)
    (container,) = body["containers"]
    assert container["image"] == "python:3.12-slim" and container["command"][:2] == ["python3", "-c"]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["volumeMounts"] == [{"name": "results", "mountPath": "/kubetrain/results", "readOnly": True}]
    assert body["volumes"][0]["persistentVolumeClaim"] == {"claimName": "kubetrain-results", "readOnly": True}
    # The folder comes from a variable under the mount (a fake kubelet maps such values to its folders).
    assert container["env"] == [{"name": "KUBETRAIN_RESULTS_DIR", "value": "/kubetrain/results/sweep/digits"}]


def test_a_reader_goes_where_a_claim_one_node_at_a_time_is_attached() -> None:
    """ReadWriteOnce: a helper pod on another node than the running jobs would wait on a Multi-Attach error."""
    pods = [{"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}},
            {"spec": {"nodeName": "n2"}, "status": {"phase": "Running"}}, {"spec": {}, "status": {"phase": "Pending"}}]
    assert results.attached_node(SETTINGS, pods) == "n2"
    assert results.attached_node(SETTINGS, pods[:1]) is None
    shared = KubernetesSettings(results_access_mode="ReadWriteMany")
    assert results.attached_node(shared, pods) is None  # any node can mount it
    pinned = results.render_reader_pod("digits", SETTINGS, "r", node="n2")
    kubernetes_validate.validate(pinned, VERSIONS[-1], strict=True)
    assert pinned["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "n2"}
    assert "nodeSelector" not in results.render_reader_pod("digits", SETTINGS, "r")["spec"]


def test_outputs_are_fetched_whole_through_the_pod_log_and_the_pod_is_deleted(claim: Path, tmp_path: Path) -> None:
    core = StubCore(claim)
    dest = tmp_path / "copy" / "outputs"
    assert results.fetch_outputs(core, SETTINGS, "sweep/digits", dest, call=call) == dest
    assert (dest / "model.json").read_text() == '{"acc": 0.97}'
    assert (dest / "checkpoints" / "step-10.pt").read_bytes() == (
        claim / "sweep" / "digits" / "checkpoints" / "step-10.pt").read_bytes()
    assert not (dest / "secret.txt").exists()  # only that job's folder
    assert core.deleted == list(core.pods)
    # Fetched again: the copy is the claim's folder as it is now (a removed file goes from the copy too).
    (claim / "sweep" / "digits" / "model.json").unlink()
    results.fetch_outputs(core, SETTINGS, "sweep/digits", dest, call=call)
    assert sorted(p.name for p in dest.iterdir()) == ["checkpoints"]
    assert [p.name for p in dest.parent.iterdir()] == ["outputs"]  # no temporary folder left beside it
    # A job that wrote nothing yet: an empty folder, not an error.
    assert list(results.fetch_outputs(core, SETTINGS, "nothing", tmp_path / "empty", call=call).iterdir()) == []


def test_a_log_cut_by_the_kubelet_is_an_error_naming_the_fix(claim: Path, tmp_path: Path) -> None:
    rotated = StubCore(claim, mangle=lambda log: b"\n".join(log.split(b"\n")[2:]))  # the start rotated away
    with pytest.raises(EngineError, match="kubetrain k8s manifests"):
        results.fetch_outputs(rotated, SETTINGS, "sweep/digits", tmp_path / "outputs", call=call)
    assert not (tmp_path / "outputs").exists() and rotated.deleted == list(rotated.pods)


def test_a_failed_reader_pod_is_an_error_and_is_deleted(claim: Path, tmp_path: Path) -> None:
    failed = StubCore(claim, phase="Failed", mangle=lambda _log: b"PermissionError: [Errno 13] denied\n")
    with pytest.raises(EngineError, match="Errno 13"):
        results.fetch_outputs(failed, SETTINGS, "sweep/digits", tmp_path / "outputs", call=call)
    assert failed.deleted == list(failed.pods)


def test_an_archive_reaching_outside_its_folder_is_refused(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as archive:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"hi"))
    data = raw.getvalue()
    lines = [base64.b64encode(data).decode() + "\n", f"END {len(data)} {hashlib.sha256(data).hexdigest()}\n"]
    archive_bytes = results._archive(iter(lines), "digits")
    (tmp_path / "copy").mkdir()
    with pytest.raises(EngineError, match="cannot unpack"):
        results._replace_with(tmp_path / "copy" / "outputs", archive_bytes)
    assert not (tmp_path / "escaped.txt").exists() and list((tmp_path / "copy").iterdir()) == []


@pytest.mark.parametrize(("marker", "newest", "live", "now", "fresh"), [
    (None, 1, False, 100.0, False),
    ({"attempt": 1, "final": True, "fetched_at": 0.0}, 1, False, 1e9, True),  # ended: kept for good
    ({"attempt": 1, "final": True, "fetched_at": 0.0}, 2, False, 1e9, False),  # a later attempt ran since
    ({"attempt": 2, "final": False, "fetched_at": 90.0}, 2, True, 100.0, True),  # live: briefly
    ({"attempt": 2, "final": False, "fetched_at": 10.0}, 2, True, 100.0, False),
    ({"attempt": 2, "final": False, "fetched_at": 90.0}, 2, False, 100.0, False),  # fetched live, ended since
])
def test_when_the_masters_copy_is_served_without_a_new_pod(marker, newest: int, live: bool, now: float,
                                                             fresh: bool) -> None:
    assert results.copy_is_fresh(marker, newest=newest, live=live, now=now) is fresh


def test_repeated_reads_of_an_ended_job_start_one_pod(claim: Path, tmp_path: Path) -> None:
    core, attempts = StubCore(claim), tmp_path / "attempts"
    (attempts / "digits" / "1").mkdir(parents=True)
    for _ in range(3):
        folder = results.local_outputs(core, SETTINGS, job="digits", spec=spec("sweep"), attempts_dir=attempts,
                                       live=False, call=call)
        assert (folder / "model.json").exists()
    assert len(core.pods) == 1
    assert json.loads((attempts / "digits" / "outputs.json").read_text())["attempt"] == 1
    (attempts / "digits" / "2").mkdir()  # a retry ran: its outputs are fetched again
    results.local_outputs(core, SETTINGS, job="digits", spec=spec("sweep"), attempts_dir=attempts, live=False, call=call)
    assert len(core.pods) == 2


def test_the_results_claim_is_created_with_a_409_meaning_it_exists_already() -> None:
    """A claim of that name, ours from before or the user's own, is used as it is: 409 is not an error."""
    class Core:
        def create_namespaced_persistent_volume_claim(self, namespace: str, body: dict) -> None: ...

    seen = []
    results.ensure_results_claim(Core(), KubernetesSettings(namespace="ml", results_claim="mine"),
                                 lambda method, *args, what, allow=(), **kw: seen.append((method.__name__, args, allow)))
    ((name, (namespace, body), allow),) = seen
    assert (name, namespace, body["metadata"]["name"], allow) == (
        "create_namespaced_persistent_volume_claim", "ml", "mine", (409,))


def test_output_location_is_the_subpath_jobs_mount() -> None:
    assert results.output_location(SETTINGS, "digits", spec()) == "digits"
    assert results.output_location(SETTINGS, "digits", spec("sweep")) == "sweep/digits"
