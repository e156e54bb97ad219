"""Usage errors are usage errors: click's usage text and exit status 2, never a crash report or a traceback.

Every command and group of the Typer app is walked (nothing hard-coded): a bogus flag, a missing required
argument, and ``-o bogus`` where there is an ``--output``.  They run in-process through
:func:`kubetrain.cli.main.run` (what the ``kubetrain`` script runs, exceptions and all), and a few as real
``kubetrain`` processes.  No master is needed: a usage error is found before any connection —
``KUBETRAIN_URL`` points nowhere, so a command that did try to connect would fail with status 1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubetrain.cli.main import run
from tests.cli._tree import dummies, required, walk

KUBETRAIN = str(Path(sys.executable).with_name("kubetrain"))
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers


@pytest.fixture(autouse=True)
def no_master(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBETRAIN_URL", NOWHERE)


def check_usage_error(code: int, err: str, words: list[str]) -> None:
    shown = f"kubetrain {' '.join(words)} -> exit {code}:\n{err}"
    assert code == 2, shown
    assert "Usage: kubetrain" in err, shown
    assert "please report this" not in err, shown
    assert "Traceback" not in err, shown


def run_here(capsys: pytest.CaptureFixture[str], words: list[str]) -> tuple[int, str]:
    code = run(words)
    captured = capsys.readouterr()
    return code, captured.err + captured.out


COMMANDS = list(walk())
IDS = [" ".join(path) for path, _ in COMMANDS]


def test_the_tree_is_walked() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"run", "get jobs", "ls", "server stop", "volume create", "token create"} <= paths
    assert len(paths) > 30


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_a_bogus_flag(capsys: pytest.CaptureFixture[str], path: tuple[str, ...], command) -> None:
    words = [*path, "--bogus-flag"]
    code, err = run_here(capsys, words)
    check_usage_error(code, err, words)
    assert "No such option: --bogus-flag" in err


@pytest.mark.parametrize(("path", "command"), [c for c in COMMANDS if required(c[1])],
                         ids=[i for i, c in zip(IDS, COMMANDS) if required(c[1])])
def test_a_missing_argument(capsys: pytest.CaptureFixture[str], path: tuple[str, ...], command) -> None:
    words = list(path)
    code, err = run_here(capsys, words)
    check_usage_error(code, err, words)
    assert "Missing" in err


WITH_OUTPUT = [c for c in COMMANDS if any("--output" in p.opts for p in c[1].params)]


@pytest.mark.parametrize(("path", "command"), WITH_OUTPUT, ids=[" ".join(p) for p, _ in WITH_OUTPUT])
def test_an_unknown_output_format_lists_the_valid_ones(capsys: pytest.CaptureFixture[str], path, command) -> None:
    words = [*path, *dummies(command), "-o", "bogus"]
    if path == ("run",):
        words = [*path, "-o", "bogus", "--", "true"]
    code, err = run_here(capsys, words)
    check_usage_error(code, err, words)
    assert "'bogus' is not one of 'json'" in err


@pytest.mark.parametrize("words", [["get", "jobs", "--state", "Bogus"], ["ls", "-s", "Bogus"],
                                   ["get", "jobs", "--sort", "sideways"], ["get", "jobs", "--limit", "0"]])
def test_bad_values_for_the_job_list(capsys: pytest.CaptureFixture[str], words: list[str]) -> None:
    code, err = run_here(capsys, words)
    check_usage_error(code, err, words)
    if "Bogus" in words:
        assert "'queued', 'running', 'succeeded', 'failed', 'cancelled'" in err


@pytest.mark.parametrize("words", [
    ["bogus"],                              # an unknown command
    ["get", "jobs", "--bogus"],             # the fast path's command: it leaves the error to Typer
    ["get", "jobs", "--state", "Bogus"],
    ["ls", "-o", "bogus"],
    ["run"],                                # no command to run
    ["run", "--gpu", "many", "--", "true"],
    ["describe"],
])
def test_as_a_real_process(words: list[str], tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBETRAIN_HOME": str(tmp_path / "home")}
    result = subprocess.run([KUBETRAIN, *words], env=env, capture_output=True, text=True, timeout=60)
    check_usage_error(result.returncode, result.stderr + result.stdout, words)
    assert not (tmp_path / "home" / "run").exists(), "a usage error started (or looked for) a master"
