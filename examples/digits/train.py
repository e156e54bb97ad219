"""Train a small classifier on scikit-learn's bundled digits data (no download).

Runs the same inside kubetrain or by hand:
* hyperparameters come from ``kubetrain.params()`` (``KUBETRAIN_PARAMS``), over defaults;
* each epoch's validation accuracy goes to the master with ``kubetrain.report()``
  (to ``metrics.jsonl`` when there is no master) and is printed for ``logs -f``;
* in a sweep, ``kubetrain.should_stop()`` ends a trial its early-stopping rule pruned;
* every epoch is checkpointed with ``kubetrain.save_checkpoint()``; a retried
  attempt (crash, lost node) resumes from ``kubetrain.latest_checkpoint()``;
* the model and ``metrics.json`` go to ``kubetrain.output_dir()``.
"""

from __future__ import annotations

import json
import pickle
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

import kubetrain

DEFAULTS = {"lr": 0.01, "hidden": 64, "epochs": 15, "batch_size": 64, "seed": 0, "epoch_pause": 0.0}


def load_params() -> dict:
    return {**DEFAULTS, **kubetrain.params()}


def main() -> None:
    params = load_params()
    out = kubetrain.output_dir()
    print(f"params: {json.dumps(params)}", flush=True)

    digits = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=params["seed"], stratify=digits.target
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)

    model = MLPClassifier(
        hidden_layer_sizes=(int(params["hidden"]),),
        learning_rate_init=float(params["lr"]),
        batch_size=int(params["batch_size"]),
        random_state=int(params["seed"]),
    )
    classes = np.unique(digits.target)
    rng = np.random.default_rng(int(params["seed"]))
    history: list[dict] = []
    first_epoch = 1
    checkpoint = kubetrain.latest_checkpoint()
    if checkpoint is not None:
        state = checkpoint.load()
        model, history, rng = state["model"], state["history"], state["rng"]
        first_epoch = checkpoint.step + 1
        print(f"resumed from the checkpoint of epoch {checkpoint.step}", flush=True)
    start = time.time()
    for epoch in range(first_epoch, int(params["epochs"]) + 1):
        order = rng.permutation(len(x_train))
        model.partial_fit(x_train[order], y_train[order], classes=classes)
        val_acc = float(model.score(x_val, y_val))
        history.append({"epoch": epoch, "loss": float(model.loss_), "val_accuracy": val_acc})
        print(f"epoch {epoch:3d}  loss {model.loss_:.4f}  val_accuracy {val_acc:.4f}", flush=True)
        kubetrain.report(step=epoch, val_accuracy=val_acc, loss=float(model.loss_))
        kubetrain.save_checkpoint({"model": model, "history": history, "rng": rng}, step=epoch)
        time.sleep(float(params["epoch_pause"]))
        if kubetrain.should_stop():
            print(f"stopped early at epoch {epoch} by the experiment's early-stopping rule", flush=True)
            break

    metrics = {
        "val_accuracy": history[-1]["val_accuracy"],
        "best_val_accuracy": max(h["val_accuracy"] for h in history),
        "epochs": len(history),
        "train_seconds": round(time.time() - start, 3),
        "params": params,
        "history": history,
    }
    with open(out / "model.pkl", "wb") as fh:
        pickle.dump({"scaler": scaler, "model": model}, fh)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"model:   {out / 'model.pkl'}", flush=True)
    print(f"metrics: {out / 'metrics.json'}  (val_accuracy {metrics['val_accuracy']:.4f})", flush=True)


if __name__ == "__main__":
    main()
