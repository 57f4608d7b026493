"""What the scenarios and the peer scripts share about claims: timing one, undoing one, and
running a job's coroutine in a fresh event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TypeVarTuple, Unpack

import anyio

# claim_epoch takes it (``cache=``), but the package does not export it yet.
from slate_epoch import (
    EpochHandle,
    ManifestCache,
    ManifestStore,
    ObjectStore,
    WalWriter,
    claim_epoch,
)

from .model import Job, Row

__all__ = [
    "CLAIM_TIMEOUT",
    "SEED",
    "cold_claim",
    "cold_open",
    "fence_key",
    "forget",
    "in_loop",
    "timed_claim",
]

CLAIM_TIMEOUT = 60.0
SEED = 20261126

Ts = TypeVarTuple("Ts")


def in_loop(
    scenario: str,
    label: str,
    loop: str,
    fn: Callable[[Unpack[Ts]], Awaitable[list[Row]]],
    *args: *Ts,
) -> Job:
    """A job that runs ``fn(*args)`` in a fresh event loop of ``loop`` (asyncio or trio)."""

    def run() -> list[Row]:
        return anyio.run(fn, *args, backend=loop)

    return Job(scenario, label, run)


async def cold_claim(store: ObjectStore, root: str = "") -> EpochHandle:
    """A claim that knows nothing of the root, as in a new process: an empty ``ManifestCache``
    instead of the one this process keeps for ``store``."""
    return await claim_epoch(store, root, cache=ManifestCache())


async def cold_open(store: ObjectStore, root: str = "") -> tuple[EpochHandle, WalWriter]:
    """What SlateDB's open does, done with slate-epoch in a new process: a cold claim that also
    fences the log (``fence_wal=True``: the fence's first step rides beside the claim's last
    request), and the writer it kept."""
    handle = await claim_epoch(store, root, cache=ManifestCache(), fence_wal=True)
    return handle, await handle.fence_wal()  # the kept writer: no request


async def timed_claim(store: ObjectStore, *, cold: bool = False) -> tuple[EpochHandle, float]:
    """Claim (``cold``: as ``cold_claim``) and time it."""
    start = perf_counter()
    handle = await (cold_claim(store) if cold else claim_epoch(store))
    return handle, perf_counter() - start


async def forget(
    handle: EpochHandle, wal: WalWriter | None = None, *, via: ObjectStore | None = None
) -> None:
    """Delete the manifest a claim just wrote (and the fence ``wal`` wrote), so that the next
    cold claim meets the same state; ``via``: another store object over the same data (default:
    the handle's). Benchmarks only: a real deployment never deletes its newest manifest."""
    store = handle.store if via is None else via
    if wal is not None:
        await store.delete(fence_key(handle.root, wal.fence_id))
    await store.delete(ManifestStore(store, handle.root).key(handle.manifest_id))


def fence_key(root: str, fence_id: int) -> str:
    """``{root}/wal/{id:020d}.wal``: where the log keeps entry ``fence_id`` (README)."""
    root = root.strip("/")
    return f"{root + '/' if root else ''}wal/{fence_id:020d}.wal"
