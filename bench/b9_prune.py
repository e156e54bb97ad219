"""B9: how many steps a pruned trial runs after its early-stopping rule pruned it.

Runs the digits sweep (``examples/digits/sweep.yaml``: TPE, ASHA with ``minResource: 2``) on a master of its
own in a fresh temporary ``KUBETRAIN_HOME`` (``_common.master``), the code in place (no snapshot).  Each epoch
of ``examples/digits/train.py`` (tens of milliseconds here) reports ``val_accuracy``, checkpoints, sleeps
``--epoch-pause`` (default 0, as the example) and then asks ``kubetrain.should_stop()``.  For every trial
that ended ``EarlyStopped``:

* the step it was pruned at: from its ``EarlyStopping`` event ("... at step N trails the other trials");
* the last step it reported (``last_step`` of ``kubetrain compare``);
* steps after the prune = last step - pruned step (0: it stopped right after the report it was pruned at);
* seconds from the prune decision to the trial's end.

Target (issue 10): pruned trials stop within one step of the prune.

Usage: .venv/bin/python bench/b9_prune.py [--trials 12] [--epochs 12] [--epoch-pause 0] [--sdk-src DIR]
``--sdk-src`` runs the trials' in-job SDK from another ``src`` folder (``PYTHONPATH`` in the trial's env; the
master stays this checkout's): ``git archive HEAD src | tar -x -C /tmp/before`` then ``--sdk-src
/tmp/before/src`` measures the SDK of HEAD against the same master.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from _common import REPO, emit, header, master

from kubetrain.core.experiments import validate_experiment
from kubetrain.core.records import Provenance

DIGITS = REPO / "examples" / "digits"
DECIDED = re.compile(r"at step (\d+) trails")


def experiment(args: argparse.Namespace) -> dict:
    document = yaml.safe_load((DIGITS / "sweep.yaml").read_text())
    document["metadata"] = {"name": "b9-digits"}
    body = document["spec"]
    template = body["template"]
    template["workingDir"] = str(DIGITS)
    template["params"] = {**template.get("params", {}), "epochs": args.epochs, "epoch_pause": args.epoch_pause}
    if args.sdk_src:
        template["env"] = {**template.get("env", {}), "PYTHONPATH": str(Path(args.sdk_src).resolve())}
    body["maxTrials"] = args.trials
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--epoch-pause", type=float, default=0.0)
    parser.add_argument("--sdk-src", help="the trials' kubetrain SDK from this src folder (before/after)")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()

    header("B9 steps a pruned trial runs after the prune (digits sweep, ASHA)")
    print(f"   trials={args.trials} epochs={args.epochs} epoch_pause={args.epoch_pause}s "
          f"sdk={'this checkout' if not args.sdk_src else args.sdk_src}")
    spec = validate_experiment(experiment(args))
    with master("b9") as (client, _home, _env):
        started = time.monotonic()
        client.submit_experiment(spec, Provenance(submitter="bench"))
        while (record := client.get_experiment("b9-digits")).state == "Running":
            if time.monotonic() - started > args.timeout:
                raise SystemExit(f"the sweep did not end within {args.timeout}s: {record.message}")
            time.sleep(1.0)
        took = time.monotonic() - started
        rows = []
        for trial in record.trials:
            if trial.reason != "EarlyStopped":
                continue
            job = client.get_job(trial.job)
            prune = next(((int(m.group(1)), e.time) for e in job.events
                          if e.reason == "EarlyStopping" and (m := DECIDED.search(e.message))), None)
            if prune is None or trial.last_step is None:
                continue  # stopped while queued (never ran)
            rows.append((trial.job, prune[0], trial.last_step, trial.last_step - prune[0],
                         (job.finished_at or prune[1]) - prune[1]))

    print(f"   {record.state} in {took:.1f}s: {record.message}")
    print(f"   {'TRIAL':<16} {'PRUNED AT':>9} {'LAST STEP':>9} {'STEPS AFTER':>11} {'S TO END':>8}")
    for job, pruned, last, after, seconds in rows:
        print(f"   {job:<16} {pruned:>9} {last:>9} {after:>11} {seconds:>8.2f}")
    after = [r[3] for r in rows]
    if after:
        print(f"   pruned trials: {len(rows)}; steps run after the prune: max {max(after)}, "
              f"mean {sum(after) / len(after):.2f} (target: within one step)")
    else:
        print("   no trial was pruned after it started; rerun with more trials or epochs")
    emit({"bench": "b9_prune", "sdk": args.sdk_src or "checkout", "state": str(record.state),
          "pruned": len(rows), "steps_after_max": max(after) if after else None,
          "steps_after_mean": round(sum(after) / len(after), 3) if after else None,
          "seconds_to_end": [round(r[4], 2) for r in rows], "epoch_pause": args.epoch_pause})


if __name__ == "__main__":
    main()
