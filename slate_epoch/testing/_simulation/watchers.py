"""The actors that do not hold a role: collectors (retention) and readers (of the log, and of
manifest versions by id), each in a process of its own, under faults and crashes."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Final, TypeVar

import anyio

from ..._errors import TransientStoreError
from ..._gc import collect_garbage
from ..._manifest import ManifestStore
from ..._wal import read_wal
from .config import ROOT
from .stage import Life, Stage

__all__ = ["collect", "read"]

T = TypeVar("T")


async def collect(world: Stage, life: Life) -> None:
    """A collector's life: now and then, ``collect_garbage`` with a random ``keep``."""
    rng = life.rng
    for _ in range(rng.randint(1, world.config.max_collections)):
        await world.sleep(round(rng.uniform(0.0, 1.0), 2))
        keep = rng.randint(1, world.config.max_keep)
        timeout = rng.choice((0.3, 1.0, 5.0))
        backoff = world.backoff(rng)
        record = world.record(life, "gc", "gc", timeout)
        record.keep = keep
        collection = partial(
            collect_garbage,
            life.process.store,
            ROOT,
            keep=keep,
            timeout=timeout,
            backoff=backoff,
            cache=life.process.cache,
        )
        report = await world.op(life, record, collection)
        if report is not None:
            record.manifest_id, record.count = report.boundary, len(report.deleted)


async def read(world: Stage, life: Life) -> None:
    """A reader's life: now and then, read the log with ``read_wal`` (from the replay point,
    or from below it, where trims may be under way) slowly enough for trims to overtake it, or
    read a manifest version by id with ``ManifestStore.read``."""
    rng = life.rng
    for _ in range(rng.randint(1, world.config.max_reads)):
        await world.sleep(round(rng.uniform(0.0, 1.0), 2))
        if rng.random() < 0.7:
            await _read_log(world, life, rng)
        else:
            await _read_version(world, life, rng)


async def _read_log(world: Stage, life: Life, rng: random.Random) -> None:
    timeout = 30.0
    record = world.record(life, "read", "read", timeout)
    manifests = ManifestStore(life.process.store, ROOT, cache=life.process.cache)
    from_below = rng.random() < 0.5
    # slowly, now and then: long enough for a writer to mark and trim under the reader
    pauses = [rng.choice((0.0, 0.01, 0.05, 0.2, 0.5)) for _ in range(64)]

    async def read_the_log() -> None:
        with anyio.fail_after(timeout):
            latest = await _retried(manifests.read_latest)
            replay_after = 0 if latest is None else latest[1].replay_after
            after = rng.randint(0, replay_after) if from_below else replay_after
            record.entry_id = last = after
            # As the docs say to: after a transient error, read on from the last id seen.
            for _ in range(_RESUMES):
                entries = read_wal(life.process.store, ROOT, after=last)
                try:
                    async with aclosing(entries):  # type: ignore[type-var]  # an async generator
                        async for entry in entries:
                            record.entries.append((entry.id, entry.epoch, entry.data))
                            last = entry.id
                            await world.sleep(pauses[len(record.entries) % len(pauses)])
                    return
                except TransientStoreError:
                    continue
            raise TransientStoreError(f"read_wal failed {_RESUMES} times in a row")

    await world.op(life, record, read_the_log)


_RESUMES: Final = 20


async def _retried(read: Callable[[], Awaitable[T]]) -> T:
    for _ in range(_RESUMES - 1):
        try:
            return await read()
        except TransientStoreError:
            continue
    return await read()


async def _read_version(world: Stage, life: Life, rng: random.Random) -> None:
    timeout = 30.0
    record = world.record(life, "version", "read", timeout)
    manifests = ManifestStore(life.process.store, ROOT, cache=life.process.cache)
    pick, near_the_boundary = rng.random(), rng.random() < 0.7

    async def read_a_version() -> None:
        with anyio.fail_after(timeout):
            cached = manifests.cached_latest()
            newest = cached[0] if cached else (await _retried(manifests.read_latest) or (0,))[0]
            if newest == 0:
                return
            # anywhere in the history, or at or below the retention boundary: an id still listed
            # there (where stale writers' recreations of collected ids land), else one just below
            low, high = 1, newest
            if near_the_boundary:
                boundary = await manifests.read_boundary()
                standing = await _retried(partial(manifests.collectable_ids, boundary))
                if standing:
                    record.entry_id = standing[int(pick * len(standing))]
                low, high = max(1, boundary - 2), max(1, boundary)
            if not record.entry_id:
                record.entry_id = low + int(pick * (high - low + 1))
            version = await manifests.read(record.entry_id)
            record.write_id = version.write_id

    await world.op(life, record, read_a_version)
