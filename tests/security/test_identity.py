"""Identity end to end: a root master shared by throw-away OS users, driven by the plain CLI.

What a team sees: two users submit with no configuration but a shared
``KUBETRAIN_HOME``; each job runs as its submitter; the owner comes from the
kernel (the Unix socket's peer credentials), never from the client; a member
may not cancel another's job, an admin may; TCP needs a token on loopback
too; a secret reaches its job and nowhere else.

Needs root (useradd, a master that switches users).  The project's
interpreter may sit under a 0700 home (``/root/.pyenv``): as an admin would
install kubetrain where its users can run it, the fixture lets the
throw-away users traverse the folders above it for the module's duration.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from kubetrain.sdk.client import Client
from kubetrain.server.daemon import read_local_token, read_master, start_background, stop_master
from kubetrain.settings import load_settings
from tests.conftest import KUBETRAIN, make_env, wait_until

RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and useradd (runs jobs as throw-away OS users)")


def _blocked_ancestors(path: str) -> list[Path]:
    """Folders above ``path`` that other users cannot traverse."""
    out = []
    for parent in Path(os.path.realpath(path)).parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            out.append(parent)
    return out


@pytest.fixture(scope="module")
def reachable_install():
    """Let other users run this checkout's interpreter and CLI (restored afterwards)."""
    blocked = sorted({p for exe in (sys.executable, KUBETRAIN) for p in _blocked_ancestors(exe)})
    modes = {p: p.stat().st_mode for p in blocked}
    for p in blocked:
        p.chmod(stat.S_IMODE(modes[p]) | stat.S_IXOTH)
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(stat.S_IMODE(mode))


@pytest.fixture(scope="module")
def users(reachable_install):
    """Two throw-away OS users, removed at the end."""
    made = []
    for who in ("alice", "bob"):
        name = f"kt{who[:3]}{secrets.token_hex(3)}"
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
        made.append(name)
    try:
        yield {"alice": pwd.getpwnam(made[0]), "bob": pwd.getpwnam(made[1])}
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False, capture_output=True)


class Team:
    """A root master in a shared home, and a way to run the CLI as any of its users."""

    def __init__(self, home: Path, env: dict[str, str], users: dict[str, pwd.struct_passwd], work: Path) -> None:
        self.home, self.env, self.users, self.work = home, env, users, work
        self.admin = Client.local(str(home))

    def cli(self, who: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``kubetrain ARGS`` as OS user ``who`` (or root for "root"), with only KUBETRAIN_HOME set."""
        env = {"KUBETRAIN_HOME": str(self.home), "PATH": f"{Path(KUBETRAIN).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        if who == "root":
            argv, cwd = [KUBETRAIN, *args], self.work
        else:
            user = self.users[who]
            env["HOME"] = str(self.work / who)
            argv, cwd = [RUNUSER, "-u", user.pw_name, "--", KUBETRAIN, *args], self.work / who
        result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{who}: kubetrain {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def run(self, who: str, *command: str) -> str:
        out = self.cli(who, "run", "-o", "json", "--cpu", "100m", "--memory", "64Mi", "--", *command)
        return json.loads(out.stdout)[0]["name"]

    def wait(self, name: str, *states: str, timeout: float = 60):
        wanted = states or ("Succeeded", "Failed", "Cancelled")
        return wait_until(lambda: (j := self.admin.get_job(name)).state in wanted and j, timeout=timeout,
                          what=f"{name} to reach {wanted}")


@pytest.fixture(scope="module")
def team(users):
    base = Path(tempfile.mkdtemp(prefix="kt-team-", dir="/tmp"))
    base.chmod(0o711)
    home = base / "home"
    work = base / "work"
    for who, user in users.items():
        (work / who).mkdir(parents=True)
        (work / who / "train.py").write_text("print('hello')\n")
        os.chown(work / who, user.pw_uid, user.pw_gid)
        os.chown(work / who / "train.py", user.pw_uid, user.pw_gid)
    work.chmod(0o755)
    env = make_env(home)
    del env["KUBETRAIN_ALLOW_ROOT_JOBS"]  # the default: jobs never run as root here
    settings = load_settings(env)
    start_background(settings, env=env)
    try:
        yield Team(home, env, users, work)
    finally:
        stop_master(settings)
        shutil.rmtree(base, ignore_errors=True)


def test_each_job_runs_as_its_submitter_and_names_its_owner(team: Team) -> None:
    jobs = {who: team.run(who, "id", "-u") for who in ("alice", "bob")}
    for who, name in jobs.items():
        job = team.wait(name)
        assert job.state == "Succeeded", (job.state, job.message)
        assert team.cli(who, "logs", name).stdout.strip() == str(team.users[who].pw_uid)
        assert job.provenance.submitter == team.users[who].pw_name
        described = team.cli("bob", "describe", name).stdout  # members see every job
        assert "Owner" in described and team.users[who].pw_name in described


def test_a_member_cannot_cancel_another_members_job_but_an_admin_can(team: Team) -> None:
    alice, bob = team.users["alice"].pw_name, team.users["bob"].pw_name
    name = team.run("alice", "sleep", "60")
    team.wait(name, "Running")
    refused = team.cli("bob", "cancel", name, check=False)
    assert refused.returncode != 0
    assert f"belongs to {alice}" in refused.stderr and "Traceback" not in refused.stderr
    # The same over TCP with bob's token: a 403 naming the owner.
    token = team.cli("bob", "token", "create", "--expires", "1h").stdout.strip()
    url = read_master(load_settings(team.env))["url"]
    response = httpx.post(f"{url}/api/v1/jobs/{name}/cancel", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and alice in response.json()["message"], response.text
    assert team.admin.get_job(name).state == "Running"
    assert team.cli("bob", "whoami").stdout.startswith(f"{bob} (member, via socket")
    team.cli("root", "cancel", name)  # the master's own user is its first admin
    assert team.wait(name).state == "Cancelled"


def test_tcp_needs_a_token_on_loopback_too(team: Team) -> None:
    url = read_master(load_settings(team.env))["url"]
    assert url.startswith("http://127.0.0.1:")
    bare = httpx.get(f"{url}/api/v1/jobs")
    assert bare.status_code == 401 and "token" in bare.json()["message"]
    assert httpx.get(f"{url}/api/v1/jobs", headers={"Authorization": "Bearer kt_nope_nope"}).status_code == 401
    token = read_local_token(load_settings(team.env))
    assert httpx.get(f"{url}/api/v1/jobs", headers={"Authorization": f"bearer {token}"}).status_code == 200


def test_home_is_private_but_the_socket_is_reachable(team: Team) -> None:
    home = team.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o711
    assert stat.S_IMODE((home / "kubetrain.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "run" / "token").stat().st_mode) == 0o600
    peek = team.cli("alice", "whoami")  # through the socket, as alice
    assert team.users["alice"].pw_name in peek.stdout
    listing = subprocess.run([RUNUSER, "-u", team.users["alice"].pw_name, "--", "ls", str(home)],
                             capture_output=True, text=True)
    assert listing.returncode != 0, listing.stdout


def test_a_secret_reaches_its_job_and_nowhere_else(team: Team) -> None:
    value = "s3cr3t-" + secrets.token_hex(8)
    team.cli("alice", "secret", "create", "hf", "--from-literal", f"token={value}")
    spec = team.work / "alice" / "job.yaml"
    spec.write_text(json.dumps({"spec": {
        "command": ["sh", "-c", 'printf %s "$HF_TOKEN" | sha256sum'],  # proves the value without printing it
        "resources": {"cpu": "100m", "memory": "64Mi"},
        "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]}}))
    os.chown(spec, team.users["alice"].pw_uid, team.users["alice"].pw_gid)
    name = json.loads(team.cli("alice", "submit", "-f", str(spec), "-o", "json").stdout)[0]["name"]
    job = team.wait(name)
    assert job.state == "Succeeded", job.message
    assert team.cli("alice", "logs", name).stdout.split()[0] == hashlib.sha256(value.encode()).hexdigest()
    # Nowhere to be read: the stored spec, describe, the API's lists, the master's log, files others can read.
    assert value not in team.cli("alice", "describe", name, "-o", "json").stdout
    assert value not in team.cli("alice", "secret", "ls", "-o", "json").stdout
    for path in team.home.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & stat.S_IROTH:
            assert value.encode() not in path.read_bytes(), f"{path} is readable by others and holds the secret"
    log = team.home / "run" / "master.log"
    assert not log.exists() or value.encode() not in log.read_bytes()
    # Bob may not use alice's secret.
    bob_spec = team.work / "bob" / "job.yaml"
    bob_spec.write_text(spec.read_text())
    os.chown(bob_spec, team.users["bob"].pw_uid, team.users["bob"].pw_gid)
    refused = team.cli("bob", "submit", "-f", str(bob_spec), check=False)
    assert refused.returncode != 0 and "belongs to" in refused.stderr, refused.stderr


def test_root_jobs_are_refused_unless_allowed(team: Team) -> None:
    refused = team.cli("root", "run", "--", "id", "-u", check=False)
    assert refused.returncode != 0
    assert "run as root" in refused.stderr and "allowRootJobs" in refused.stderr, refused.stderr


ATTACKS = r'''
home=$1; master=$2; other=$3
attempt="$home/attempts/$KUBETRAIN_JOB/1"
try() { if sh -c "$1" >/dev/null 2>&1; then echo "ALLOWED: $1"; else echo "denied: $1"; fi; }
try "echo '{\"reason\": \"Completed\", \"exit_code\": 0}' > $attempt/status.json"
try "cat $attempt/launch.json"
try "echo x >> $attempt/output.log"
try "cat $home/kubetrain.db"
try "cat $home/run/token"
try "ls $home"
try "cat /proc/$master/environ"
try "cat /proc/$other/environ"
try "echo $$ > /sys/fs/cgroup/memory/tasks"
try "echo $$ > /sys/fs/cgroup/pids/tasks"
exit 3
'''


def test_a_hostile_job_is_denied_everything_and_its_true_outcome_is_recorded(team: Team) -> None:
    """Alice's job tries to forge its status, read the master's secrets, reach bob's job, leave its cgroups."""
    bob_job = team.run("bob", "sleep", "60")
    team.wait(bob_job, "Running")
    bob_uid = str(team.users["bob"].pw_uid)
    other = wait_until(lambda: subprocess.run(["pgrep", "-u", bob_uid, "-x", "sleep"], capture_output=True,
                                              text=True).stdout.split(), what="bob's job's process")[0]
    master_pid = str(read_master(load_settings(team.env))["pid"])
    name = team.run("alice", "sh", "-c", ATTACKS, "attack", str(team.home), master_pid, other)
    job = team.wait(name)
    log = team.cli("alice", "logs", name).stdout
    assert "ALLOWED" not in log, log
    assert log.count("denied:") == 10, log
    assert job.state == "Failed" and job.attempts[-1].exit_code == 3, (job.state, job.message)
    assert len(job.attempts) == 1
    team.cli("bob", "cancel", bob_job)
    assert team.wait(bob_job).state == "Cancelled"


def test_kubetrain_url_may_name_the_socket_and_nobody_else_starts_a_master_in_the_home(team: Team) -> None:
    bob = team.users["bob"]
    sock = team.home / "run" / "kubetrain.sock"
    env = {"KUBETRAIN_URL": f"unix://{sock}", "HOME": str(team.work / "bob"), "PATH": "/usr/bin:/bin"}
    whoami = subprocess.run([RUNUSER, "-u", bob.pw_name, "--", KUBETRAIN, "whoami"], env=env, capture_output=True,
                            text=True, timeout=60, cwd=team.work / "bob")
    assert whoami.returncode == 0 and whoami.stdout.startswith(f"{bob.pw_name} (member, via socket"), whoami.stderr
    # With the master down, another user's CLI says whose home it is instead of starting a second master there.
    settings = load_settings(team.env)
    stop_master(settings)
    try:
        refused = team.cli("bob", "get", "jobs", check=False)
        assert refused.returncode != 0 and "belongs to root" in refused.stderr, refused.stderr
        assert not sock.exists()
    finally:
        start_background(settings, env=team.env)


def _wheel(path: Path, payload: str) -> Path:
    """A minimal wheel whose .pth file runs ``payload`` in every interpreter of the venv it lands in."""
    import zipfile

    wheel = path / "proof-1.0-py3-none-any.whl"
    files = {
        "proof.pth": payload + "\n",
        "proof-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: proof\nVersion: 1.0\n",
        "proof-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "proof-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in {**files, "proof-1.0.dist-info/RECORD": record}.items():
            archive.writestr(name, text)
    return wheel


def test_an_environment_is_built_as_its_user_never_as_root(team: Team) -> None:
    """pip runs a package's code (.pth, build steps): a member's requirements must never run as root."""
    alice = team.users["alice"]
    proof = team.work / "proof.txt"
    proof.touch()
    proof.chmod(0o666)
    wheel = _wheel(team.work / "alice", f"import os; open({str(proof)!r}, 'a').write(f'{{os.getuid()}}\\n')")
    os.chown(wheel, alice.pw_uid, alice.pw_gid)
    spec = team.work / "alice" / "env.yaml"
    spec.write_text(json.dumps({"spec": {"command": ["sh", "-c", "echo built"], "environment": {
        "requirements": [str(wheel)]}, "resources": {"cpu": "500m", "memory": "512Mi"}}}))
    os.chown(spec, alice.pw_uid, alice.pw_gid)
    name = json.loads(team.cli("alice", "submit", "-f", str(spec), "-o", "json", "--no-snapshot").stdout)[0]["name"]
    job = team.wait(name, timeout=180)
    assert job.state == "Succeeded", (job.message, team.cli("alice", "logs", name).stdout)
    uids = set(proof.read_text().split())
    assert uids == {str(alice.pw_uid)}, f"the package's code ran as {uids}"
    # A requirements file is read as the user too: root's files stay closed.
    shadow = team.work / "alice" / "shadow.yaml"
    shadow.write_text(json.dumps({"spec": {"command": ["true"], "workingDir": "/etc", "environment": {
        "requirementsFile": "shadow"}, "resources": {"cpu": "100m", "memory": "64Mi"}}}))
    os.chown(shadow, alice.pw_uid, alice.pw_gid)
    name = json.loads(team.cli("alice", "submit", "-f", str(shadow), "-o", "json", "--no-snapshot").stdout)[0]["name"]
    job = team.wait(name)
    assert job.state == "Failed" and "Permission denied" in job.message, job.message
    assert "requirement(s)" not in team.cli("alice", "logs", name).stdout


def test_the_code_snapshot_is_unpacked_by_its_user(team: Team) -> None:
    """An archive is the user's data: root never unpacks it (tarfile's filter has had bypasses)."""
    alice = team.users["alice"]
    name = team.run("alice", "stat", "-c", "%u", "train.py")
    job = team.wait(name)
    assert job.state == "Succeeded", (job.message, team.cli("alice", "logs", name).stdout)
    assert team.cli("alice", "logs", name).stdout.strip() == str(alice.pw_uid)


def test_a_rerun_stays_its_owners_job_whoever_asks(team: Team) -> None:
    """An admin rerunning a member's job must not run the member's code as the admin."""
    alice = team.users["alice"]
    original = team.run("alice", "id", "-u")
    team.wait(original)
    rerun = json.loads(team.cli("root", "rerun", original, "-o", "json").stdout)[0]["name"]
    job = team.wait(rerun)
    assert job.state == "Succeeded", job.message
    assert team.cli("root", "logs", rerun).stdout.strip() == str(alice.pw_uid)
    assert job.provenance.submitter == alice.pw_name and job.provenance.rerun_by == "root"


def test_a_member_may_not_mount_every_jobs_outputs(team: Team) -> None:
    refused = team.cli("bob", "run", "-v", "results:/mnt/r", "--", "true", check=False)
    assert refused.returncode != 0 and "only an admin may mount" in refused.stderr, refused.stderr
