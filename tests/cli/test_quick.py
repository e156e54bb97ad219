"""The fast path (cli/quick.py) reads exactly what Typer reads, and loads none of the heavy libraries.

Its tables are copies of the Typer declarations: the first tests compare them with the command tree, the
next compare what each reads from the same command lines (click's own parse, without running anything).
The last run ``get jobs`` and ``run`` against a stub master on a Unix socket and list what was imported.
"""

from __future__ import annotations

import enum
import json
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from kubetrain.cli import quick
from kubetrain.cli.choices import Output, Sort
from kubetrain.cli.wire import socket_file
from kubetrain.core.states import JobState
from kubetrain.server.daemon import socket_path
from kubetrain.settings import load_settings
from tests.cli._tree import root

#: What neither `get jobs` nor `run` may import (the server side, and the libraries Typer's path needs).
HEAVY = ("typer", "click", "rich", "httpx", "pydantic", "fastapi", "starlette", "sqlalchemy", "yaml",
         "kubetrain.server", "kubetrain.store", "kubetrain.core.records", "kubetrain.core.specs")


def command_of(words: tuple[str, ...]):
    command = root()
    for word in words:
        command = command.commands[word]
    return command


def value_kind(param) -> object:
    """The quick table's value type for a click parameter built by Typer."""
    annotation = param.type_descriptor.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    while typing.get_origin(annotation) in (list, typing.Union) or type(annotation).__name__ == "UnionType":
        annotation = args[0]
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ("choice", tuple(e.value for e in annotation), param.type_descriptor.parameter_info.case_sensitive)
    if annotation is int:
        return ("min", param.min) if param.min is not None else "int"
    return annotation


def typer_table(command) -> tuple[set, list, bool]:
    options, arguments = set(), []
    for p in command.params:
        if p.param_type_name == "argument":
            arguments.append((p.name, p.nargs, p.required))
            continue
        if p.name == "help":
            continue
        kind = quick.FLAG if p.is_flag else quick.MANY if p.multiple else quick.ONE
        default = p.default.value if isinstance(p.default, enum.Enum) else p.default
        value = str if kind == quick.FLAG else value_kind(p)
        options.add((tuple(p.opts), tuple(p.secondary_opts), p.name, kind, repr(value), repr(default)))
    interspersed = command.context_settings.get("allow_interspersed_args", command.allow_interspersed_args)
    return options, arguments, interspersed


@pytest.mark.parametrize("words", list(quick.COMMANDS), ids=" ".join)
def test_the_tables_match_the_typer_declarations(words: tuple[str, ...]) -> None:
    options, arguments, interspersed, _run = quick.COMMANDS[words]
    mine = {(opts, off, dest, kind, repr(value), repr(default)) for opts, off, dest, kind, value, default in options}
    theirs, their_arguments, their_interspersed = typer_table(command_of(words))
    assert mine == theirs, f"only in quick.py: {mine - theirs}\nonly in Typer: {theirs - mine}"
    assert list(arguments) == their_arguments
    assert interspersed == their_interspersed


def test_the_closed_sets_are_the_enums() -> None:
    from kubetrain.cli import listing

    assert listing.STATES == tuple(s.value for s in JobState)
    assert listing.SORTS == tuple(s.value for s in Sort)
    assert quick.OUTPUTS == tuple(o.value for o in Output)


def test_the_socket_is_where_the_master_listens(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert socket_file(str(home)) == str(socket_path(load_settings({"KUBETRAIN_HOME": str(home)})))


SAMPLES = [
    ("get", "jobs"), ("get", "jobs", "-s", "running", "--state=FAILED", "-s", "Queued"),
    ("get", "jobs", "-ojson", "--limit=5", "--sort", "name"), ("ls", "-l", "team=a,tier!=b", "-o", "yaml"),
    ("ls", "--limit", "3", "--limit", "7"), ("get", "jobs", "a", "-o", "json", "b"),
    ("run", "--", "python", "-c", "pass"), ("run", "python", "-c", "pass"),
    ("run", "-n", "x", "-p", "a=1", "-p", "b=2", "--no-snapshot", "--priority", "-5", "--", "echo", "-n", "hi"),
    ("run", "--cpu", "2", "--memory=4Gi", "--gpu", "1", "--shell", "-e", "A=1", "--label", "k=v", "-v", "d:/data:ro",
     "-w", "/tmp", "--deadline", "30m", "--retries", "2", "-f", "--wait", "-o", "json", "--", "true"),
    ("run", "--name", "--", "--", "true"),
]
#: Lines the fast path leaves to Typer (it must not read them differently, only not at all).
UNSURE = [
    ("get", "jobs", "-h"), ("get", "jobs", "--bogus"), ("get", "jobs", "--limit", "0"), ("get", "jobs", "-s", "Bogus"),
    ("get", "jobs", "--limit"), ("run",), ("run", "-fv", "d:/x", "--", "true"),
    ("run", "--gpu", "many", "--", "true"), ("run", "--shell=yes", "--", "true"), ("ls", "-ofoo"),
]


def typer_reads(words: tuple[str, ...], args: tuple[str, ...]) -> dict:
    params = command_of(words).make_context(" ".join(words), list(args)).params
    return {k: [x.value if isinstance(x, enum.Enum) else x for x in v] if isinstance(v, (list, tuple))
            else v.value if isinstance(v, enum.Enum) else v for k, v in params.items()}


def split(line: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    words = next(w for w in quick.COMMANDS if line[:len(w)] == w)
    return words, line[len(words):]


@pytest.mark.parametrize("line", SAMPLES, ids=" ".join)
def test_the_same_values_as_typer(line: tuple[str, ...]) -> None:
    words, args = split(line)
    options, arguments, interspersed, _run = quick.COMMANDS[words]
    assert quick.parse(options, arguments, interspersed, list(args)) == typer_reads(words, args)


@pytest.mark.parametrize("line", UNSURE, ids=" ".join)
def test_what_it_leaves_to_typer(line: tuple[str, ...]) -> None:
    words, args = split(line)
    options, arguments, interspersed, _run = quick.COMMANDS[words]
    with pytest.raises(quick._Unsure):
        quick.parse(options, arguments, interspersed, list(args))


STUB = textwrap.dedent('''
    import json, os, socket, sys, threading
    home, answers = sys.argv[1], json.loads(sys.argv[2])
    os.makedirs(os.path.join(home, "run"))
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.path.join(home, "run", "kubetrain.sock"))
    server.listen(8)
    seen = []

    def serve():
        while True:
            conn, _ = server.accept()
            data = b""
            while b"\\r\\n\\r\\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\\r\\n\\r\\n")
            length = int(dict(l.split(": ", 1) for l in head.decode().split("\\r\\n")[1:]).get("Content-Length", 0))
            while len(body) < length:
                body += conn.recv(65536)
            line = head.decode().split("\\r\\n")[0]
            seen.append(line)
            status, payload = answers[line.split(" ")[0]]
            text = json.dumps(payload).encode()
            conn.sendall(b"HTTP/1.1 %d X\\r\\ncontent-type: application/json\\r\\ntransfer-encoding: chunked\\r\\n\\r\\n"
                         % status + b"%x\\r\\n" % len(text) + text + b"\\r\\n0\\r\\n\\r\\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    os.environ["KUBETRAIN_HOME"] = home
    from kubetrain.cli.main import run
    code = run(sys.argv[3:])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY_TOP or m in HEAVY)
    print(json.dumps({"code": code, "seen": seen, "heavy": heavy}), file=sys.stderr)
''')

JOB = {"name": "j1", "state": "Queued", "reason": None, "attempts": [], "node": None, "created_at": 0,
       "spec": {"spec": {"resources": {"cpu": "1", "memory": "2Gi"}}}, "provenance": {"submitter": "ann"}}


def stub_run(tmp_path: Path, answers: dict, *words: str) -> tuple[dict, str]:
    script = f"HEAVY = {HEAVY!r}\nHEAVY_TOP = {{m for m in HEAVY if '.' not in m}}\n" + STUB
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "home"), json.dumps(answers), *words],
                            capture_output=True, text=True, timeout=60, cwd=work,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report, result.stdout


def test_get_jobs_loads_nothing_heavy(tmp_path: Path) -> None:
    report, out = stub_run(tmp_path, {"GET": [200, [JOB]]}, "get", "jobs", "-s", "queued")
    assert report["code"] == 0
    assert report["seen"] == ["GET /api/v1/jobs?sort=newest&view=summary&state=Queued&limit=500 HTTP/1.1"]
    assert out.splitlines()[1].split()[:6] == ["j1", "ann", "Queued", "0", "-", "1/2Gi"]
    assert report["heavy"] == []


def test_run_submits_without_typer_or_httpx(tmp_path: Path) -> None:
    # (sdk/provenance.py and sdk/snapshots.py may still load pydantic and pathspec: not checked here)
    report, out = stub_run(tmp_path, {"HEAD": [404, {}], "PUT": [201, {}], "POST": [201, JOB]},
                           "run", "--name", "j1", "--", "python", "-c", "pass")
    assert report["code"] == 0, report
    assert [line.split(" ")[0] for line in report["seen"]] == ["HEAD", "PUT", "POST"]
    assert out == "job/j1 submitted (Queued)\n"
    assert not {m for m in report["heavy"] if m.split(".")[0] in ("typer", "click", "rich", "httpx", "fastapi")}


def test_get_jobs_by_name_gets_each_one(tmp_path: Path) -> None:
    report, out = stub_run(tmp_path, {"GET": [200, JOB]}, "get", "jobs", "j1")
    assert report["code"] == 0, report
    assert report["seen"] == ["GET /api/v1/jobs/j1 HTTP/1.1"]
    assert out.splitlines()[1].split()[:3] == ["j1", "ann", "Queued"]
    assert report["heavy"] == []


def test_an_unknown_name_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = {"code": "not_found", "message": "job 'nope' not found; list jobs with `kubetrain get jobs`",
               "details": {}}
    report, out = stub_run(tmp_path, {"GET": [404, missing]}, "ls", "nope")
    assert report["code"] == 1 and out == ""


def test_a_read_reset_by_a_dying_master_is_left_to_the_full_path(tmp_path: Path) -> None:
    """A master killed a moment ago may still hold its socket while its last threads exit: a connection made
    then is accepted and reset. A read is asked again by the full path (which starts the next master); a
    write is not, since it may have been done."""
    import socket
    import threading

    from kubetrain.cli.wire import Decline, SocketClient
    from kubetrain.core.errors import MasterUnavailableError

    run = tmp_path / "run"
    run.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(run / "kubetrain.sock"))
    listener.listen(8)

    def reset_each() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(1)  # leave the rest unread: closing then resets the connection
            conn.close()

    thread = threading.Thread(target=reset_each, daemon=True)
    thread.start()
    client = SocketClient(str(tmp_path), timeout=10)
    with pytest.raises(Decline):
        client.request("GET", "/api/v1/jobs")
    with pytest.raises(MasterUnavailableError):
        client.request("POST", "/api/v1/jobs", body={"spec": {}})
    thread.join(5)
    listener.close()
