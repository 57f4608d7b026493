"""The simulated world of one seed: writers, collectors, crashes, and the shared store."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import msgspec

from ..._claim import EpochHandle, claim_epoch
from ..._errors import (
    ClaimTimeoutError,
    FencedError,
    ManifestError,
    NotFoundError,
    OperationTimeoutError,
    WalError,
)
from ..._gc import GarbageReport, collect_garbage
from ..._manifest import Manifest, RoleClaim, decode, encode
from ..._retry import Backoff
from ..._store import listing
from ..._wal import WalWriter, read_wal
from ...backends.memory import MemoryStore
from .config import BOUNDARY_KEY, LOG, MANIFESTS, ROOT, SimulationConfig
from .history import CURRENT_OP, History, OpRecord
from .wire import Process

if TYPE_CHECKING:
    import trio

__all__ = ["Life", "World", "WriterPlan"]

T = TypeVar("T")


@dataclass
class Life:
    """One incarnation of a writer (or collector), from its start to its end or crash."""

    actor: str
    process: Process
    rng: random.Random
    crashed: bool = False
    updates: int = 0
    appends: int = 0
    acknowledged: int = 0  # the last log id an append of the current handle acknowledged
    marked: int = 0  # the last log id the current handle tried to mark replayed


@dataclass(frozen=True)
class WriterPlan:
    index: int
    role: str  # "writer", "compactor", or "gc" for a collector
    lost_rate: float
    error_rate: float
    late_rate: float
    latency: tuple[float, float] | None  # FaultyStore's: a uniform draw
    tick_latency: tuple[float, int] | None  # the wire's: (tick, n): a whole number of ticks <= n
    start_at: float
    host: int  # the writer whose process this one starts in (itself, or an earlier one)


_NOT_FENCED: Final = {"ok", "OperationTimeoutError"}


class World:
    """One seed's run: the shared store, the writers, the collectors, the history."""

    def __init__(self, seed: int, config: SimulationConfig) -> None:
        self.seed = seed
        self.config = config
        self.store = MemoryStore()
        self.history = History(seed=seed, config=config)
        rng = random.Random(f"slate-epoch-sim/{seed}")
        self.plans: list[WriterPlan] = []
        for _ in range(rng.randint(config.min_writers, config.max_writers)):
            self.plans.append(self._plan(rng, self.plans))
        self.history.writers = len(self.plans)
        self.processes: list[Process] = []
        # Each writer starts in a process of its own, or (one in five) in an earlier writer's:
        # several handles then share one store object and so one manifest cache.
        self.hosts: dict[int, Process] = {}
        for plan in self.plans:
            if plan.host == plan.index:
                self.hosts[plan.index] = self._new_process(plan, rng)
        # Collectors: each in a process of its own.
        self.collectors: list[tuple[WriterPlan, Process]] = []
        for index in range(config.max_collectors):
            if rng.random() < config.collector_rate:
                plan = dataclasses.replace(self._plan(rng, []), index=index, role="gc", host=-1)
                process = Process(self, f"gc{index}", rng, plan)
                self.processes.append(process)
                self.collectors.append((plan, process))
        self.history.collectors = len(self.collectors)
        self._rng = rng
        self._nursery: trio.Nursery | None = None

    def _plan(self, rng: random.Random, earlier: list[WriterPlan]) -> WriterPlan:
        c = self.config
        index = len(earlier)
        calm = rng.random() < 0.1  # some processes see no faults at all
        # Latency: none (every call a bare checkpoint), FaultyStore's continuous draw, or the
        # wire's whole number of ticks. With none or ticks, and the writers that start at 0,
        # several tasks wake at the same instant and trio's (seeded) shuffle orders them.
        latency: tuple[float, float] | None = None
        tick_latency: tuple[float, int] | None = None
        kind = rng.random()
        if kind < 0.4:
            latency = (0.0, rng.uniform(0.0, c.max_latency))
        elif kind < 0.8:
            tick = rng.choice((0.001, 0.005, 0.01))
            tick_latency = (tick, max(0, int(c.max_latency / tick)))
        return WriterPlan(
            index=index,
            role="compactor" if rng.random() < c.compactor_rate else "writer",
            lost_rate=0.0 if calm else rng.uniform(0.0, c.max_fault_rate),
            error_rate=0.0 if calm else rng.uniform(0.0, c.max_fault_rate),
            late_rate=0.0 if calm or rng.random() < 0.5 else rng.uniform(0.0, c.max_late_rate),
            latency=latency,
            tick_latency=tick_latency,
            start_at=0.0 if rng.random() < 0.5 else round(rng.uniform(0.0, 1.0), 2),
            host=earlier[rng.randrange(index)].host if index and rng.random() < 0.2 else index,
        )

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    def now(self) -> float:
        import trio

        return trio.current_time()

    async def sleep(self, seconds: float) -> None:
        import trio

        await trio.sleep(seconds)

    def event(self, text: str) -> None:
        self.history.events.append((self.history.tick(), self.now(), text))

    async def run(self) -> None:
        import trio

        history = self.history
        config = self.config
        if self._rng.random() < config.long_history_rate:
            low = max(1, config.list_page // 2)
            await self._prehistory(self._rng.randint(low, max(low, config.long_history)))
        with trio.move_on_after(self.config.deadline) as deadline:
            async with trio.open_nursery() as late_writes:
                self._nursery = late_writes
                async with trio.open_nursery() as actors:
                    for plan in self.plans:
                        actors.start_soon(self._writer, plan)
                    for plan, process in self.collectors:
                        actors.start_soon(self._collector, plan, process)
        history.hung = deadline.cancelled_caught
        history.end_time = self.now()
        await self._read_final_store()
        counts = history.counts
        counts["seeds"] += 1
        counts["writers"] += len(self.plans)
        counts["collectors"] += len(self.collectors)
        counts["colocated"] += sum(plan.host != plan.index for plan in self.plans)
        counts["manifests"] += len(history.first_seen)
        counts["versions_deleted"] += len(history.deletions)
        counts["recreations"] += len(history.recreations)
        counts["entries_trimmed"] += len(history.wal_deletions)
        for process in self.processes:
            counts["lost"] += process.store.counts["lost"]
            counts["errors"] += process.store.counts["error"]
            counts["late"] += process.wire.late
        for call in history.calls:
            if call.result in ("exists", "own") and call.key.startswith(MANIFESTS.folder):
                counts["conflicts" if call.result == "exists" else "own_writes_found"] += 1
        for op in history.ops:
            counts[f"{op.kind}:{op.outcome}"] += 1
            if op.detail == "max_conflicts":
                counts["claim:max_conflicts"] += 1

    async def _read_final_store(self) -> None:
        """Record the final store: the manifest folder, the boundary, the log, and what
        ``read_wal`` yields from the newest manifest's replay point."""
        history = self.history
        async with listing(self.store, MANIFESTS.folder) as metas:
            async for meta in metas:
                result = await self.store.get(meta.key)
                history.final[meta.key] = (result.body, result.etag)
        with contextlib.suppress(NotFoundError):
            history.final_boundary = (await self.store.get(BOUNDARY_KEY)).body
        async with listing(self.store, LOG.folder) as metas:
            async for meta in metas:
                history.final_wal[meta.key] = (await self.store.get(meta.key)).body
        ids = [i for i in map(MANIFESTS.id_of, history.final) if i is not None]
        if not ids:
            return
        try:
            replay_after = decode(history.final[MANIFESTS.key(max(ids))][0]).replay_after
        except ManifestError:
            return  # check 1 reports it
        try:
            async for entry in read_wal(self.store, ROOT, after=replay_after):
                history.final_log.append((entry.id, entry.epoch, entry.data))
        except (WalError, ManifestError) as exc:
            history.final_log_error = f"{type(exc).__name__}: {exc}"

    async def _prehistory(self, length: int) -> None:
        """Start from ``length`` manifests of earlier claims, so that cold readers must search
        past one listing page (by galloping ``head`` probes) under faults."""
        history = self.history
        manifest = Manifest()
        for manifest_id in range(1, length + 1):
            role = "writer" if self._rng.random() < 0.8 else "compactor"
            claim = RoleClaim(role, manifest.epoch(role) + 1, claim_id=f"old{manifest_id}")
            manifest = manifest.with_claim(claim)
            body = encode(manifest)
            result = await self.store.put(MANIFESTS.key(manifest_id), body, mode="create")
            seq = history.tick()
            history.first_seen[manifest_id] = history.current[manifest_id] = (body, result.etag)
            history.landings.append((seq, -1, manifest_id))
        history.counts["long_histories"] += 1
        self.event(f"a history of {length} manifests")

    def _new_process(self, plan: WriterPlan, rng: random.Random) -> Process:
        process = Process(self, f"p{plan.index}.{len(self.processes)}", rng, plan)
        self.processes.append(process)
        return process

    async def _writer(self, plan: WriterPlan) -> None:
        rng = random.Random(f"slate-epoch-sim/{self.seed}/writer/{plan.index}")
        await self._lives(
            f"w{plan.index}",
            plan,
            rng,
            self.hosts[plan.host],
            lambda life: self._live(plan, life),
            lambda: self._new_process(plan, rng),
        )

    async def _collector(self, plan: WriterPlan, process: Process) -> None:
        rng = random.Random(f"slate-epoch-sim/{self.seed}/collector/{plan.index}")
        await self._lives(f"gc{plan.index}", plan, rng, process, self._collect, lambda: process)

    async def _lives(
        self,
        name: str,
        plan: WriterPlan,
        rng: random.Random,
        process: Process,
        live: Callable[[Life], Awaitable[None]],
        new_process: Callable[[], Process],
    ) -> None:
        """Run ``live`` in incarnations: each may crash, and a crashed one may restart, in the
        same process (warm cache) or in a new one."""
        import trio

        await trio.sleep(plan.start_at)
        for incarnation in range(1, self.config.max_restarts + 2):
            life = Life(f"{name}.{incarnation}", process, rng)
            crash_after = rng.expovariate(1.0) if rng.random() < self.config.crash_rate else None
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    if crash_after is not None:
                        nursery.start_soon(self._crash, life, scope, crash_after)
                    await live(life)
                    nursery.cancel_scope.cancel()  # lived to the end: no crash
            if not life.crashed or rng.random() >= self.config.restart_rate:
                return
            await trio.sleep(rng.uniform(0.0, 2.0))
            fresh = rng.random() < 0.5
            if fresh:
                process = new_process()
            self.event(f"restart {name} in {'new' if fresh else 'same'} {process.name}")
            self.history.counts["restarts"] += 1

    async def _crash(self, life: Life, scope: trio.CancelScope, after: float) -> None:
        await self.sleep(after)
        life.crashed = True
        self.history.counts["crashes"] += 1
        self.event(f"crash {life.actor}")
        scope.cancel()

    async def _live(self, plan: WriterPlan, life: Life) -> None:
        rng = life.rng
        for _ in range(3):  # a claim, and up to two more after being fenced
            handle = await self._claim(plan, life)
            if handle is None:
                return
            life.acknowledged = life.marked = 0  # log ids of this handle's own appends
            log: WalWriter | None = None
            outcome = "ok"
            if plan.role == "writer" and rng.random() < self.config.wal_rate:
                log, outcome = await self._fence(life, handle)
            steps = rng.randint(0, self.config.max_updates) if outcome in _NOT_FENCED else 0
            for _ in range(steps):
                # The application thinks; now and then it stalls (a long pause: the classic
                # zombie, which wakes up after a newer holder took over).
                stall = rng.random() < 0.05
                await self.sleep(round(rng.uniform(0.5, 3.0) if stall else rng.uniform(0, 0.2), 2))
                outcome = await self._step(life, handle, log)
                if outcome not in _NOT_FENCED:
                    break
            if outcome != "FencedError" or rng.random() < 0.5:
                return

    async def _step(self, life: Life, handle: EpochHandle, log: WalWriter | None) -> str:
        """One thing a holder does: an update or a refresh, or with a log, mostly appends, and
        now and then a mark of its last acknowledged append as replayed, or a trim."""
        rng = life.rng
        if log is not None:
            draw = rng.random()
            if draw < 0.2 and life.acknowledged > life.marked:
                return await self._mark(life, handle)
            if draw < 0.3:
                return await self._trim(life, handle, log)
            if draw < 0.8:
                return await self._append(life, handle, log)
        if rng.random() < 0.15:
            return await self._refresh(life, handle)
        return await self._update(life, handle)

    async def _op(
        self,
        life: Life,
        record: OpRecord,
        call: Callable[[], Awaitable[T]],
    ) -> T | None:
        import trio

        history = self.history
        record.index = len(history.ops)
        history.ops.append(record)
        token = CURRENT_OP.set(record)
        result: T | None = None
        try:
            result = await call()
            record.outcome = "ok"
        except trio.Cancelled:
            record.outcome = "crashed" if life.crashed else "cancelled"
            raise
        except ClaimTimeoutError as exc:
            record.outcome = type(exc).__name__
            record.detail = "max_conflicts" if "max_conflicts=" in str(exc) else "timeout"
        except (FencedError, OperationTimeoutError) as exc:
            record.outcome = type(exc).__name__
        except Exception as exc:  # a violation: the checker reports it
            record.outcome = type(exc).__name__
            record.detail = str(exc)
        finally:
            CURRENT_OP.reset(token)
            record.end_seq = history.tick()
            record.end_time = self.now()
        return result

    def _record(
        self, life: Life, kind: str, role: str, timeout: float, handle: EpochHandle | None = None
    ) -> OpRecord:
        record = OpRecord(
            index=-1,
            actor=life.actor,
            kind=kind,
            role=role,
            timeout=timeout,
            start_seq=self.history.tick(),
            start_time=self.now(),
        )
        if handle is not None:
            record.epoch, record.claim_id = handle.epoch, handle.claim_id
        return record

    @staticmethod
    def _backoff(rng: random.Random) -> Backoff:
        jitter = random.Random(rng.getrandbits(64))
        return Backoff(
            initial=rng.choice((0.001, 0.01)),
            maximum=rng.choice((0.1, 1.0)),
            jitter=lambda value: jitter.uniform(0.0, value),
        )

    async def _claim(self, plan: WriterPlan, life: Life) -> EpochHandle | None:
        rng = life.rng
        timeout = rng.choice((0.3, 1.0, 5.0, 30.0))
        max_conflicts = None if rng.random() < 0.8 else rng.randint(0, 4)
        backoff = self._backoff(rng)
        record = self._record(life, "claim", plan.role, timeout)
        handle = await self._op(
            life,
            record,
            lambda: claim_epoch(
                life.process.store,
                ROOT,
                role=plan.role,
                timeout=timeout,
                max_conflicts=max_conflicts,
                backoff=backoff,
                owner=life.actor,
                cache=life.process.cache,
            ),
        )
        if handle is not None:
            record.epoch, record.claim_id = handle.epoch, handle.claim_id
            record.manifest_id = handle.manifest_id
        return handle

    async def _update(self, life: Life, handle: EpochHandle) -> str:
        life.updates += 1
        token = f"{life.actor}/{life.updates};".encode()
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "update", handle.role, timeout, handle)
        record.token = token

        def append(manifest: Manifest) -> Manifest:
            return msgspec.structs.replace(manifest, state=manifest.state + token)

        written = await self._op(life, record, lambda: handle.update(append, timeout=timeout))
        if written is not None:
            record.manifest_id, record.write_id = handle.manifest_id, written.write_id
        return record.outcome

    async def _refresh(self, life: Life, handle: EpochHandle) -> str:
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "refresh", handle.role, timeout, handle)
        await self._op(life, record, lambda: handle.refresh(timeout=timeout))
        return record.outcome

    async def _fence(self, life: Life, handle: EpochHandle) -> tuple[WalWriter | None, str]:
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "fence", handle.role, timeout, handle)
        log = await self._op(life, record, lambda: handle.fence_wal(timeout=timeout))
        if log is not None:
            record.entry_id = log.fence_id
        return log, record.outcome

    async def _append(self, life: Life, handle: EpochHandle, log: WalWriter) -> str:
        life.appends += 1
        payload = f"{life.actor}/a{life.appends}".encode()
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "append", handle.role, timeout, handle)
        record.token = payload
        entry_id = await self._op(life, record, lambda: log.append(payload, timeout=timeout))
        if entry_id is not None:
            record.entry_id = life.acknowledged = entry_id
        return record.outcome

    async def _mark(self, life: Life, handle: EpochHandle) -> str:
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "mark", handle.role, timeout, handle)
        # Each id is marked once at most (whatever the outcome), so the checker can tell
        # which operation moved the replay point there.
        record.entry_id = life.marked = target = life.acknowledged
        written = await self._op(
            life, record, lambda: handle.mark_replayed(target, timeout=timeout)
        )
        if written is not None:
            record.manifest_id, record.write_id = handle.manifest_id, written.write_id
        return record.outcome

    async def _trim(self, life: Life, handle: EpochHandle, log: WalWriter) -> str:
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "trim", handle.role, timeout, handle)
        deleted = await self._op(life, record, lambda: log.trim(timeout=timeout))
        if deleted is not None:
            record.count = deleted
        return record.outcome

    async def _collect(self, life: Life) -> None:
        """A collector's life: now and then, ``collect_garbage`` with a random ``keep``."""
        rng = life.rng
        for _ in range(rng.randint(1, self.config.max_collections)):
            await self.sleep(round(rng.uniform(0.0, 1.0), 2))
            keep = rng.randint(1, self.config.max_keep)
            timeout = rng.choice((0.3, 1.0, 5.0))
            backoff = self._backoff(rng)
            record = self._record(life, "gc", "gc", timeout)
            record.keep = keep

            def collect(
                keep: int = keep, timeout: float = timeout, backoff: Backoff = backoff
            ) -> Awaitable[GarbageReport]:
                return collect_garbage(
                    life.process.store,
                    ROOT,
                    keep=keep,
                    timeout=timeout,
                    backoff=backoff,
                    cache=life.process.cache,
                )

            report = await self._op(life, record, collect)
            if report is not None:
                record.manifest_id, record.count = report.boundary, len(report.deleted)
