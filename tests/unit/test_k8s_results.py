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
import threading
import time
from pathlib import Path

import pytest
import urllib3

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
    def __init__(self, data: bytes, *, fail: BaseException | None = None) -> None:
        self.data, self.released, self.fail = data, False, fail

    def stream(self, size: int):
        for at in range(0, len(self.data), size):
            yield self.data[at:at + size]
            if self.fail is not None:  # the connection breaks after the first chunk
                raise self.fail

    def release_conn(self) -> None:
        self.released = True


class StubCore:
    """The pod calls of ``fetch_outputs``: the pod's program runs at once, the claim is a local folder."""

    def __init__(self, claim: Path, *, phase: str = "Succeeded", mangle=lambda log: log,
                 log_error: BaseException | None = None, slow: float = 0.0) -> None:
        self.claim, self.phase, self.mangle, self.log_error, self.slow = claim, phase, mangle, log_error, slow
        self.pods: dict[str, dict] = {}
        self.logs: dict[str, bytes] = {}
        self.deleted: list[str] = []

    def create_namespaced_pod(self, namespace: str, body: dict) -> dict:
        (container,) = body["spec"]["containers"]
        mount = container["volumeMounts"][0]["mountPath"]
        env = {e["name"]: e["value"].replace(mount, str(self.claim), 1) for e in container["env"]}
        run = subprocess.run([sys.executable, *container["command"][1:]], env={**env, "PATH": os.environ["PATH"]},
                             capture_output=True, timeout=60, check=True)
        time.sleep(self.slow)
        self.pods[body["metadata"]["name"]] = body
        self.logs[body["metadata"]["name"]] = self.mangle(run.stdout)
        return body

    def read_namespaced_pod(self, name: str, namespace: str) -> dict:
        return {"status": {"phase": self.phase}}

    def read_namespaced_pod_log(self, name: str, namespace: str, **_kwargs) -> _Log:
        return _Log(self.logs[name], fail=self.log_error)

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
    # By node name, not the hostname label (which need not equal the name on every cloud).
    assert "nodeSelector" not in pinned["spec"]
    assert pinned["spec"]["affinity"] == {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}
    assert "affinity" not in results.render_reader_pod("digits", SETTINGS, "r")["spec"]


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


# -- a job's outputs are untrusted: limits, odd files, broken streams --------------------------------
def pack(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """A tar.gz of hand-made members (``None``: the header alone, claiming data that is not there)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            if data is None:
                archive.fileobj.write(info.tobuf(archive.format, archive.encoding, archive.errors))
            else:
                archive.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def test_the_copy_limits_are_two_gib_and_twenty_thousand_files() -> None:
    assert (results.MAX_COPY_BYTES, results.MAX_COPY_FILES) == (2 << 30, 20_000)
    assert results.MAX_LOG_BYTES == 64 << 20


def test_a_member_claiming_more_than_the_byte_limit_is_refused_before_a_byte_is_written(tmp_path: Path) -> None:
    huge = tarfile.TarInfo("bomb.bin")
    huge.size = results.MAX_COPY_BYTES + 1  # the header alone: nothing is read or written for it
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "old.txt").write_text("kept")
    with pytest.raises(EngineError, match=r"2048 MiB.*ReadWriteMany.*fewer"):
        results._replace_with(tmp_path / "outputs", pack(member("a.txt", b"x"), (huge, None)))
    # No partial copy: the old one is whole and nothing new is left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["old.txt"]


def test_bytes_are_summed_over_members_and_files_counted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(results, "MAX_COPY_BYTES", 1000)
    with pytest.raises(EngineError, match="1000|MiB"):
        results._replace_with(tmp_path / "outputs", pack(*(member(f"{i}.bin", b"x" * 300) for i in range(4))))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(results, "MAX_COPY_BYTES", 2 << 30)
    monkeypatch.setattr(results, "MAX_COPY_FILES", 5)
    results._replace_with(tmp_path / "outputs", pack(*(member(f"{i}.txt", b"x") for i in range(5))))  # at the limit
    with pytest.raises(EngineError, match="5 files"):
        results._replace_with(tmp_path / "outputs", pack(*(member(f"{i}.txt", b"x") for i in range(6))))
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"] and len(list((tmp_path / "outputs").iterdir())) == 5


def test_a_forged_huge_header_is_not_read_into_memory(tmp_path: Path) -> None:
    """tarfile reads a pax header whole before any filter sees the member: the inflater stops it first."""
    info, data = member("a.txt", b"x")
    info.pax_headers = {"comment": "x" * (results.MAX_HEADER_BYTES + 1)}
    with pytest.raises(EngineError, match="header larger"):
        results._replace_with(tmp_path / "outputs", pack((info, data)))
    assert list(tmp_path.iterdir()) == []


def test_a_size_claimed_by_a_member_without_data_does_not_let_a_huge_header_in(tmp_path: Path) -> None:
    """Only a regular file's data follows its header: a directory claiming 300 MiB must not widen what the next
    pax header may take in memory (tarfile reads that header whole)."""
    folder = tarfile.TarInfo("d")
    folder.type, folder.size = tarfile.DIRTYPE, 300 << 20  # the header alone: a directory carries no data
    info, data = member("a.txt", b"x")
    info.pax_headers = {"comment": "x" * (2 * results.MAX_HEADER_BYTES)}
    with pytest.raises(EngineError, match="header larger"):
        results._replace_with(tmp_path / "outputs", pack((folder, None), (info, data)))
    assert list(tmp_path.iterdir()) == []


def test_a_log_longer_than_the_cap_is_an_error_not_a_memory_hog(claim: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(results, "MAX_LOG_BYTES", 1000)
    core = StubCore(claim)
    with pytest.raises(EngineError, match="longer than"):
        results.fetch_outputs(core, SETTINGS, "sweep/digits", tmp_path / "outputs", call=call)
    assert core.deleted == list(core.pods) and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("error", [
    urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead", None),
    urllib3.exceptions.ReadTimeoutError(None, "/log", "Read timed out."),
    urllib3.exceptions.HTTPError("something"),
    ConnectionResetError(104, "Connection reset by peer"),
])
def test_a_log_stream_that_breaks_is_an_engine_error(claim: Path, tmp_path: Path, error: BaseException) -> None:
    core = StubCore(claim, log_error=error)
    with pytest.raises(EngineError, match="broke off"):
        results.fetch_outputs(core, SETTINGS, "sweep/digits", tmp_path / "outputs", call=call)
    assert core.deleted == list(core.pods) and not (tmp_path / "outputs").exists()


def test_a_log_that_cannot_be_opened_is_an_engine_error(claim: Path, tmp_path: Path) -> None:
    class Unreachable(StubCore):
        def read_namespaced_pod_log(self, name: str, namespace: str, **_kwargs):
            raise urllib3.exceptions.MaxRetryError(None, "/log", "refused")

    with pytest.raises(EngineError, match="cannot read the log"):
        results.fetch_outputs(Unreachable(claim), SETTINGS, "sweep/digits", tmp_path / "outputs", call=call)


@pytest.mark.parametrize("trailer", ["END abc def", "END 12", "END 1 2 3", "END 1 "])
def test_a_malformed_trailer_is_an_incomplete_copy(trailer: str) -> None:
    data = pack(member("a.txt", b"x"))
    with pytest.raises(EngineError, match="incomplete"):
        results._archive(iter([base64.b64encode(data).decode() + "\n", trailer + "\n"]), "digits")


def test_links_fifos_and_devices_are_left_out_not_fatal(claim: Path, tmp_path: Path) -> None:
    """A job cannot make its own artifacts unreadable (nor reach files outside its folder through a link)."""
    job = claim / "sweep" / "digits"
    (job / "to-secret").symlink_to(claim / "other" / "secret.txt")
    (job / "to-other").symlink_to(claim / "other", target_is_directory=True)
    os.mkfifo(job / "pipe")  # would block a reader that opened it
    dest = tmp_path / "outputs"
    results.fetch_outputs(StubCore(claim), SETTINGS, "sweep/digits", dest, call=call)
    assert sorted(p.name for p in dest.iterdir()) == ["checkpoints", "model.json"]
    # And the unpacking side skips what another writer might have put in: links, devices, FIFOs.
    archive = pack(member("ok.txt", b"fine"), member("dir", kind=tarfile.DIRTYPE),
                   member("dir/in.txt", b"in"), member("link", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
                   member("hard", kind=tarfile.LNKTYPE, linkname="ok.txt"), member("pipe", kind=tarfile.FIFOTYPE),
                   member("dev", kind=tarfile.CHRTYPE, devmajor=1, devminor=3))
    results._replace_with(dest, archive)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["dir", "dir/in.txt", "ok.txt"]


def test_concurrent_reads_of_a_job_share_one_fetch(claim: Path, tmp_path: Path) -> None:
    core, attempts = StubCore(claim, slow=0.3), tmp_path / "attempts"
    (attempts / "digits" / "1").mkdir(parents=True)
    got, errors = [], []

    def read() -> None:
        try:
            got.append(results.local_outputs(core, SETTINGS, job="digits", spec=spec("sweep"), attempts_dir=attempts,
                                             live=False, call=call))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and len(got) == 3 and len(core.pods) == 1  # the others waited, then reused the copy
    assert (got[0] / "model.json").exists()
    assert results.lock_file(attempts, "digits") == attempts / "digits" / "outputs.lock"
    assert sorted(p.name for p in (attempts / "digits").iterdir()) == ["1", "outputs", "outputs.json", "outputs.lock"]


def test_a_lock_held_too_long_is_an_error_and_leftovers_of_a_dead_master_go(claim: Path, tmp_path: Path,
                                                                             monkeypatch) -> None:
    import fcntl

    attempts = tmp_path / "attempts"
    (attempts / "digits" / "1").mkdir(parents=True)
    monkeypatch.setattr(results, "LOG_READ_SECONDS", 0)
    with open(results.lock_file(attempts, "digits"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(EngineError, match="another read"):
            results.local_outputs(StubCore(claim), SETTINGS, job="digits", spec=spec("sweep"), attempts_dir=attempts,
                                  live=False, call=call, timeout=0.3)
    (attempts / "digits" / ".outputs-old-dead").mkdir()  # a master that died mid-swap
    (attempts / "digits" / "outputs").mkdir()  # and an old copy, without a marker: fetched again, swapped
    results.local_outputs(StubCore(claim), SETTINGS, job="digits", spec=spec("sweep"), attempts_dir=attempts,
                          live=False, call=call)
    assert sorted(p.name for p in (attempts / "digits").iterdir()) == ["1", "outputs", "outputs.json", "outputs.lock"]
    assert (attempts / "digits" / "outputs" / "model.json").exists()


# -- leftover reader pods --------------------------------------------------------------------------
NOW = 1_800_000_000.0


def at(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - seconds_ago))


def reader(name: str, phase: str, created_ago: float, ended_ago: float | None = None) -> dict:
    status: dict = {"phase": phase}
    if ended_ago is not None:
        status["containerStatuses"] = [{"state": {"terminated": {"finishedAt": at(ended_ago)}}}]
    labels = {"kubetrain.io/master": "kt-1", "kubetrain.io/role": "results-reader"}
    return {"metadata": {"name": name, "creationTimestamp": at(created_ago), "labels": labels}, "status": status}


@pytest.mark.parametrize(("pod", "stale"), [
    (reader("running", "Running", 30), False),
    (reader("stuck", "Pending", 601), True),  # never scheduled: its deadline never starts
    (reader("young", "Pending", 599), False),
    (reader("done-now", "Succeeded", 300, ended_ago=5), False),  # another process may be reading its log
    (reader("done", "Succeeded", 300, ended_ago=121), True),
    (reader("failed", "Failed", 300, ended_ago=200), True),
    (reader("ended-no-status", "Failed", 200), True),
    ({"metadata": {"name": "no-time"}, "status": {"phase": "Running"}}, False),
])
def test_which_reader_pods_are_stale(pod: dict, stale: bool) -> None:
    assert results.reader_is_stale(pod, now=NOW) is stale


def test_sweep_readers_deletes_this_masters_stale_reader_pods() -> None:
    other = reader("not-a-reader", "Failed", 900, 900)  # an API that ignored the selector: never deleted
    other["metadata"]["labels"] = {"kubetrain.io/master": "kt-1", "kubetrain.io/job": "train"}
    pods = [reader("stuck", "Pending", 900), reader("busy", "Running", 10), reader("done", "Succeeded", 400, 300),
            reader("gone", "Failed", 400, 300), other]

    class Core:
        def __init__(self) -> None:
            self.listed, self.deleted = [], []

        def list_namespaced_pod(self, namespace: str, label_selector: str) -> dict:
            self.listed.append((namespace, label_selector))
            return {"items": pods}

        def delete_namespaced_pod(self, name: str, namespace: str, grace_period_seconds: int) -> None:
            if name == "gone":
                raise EngineError("Kubernetes API, delete: 500")  # logged; the next sweep retries
            self.deleted.append(name)

    core = Core()
    assert results.sweep_readers(core, SETTINGS, call, now=NOW) == ["stuck", "done"]
    assert core.listed == [("ml", "kubetrain.io/master=kt-1,kubetrain.io/role=results-reader")]
    assert results.sweep_readers(core, SETTINGS, call, older_than_seconds=5, now=NOW) == ["stuck", "busy", "done"]
