"""The in-job metrics SDK under pressure, against a real HTTP server on loopback.

The server plays a master that is overloaded (503 + ``Retry-After``), hung (takes the request, never
answers until told to) or healthy (stores what it gets).  What is checked is behaviour, never speed:
the SDK's memory stays within its bound, what it drops it counts and later reports as the job's
``kubetrain/dropped_points`` metric, ``report()`` returns while the master is refusing or hung, and
the points that were not dropped all arrive once.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kubetrain.sdk.tracking import DROPPED_METRIC, MetricsSettings, Reporter


class FakeMaster(ThreadingHTTPServer):
    """``mode``: "ok" stores batches (once per batch id), "503" refuses with Retry-After, "hang" holds the
    request until ``release`` is set."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.retry_after = "1"
        self.release = threading.Event()
        self.hung = threading.Event()  # set once a request is being held
        self.lock = threading.Lock()
        self.points: list[dict] = []
        self.batches: set[str] = set()
        self.refused_at: list[float] = []
        self.max_body = 0  # > 0: larger bodies get 413, as past limits.metricsMax
        self.stop = False
        #: As a master's pruner: the metric it watches (answered with every batch) and the step from which
        #: a batch holding that metric is answered "stop".
        self.watch: str | None = None
        self.stop_at: int | None = None
        self.posts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def store(self, body: dict) -> None:
        with self.lock:
            if body["batch"] not in self.batches:
                self.batches.add(body["batch"])
                self.points.extend(body["points"])

    def named(self, name: str) -> list[dict]:
        with self.lock:
            return [p for p in self.points if p["name"] == name]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn
    disable_nagle_algorithm = True  # as uvicorn: headers and body leave without waiting for an ACK

    def do_POST(self) -> None:  # the name http.server calls
        master: FakeMaster = self.server  # type: ignore[assignment]
        data = self.rfile.read(int(self.headers["Content-Length"]))
        if master.max_body and len(data) > master.max_body:
            self._answer(413, {"code": "too_large"})
            return
        body = json.loads(data)
        if master.mode == "503":
            master.refused_at.append(time.monotonic())
            self._answer(503, {"code": "overloaded"}, {"Retry-After": master.retry_after})
            return
        if master.mode == "hang":
            master.hung.set()
            master.release.wait()
        master.store(body)
        with master.lock:
            master.posts += 1
        stop = master.stop or (master.stop_at is not None and any(
            p["name"] == master.watch and p["step"] >= master.stop_at for p in body["points"]))
        self._answer(200, {"stop": stop} if master.watch is None else {"stop": stop, "watch": master.watch})

    def _answer(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                           **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def master() -> Iterator[FakeMaster]:
    server = FakeMaster()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


SMALL = MetricsSettings(buffer_points=1_000, flush_seconds=0.05, chunk_points=100, timeout_seconds=60.0,
                        exit_seconds=60.0)


def reporter(url: str, tmp_path: Path, settings: MetricsSettings = SMALL) -> Reporter:
    return Reporter(settings, environ={"KUBETRAIN_MASTER_URL": url, "KUBETRAIN_JOB": "train-1",
                                       "KUBETRAIN_ATTEMPT": "1", "KUBETRAIN_OUTPUT_DIR": str(tmp_path)})


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def report_in_thread(rep: Reporter, steps: range) -> None:
    """report() for every step from another thread; fails if that thread does not come back (blocked)."""
    worker = threading.Thread(target=lambda: [rep.report(step, {"loss": 1.0 / (step + 1), "acc": 0.5})
                                              for step in steps], daemon=True)
    worker.start()
    worker.join(timeout=120)  # a generous guard against a hang, not a speed requirement
    assert not worker.is_alive(), "report() blocked"


def test_an_overloaded_master_bounds_the_buffer_and_the_drops_arrive_as_a_metric(master, tmp_path) -> None:
    master.mode = "503"
    rep = reporter(master.url, tmp_path)
    rep.report(0, {"loss": 1.0, "acc": 0.5})
    wait_for(lambda: master.refused_at, "the first refusal")
    report_in_thread(rep, range(1, 20_000))  # returns although every send is refused
    assert rep.peak_held <= SMALL.buffer_points
    assert rep.dropped > 0
    assert not (tmp_path / "metrics.jsonl").exists()  # back-pressure keeps points for the master, not the file
    wait_for(lambda: len(master.refused_at) >= 3, "the refused chunk to be sent again")
    gaps = [b - a for a, b in zip(master.refused_at, master.refused_at[1:])]
    assert min(gaps) >= 1.0, gaps  # Retry-After: 1 is honoured (jitter only lengthens it)

    master.mode = "ok"
    rep.flush()
    dropped = master.named(DROPPED_METRIC)
    assert dropped and dropped[-1]["value"] == rep.dropped
    assert dropped[-1]["step"] == 19_999  # reported at the newest step
    losses = master.named("loss")
    assert len(losses) + len(master.named("acc")) + rep.dropped == 2 * 20_000  # each point stored or counted
    steps = sorted(p["step"] for p in losses)
    assert len(steps) == len(set(steps))  # a chunk refused and resent is stored once
    assert steps[0] == 0 and steps[-1] > 19_000  # thinned evenly: the start and the end of the period are kept
    assert len(steps) <= SMALL.buffer_points  # what was held while refused, not everything
    rep.close()


def test_report_returns_while_the_master_is_hung_and_the_drops_arrive_once_it_answers(master, tmp_path) -> None:
    master.mode = "hang"
    rep = reporter(master.url, tmp_path)
    rep.report(0, {"loss": 1.0, "acc": 0.5})
    wait_for(master.hung.is_set, "the master to hold a request")
    report_in_thread(rep, range(1, 20_000))  # the sender is stuck in a POST; report() is not
    assert rep.peak_held <= SMALL.buffer_points
    assert rep.dropped > 0

    master.mode = "ok"
    master.release.set()
    rep.flush()
    assert master.named(DROPPED_METRIC)[-1]["value"] == rep.dropped
    stored = len(master.named("loss")) + len(master.named("acc"))
    assert stored + rep.dropped == 2 * 20_000
    rep.close()


def test_a_chunk_over_the_masters_body_cap_is_sent_in_halves(master, tmp_path) -> None:
    master.max_body = 3_000  # about 40 points; the SDK's chunks hold up to 100
    rep = reporter(master.url, tmp_path, SMALL._replace(buffer_points=10_000))
    for step in range(1_000):
        rep.report(step, {"loss": 0.5, "acc": 0.25})
    rep.flush()
    assert sorted(p["step"] for p in master.named("loss")) == list(range(1_000))
    assert not (tmp_path / "metrics.jsonl").exists()
    rep.close()


def test_the_stop_answer_reaches_should_stop(master, tmp_path) -> None:
    master.stop = True
    rep = reporter(master.url, tmp_path)
    rep.report(1, {"score": 0.1})
    rep.flush()
    assert rep.stop_requested
    rep.close()


def test_an_unreachable_master_sends_points_to_the_file_within_the_bound(tmp_path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rep = reporter(f"http://127.0.0.1:{port}", tmp_path)
    report_in_thread(rep, range(3_000))
    rep.flush()
    assert rep.peak_held <= SMALL.buffer_points
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    kept = [p for p in lines if p["name"] != DROPPED_METRIC]
    assert len(kept) + rep.dropped == 6_000
    if rep.dropped:
        assert lines[-1] == {**lines[-1], "name": DROPPED_METRIC, "value": rep.dropped}
    rep.close()


def test_nan_and_infinite_values_are_left_out_not_the_batch(master, tmp_path) -> None:
    rep = reporter(master.url, tmp_path)
    rep.report(1, {"loss": float("nan"), "acc": 0.5})
    rep.report(2, {"loss": float("inf"), "acc": 0.6})
    rep.flush()
    assert [(p["step"], p["name"], p["value"]) for p in master.points] == [(1, "acc", 0.5), (2, "acc", 0.6)]
    assert rep.nonfinite == 2
    rep.close()


def test_the_buffer_bound_comes_from_the_environment() -> None:
    assert MetricsSettings.from_environ({"KUBETRAIN_METRICS_BUFFER": "5000"}).buffer_points == 5000
    assert MetricsSettings.from_environ({}).buffer_points == 100_000
    assert MetricsSettings.from_environ({"KUBETRAIN_METRICS_BUFFER": "lots"}).buffer_points == 100_000


def test_should_stop_right_after_the_report_the_trial_was_pruned_at(master, tmp_path) -> None:
    # A trial: the master watches "score" and prunes at step 3.  The timer alone (an hour) would never send.
    master.watch, master.stop_at = "score", 3
    rep = reporter(master.url, tmp_path, SMALL._replace(flush_seconds=3600.0))
    seen = []
    for step in range(1, 6):
        rep.report(step, {"score": 0.1 * step, "loss": 1.0})
        seen.append(rep.stop_requested)
        if rep.stop_requested:
            break
    assert seen == [False, False, True]  # no step runs after the one it was pruned at
    assert [p["step"] for p in master.named("score")] == [1, 2, 3]
    rep.close()


def test_only_new_steps_of_the_watched_metric_wait_for_the_master(master, tmp_path) -> None:
    master.watch = "score"
    rep = reporter(master.url, tmp_path, SMALL._replace(flush_seconds=3600.0))
    rep.report(1, {"score": 0.5})      # the first report: learns the watched metric
    assert master.posts == 1 and rep.watch == "score"
    for step in range(1, 50):
        rep.report(step, {"loss": 1.0})  # not watched: buffered for the timer
    rep.report(1, {"score": 0.5})      # not a new step
    assert master.posts == 1
    rep.report(2, {"score": 0.6})      # a new step: everything buffered goes with it, at once
    assert master.posts == 2 and len(master.named("loss")) == 49
    rep.close()


def test_a_plain_job_waits_once_at_its_first_report_and_then_never(master, tmp_path) -> None:
    rep = reporter(master.url, tmp_path, SMALL._replace(flush_seconds=3600.0))
    rep.report(0, {"val_accuracy": 0.5})
    assert master.posts == 1 and rep.watch is None
    for step in range(1, 20):
        rep.report(step, {"val_accuracy": 0.5})
    assert master.posts == 1  # batched for the timer (or flush)
    rep.flush()
    assert len(master.named("val_accuracy")) == 20
    rep.close()


def test_a_hung_master_delays_a_decision_only_by_decision_seconds(master, tmp_path) -> None:
    master.mode, master.watch = "hang", "score"
    rep = reporter(master.url, tmp_path, SMALL._replace(decision_seconds=0.2))
    started = time.monotonic()
    rep.report(1, {"score": 0.5})
    assert time.monotonic() - started < 30  # bounded (0.2 s here), never the POST's own timeout
    assert not rep.stop_requested
    master.mode = "ok"
    master.release.set()
    rep.flush()
    rep.close()
