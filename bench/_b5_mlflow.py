"""B5's peer: an MLflow tracking server and reporters that call ``log_batch`` (standard library only
at import time; the reporters run in MLflow's own venv)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from array import array
from pathlib import Path

from _b5_common import (_descendants, _proc_cpu, call_stats, free_port, merge_stats, read_samples,  # noqa: F401
                        start_together, wait_go)

HERE = Path(__file__).resolve().with_name("b5_metrics.py")
MLFLOW_KEYS = ("loss", "acc", "lr", "grad_norm")


def mlflow_reporter(url: str, experiment_id: str, duration: float, batch: int, out: str) -> None:
    """One loop of MlflowClient().log_batch(); writes its counts and call times to ``out``."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    perf = time.perf_counter_ns
    samples = array("q")
    per_key = max(1, batch // len(MLFLOW_KEYS))
    wait_go(out)
    end = time.monotonic() + duration
    step = points = errors = 0
    while time.monotonic() < end:
        ts = int(time.time() * 1000)
        metrics = [Metric(k, 0.5, ts, step + i) for i in range(per_key) for k in MLFLOW_KEYS]
        t0 = perf()
        try:
            client.log_batch(run_id, metrics=metrics, synchronous=True)
        except Exception:  # noqa: BLE001 - count and go on, like a training loop would
            errors += 1
        else:
            points += len(metrics)
        samples.append(perf() - t0)
        step += per_key
    done = time.time()
    client.set_terminated(run_id)
    with open(out + ".samples", "wb") as fh:
        samples.tofile(fh)
    Path(out).write_text(json.dumps({"points": points, "run_id": run_id, "flushed": done, "errors": errors,
                                     "per_call_points": per_key * len(MLFLOW_KEYS)}))


def mlflow_count(url: str, run_ids: list[str]) -> None:
    """Points queryable through MLflow's API: get_metric_history for each run and key."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    total = 0
    for run_id in run_ids:
        for key in MLFLOW_KEYS:
            total += len(client.get_metric_history(run_id, key))
    print(json.dumps({"api_points": total}))


def ensure_mlflow(venv: Path) -> tuple[Path | None, str]:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import mlflow; print(mlflow.__version__)"]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return python, done.stdout.strip()
    print(f"   installing MLflow into {venv} (pip install mlflow) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "mlflow"], capture_output=True,
                              text=True, timeout=900, check=False)
        if done.returncode != 0:
            return None, f"pip install mlflow failed: {done.stderr.strip().splitlines()[-1:]}"
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return None, f"mlflow does not import: {done.stderr.strip().splitlines()[-1:]}"
        return python, done.stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot make {venv}: {exc}"


def run_mlflow(args, work: Path, python: Path, version: str) -> dict:
    work = work / "mlflow"
    work.mkdir()
    mlflow_bin = python.with_name("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = work / "mlflow.db"
    log = open(work / "mlflow-server.log", "w")  # noqa: SIM115 - the server writes to it until the end
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{db}",
         "--default-artifact-root", str(work / "mlruns"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=work)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start; see {work / 'mlflow-server.log'}")
            time.sleep(0.2)
        time.sleep(2)  # let the server start its workers
        workers = _descendants(server.pid)
        body = json.dumps({"name": f"b5-{int(time.time())}"}).encode()
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/create", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            experiment_id = json.loads(r.read())["experiment_id"]
        print(f"   mlflow {version} server at {url} (pid {server.pid} + {len(workers)} descendant process(es)), "
              f"SQLite {db.name}")

        procs, outs = [], []
        for i in range(args.procs):
            out = work / f"ml-{i}.json"
            penv = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KUBETRAIN_"))}
            procs.append(subprocess.Popen(
                [str(python), str(HERE), "--reporter", "mlflow", "--url", url, "--experiment-id", experiment_id,
                 "--duration", str(args.duration),
                 "--mlflow-batch", str(args.mlflow_batch), "--out", str(out)], env=penv, cwd=work,
                stdout=subprocess.DEVNULL))  # MLflow prints a "View run" line per run
            outs.append(out)
        start_at = start_together(outs, procs)
        tree = [server.pid, *_descendants(server.pid)]
        cpu_before = sum(_proc_cpu(p) or 0.0 for p in tree)
        for p in procs:
            p.wait(timeout=args.duration + 300)
        server_cpu = sum(_proc_cpu(p) or 0.0 for p in tree) - cpu_before
        if not all(o.exists() for o in outs):
            raise RuntimeError("an MLflow reporter failed (see its output above)")
        reports = [json.loads(o.read_text()) for o in outs]
        samples = [read_samples(o) for o in outs]
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            db_points = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
        counted = subprocess.run([str(python), str(HERE), "--count-mlflow", url, "--runs",
                                  ",".join(r["run_id"] for r in reports)], capture_output=True, text=True, timeout=300,
                                 check=False)
        api_points = json.loads(counted.stdout.strip().splitlines()[-1])["api_points"] if counted.returncode == 0 else None
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()

    elapsed = max(r["flushed"] for r in reports) - start_at
    calls = merge_stats(samples)
    persisted = api_points if api_points is not None else db_points
    return {
        "system": "mlflow", "version": version, "server_processes": 1 + len(workers), "server_cpu_s": server_cpu, "procs": args.procs,
        "duration_s": args.duration, "batch": reports[0]["per_call_points"],
        "reported": sum(r["points"] for r in reports), "errors": sum(r["errors"] for r in reports),
        "db_points": db_points, "api_points": api_points, "elapsed_s": elapsed,
        "points_per_s": persisted / elapsed, "log_batch_call": calls,
        "lag_p99_s": calls.get("p99_us", 0) / 1e6 if calls else None,
        "lag_p50_s": calls.get("p50_us", 0) / 1e6 if calls else None,
    }
