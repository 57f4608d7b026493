"""What the actors of a seed (writers, collectors, readers, the wires) see of their world."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..._claim import EpochHandle
from ..._manifest import ManifestCache
from ..._retry import Backoff
from ..._store import ObjectStore
from ...backends.memory import MemoryStore
from .config import SimulationConfig
from .history import History, OpRecord

if TYPE_CHECKING:
    import trio

__all__ = ["Host", "Life", "Stage", "WriterPlan", "draw_latency"]

T = TypeVar("T")


@dataclass(frozen=True)
class WriterPlan:
    index: int
    role: str  # "writer", "compactor", "gc" for a collector, "read" for a reader
    lost_rate: float
    error_rate: float
    late_rate: float
    latency: tuple[float, float] | None  # FaultyStore's: a uniform draw
    tick_latency: tuple[float, int] | None  # the wire's: (tick, n): a whole number of ticks <= n
    start_at: float
    host: int  # the writer whose process this one starts in (itself, or an earlier one)


def draw_latency(
    rng: random.Random, max_latency: float
) -> tuple[tuple[float, float] | None, tuple[float, int] | None]:
    """A process's latency (``WriterPlan.latency``, ``.tick_latency``): none (every call a bare
    checkpoint), FaultyStore's continuous draw, or the wire's whole number of ticks. With none
    or ticks, tasks that wake at the same instant are ordered by trio's (seeded) shuffle."""
    kind = rng.random()
    if kind < 0.4:
        return (0.0, rng.uniform(0.0, max_latency)), None
    if kind < 0.8:
        tick = rng.choice((0.001, 0.005, 0.01))
        return None, (tick, max(0, int(max_latency / tick)))
    return None, None


class Host(Protocol):
    """A simulated OS process, as the actors it hosts use it: its own store object over the
    shared store (with its faults), and its own manifest cache."""

    @property
    def name(self) -> str: ...

    @property
    def store(self) -> ObjectStore: ...

    @property
    def cache(self) -> ManifestCache: ...


@dataclass
class Life:
    """One incarnation of a writer (or collector, or reader), from its start to its end or
    crash."""

    actor: str
    process: Host
    rng: random.Random
    crashed: bool = False
    updates: int = 0
    appends: int = 0
    misuses: int = 0
    acknowledged: int = 0  # the last log id an append of the current handle acknowledged
    marked: int = 0  # the last log id the current handle tried to mark replayed
    # The outcome of an operation cancelled other than by a crash: "cancelled" (only the seed's
    # deadline cancels a writer's), or "interrupted" for a leader's, whose body ``lead`` cancels
    # when it is fenced or cut off, and a stop cancels from outside.
    cancelled_as: str = "cancelled"


class Stage(Protocol):
    """The world of one seed, as its actors use it."""

    seed: int
    config: SimulationConfig
    store: MemoryStore  # the shared store: only wires and the final read touch it directly
    history: History

    @property
    def nursery(self) -> trio.Nursery: ...

    def now(self) -> float: ...

    def event(self, text: str) -> None:
        """Record ``text`` in the history, now (a crash, a restart, ...)."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def record(
        self, life: Life, kind: str, role: str, timeout: float, handle: EpochHandle | None = None
    ) -> OpRecord:
        """A new operation record, started now."""
        ...

    async def op(self, life: Life, record: OpRecord, call: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``call`` as the operation ``record``: its store calls and faults are charged to
        it, its outcome recorded (an exception's class name; None is returned then)."""
        ...

    def backoff(self, rng: random.Random) -> Backoff:
        """A backoff with seeded jitter."""
        ...
