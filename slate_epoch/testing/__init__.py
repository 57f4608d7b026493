"""Tools for testing code built on slate-epoch: stores that misbehave or watch on purpose, real
storage servers for tests (``slate_epoch.testing.servers``), and the deterministic simulation.

``FaultyStore`` wraps any ``ObjectStore`` and injects what real networks do: a *lost response*
(the operation happens, then the caller gets ``TransientStoreError``), an *error* (the caller
gets ``TransientStoreError`` and nothing happens), and latency. Random faults come from one
seeded RNG, so a seed replays the same faults in the same order; ``script`` queues exact faults
for scenario tests::

    store = FaultyStore(MemoryStore(), seed=1)
    store.script("lost", op="create", prefix="manifest/")   # the next manifest create lands,
    handle = await claim_epoch(store)                        # but its response is lost
    assert store.counts["lost"] == 1 and handle.epoch == 1

``ForwardingStore`` is the base of such wrappers: it passes every operation to an inner store
through one method, ``forward``, that a subclass overrides to count, delay, fail or record.

The deterministic simulation of the protocol lives here too (it needs trio): ``simulate(seed)``
runs one seed and checks its history (``SimulationReport``, ``check_history``), and
``python -m slate_epoch.testing replay --seed N`` replays one, printing its history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ._faulty import FaultAction, FaultyStore
from ._forwarding import ForwardingStore, Operation, Request

if TYPE_CHECKING:
    from ._simulation import (
        History,
        SimulationConfig,
        SimulationReport,
        Violation,
        check_history,
        simulate,
    )

__all__ = [
    "FaultAction",
    "FaultyStore",
    "ForwardingStore",
    "History",
    "Operation",
    "Request",
    "SimulationConfig",
    "SimulationReport",
    "Violation",
    "check_history",
    "simulate",
]

_SIMULATION_NAMES: Final = frozenset(
    {"History", "SimulationConfig", "SimulationReport", "Violation", "check_history", "simulate"}
)


def __getattr__(name: str) -> Any:
    """The simulation's names, imported on first use: importing this module needs no trio."""
    if name in _SIMULATION_NAMES:
        from . import _simulation

        return getattr(_simulation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
