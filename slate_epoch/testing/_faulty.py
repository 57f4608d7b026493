"""``FaultyStore``: a store that misbehaves on purpose (see ``slate_epoch.testing``)."""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, TypeVar

import anyio

from .._errors import TransientStoreError
from .._store import ObjectStore
from ._forwarding import OPERATIONS, ForwardingStore, Operation, Request

__all__ = ["OPERATIONS", "FaultAction", "FaultyStore", "Operation"]


FaultAction: TypeAlias = Literal["lost", "error"]
T = TypeVar("T")
_PUT_MODES: Final = ("create", "overwrite", "update")


@dataclass
class _Scripted:
    action: FaultAction
    op: str | None
    prefix: str | None
    times: int

    def matches(self, op: Operation, mode: str, key: str) -> bool:
        if self.op is not None and self.op not in (op, mode):
            return False
        return self.prefix is None or key.startswith(self.prefix)


class FaultyStore(ForwardingStore):
    """An ``ObjectStore`` that forwards to ``inner`` and injects faults.

    - ``lost_response_rate``: chance that an operation is performed and then reported as a
      ``TransientStoreError`` (the response was lost);
    - ``error_rate``: chance that an operation fails with ``TransientStoreError`` unperformed;
    - ``latency``: seconds slept (``anyio.sleep``) before each operation, fixed or a
      ``(low, high)`` range drawn from the RNG;
    - ``ops``: the operations random faults apply to (default: all of
      ``get head put list delete``). Scripted faults ignore it;
    - ``on_fault``: called as ``on_fault(action, op, key)`` whenever a fault is injected, before
      it takes effect (to log it, or to tell which of several callers it hit).

    ``counts`` tallies calls by operation, plus ``"lost"`` and ``"error"`` for faults injected.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        seed: int,
        lost_response_rate: float = 0.0,
        error_rate: float = 0.0,
        latency: float | tuple[float, float] | None = None,
        ops: Collection[Operation] | None = None,
        on_fault: Callable[[FaultAction, Operation, str], object] | None = None,
    ) -> None:
        for name, rate in (("lost_response_rate", lost_response_rate), ("error_rate", error_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {rate}")
        if lost_response_rate + error_rate > 1.0:
            raise ValueError("lost_response_rate + error_rate must not exceed 1")
        unknown = set(ops or ()) - set(OPERATIONS)
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)}; known: {OPERATIONS}")
        super().__init__(inner)
        self.seed = seed
        self.lost_response_rate = lost_response_rate
        self.error_rate = error_rate
        self.latency = latency
        self.ops = frozenset(OPERATIONS if ops is None else ops)
        self.on_fault = on_fault
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._script: deque[_Scripted] = deque()

    def script(
        self,
        action: FaultAction,
        *,
        op: Operation | Literal["create", "overwrite", "update"] | None = None,
        prefix: str | None = None,
        times: int = 1,
    ) -> None:
        """Queue an exact fault: the next ``times`` operations matching ``op`` (an operation, or
        a put mode: ``create``/``overwrite``/``update``) and key ``prefix`` get ``action``.
        Scripted faults are used in the order queued, before any random fault."""
        if action not in ("lost", "error"):
            raise ValueError(f"action must be 'lost' or 'error', got {action!r}")
        if op is not None and op not in OPERATIONS and op not in _PUT_MODES:
            raise ValueError(f"unknown op {op!r}")
        if times < 1:
            raise ValueError("times must be >= 1")
        self._script.append(_Scripted(action, op, prefix, times))

    async def forward(self, request: Request, perform: Callable[[], Awaitable[T]]) -> T:
        """Count the call, sleep the latency, decide its fault: an error stops it before it is
        performed; a lost response is raised after it was."""
        fault = await self._before(request.op, request.key, request.kind)
        result = await perform()
        if fault == "lost":
            raise TransientStoreError(
                f"injected lost response on {request.op} {request.key!r} (it was performed)"
            )
        return result

    async def _before(self, op: Operation, key: str, mode: str) -> FaultAction | None:
        """Count the call, sleep the latency, and decide its fault (None: none)."""
        self.counts[op] += 1
        latency = self.latency
        if isinstance(latency, tuple):
            latency = self._rng.uniform(*latency)
        if latency:
            await anyio.sleep(latency)
        fault = self._scripted(op, mode, key)
        if fault is None and op in self.ops:
            draw = self._rng.random()
            if draw < self.lost_response_rate:
                fault = "lost"
            elif draw < self.lost_response_rate + self.error_rate:
                fault = "error"
        if fault is not None:
            self.counts[fault] += 1
            if self.on_fault is not None:
                self.on_fault(fault, op, key)
        if fault == "error":
            raise TransientStoreError(f"injected error on {op} {key!r}")
        return fault

    def _scripted(self, op: Operation, mode: str, key: str) -> FaultAction | None:
        for entry in self._script:
            if entry.matches(op, mode, key):
                entry.times -= 1
                if entry.times == 0:
                    self._script.remove(entry)
                return entry.action
        return None
