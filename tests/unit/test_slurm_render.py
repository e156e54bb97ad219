"""What ``sbatch`` is asked for one attempt (pure: resources, selector and deadline in, an argv list out)."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from kubetrain.core.selectors import parse_selector
from kubetrain.engines.slurm.render import (
    SlurmSettings,
    batch_script,
    env_file,
    feature_labels,
    placement,
    sbatch_argv,
    time_limit,
)

NODES = {"node1": {"gpu-type": "a100"}, "node2": {"gpu-type": "v100", "spot": ""}, "node3": {}}


def argv(**changes) -> list[str]:
    given = {"name": "kt.digits.1", "note": "kubetrain master=kt job=digits attempt=1", "cpu_millis": 1500,
             "memory_bytes": (512 << 20) + 1, "gpus": 0, "deadline_seconds": None, "requirements": (),
             "node_labels": NODES, "log_path": "/h/attempts/digits/1/output.log", "workdir": "/h/out",
             "script_path": "/h/attempts/digits/1/batch.sh", "settings": SlurmSettings()}
    given.update(changes)
    return sbatch_argv(**given)


def test_resources_rounded_up_and_no_requeue():
    out = argv()
    assert out[0] == "sbatch" and out[-1] == "/h/attempts/digits/1/batch.sh"
    for flag in ("--no-requeue", "--cpus-per-task=2", "--mem=513M", "--job-name=kt.digits.1",
                 "--comment=kubetrain master=kt job=digits attempt=1", "--output=/h/attempts/digits/1/output.log",
                 "--chdir=/h/out", "--parsable"):
        assert flag in out
    assert not any(a.startswith(("--gres", "--time", "--constraint", "--exclude", "--partition", "--uid")) for a in out)


def test_gpus_deadline_partition_account_and_owner():
    out = argv(gpus=2, deadline_seconds=61, settings=SlurmSettings(partition="gpu", account="lab"), run_as=(1001, 100))
    for flag in ("--gres=gpu:2", "--time=0-00:02:00", "--partition=gpu", "--account=lab", "--uid=1001", "--gid=100"):
        assert flag in out


@pytest.mark.parametrize("seconds, limit", [
    (1, "0-00:01:00"), (60, "0-00:01:00"), (61, "0-00:02:00"), (3600, "0-01:00:00"), (90000, "1-01:00:00"),
])
def test_time_limit_whole_minutes_rounded_up(seconds, limit):
    assert time_limit(seconds) == limit


@pytest.mark.parametrize("selector, constraint, exclude", [
    ("", None, ()),
    ("gpu-type=a100", "gpu-type=a100", ()),
    ("gpu-type in (a100, v100)", "(gpu-type=a100|gpu-type=v100)", ()),
    ("gpu-type=a100,fast", "gpu-type=a100&fast", ()),  # a plain-word feature
    ("gpu-type", "(gpu-type=a100|gpu-type=v100)", ()),  # exists: any value nodes have
    ("spot", "spot", ()),
    ("gpu-type!=a100", None, ("node1",)),  # Slurm has no NOT: exclude the nodes that fail it
    ("!spot", None, ("node2",)),
    ("gpu-type notin (a100, v100)", None, ("node1", "node2")),
    ("gpu-type=v100,!spot", "gpu-type=v100", ("node2",)),
])
def test_selector_to_constraint(selector, constraint, exclude):
    assert placement(parse_selector(selector), NODES) == (constraint, exclude)


def test_selector_lands_on_the_command_line():
    out = argv(requirements=parse_selector("gpu-type=a100,!spot"))
    assert "--constraint=gpu-type=a100" in out and "--exclude=node2" in out


@pytest.mark.parametrize("features, labels", [
    (["gpu-type=a100", "fast"], {"gpu-type": "a100", "fast": ""}),
    ([], {}),
    (["zone=eu=1"], {"zone": "eu=1"}),
])
def test_features_are_labels(features, labels):
    assert feature_labels(features) == labels


def test_env_file_quotes_every_value(tmp_path):
    values = {"A": "it's $HOME `x` \"q\"\nline", "KUBETRAIN_JOB": "digits", "EMPTY": ""}
    (tmp_path / "env.sh").write_text(env_file(values))
    command = f". {shlex.quote(str(tmp_path / 'env.sh'))}; printf '%s|%s|%s' \"$A\" \"$KUBETRAIN_JOB\" \"$EMPTY\""
    out = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=True).stdout
    assert out == "it's $HOME `x` \"q\"\nline|digits|"


@pytest.mark.parametrize("shell, argv_, expected", [
    (False, ["python", "-c", "import sys; print('a b'); sys.exit(3)"], "a b\n"),
    (True, ["echo", "$GREETING", "&&", "exit 3"], "hi there\n"),
])
def test_batch_script_runs_the_command_and_keeps_its_exit_status(tmp_path, shell, argv_, expected):
    (tmp_path / "env.sh").write_text(env_file({"GREETING": "hi there"}))
    script = batch_script(argv_, attempt_dir=str(tmp_path), job="digits", number=1, shell=shell)
    assert "GREETING" not in script.replace("$GREETING", "")  # variables (the token) stay in the 0600 file
    (tmp_path / "batch.sh").write_text(script)
    done = subprocess.run(["/bin/sh", str(tmp_path / "batch.sh")], capture_output=True, text=True, check=False)
    assert done.returncode == 3 and done.stdout == expected
    assert (tmp_path / "exit_code").read_text().strip() == "3"


def test_sbatch_passes_on_no_secret_of_the_masters_environment():
    from kubetrain.engines.slurm.engine import submit_env

    master = {"PATH": "/usr/bin", "LC_ALL": "C", "SLURM_CONF": "/etc/slurm/slurm.conf", "KUBETRAIN_TOKEN": "t",
              "KUBETRAIN_DATABASE_URL": "postgresql://u:p@db/kt", "AWS_SECRET_ACCESS_KEY": "k"}
    assert submit_env(master) == {"PATH": "/usr/bin", "LC_ALL": "C", "SLURM_CONF": "/etc/slurm/slurm.conf"}
