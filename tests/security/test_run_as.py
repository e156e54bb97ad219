"""Jobs run as their submitter, never as the master: what a job's user can and cannot reach.

Each attack is a shell command run by the job itself, as a throw-away OS
user; each probe prints ``DENIED <what>`` or ``ALLOWED <what>``, and every
test also checks that the outcome recorded is the true one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from kubetrain.core.attempts import RunAs
from kubetrain.core.specs import JobSpec
from kubetrain.core.states import Reason
from kubetrain.engines.local import environments
from kubetrain.engines.local.engine import LocalEngine
from kubetrain.settings import load_settings
from tests.conftest import wait_until
from tests.security.conftest import Harness, make_spec, needs_root, start_harness


def probes(checks: dict[str, str]) -> str:
    """A script that runs each check and says whether it was allowed; stderr is kept out of the verdicts."""
    return "\n".join(f"if {command} >/dev/null 2>&1; then echo 'ALLOWED {what}'; else echo 'DENIED {what}'; fi"
                     for what, command in checks.items())


def verdicts(log: str) -> dict[str, str]:
    found = {}
    for line in log.splitlines():
        verdict, _, what = line.partition(" ")
        if verdict in ("ALLOWED", "DENIED"):
            found[what] = verdict
    return found


def assert_all_denied(log: str, checks: dict[str, str]) -> None:
    found = verdicts(log)
    assert set(found) == set(checks), log
    allowed = [what for what, verdict in found.items() if verdict == "ALLOWED"]
    assert not allowed, f"the job could: {allowed}\n{log}"


def processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


@needs_root
@pytest.mark.parametrize("harness", [0, 2], indirect=True, ids=["forked-supervisor", "spare-supervisor"])
def test_job_runs_as_its_submitter_with_no_capability_left(harness: Harness, users) -> None:
    """Both ways a supervisor starts a job (a fresh fork, a spare's stub already in its cgroups) switch user."""
    alice = users()
    attempt = harness.run("id -u; id -g; id -G; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' "
                          "/proc/self/status; echo \"HOME=$HOME USER=$USER LOGNAME=$LOGNAME\"", run_as=alice)
    outcome = harness.wait(attempt)
    log = harness.log(attempt)
    assert outcome.reason == Reason.COMPLETED and outcome.exit_code == 0, (outcome, log)
    lines = log.splitlines()
    assert lines[0] == str(alice.uid) and lines[1] == str(alice.gid), log
    assert set(lines[2].split()) == {str(g) for g in alice.groups}, log
    fields = dict(line.split(":\t") for line in lines[3:9])
    assert {name: int(value, 16) for name, value in fields.items() if name.startswith("Cap")} == {
        "CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}, log
    assert fields["NoNewPrivs"] == "1", log
    assert lines[9] == f"HOME={alice.home} USER={alice.user} LOGNAME={alice.user}", log
    info = json.loads((harness.control_dir(attempt) / "supervisor.json").read_text())
    used_spare = any("/spare-" in path for path in info["cgroup"]["dirs"].values())
    assert used_spare == (os.environ["KUBETRAIN_SPARES"] != "0")


@needs_root
def test_job_cannot_read_or_forge_control_files_the_database_or_the_agent(harness: Harness, users) -> None:
    alice = users()
    database = harness.home / "kubetrain.db"  # no master here: a stand-in with the master's mode
    database.write_text("SQLite format 3\0")
    database.chmod(0o600)
    earlier = harness.run("echo earlier", run_as=alice)
    assert harness.wait(earlier).reason == Reason.COMPLETED
    other = harness.control_dir(earlier)
    name = f"job-{secrets.token_hex(3)}"
    own = harness.engine.attempt_dir(name, 1)
    home = harness.home
    checks = {
        "read-own-launch.json": f"cat {own}/launch.json",
        "forge-own-status.json": f"echo '{{\"reason\": \"Completed\"}}' > {own}/status.json",
        "append-own-launch.json": f"echo x >> {own}/launch.json",
        "read-other-launch.json": f"cat {other}/launch.json",
        "forge-other-status.json": f"echo '{{\"reason\": \"Error\"}}' > {other}/status.json",
        "read-other-log": f"cat {other}/output.log",
        "cancel-other": f"touch {other}/cancel",
        "list-home": f"ls {home}",
        "list-attempts": f"ls {home}/attempts",
        "list-volumes": f"ls {home}/volumes",
        "list-workspaces": f"ls {home}/workspaces",
        "open-database": f"cat {database}",
        "read-agent-environ": f"cat /proc/{harness.agent_pid()}/environ",
        "read-agent-log": f"cat {home}/run/agent.log",
    }
    attempt = harness.run(probes(checks) + "\nexit 3", run_as=alice, name=name)
    outcome = harness.wait(attempt)
    log = harness.log(attempt)
    assert_all_denied(log, checks)
    # The recorded outcomes are the true ones: this job exited 3, the earlier one 0.
    assert (outcome.reason, outcome.exit_code) == (Reason.ERROR, 3), (outcome, log)
    assert (harness.wait(earlier).reason, harness.wait(earlier).exit_code) == (Reason.COMPLETED, 0)
    assert not (other / "cancel").exists()


@needs_root
def test_job_cannot_leave_its_cgroup_and_cancel_leaves_nothing_of_it(harness: Harness, users) -> None:
    alice = users()
    script = probes({f"move-to-{path}": f"echo $$ > {path}" for path in (
        "/sys/fs/cgroup/memory/tasks", "/sys/fs/cgroup/memory/cgroup.procs", "/sys/fs/cgroup/pids/cgroup.procs",
        "/sys/fs/cgroup/cpu/cgroup.procs")})
    attempt = harness.run(script + "\nsetsid sh -c 'sleep 300' & sleep 300 & echo started; wait", run_as=alice)
    wait_until(lambda: "started" in harness.log(attempt), timeout=30, what="the job to start its children")
    log = harness.log(attempt)
    assert verdicts(log) and set(verdicts(log).values()) == {"DENIED"}, log
    assert len(processes_of(alice.uid)) >= 3  # the shell, a detached sleep, a sleep in its group
    harness.engine.cancel(attempt)
    outcome = harness.wait(attempt)
    assert outcome.reason == Reason.CANCELLED, outcome
    wait_until(lambda: not processes_of(alice.uid), timeout=10, what=f"every process of {alice.user} to be gone")


@needs_root
def test_read_only_volume_cannot_be_made_writable(harness: Harness, users) -> None:
    alice = users()
    harness.engine.provision_volume("models", None)
    volume = harness.engine.volume_dir("models")
    (volume / "model.txt").write_text("weights-v1\n")
    target = f"/mnt/kt-{secrets.token_hex(4)}/models"
    checks = {
        "write": f"touch {target}/evil",
        "remount-rw": f"mount -o remount,rw {target}",
        "remount-bind-rw": f"mount -o remount,bind,rw {target}",
        "umount": f"umount {target}",
        "user-namespace-remount": f"unshare -Urm sh -c 'mount -o remount,bind,rw {target} && touch {target}/evil'",
        "host-path": f"touch {volume}/evil",
        "write-after": f"touch {target}/evil",
    }
    attempt = harness.run(f"cat {target}/model.txt\n" + probes(checks), run_as=alice,
                          volumes=[{"name": "models", "mountPath": target, "readOnly": True}])
    outcome = harness.wait(attempt)
    log = harness.log(attempt)
    assert outcome.reason == Reason.COMPLETED, (outcome, log)
    assert log.startswith("weights-v1\n"), log
    assert_all_denied(log, checks)
    assert sorted(os.listdir(volume)) == ["model.txt"]
    assert not Path(target).parent.exists()  # the mount point was made inside the job only


@needs_root
def test_sub_path_through_a_link_planted_by_an_earlier_job_is_refused(harness: Harness, users) -> None:
    mallory, alice = users(), users()
    mount = f"/mnt/kt-{secrets.token_hex(4)}"
    planted = harness.run(f"ln -s /etc {mount}/evil && ln -s / {mount}/root && mkdir {mount}/real && "
                          f"ln -s /root {mount}/real/home", run_as=mallory,
                          volumes=[{"name": "shared", "mountPath": mount}])
    assert harness.wait(planted).reason == Reason.COMPLETED, harness.log(planted)
    for sub_path, link in (("evil", "evil"), ("root/etc", "root"), ("real/home/.ssh", "real/home")):
        victim = harness.run("echo ran; ls", run_as=alice,
                             volumes=[{"name": "shared", "mountPath": "/mnt/data", "subPath": sub_path}])
        outcome = harness.wait(victim)
        assert outcome.reason == Reason.ERROR, (sub_path, outcome, harness.log(victim))
        assert outcome.message.startswith(f"spec.volumes[0].subPath {sub_path!r}: {link} is a symbolic link"), outcome
        assert "ran" not in harness.log(victim)
    # A real folder of the volume still works, and is made when missing.
    fine = harness.run("echo ok > /mnt/data/file", run_as=alice,
                       volumes=[{"name": "shared", "mountPath": "/mnt/data", "subPath": "real/new"}])
    assert harness.wait(fine).reason == Reason.COMPLETED, harness.log(fine)
    assert (harness.engine.volume_dir("shared") / "real" / "new" / "file").read_text() == "ok\n"
    assert not Path("/mnt/data").exists()


@needs_root
def test_a_missing_mount_path_is_made_only_inside_the_job(harness: Harness, users) -> None:
    alice = users()
    top = Path("/mnt") / f"kt-{secrets.token_hex(4)}"
    target = top / "deep" / "data"
    attempt = harness.run(f"echo hello > {target}/file && ls -a /mnt", run_as=alice,
                          volumes=[{"name": "scratch", "mountPath": str(target)}])
    outcome = harness.wait(attempt)
    log = harness.log(attempt)
    assert outcome.reason == Reason.COMPLETED, (outcome, log)
    assert set(os.listdir("/mnt")) | {top.name, ".", ".."} == set(log.split()), log  # /mnt as it was, plus the path
    assert (harness.engine.volume_dir("scratch") / "file").read_text() == "hello\n"
    assert not top.exists()
    # Right under / a mirror would need a new root file system: refused, with the field, the value and the fix.
    root_level = f"/kt-{secrets.token_hex(4)}"
    refused = harness.run("echo ran", run_as=alice, volumes=[{"name": "scratch", "mountPath": root_level}])
    outcome = harness.wait(refused)
    assert outcome.reason == Reason.ERROR, outcome
    assert outcome.message.startswith(f"spec.volumes[0].mountPath {root_level!r}:"), outcome
    assert f"mkdir {root_level}" in outcome.message and "/mnt/" in outcome.message
    assert "ran" not in harness.log(refused)
    assert not os.path.exists(root_level)


@needs_root
def test_another_users_job_cannot_read_its_environment_secret_or_files(harness: Harness, users) -> None:
    alice, bob = users(), users()
    secret = f"s3cr3t-{secrets.token_hex(8)}"
    victim = harness.run("echo ready; sleep 120", run_as=alice, secret_env={"API_KEY": secret})
    pid = harness.wait_running(victim)
    wait_until(lambda: "ready" in harness.log(victim), timeout=30, what="alice's job to run")
    with open(f"/proc/{pid}/environ", "rb") as fh:
        assert f"API_KEY={secret}".encode() in fh.read().split(b"\0")  # delivered to alice's job...
    workspace_dir = harness.workspace(victim)
    checks = {
        "read-environ": f"cat /proc/{pid}/environ",
        "signal": f"kill -0 {pid}",
        "list-workspace": f"ls {workspace_dir}",
        "read-params": f"cat {workspace_dir}/params.json",
        "list-output": f"ls {workspace_dir}/output",
        "read-launch.json": f"cat {harness.control_dir(victim)}/launch.json",
        "list-output-on-host": f"ls {harness.engine.output_dir(victim.job)}",
    }
    attacker = harness.run(probes(checks) + "\ngrep -r API_KEY /proc/*/environ 2>/dev/null; true", run_as=bob)
    outcome = harness.wait(attacker)
    log = harness.log(attacker)
    assert outcome.reason == Reason.COMPLETED, (outcome, log)
    assert_all_denied(log, checks)
    assert secret not in log  # ...and to no one else
    harness.engine.cancel(victim)
    assert harness.wait(victim).reason == Reason.CANCELLED


@needs_root
def test_environment_is_explicit_never_the_masters(harness: Harness, users, monkeypatch) -> None:
    alice = users()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "master-only")
    monkeypatch.setenv("LC_MESSAGES", "C")
    attempt = harness.run("env", run_as=alice, secret_env={"DB_PASSWORD": "pw-for-this-job"},
                          env={"OMP_NUM_THREADS": "1"})
    assert harness.wait(attempt).reason == Reason.COMPLETED
    env = dict(line.split("=", 1) for line in harness.log(attempt).splitlines() if "=" in line)
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["DB_PASSWORD"] == "pw-for-this-job" and env["OMP_NUM_THREADS"] == "1" and env["LC_MESSAGES"] == "C"
    assert not any(part.startswith("/root") for part in env["PATH"].split(":")), env["PATH"]
    allowed = {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "HOME", "USER", "LOGNAME", "DB_PASSWORD", "OMP_NUM_THREADS",
               "PYTHONUNBUFFERED", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "PWD", "SHLVL", "_"}
    unexpected = {k for k in env if k not in allowed and not k.startswith(("LC_", "KUBETRAIN_"))}
    assert not unexpected, unexpected
    launch = harness.control_dir(attempt) / "launch.json"
    assert stat.S_IMODE(launch.stat().st_mode) == 0o600 and launch.stat().st_uid == 0


@needs_root
def test_python_the_user_cannot_run_ends_the_attempt_with_the_path_and_the_fix(harness: Harness, users) -> None:
    alice = users()
    for argv in (["python", "-c", "print('ran')"], [os.path.realpath(sys.executable), "-c", "print('ran')"]):
        attempt = harness.run(argv, run_as=alice)
        outcome = harness.wait(attempt)
        assert outcome.reason == Reason.ERROR, outcome
        assert outcome.message.startswith("spec.command: python here is the master's interpreter"), outcome
        assert "cannot run: the folder /root is mode 0700" in outcome.message
        assert "install kubetrain where its users can run it" in outcome.message.lower()
        assert outcome.message in harness.log(attempt) and "ran" not in harness.log(attempt)
    # An interpreter the user may run is theirs to use, and so is anything else on the system PATH.
    system = harness.run(["/usr/bin/python3", "-c", "import os; print(os.getuid())"], run_as=alice)
    assert harness.wait(system).reason == Reason.COMPLETED, harness.log(system)
    assert harness.log(system).strip() == str(alice.uid)


@needs_root
def test_control_folder_is_roots_and_the_workspace_and_output_are_the_users(harness: Harness, users) -> None:
    alice = users()
    attempt = harness.run("touch \"$KUBETRAIN_OUTPUT_DIR/model\" \"$KUBETRAIN_CHECKPOINT_DIR/step-1\" && "
                          "cat \"$KUBETRAIN_ATTEMPT_DIR/params.json\"", run_as=alice, params={"lr": 0.5})
    outcome = harness.wait(attempt)
    assert outcome.reason == Reason.COMPLETED, (outcome, harness.log(attempt))
    assert json.loads(harness.log(attempt)) == {"lr": 0.5}

    def mode(path: Path) -> tuple[int, int]:
        st = path.lstat()
        return stat.S_IMODE(st.st_mode), st.st_uid

    home = harness.home
    control = harness.control_dir(attempt)
    output = harness.engine.output_dir(attempt.job)
    assert mode(home) == (0o711, 0)
    for name, expected in (("attempts", 0o700), ("snapshots", 0o700), ("volumes", 0o700), ("envs", 0o711),
                           ("workspaces", 0o711), ("run", 0o711)):
        assert mode(home / name) == (expected, 0), name
    assert mode(control) == (0o700, 0) and mode(control.parent) == (0o700, 0)
    for name in ("launch.json", "status.json", "supervisor.json", "claim", "output.log"):
        assert mode(control / name) == (0o600, 0), name
    assert mode(harness.workspace(attempt)) == (0o700, alice.uid)
    assert mode(harness.workspace(attempt).parent) == (0o711, 0)
    assert mode(harness.workspace(attempt) / "params.json")[1] == alice.uid
    assert mode(harness.engine.volume_dir("results")) == (0o700, 0)
    assert mode(output) == (0o700, alice.uid) and mode(output / "checkpoints") == (0o700, alice.uid)
    assert (output / "model").stat().st_uid == alice.uid and (output / "checkpoints" / "step-1").exists()


@needs_root
def test_output_links_left_by_a_job_make_root_change_nothing_else(harness: Harness, users) -> None:
    """The output folder is the user's across attempts: root's set-up of the next one follows none of its links."""
    alice = users()
    victim = Path(f"/tmp/kt-victim-{secrets.token_hex(4)}")
    victim.mkdir(mode=0o700)
    try:
        first = harness.run(f"rmdir \"$KUBETRAIN_CHECKPOINT_DIR\" && ln -s {victim} \"$KUBETRAIN_CHECKPOINT_DIR\"",
                            run_as=alice, name="linker")
        assert harness.wait(first).reason == Reason.COMPLETED, harness.log(first)
        second = harness.run("true", run_as=alice, name="linker", number=2)
        assert harness.wait(second).reason == Reason.COMPLETED
        assert mode_owner(victim) == (0o700, 0)
    finally:
        victim.rmdir()


def mode_owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid


def test_environments_are_built_open_to_every_user(tmp_path: Path) -> None:
    """A build under the agent's umask 077 still leaves an environment every job's user can run."""
    home = tmp_path / "env"
    (home / "bin").mkdir(parents=True)
    (home / "lib").mkdir()
    (home / "bin" / "python").write_text("#!/bin/sh\n")
    (home / "bin" / "python").chmod(0o700)
    (home / "lib" / "site.py").write_text("")
    (home / "lib" / "site.py").chmod(0o600)
    (home / "bin" / "python3").symlink_to("python")
    for path in (home, home / "bin", home / "lib"):
        path.chmod(0o700)
    environments._open_to_all(str(home))
    assert mode_owner(home)[0] == 0o755 and mode_owner(home / "bin")[0] == 0o755
    assert mode_owner(home / "bin" / "python")[0] == 0o755 and mode_owner(home / "lib" / "site.py")[0] == 0o644


def test_a_master_that_is_not_root_refuses_to_run_jobs_as_another_user(tmp_path: Path, monkeypatch) -> None:
    engine = LocalEngine(load_settings({"KUBETRAIN_HOME": str(tmp_path)}))
    body = JobSpec.model_validate(make_spec("x", ["id"])).spec
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    message = engine._refusal(body, ["id"], RunAs(user="bob", uid=1001, gid=1001), home_covered=False)
    assert message is not None and message.startswith(
        "this master runs as uid 1000, not root, so it cannot run jobs as bob (uid 1001); run the master as root")


@needs_root
def test_a_home_under_a_folder_closed_to_the_user_shows_the_job_its_own_files_only(users, monkeypatch) -> None:
    """``/root/.kubetrain`` and the like: the closed folder is covered in the job's view, its files bound through."""
    monkeypatch.setenv("KUBETRAIN_SPARES", "2")
    closed = Path(tempfile.mkdtemp(prefix="kt-closed-", dir="/tmp"))  # 0700, root's
    (closed / "private.txt").write_text("root only")
    harness = start_harness(closed / "home")
    try:
        alice = users()
        checks = {"list-closed": f"ls {closed}", "read-private": f"cat {closed}/private.txt",
                  "list-attempts": f"ls {closed}/home/attempts", "read-db": f"ls {closed}/home/run"}
        attempt = harness.run('cat "$KUBETRAIN_ATTEMPT_DIR/params.json" && echo saved > "$KUBETRAIN_OUTPUT_DIR/x" && '
                              f"ls {closed}/home\n" + probes(checks), run_as=alice, params={"lr": 0.1})
        outcome = harness.wait(attempt)
        log = harness.log(attempt)
        assert outcome.reason == Reason.COMPLETED, (outcome, log)
        assert log.startswith('{\n  "lr": 0.1\n}\nworkspaces\n'), log  # the way to its workspace, nothing else
        assert_all_denied(log, checks)
        assert (harness.engine.output_dir(attempt.job) / "x").read_text() == "saved\n"
        assert stat.S_IMODE(closed.stat().st_mode) == 0o700 and sorted(os.listdir(closed)) == ["home", "private.txt"]
    finally:
        harness.stop()
        shutil.rmtree(closed, ignore_errors=True)


@needs_root
def test_job_reads_its_own_limits_but_cannot_change_them(harness: Harness, users) -> None:
    alice = users()
    attempt = harness.run('group=$(grep -E "^[0-9]+:memory:" /proc/self/cgroup | cut -d: -f3); '
                          'cat "/sys/fs/cgroup/memory$group/memory.limit_in_bytes"\n'
                          + probes({"raise-limit": 'echo -1 > "/sys/fs/cgroup/memory$group/memory.limit_in_bytes"'}),
                          run_as=alice)
    outcome = harness.wait(attempt)
    log = harness.log(attempt)
    assert outcome.reason == Reason.COMPLETED, (outcome, log)
    assert log.splitlines()[0] == str(128 * 2**20), log
    assert_all_denied(log, {"raise-limit": ""})
