"""Every engine shows the same behaviours (issue 11): each one in ``contract.BEHAVIOURS`` on each engine.

An engine that cannot show a behaviour here is skipped with its reason (``EngineUnderTest.cannot``);
the assertions themselves are shared, in ``contract.py``.
"""

from __future__ import annotations

import pytest

from tests.engines.contract import BEHAVIOURS, EngineUnderTest
from tests.engines.contract_distributed import DISTRIBUTED, run_distributed


@pytest.mark.parametrize("behaviour", list(BEHAVIOURS))
def test_the_engine_contract(under: EngineUnderTest, behaviour: str) -> None:
    reason = under.cannot(behaviour)
    if reason is not None:
        pytest.skip(f"{under.name}: {reason}")
    BEHAVIOURS[behaviour](under)


@pytest.mark.parametrize("behaviour", list(DISTRIBUTED))
def test_the_distributed_contract(under: EngineUnderTest, behaviour: str) -> None:
    reason = under.cannot(behaviour)
    if reason is not None:
        pytest.skip(f"{under.name}: {reason}")
    run_distributed(under, behaviour)
