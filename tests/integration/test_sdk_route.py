"""The in-job SDK a pod's init container fetches: served with a job's own token, and working in a bare Python.

"Any image with Python works" is the claim: so the archive's modules are imported by an interpreter that
sees nothing but them (``-I -S``: no site-packages, no user site, no PYTHONPATH), and report to a real master.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx

from tests.conftest import PYTHON, wait_until

BARE = """\
import json, os, sys
sys.path.insert(0, os.environ["SDK"])
import kubetrain
assert kubetrain.__file__.startswith(os.environ["SDK"]), kubetrain.__file__
assert kubetrain.params() == {"lr": 0.5}, kubetrain.params()
kubetrain.report(1, loss=0.25)
kubetrain.flush()
path = kubetrain.save_checkpoint({"w": [1, 2]}, step=1)
assert kubetrain.latest_checkpoint().load() == {"w": [1, 2]}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("httpx", "pydantic", "fastapi", "sqlalchemy"))
print(json.dumps({"heavy": heavy, "site": "site" in sys.modules}))
"""


def test_the_sdk_archive_is_stdlib_only_and_served_to_a_job_token(master_factory, tmp_path: Path) -> None:
    from kubetrain.engines.kubernetes.manifests import FETCH
    from kubetrain.server.sdk_route import MODULES, sdk_archive

    assert sdk_archive() is sdk_archive()  # built once per process
    with tarfile.open(fileobj=io.BytesIO(sdk_archive()), mode="r:gz") as archive:
        assert sorted(archive.getnames()) == sorted(MODULES)

    master = master_factory(KUBETRAIN_TOKEN="s3cret")
    assert httpx.get(f"{master.url}/api/v1/sdk").status_code == 401
    user = httpx.get(f"{master.url}/api/v1/sdk", headers={"Authorization": "Bearer s3cret"})
    assert user.status_code == 200 and user.headers["content-type"] == "application/gzip"
    again = httpx.get(f"{master.url}/api/v1/sdk", headers={"Authorization": "Bearer s3cret",
                                                           "If-None-Match": user.headers["etag"]})
    assert again.status_code == 304

    # A running job's token opens its own job's SDK route: what the init container uses.
    run = master.cli("run", "-o", "json", "--no-snapshot", "--cpu", "100m", "-p", "lr=0.5", "--", PYTHON, "-c",
                     "import os, time; print(os.environ['KUBETRAIN_JOB_TOKEN'], flush=True); time.sleep(60)",
                     check=True)
    name = json.loads(run.stdout)[0]["name"]
    token = wait_until(lambda: master.cli("logs", name).stdout.strip(), what=f"{name}'s token")
    url = f"{master.url}/api/v1/jobs/{name}/sdk"
    assert httpx.get(url).status_code == 401
    assert httpx.get(f"{master.url}/api/v1/jobs/other/sdk", headers={"X-Kubetrain-Job-Token": token}).status_code == 401
    sdk = tmp_path / "sdk"
    fetched = subprocess.run([PYTHON, "-c", FETCH], capture_output=True, text=True, timeout=60, env={
        "KUBETRAIN_SDK_URL": url, "KUBETRAIN_SDK_DIR": str(sdk), "KUBETRAIN_JOB_TOKEN": token})
    assert fetched.returncode == 0, fetched.stderr

    # The bare interpreter: only the unpacked folder on sys.path; it reports to the master with the job's token.
    bare = subprocess.run([sys.executable, "-I", "-S", "-c", BARE], capture_output=True, text=True, timeout=60, env={
        "SDK": str(sdk), "KUBETRAIN_MASTER_URL": master.url, "KUBETRAIN_JOB": name, "KUBETRAIN_JOB_TOKEN": token,
        "KUBETRAIN_PARAMS": json.dumps({"lr": 0.5}), "KUBETRAIN_OUTPUT_DIR": str(tmp_path / "out"),
        "KUBETRAIN_CHECKPOINT_DIR": str(tmp_path / "out" / "checkpoints")})
    assert bare.returncode == 0, bare.stderr
    assert json.loads(bare.stdout.splitlines()[-1]) == {"heavy": [], "site": False}
    points = wait_until(lambda: master.client.metrics(name), what="the bare SDK's report to reach the master")
    assert [(p["name"], p["step"], p["value"]) for p in points] == [("loss", 1, 0.25)]
    master.client.cancel(name)
