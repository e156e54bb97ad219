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


def test_a_users_team_is_set_at_add_changed_listed_and_shown_by_share(master) -> None:
    added = master.cli("user", "add", "erin", "--uid", "65534", "--team", "ml-research", check=True)
    assert "team ml-research" in added.stdout
    users = {u["name"]: u for u in json.loads(master.cli("user", "ls", "-o", "json", check=True).stdout)}
    assert users["erin"]["team"] == "ml-research"
    table = master.cli("user", "ls", check=True).stdout
    assert "TEAM" in table.splitlines()[0] and "ml-research" in table
    assert "is in team infra" in master.cli("user", "set-team", "erin", "infra", check=True).stdout
    assert "is in no team" in master.cli("user", "set-team", "erin", "--none", check=True).stdout
    master.cli("user", "set-team", "erin", "infra", check=True)
    # `kubetrain share` lists users who have a team, before they ran anything: first in line, key 0.
    rows = {r["owner"]: r for r in json.loads(master.cli("share", "-o", "json", check=True).stdout)}
    assert (rows["erin"]["team"], rows["erin"]["share"], rows["erin"]["key"]) == ("infra", 1.0, 0.0)
    assert "TEAM-USAGE" in master.cli("share", check=True).stdout
    for args, fragment in ((("user", "add", "fay", "--team", "ML_Team"), "--team 'ML_Team': a team name is"),
                           (("user", "set-team", "erin", "Bad"), "TEAM 'Bad': a team name is"),
                           (("user", "set-team", "erin"), "--none"),
                           (("user", "set-team", "nobody", "ml"), "user 'nobody' not found")):
        result = master.cli(*args)
        assert result.returncode != 0 and fragment in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    # The API checks too, whatever client calls it.
    from kubetrain.core.errors import SpecError

    try:
        master.client.set_user_team("erin", "Not A Label")
    except SpecError as exc:
        assert exc.details == {"field": "team", "value": "Not A Label"}
    else:
        raise AssertionError("a bad team name was accepted")


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
