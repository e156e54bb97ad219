"""In a distributed job only rank 0's report() is sent (sdk/job_env.py), so each step is kept once."""

from __future__ import annotations

import pytest

from kubetrain.sdk.job_env import reports_metrics


@pytest.mark.parametrize(
    "env, sends",
    [
        ({}, True),  # not distributed
        ({"KUBETRAIN_REPLICA": "0"}, True),
        ({"KUBETRAIN_REPLICA": "1"}, False),
        ({"KUBETRAIN_REPLICA": "1", "RANK": "0"}, True),  # torchrun's per-process rank decides
        ({"KUBETRAIN_REPLICA": "0", "RANK": "3"}, False),
    ],
)
def test_only_rank_zero_reports(monkeypatch, env, sends):
    for name in ("RANK", "KUBETRAIN_REPLICA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert reports_metrics() is sends
