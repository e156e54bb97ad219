"""Hypothesis profiles for the fuzz suite.

``kubetrain-fuzz`` (the default) keeps the whole suite well under a minute on
two cores; ``kubetrain-fuzz-deep`` is for a long local or nightly hunt::

    KUBETRAIN_FUZZ_PROFILE=kubetrain-fuzz-deep python -m pytest tests/fuzz

In CI (``CI`` set) the examples are derandomized: the same commit always
tries the same inputs, so a red build is reproducible and never depends on the
draw. Random exploration is for local and deep runs, which is where a new
failing input should be found and turned into a regression test.

No example database is written into the repository: a failure prints the
falsifying example and a ``@reproduce_failure`` blob instead.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: Fixed examples in CI; fresh random ones everywhere else.
DERANDOMIZE = bool(os.environ.get("CI")) and os.environ.get("KUBETRAIN_FUZZ_PROFILE") != "kubetrain-fuzz-deep"

_COMMON = {
    "derandomize": DERANDOMIZE,
    "deadline": None,  # real processes and a live HTTP server: timing varies, correctness does not
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}

settings.register_profile("kubetrain-fuzz", max_examples=120, **_COMMON)
settings.register_profile("kubetrain-fuzz-deep", max_examples=5000, **_COMMON)
settings.load_profile(os.environ.get("KUBETRAIN_FUZZ_PROFILE", "kubetrain-fuzz"))

#: Examples per API operation and generation mode for the schemathesis run.
API_EXAMPLES = int(os.environ.get("KUBETRAIN_FUZZ_API_EXAMPLES", "25"))
