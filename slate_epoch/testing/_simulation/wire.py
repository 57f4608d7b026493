"""The network between each simulated process and the shared store."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar, cast

from ..._errors import AlreadyExistsError, NotFoundError, PreconditionError, TransientStoreError
from ..._manifest import ManifestCache
from ..._store import GetResult, ObjectMeta, ObjectStore, PutMode, PutResult, UpdateVersion
from .._faulty import FaultyStore
from .._forwarding import ForwardingStore, Request
from .config import BOUNDARY_KEY, LOG, LOG_BOUNDARY_KEY, MANIFESTS
from .history import CURRENT_OP, Call, current_op

if TYPE_CHECKING:
    from .stage import Stage, WriterPlan

__all__ = ["Process", "Wire"]

T = TypeVar("T")


class Wire(ForwardingStore):
    """The network between one simulated process and the shared store. Records each call in
    the history; with probability ``late_rate`` a create times out at once while its request
    stays in flight and lands (or finds the id taken) after a delay, whatever became of the
    caller. With ``tick_latency`` each call first sleeps a whole number of ticks. Lost responses
    and errors are the ``FaultyStore`` above's business.

    Each call is recorded right after the shared store performed it, with no checkpoint in
    between, so the order of the records is the order in which the store changed."""

    def __init__(self, world: Stage, rng: random.Random, plan: WriterPlan):
        super().__init__(world.store)
        self.world = world
        self.shared = world.store
        self.rng = rng
        self.late_rate = plan.late_rate
        self.tick_latency = plan.tick_latency
        self.late = 0

    async def forward(self, request: Request, perform: Callable[[], Awaitable[T]]) -> T:
        if self.tick_latency is not None:
            tick, most = self.tick_latency
            await self.world.sleep(tick * self.rng.randint(0, most))
        if request.op == "put":
            assert request.body is not None
            assert request.mode is not None
            return cast(T, await self._put(request.key, request.body, request.mode))
        if request.op == "delete":
            await self._delete(request.key)
            return cast(T, None)
        try:
            result = await perform()
        except NotFoundError:
            self._call(request.op, request.key, "missing")
            raise
        seq = self._call(request.op, request.key, "ok")
        manifest_id = MANIFESTS.id_of(request.key)
        if manifest_id is not None:
            if isinstance(result, GetResult):
                self.world.history.observe(manifest_id, result.body, result.etag, seq)
            elif isinstance(result, ObjectMeta):
                self.world.history.observe(manifest_id, None, result.etag, seq)
        return result

    def _call(self, kind: str, key: str, result: str, body: bytes | None = None) -> int:
        history = self.world.history
        seq = history.tick()
        history.calls.append(Call(seq, self.world.now(), current_op(), kind, key, result, body))
        return seq

    async def _put(self, key: str, body: bytes, mode: PutMode) -> PutResult:
        if mode == "create" and self.late_rate and self.rng.random() < self.late_rate:
            self.late += 1
            record = CURRENT_OP.get()
            if record is not None:
                record.late += 1
            delay = self.rng.uniform(0.0, 1.0)
            op = current_op()
            self._call("create", key, "late", body)
            self.world.nursery.start_soon(self._deliver_late, key, body, op, delay)
            raise TransientStoreError(f"simulated timeout on create {key!r} (still in flight)")
        return await self._land(key, body, mode, current_op())

    async def _deliver_late(self, key: str, body: bytes, op: int, delay: float) -> None:
        await self.world.sleep(delay)
        with contextlib.suppress(AlreadyExistsError):
            await self._land(key, body, "create", op)

    async def _land(self, key: str, body: bytes, mode: PutMode, op: int) -> PutResult:
        history = self.world.history
        kind = "update" if isinstance(mode, UpdateVersion) else str(mode)
        manifest_id = MANIFESTS.id_of(key)
        wal_id = LOG.id_of(key)
        try:
            result = await self.shared.put(key, body, mode=mode)
        except AlreadyExistsError:
            if manifest_id is not None:
                now = history.current.get(manifest_id)
                own = now is not None and now[0] == body
            else:
                own = wal_id is not None and history.wal_current.get(wal_id) == body
            result_name = "own" if own else "exists"
            history.calls.append(Call(history.tick(), self.world.now(), op, kind, key, result_name))
            raise
        except PreconditionError:
            history.calls.append(Call(history.tick(), self.world.now(), op, kind, key, "stale"))
            raise
        seq = history.tick()
        history.calls.append(Call(seq, self.world.now(), op, kind, key, "landed", body))
        if manifest_id is not None:
            history.landed(manifest_id, body, result.etag, seq, op)
        elif wal_id is not None:
            history.wal_current[wal_id] = body
            history.wal_landings.append((seq, op, wal_id, body))
        elif key in (BOUNDARY_KEY, LOG_BOUNDARY_KEY):
            history.moved_boundary(key, body, seq)
        return result

    async def _delete(self, key: str) -> None:
        op = current_op()
        removed = await self.shared.pop(key)
        seq = self._call("delete", key, "absent" if removed is None else "deleted")
        if removed is None:
            return
        history = self.world.history
        manifest_id = MANIFESTS.id_of(key)
        wal_id = LOG.id_of(key)
        if manifest_id is not None:
            history.deleted(manifest_id, seq, op)
        elif wal_id is not None:
            history.wal_current[wal_id] = None
            history.wal_deletions.append((seq, op, wal_id, history.wal_boundary))

    async def aclose(self) -> None:
        """The shared store outlives every process."""


class Process:
    """A simulated OS process: its own store objects, so its own manifest cache (shared by the
    writers it hosts), and its own faults (``plan``'s rates)."""

    def __init__(self, world: Stage, name: str, rng: random.Random, plan: WriterPlan) -> None:
        self.name = name
        # what this process remembers of the root: its writers share it (a scale model of the
        # cold search: listing pages of ``list_page`` keys)
        self.cache = ManifestCache(list_page=world.config.list_page)
        self.wire = self._wire(world, random.Random(rng.getrandbits(64)), plan)
        self.faulty = FaultyStore(
            self.wire,
            seed=rng.getrandbits(64),
            lost_response_rate=plan.lost_rate,
            error_rate=plan.error_rate,
            latency=plan.latency,
            on_fault=self._charge,
        )
        self.store: ObjectStore = self.faulty  # what the actors it hosts talk to

    def _wire(self, world: Stage, rng: random.Random, plan: WriterPlan) -> Wire:
        return Wire(world, rng, plan)

    def _charge(self, action: str, op: str, key: str) -> None:
        record = CURRENT_OP.get()
        if record is not None:
            if action == "lost":
                record.lost += 1
            else:
                record.errors += 1
