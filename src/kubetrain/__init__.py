"""kubetrain: one master for every training job.

The top-level package stays import-light on purpose: training code does
``import kubetrain`` and must not pay for the server, the store or the CLI.
"""

__version__ = "0.1.0"


def params() -> dict:
    """This job's hyperparameters (``{}`` outside kubetrain)."""
    from kubetrain.sdk.tracking import params as _params

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
    from kubetrain.sdk.tracking import output_dir as _output_dir

    return _output_dir()


def flush() -> None:
    """Send buffered metrics now."""
    from kubetrain.sdk.tracking import flush as _flush

    _flush()
