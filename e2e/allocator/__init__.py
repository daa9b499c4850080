"""kube-scheduler's structured-parameters allocation, as pure functions over API objects (dicts).

``schedule`` picks a node and allocations for a pod; ``allocate_on_node`` allocates claims on one
node; ``cel``, ``capacity`` and ``quantity`` are the rules underneath. No I/O here: the scheduler
controller in ``e2e.controllers`` feeds it what it reads from the API server.
"""

from .allocate import AllocatedState, AllocationError, NodeAllocation, allocate_on_node
from .quantity import Quantity, QuantityError
from .schedule import Decision, node_filter, schedule

__all__ = [
    "AllocatedState",
    "AllocationError",
    "Decision",
    "NodeAllocation",
    "Quantity",
    "QuantityError",
    "allocate_on_node",
    "node_filter",
    "schedule",
]
