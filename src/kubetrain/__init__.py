"""kubetrain: one master for every training job.

The top-level package stays import-light on purpose: training code does
``import kubetrain`` and must not pay for the server, the store or the CLI.
"""

__version__ = "0.1.0"


def params() -> dict:
    """This job's hyperparameters (``{}`` outside kubetrain)."""
    from kubetrain.sdk.job_env import params as _params

    return _params()


def report(step: int, **metrics: float) -> None:
    """Record metrics at ``step``: buffered, batched, never blocks or raises on a down master."""
    from kubetrain.sdk.tracking import report as _report

    _report(step, **metrics)


def should_stop() -> bool:
    """True once this trial was stopped early by its experiment (pruned)."""
    from kubetrain.sdk.tracking import should_stop as _should_stop

    return _should_stop()


def output_dir():
    """The folder for models and results (``KUBETRAIN_OUTPUT_DIR``, or ``./outputs``)."""
    from kubetrain.sdk.job_env import output_dir as _output_dir

    return _output_dir()


def flush() -> None:
    """Send buffered metrics now."""
    from kubetrain.sdk.tracking import flush as _flush

    _flush()


def save_checkpoint(obj_or_path, step: int, *, keep: int = 3):
    """Atomically save a checkpoint that later attempts of this job can resume from."""
    from kubetrain.sdk.checkpoints import save_checkpoint as _save

    return _save(obj_or_path, step, keep=keep)


def latest_checkpoint():
    """The newest complete checkpoint (``.step``, ``.path``, ``.load()``), or None."""
    from kubetrain.sdk.checkpoints import latest_checkpoint as _latest

    return _latest()
