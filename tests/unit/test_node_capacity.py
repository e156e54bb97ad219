"""NodeCapacity.less: what is free on a node for this master's next placements (server/reconciler.free_capacity,
``kubetrain nodes``), from the engine's own free figures where it gives them (other tenants on a shared cluster)."""

from __future__ import annotations

import pytest

from kubetrain.core.holdings import ReplicaSlot
from kubetrain.core.planning import NodeCapacity


@pytest.mark.parametrize("free, slots, expected", [
    # engine's free figures (cpu, memory, gpus)   this master's slots (cpu, memory, gpus)   free after (cpu, mem, gpus)
    ((None, None, None), [], (4000, 8, (0, 1, 2, 3))),  # no engine figures: the totals
    ((None, None, None), [(1000, 2, (1,))], (3000, 6, (0, 2, 3))),
    ((2500, 5, (0, 1, 2)), [], (2500, 5, (0, 1, 2))),  # other tenants hold 1500m, 3 bytes and one GPU
    ((2500, 5, (0, 1, 2)), [(1000, 2, (0,))], (1500, 3, (1, 2))),  # ours come off what others leave
    ((2500, 5, (0,)), [(500, 1, (2, 3))], (2000, 4, ())),  # others hold 3 GPUs, ours 2 of the 4: none left
])
def test_a_nodes_free_room_is_what_others_leave_less_what_this_masters_attempts_hold(free, slots, expected) -> None:
    """NodeCapacity.less: the engine's free figures (other tenants) are the start; the totals never change."""
    node = NodeCapacity("n", 4000, 8, gpus=(0, 1, 2, 3), free_cpu_millis=free[0], free_memory_bytes=free[1],
                        free_gpus=free[2])
    out = node.less([ReplicaSlot("n", gpus, cpu, memory) for cpu, memory, gpus in slots])
    assert (out.free_cpu_millis, out.free_memory_bytes, out.free_gpus) == expected
    assert (out.cpu_millis, out.memory_bytes, out.gpus) == (4000, 8, (0, 1, 2, 3))
