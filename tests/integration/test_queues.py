"""Queues through a real master and the plain CLI (issue 14): admins shape them, jobs land in them, quotas hold."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import wait_until


def test_an_admin_creates_lists_describes_and_deletes_a_queue(master) -> None:
    created = master.cli("queue", "create", "vision", "--cpu", "4", "--memory", "8Gi", "--gpu", "2", "--cohort",
                         "research", "--preemption", "reclaimBorrowed", "--max-running-jobs", "2", "--max-gpus", "1",
                         "--user", "alice", "--team", "vision", check=True)
    assert created.stdout.strip() == "queue/vision created (quota: cpu=4 memory=8Gi gpu=2)"
    master.cli("queue", "create", "open", check=True)
    listing = master.cli("queue", "ls", check=True).stdout.splitlines()
    assert listing[0].split() == ["NAME", "COHORT", "PREEMPTION", "QUOTA", "IN", "USE", "RUNNING", "QUEUED", "PER",
                                  "USER"]
    assert listing[1].split() == ["open", "-", "never", "-", "cpu=0", "memory=0", "0", "0", "-"]
    assert listing[2].split() == ["vision", "research", "reclaimBorrowed", "cpu=4", "memory=8Gi", "gpu=2", "cpu=0",
                                  "memory=0", "0", "0", "jobs=2", "gpu=1"]
    described = master.cli("queue", "describe", "vision", check=True).stdout
    for line in ("Cohort:", "research"), ("Quota:", "cpu=4 memory=8Gi gpu=2"), ("Users:", "alice"), \
                ("Teams:", "vision"), ("Jobs:", "0 running, 0 queued"):
        assert any(row.startswith(line[0]) and line[1] in row for row in described.splitlines()), (line, described)
    as_json = json.loads(master.cli("queue", "ls", "-o", "json", check=True).stdout)
    assert [q["queue"]["name"] for q in as_json] == ["open", "vision"]
    assert as_json[1]["queue"]["nominalQuota"] == {"cpu": "4", "memory": "8Gi", "gpu": 2}
    again = master.cli("queue", "create", "vision")
    assert again.returncode == 1 and "queue 'vision' already exists" in again.stderr
    updated = master.cli("queue", "create", "vision", "--gpu", "4", "--update", check=True)
    assert "queue/vision updated (quota: gpu=4)" in updated.stdout
    assert master.client.get_queue("vision").queue.cohort is None  # --update replaces every field
    master.cli("queue", "delete", "vision", check=True)
    gone = master.cli("queue", "describe", "vision")
    assert gone.returncode == 1 and "queue 'vision' not found" in gone.stderr and "Traceback" not in gone.stderr


def test_bad_queue_input_names_the_field_the_value_and_the_fix(master) -> None:
    bad = master.cli("queue", "create", "v", "--memory", "5GB")
    assert bad.returncode == 2, bad.stderr
    assert "--memory: '5GB' is not a quantity; use e.g. 512Gi" in bad.stderr and "Traceback" not in bad.stderr
    typo = master.cli("queue", "create", "v", "--preemption", "lower")
    assert typo.returncode == 2 and "did you mean 'lowerPriority'?" in typo.stderr
    name = master.cli("queue", "create", "Vision")
    assert name.returncode == 2 and "'Vision' is not a queue name" in name.stderr
    with master.http() as http:  # the API says the same, as a 422 naming the field
        reply = http.post("/api/v1/queues", json={"name": "v", "nominalQuota": {"memory": "5GB"}})
        assert reply.status_code == 422
        assert "nominalQuota.memory: '5GB' is not a quantity; use e.g. 512Gi" in reply.json()["message"]
        reply = http.post("/api/v1/queues", json={"name": "v", "nominalQuota": {"gpus": 1}})
        assert reply.status_code == 422 and "did you mean 'nominalQuota.gpu'?" in reply.json()["message"]
        assert http.get("/api/v1/queues/nosuch").status_code == 404
    assert master.client.list_queues() == []


def test_run_into_a_queue_that_does_not_exist_is_refused(master) -> None:
    master.cli("queue", "create", "real", check=True)
    refused = master.cli("run", "--queue", "nosuch", "--no-snapshot", "--", "true")
    assert refused.returncode == 2, refused.stderr
    assert "spec.queue: no queue 'nosuch'" in refused.stderr and "kubetrain queue ls" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert master.client.list_jobs() == []


def test_a_job_without_a_queue_lands_in_the_queue_listing_its_user(master, tmp_path: Path) -> None:
    me = master.client.whoami().name
    master.cli("queue", "create", "others", "--user", "someone-else", check=True)
    master.cli("queue", "create", "mine", "--user", me, check=True)
    go = tmp_path / "go"
    gate = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)"
    master.cli("run", "--name", "plain", "--no-snapshot", "--", "true", check=True)
    master.cli("run", "--name", "chosen", "--queue", "others", "--no-snapshot", "--", "python", "-c", gate,
               check=True)  # an admin may use any queue
    assert master.client.get_job("plain").spec["spec"]["queue"] == "mine"
    assert master.client.get_job("chosen").spec["spec"]["queue"] == "others"
    described = master.cli("describe", "plain", check=True).stdout
    assert any(line.startswith("Queue:") and line.split()[-1] == "mine" for line in described.splitlines())
    assert master.wait_state("plain").state == "Succeeded"
    refused = master.cli("queue", "delete", "others")
    assert refused.returncode == 1 and "queue 'others' still has 1 queued or running job (chosen)" in refused.stderr
    go.touch()
    assert master.wait_state("chosen").state == "Succeeded"
    master.cli("queue", "delete", "others", check=True)


def test_a_member_may_read_queues_but_not_change_them(master, tmp_path: Path) -> None:
    master.cli("queue", "create", "vision", "--team", "vision", check=True)
    master.cli("user", "add", "carol", "--uid", "65534", check=True)
    token = master.cli("token", "create", "--user", "carol", "--expires", "2h", check=True).stdout.strip()
    carol = {**master.env, "XDG_CONFIG_HOME": str(tmp_path / "config"), "KUBETRAIN_URL": master.url,
             "KUBETRAIN_TOKEN": token}
    assert "vision" in master.cli_as(carol, "queue", "ls").stdout
    refused = master.cli_as(carol, "queue", "create", "mine")
    assert refused.returncode == 1 and "only an admin may create queues" in refused.stderr
    refused = master.cli_as(carol, "queue", "delete", "vision")
    assert refused.returncode == 1 and "only an admin may delete queues" in refused.stderr
    submitted = master.cli_as(carol, "run", "--queue", "vision", "--no-snapshot", "--", "true")
    assert submitted.returncode == 1
    assert "spec.queue: queue 'vision' is for teams vision; carol (no team) may not submit to it" in submitted.stderr


def test_a_queue_of_one_cpu_runs_its_jobs_one_at_a_time(master, tmp_path: Path) -> None:
    master.cli("queue", "create", "tight", "--cpu", "1", check=True)
    go = tmp_path / "go"
    gate = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)"
    for name in ("first", "second"):
        master.cli("run", "--name", name, "--queue", "tight", "--cpu", "1", "--memory", "256Mi", "--no-snapshot",
                   "--", "python", "-c", gate, check=True)
    master.wait_state("first", "Running")
    waiting = wait_until(lambda: (j := master.client.get_job("second")).message and "queue 'tight' quota" in j.message
                         and j, what="second's wait reason naming the queue's quota")
    assert waiting.state == "Queued" and not waiting.attempts
    usage = master.client.get_queue("tight").usage
    assert (usage.cpu_millis, usage.running, usage.queued) == (1000, 1, 1)
    # The queue view lists what waits in it, and why.
    described = master.cli("queue", "describe", "tight", check=True).stdout
    [row] = [line for line in described.splitlines() if line.startswith("second ")]
    assert "queue 'tight' quota: needs 1 CPU, 0 of 1 free" in row, described
    go.touch()
    first = master.wait_state("first")
    second = master.wait_state("second")
    assert (first.state, second.state) == ("Succeeded", "Succeeded")
    assert second.attempts[0].started_at >= first.finished_at


def test_an_experiments_trials_are_in_the_queue_chosen_when_it_was_submitted(master) -> None:
    me = master.client.whoami().name
    master.cli("queue", "create", "mine", "--user", me, check=True)
    submitted = master.cli("run", "--array", "0-1", "--name", "arr", "--no-snapshot", "--", "true", check=True)
    assert "experiment/arr submitted" in submitted.stdout
    trials = wait_until(lambda: len(jobs := master.client.list_jobs(selector="kubetrain.io/experiment=arr")) == 2
                        and jobs, what="both array tasks")
    assert sorted(j.spec["spec"]["queue"] for j in trials) == ["mine", "mine"]
    assert master.client.get_experiment("arr").spec["spec"]["template"]["queue"] == "mine"
    for job in trials:
        assert master.wait_state(job.name).state == "Succeeded"
