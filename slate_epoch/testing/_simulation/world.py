"""The simulated world of one seed: writers, collectors, crashes, and the shared store."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from ..._claim import EpochHandle
from ..._errors import (
    ClaimTimeoutError,
    FencedError,
    ManifestError,
    NotFoundError,
    OperationTimeoutError,
    WalError,
)
from ..._manifest import Manifest, RoleClaim, decode, encode
from ..._retry import Backoff
from ..._store import listing
from ..._wal import read_wal
from ...backends.memory import MemoryStore
from .config import BOUNDARY_KEY, LOG, MANIFESTS, ROOT, SimulationConfig
from .history import CURRENT_OP, History, OpRecord
from .leaders import Leading
from .stage import Life, WriterPlan, draw_latency
from .watchers import collect, read
from .wire import Process
from .writer import Writer

if TYPE_CHECKING:
    import trio

__all__ = ["World"]

T = TypeVar("T")


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
        # Readers: each in a process of its own.
        self.readers: list[tuple[WriterPlan, Process]] = []
        for index in range(config.max_readers):
            if rng.random() < config.reader_rate:
                plan = dataclasses.replace(self._plan(rng, []), index=index, role="read", host=-1)
                process = Process(self, f"r{index}", rng, plan)
                self.processes.append(process)
                self.readers.append((plan, process))
        self._rng = rng
        self._nursery: trio.Nursery | None = None
        # Leaders, with their own RNG: a seed's other draws are those it has without them.
        lead_rng = random.Random(f"slate-epoch-sim/{seed}/lead")
        self.leading = Leading(self, lead_rng) if lead_rng.random() < config.lead_rate else None

    def _plan(self, rng: random.Random, earlier: list[WriterPlan]) -> WriterPlan:
        c = self.config
        index = len(earlier)
        calm = rng.random() < 0.1  # some processes see no faults at all
        latency, tick_latency = draw_latency(rng, c.max_latency)  # (the writers at 0 wake together)
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
        if self._rng.random() < config.foreign_rate:
            await self._foreign_objects()
        with trio.move_on_after(self.config.deadline) as deadline:
            async with trio.open_nursery() as late_writes:
                self._nursery = late_writes
                async with trio.open_nursery() as actors:
                    for plan in self.plans:
                        actors.start_soon(self._writer, plan)
                    for plan, process in self.collectors:
                        actors.start_soon(self._collector, plan, process)
                    for plan, process in self.readers:
                        actors.start_soon(self._reader, plan, process)
                    if self.leading is not None:
                        actors.start_soon(self.leading.run)
        history.hung = deadline.cancelled_caught
        history.end_time = self.now()
        await self._read_final_store()
        counts = history.counts
        counts["seeds"] += 1
        counts["writers"] += len(self.plans)
        counts["collectors"] += len(self.collectors)
        counts["readers"] += len(self.readers)
        counts["colocated"] += sum(plan.host != plan.index for plan in self.plans)
        counts["manifests"] += len(history.first_seen)
        counts["versions_deleted"] += len(history.deletions)
        counts["recreations"] += len(history.recreations)
        counts["entries_trimmed"] += len(history.wal_deletions)
        for process in self.processes:
            counts["lost"] += process.faulty.counts["lost"]
            counts["errors"] += process.faulty.counts["error"]
            counts["late"] += process.wire.late
        for call in history.calls:
            if call.result in ("exists", "own") and call.key.startswith(MANIFESTS.folder):
                counts["conflicts" if call.result == "exists" else "own_writes_found"] += 1
        if self.leading is not None:
            self.leading.count()
        for op in history.ops:
            counts[f"{op.kind}:{op.outcome}"] += 1
            if op.detail == "max_conflicts":
                counts["claim:max_conflicts"] += 1

    async def _read_final_store(self) -> None:
        """Record the final store: the manifest folder, the boundary, the log, and what
        ``read_wal`` yields from the newest manifest's replay point."""
        history = self.history
        for key in history.foreign:
            with contextlib.suppress(NotFoundError):
                history.final_foreign[key] = (await self.store.get(key)).body
        async with listing(self.store, MANIFESTS.folder) as metas:
            async for meta in metas:
                if meta.key in history.foreign:
                    continue
                result = await self.store.get(meta.key)
                history.final[meta.key] = (result.body, result.etag)
        with contextlib.suppress(NotFoundError):
            history.final_boundary = (await self.store.get(BOUNDARY_KEY)).body
        async with listing(self.store, LOG.folder) as metas:
            async for meta in metas:
                if meta.key not in history.foreign:
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

    async def _foreign_objects(self) -> None:
        """Objects that are not ours in every folder of the root, named as a careless parser
        would take for ids (Unicode digits that ``int`` parses, near misses, other suffixes):
        the library must never read, count, change or delete them."""
        names = [
            f"{MANIFESTS.folder}{chr(0x669) * 20}.manifest",  # Arabic-Indic nines: int() parses
            f"{MANIFESTS.folder}{'0' * 19}\u00b2.manifest",  # a superscript two: int() refuses
            f"{MANIFESTS.folder}{1:020d}.manifest.bak",
            f"{MANIFESTS.folder}README",
            f"{LOG.folder}{chr(0x660) * 19}{chr(0x663)}.wal",  # Arabic-Indic digits: 0...03
            f"{LOG.folder}{2:019d}.wal",
            f"{LOG.folder}{1:020d}.wal.tmp",
            f"{ROOT}/notes.txt",
        ]
        for key in names:
            if self._rng.random() < 0.6:
                body = f"foreign object {key}".encode()
                await self.store.put(key, body)
                self.history.foreign[key] = body
        self.history.counts["foreign_objects"] += len(self.history.foreign)
        self.event(f"{len(self.history.foreign)} foreign objects")

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
            lambda life: Writer(self, plan, life).live(),
            lambda: self._new_process(plan, rng),
        )

    async def _collector(self, plan: WriterPlan, process: Process) -> None:
        rng = random.Random(f"slate-epoch-sim/{self.seed}/collector/{plan.index}")
        await self._lives(
            f"gc{plan.index}", plan, rng, process, partial(collect, self), lambda: process
        )

    async def _reader(self, plan: WriterPlan, process: Process) -> None:
        rng = random.Random(f"slate-epoch-sim/{self.seed}/reader/{plan.index}")
        await self._lives(
            f"r{plan.index}", plan, rng, process, partial(read, self), lambda: process
        )

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

    async def op(
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
            record.outcome = "crashed" if life.crashed else life.cancelled_as
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

    def record(
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

    def backoff(self, rng: random.Random) -> Backoff:
        jitter = random.Random(rng.getrandbits(64))
        return Backoff(
            initial=rng.choice((0.001, 0.01)),
            maximum=rng.choice((0.1, 1.0)),
            jitter=lambda value: jitter.uniform(0.0, value),
        )
