"""``scheduling:`` in config.yaml: team shares and the default preemption policy (beside halfLife and fairShare,
whose tests are in tests/unit/test_planning.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrain.core.errors import ConfigError
from kubetrain.core.queues import PreemptionPolicy
from kubetrain.settings import load_settings


def settings_with(tmp_path: Path, scheduling: str):
    (tmp_path / "config.yaml").write_text(f"scheduling: {scheduling}\n")
    return load_settings({"KUBETRAIN_HOME": str(tmp_path)})


def test_defaults_are_no_shares_and_never_preempt(tmp_path: Path) -> None:
    settings = load_settings({"KUBETRAIN_HOME": str(tmp_path)})
    assert settings.team_shares == {} and settings.default_preemption is PreemptionPolicy.NEVER


def test_shares_and_preemption_are_read(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "{shares: {ml-research: 2, infra: 0.5}, preemption: reclaimBorrowed, "
                                       "halfLife: 1d, fairShare: true}")
    assert settings.team_shares == {"ml-research": 2.0, "infra": 0.5}
    assert settings.default_preemption is PreemptionPolicy.RECLAIM_BORROWED
    assert settings_with(tmp_path, "{preemption: lowerPriority}").default_preemption is PreemptionPolicy.LOWER_PRIORITY


@pytest.mark.parametrize("scheduling, fragments", [
    ("{shares: {ml: 0}}", ["scheduling.shares.ml", "0", "positive number"]),
    ("{shares: {ml: -1}}", ["scheduling.shares.ml", "-1"]),
    ("{shares: {ml: lots}}", ["scheduling.shares.ml", "'lots'", "e.g. 2"]),
    ("{shares: {ml: true}}", ["scheduling.shares.ml", "True"]),
    ("{shares: {ml: .inf}}", ["scheduling.shares.ml", "inf"]),
    ("{shares: {ML Team: 2}}", ["scheduling.shares", "'ML Team'", "lower-case"]),
    ("{shares: [ml, infra]}", ["scheduling.shares", "not a mapping", "{ml: 2, infra: 1}"]),
    ("{preemption: always}", ["scheduling.preemption", "'always'", "never, reclaimBorrowed, lowerPriority"]),
    ("{share: {ml: 2}}", ["scheduling", "'share'", "'shares'", "'preemption'", "'halfLife'"]),
])
def test_bad_values_name_the_key_the_value_and_the_fix(tmp_path: Path, scheduling: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        settings_with(tmp_path, scheduling)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
