"""Users, tokens and login through the plain CLI (any OS user; tests/security/ covers other OS users)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.conftest import KUBETRAIN  # noqa: F401 - the CLI under test


def test_a_remote_user_logs_in_once_and_a_revoked_token_stops_working(master, tmp_path: Path) -> None:
    me = master.cli("whoami", check=True).stdout
    assert "(admin, via socket" in me
    master.cli("user", "add", "carol", "--uid", "65534", check=True)
    created = master.cli("token", "create", "--user", "carol", "--expires", "2h", "--description", "laptop", check=True)
    token = created.stdout.strip()
    assert token.startswith("kt_") and token not in created.stderr
    # carol, elsewhere: a config folder of her own and the master's TCP URL.
    carol = {**master.env, "XDG_CONFIG_HOME": str(tmp_path / "config"), "KUBETRAIN_URL": master.url}
    carol.pop("KUBETRAIN_TOKEN", None)
    logged = master.cli_as(carol, "login", master.url, input=token + "\n")
    assert logged.returncode == 0, logged.stderr
    credentials = tmp_path / "config" / "kubetrain" / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert "carol (member, via token" in master.cli_as(carol, "whoami").stdout
    refused = master.cli_as(carol, "user", "add", "mallory", "--role", "admin")
    assert refused.returncode != 0 and "only an admin may add users" in refused.stderr
    listed = json.loads(master.cli("token", "ls", "-o", "json", check=True).stdout)
    assert [t["description"] for t in listed if t["user"] == "carol"] == ["laptop"]
    assert all(t["token"] is None for t in listed) and token not in json.dumps(listed)
    token_id = next(t["id"] for t in listed if t["user"] == "carol")
    master.cli("token", "revoke", token_id, check=True)
    after = master.cli_as(carol, "whoami")
    assert after.returncode != 0 and "revoked" in after.stderr


def test_bad_identity_input_names_the_field(master) -> None:
    for args, fragment in ((("token", "create", "--expires", "3x"), "--expires '3x'"),
                           (("user", "add", "Bad Name"), "a user name is"),
                           (("user", "add", "dave", "--role", "root"), "--role 'root'"),
                           (("secret", "create", "hf"), "--from-literal"),
                           (("secret", "create", "hf", "--from-literal", "novalue"), "KEY=VALUE")):
        result = master.cli(*args)
        assert result.returncode != 0 and fragment in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_job_and_experiment_names_never_share_an_output_folder(master) -> None:
    """A trial writes to results/<experiment>/<job>: a job named like the experiment or a trial would own it."""
    from kubetrain.core.errors import ConflictError

    template = {"command": ["true"], "resources": {"cpu": "100m", "memory": "64Mi"}}
    master.client.submit_experiment({"metadata": {"name": "alexp"}, "spec": {
        "template": template, "parameters": [{"name": "x", "type": "categorical", "values": [1]}],
        "algorithm": "grid", "objective": {"metric": "score"}}})
    for name in ("alexp", "alexp-7"):
        try:
            master.client.submit({"metadata": {"name": name}, "spec": template})
        except ConflictError as exc:
            assert "belongs to experiment 'alexp'" in exc.message
        else:
            raise AssertionError(f"a job named {name} was accepted")
    master.client.submit({"metadata": {"name": "zexp-1"}, "spec": template})
    try:
        master.client.submit_experiment({"metadata": {"name": "zexp"}, "spec": {
            "template": template, "parameters": [{"name": "x", "type": "categorical", "values": [1]}],
            "algorithm": "grid", "objective": {"metric": "score"}}})
    except ConflictError as exc:
        assert "zexp-1" in exc.message
    else:
        raise AssertionError("an experiment named like an existing job was accepted")
