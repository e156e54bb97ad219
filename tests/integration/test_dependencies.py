"""``kubetrain run --after`` / ``spec.dependsOn`` through a real master (issue 10, part 5)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import wait_until


def test_run_after_starts_the_job_only_once_its_dependency_succeeded(master, tmp_path: Path):
    go = tmp_path / "go"
    gate = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\nprint('prepared')"
    master.cli("run", "--name", "prep", "--no-snapshot", "--", "python", "-c", gate, check=True)
    master.cli("run", "--name", "train", "--after", "prep", "--no-snapshot", "--", "python", "-c", "print('trained')",
               check=True)
    # The first pass may judge train while prep is still Queued (both were just submitted); the reason follows
    # prep's state on the next pass.
    waiting = wait_until(lambda: (j := master.client.get_job("train")).message and "Running" in j.message and j,
                         what="train's wait reason naming prep as running")
    assert waiting.state == "Queued" and not waiting.attempts
    assert waiting.message == "waiting for job 'prep' to succeed (it is Running)"
    go.touch()
    prep, train = master.wait_state("prep"), master.wait_state("train")
    assert (prep.state, train.state) == ("Succeeded", "Succeeded")
    assert train.attempts[0].started_at >= prep.finished_at


def test_a_failed_dependency_ends_the_job_dependency_failed(master):
    master.cli("run", "--name", "broken", "--no-snapshot", "--", "python", "-c", "raise SystemExit(4)", check=True)
    master.cli("run", "--name", "after-broken", "--after", "broken", "--no-snapshot", "--", "true", check=True)
    master.cli("run", "--name", "on-failure", "--after", "broken:failed", "--no-snapshot", "--", "true", check=True)
    ended = master.wait_state("after-broken")
    assert (ended.state, ended.reason) == ("Failed", "DependencyFailed"), ended
    assert "dependency 'broken' ended Failed" in ended.message
    assert master.wait_state("on-failure").state == "Succeeded"


def test_a_dependency_on_no_job_is_refused_at_submit(master):
    missing = master.cli("run", "--after", "nosuch", "--no-snapshot", "--", "true")
    assert missing.returncode == 2  # a bad spec is a usage error, as for every spec field
    assert "spec.dependsOn[0].job: no job 'nosuch'" in missing.stderr and "Traceback" not in missing.stderr
    typo = master.cli("run", "--after", "nosuch:sometimes", "--no-snapshot", "--", "true")
    assert typo.returncode != 0 and "--after 'nosuch:sometimes'" in typo.stderr and "Traceback" not in typo.stderr
