"""Where an attempt's log lies in its folder: one name on every engine, so ``logs --replica K`` reads the same file.

Replica 0 writes ``output.log``, as a job of one replica always did (so readers of earlier versions still
find it); replica K of a distributed job writes ``output-K.log``.  Standard library only: the embedded
engine's supervisor imports it per attempt.
"""

from __future__ import annotations

#: The log of a job of one replica, and of replica 0 of a distributed one.
LOG = "output.log"


def replica_log(replica: int) -> str:
    """Replica ``replica``'s log file in its attempt's folder."""
    return LOG if replica == 0 else f"output-{replica}.log"
