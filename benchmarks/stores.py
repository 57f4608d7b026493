"""The stores a benchmark runs on, and the wrapper that counts and replays their requests.

- ``CountingStore`` (a ``ForwardingStore``) counts requests by kind (``get``, ``head``, ``list``,
  ``create``, ``overwrite``, ``update``, ``delete``) plus ``conflicts`` (creates that found the
  key taken); with ``record=True`` it also keeps each call, so ``replay`` can perform exactly the
  same raw store operations again.
- A claim starts cold (as in a new process) with ``claim_epoch(store, cache=ManifestCache())``:
  nothing this process saw of the root is used.
- ``open_backend`` opens a fresh, empty store of a kind: ``memory``, ``local`` (fsync),
  ``local-nofsync`` (``durable=False``) or ``s3`` (a new bucket on the moto server).
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from slate_epoch import (
    AlreadyExistsError,
    Manifest,
    ManifestStore,
    ObjectMeta,
    ObjectStore,
    PutMode,
    RoleClaim,
    StoreError,
    UpdateVersion,
)
from slate_epoch.backends.local import LocalStore
from slate_epoch.backends.memory import MemoryStore
from slate_epoch.testing import ForwardingStore, Operation, Request

__all__ = [
    "BACKENDS",
    "Call",
    "CountingStore",
    "Environment",
    "call_kinds",
    "new_folder",
    "open_backend",
    "per_claim",
    "prefill",
    "prefill_linked",
    "replay",
]

BACKENDS = ("memory", "local", "local-nofsync", "s3")
KINDS = ("list", "get", "head", "create", "overwrite", "update", "delete")
T = TypeVar("T")
_folder_ids = itertools.count(1)


@dataclass(frozen=True)
class Environment:
    """Where local stores live, and the moto server's URL when ``--s3`` is on."""

    workdir: Path
    s3_endpoint: str | None = None


@dataclass
class Call:
    """One recorded store call, enough to perform it again."""

    op: Operation
    key: str  # a list's prefix
    body: bytes = b""
    mode: PutMode | None = None  # a put's
    start_after: str | None = None  # a list's
    consumed: int = 0  # list: items the caller took
    exhausted: bool = False  # list: the caller read to the end

    @property
    def kind(self) -> str:
        """As ``Request.kind``: the operation, a put named by its mode."""
        if self.op != "put":
            return self.op
        return "update" if isinstance(self.mode, UpdateVersion) else str(self.mode)


class CountingStore(ForwardingStore):
    """Forwards to ``inner``, counting requests by kind; ``record=True`` also keeps ``calls``.

    Closing it closes ``inner`` (``ForwardingStore``): the benchmarks never close a wrapper, the
    store belongs to whoever opened it."""

    def __init__(self, inner: ObjectStore, *, record: bool = False) -> None:
        super().__init__(inner)
        self.counts: Counter[str] = Counter()
        self.calls: list[Call] = []
        self.record = record

    def requests(self) -> Counter[str]:
        """Requests by kind, without outcome tallies such as ``conflicts``."""
        return Counter({k: v for k, v in self.counts.items() if k in KINDS})

    async def forward(self, request: Request, perform: Callable[[], Awaitable[T]]) -> T:
        self.counts[request.kind] += 1
        if self.record and request.op != "list":  # a list is recorded by ``list`` below
            self.calls.append(Call(request.op, request.key, request.body or b"", request.mode))
        try:
            return await perform()
        except AlreadyExistsError:
            self.counts["conflicts"] += 1
            raise

    def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        listed = super().list(prefix, start_after=start_after)
        if not self.record:
            return listed
        return self._recorded(Call("list", prefix, start_after=start_after), listed)

    async def _recorded(
        self, call: Call, listed: AsyncIterator[ObjectMeta]
    ) -> AsyncIterator[ObjectMeta]:
        """``listed``, noting in ``call`` (the request ``forward`` does not see whole: its
        ``start_after``) how far the caller read."""
        self.calls.append(call)
        try:
            async for meta in listed:
                call.consumed += 1
                yield meta
            call.exhausted = True
        finally:
            await _aclose(listed)


async def _aclose(iterator: AsyncIterator[ObjectMeta]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def replay(store: ObjectStore, calls: Sequence[Call]) -> None:
    """Perform ``calls`` on ``store`` directly, as the recorded caller did (errors included)."""
    for call in calls:
        try:
            if call.op == "get":
                await store.get(call.key)
            elif call.op == "head":
                await store.head(call.key)
            elif call.op == "put":
                await store.put(call.key, call.body, mode=call.mode or "overwrite")
            elif call.op == "delete":
                await store.delete(call.key)
            else:
                await _replay_list(store, call)
        except StoreError:
            pass  # the recorded call failed the same way (a miss, a conflict): same work done


async def _replay_list(store: ObjectStore, call: Call) -> None:
    metas = store.list(call.key, start_after=call.start_after)
    try:
        if call.exhausted:
            async for _ in metas:
                pass
        else:
            for _ in range(call.consumed):
                await anext(metas)
    finally:
        await _aclose(metas)


@asynccontextmanager
async def open_backend(
    kind: str, env: Environment, *, folder: Path | None = None
) -> AsyncIterator[ObjectStore]:
    """A new, empty store of ``kind`` (``folder``: a given local folder instead of a new one)."""
    store: ObjectStore
    if kind == "memory":
        store = MemoryStore()
    elif kind in ("local", "local-nofsync"):
        path = folder or env.workdir / f"{kind}-{next(_folder_ids)}"
        store = LocalStore(path, durable=kind == "local")
    elif kind == "s3":
        from slate_epoch.backends.s3 import S3Store
        from slate_epoch.testing.servers import create_bucket

        if env.s3_endpoint is None:
            raise RuntimeError("the S3 backend needs --s3 (a moto server)")
        bucket = await create_bucket(env.s3_endpoint)
        store = S3Store(bucket, endpoint_url=env.s3_endpoint)
    else:
        raise ValueError(f"unknown backend {kind!r}; known: {BACKENDS}")
    async with store:
        yield store


def new_folder(env: Environment, kind: str) -> Path:
    return env.workdir / f"{kind}-{next(_folder_ids)}"


async def prefill(store: ObjectStore, count: int, *, concurrency: int = 8, root: str = "") -> None:
    """Manifests 1..``count`` under ``root``, as a long-lived service leaves behind.

    The first is written with ``ManifestStore.write``; the rest are the same bytes at the
    following ids (a manifest does not contain its own id), written ``concurrency`` at a time.
    """
    if count < 1:
        return
    manifests = ManifestStore(store, root)
    claim = RoleClaim(role="writer", epoch=1, claim_id="prefill", owner="benchmarks")
    await manifests.write(1, Manifest(roles=(claim,), state=b"x" * 64))
    body = (await store.get(manifests.key(1))).body
    ids = iter(range(2, count + 1))

    async def worker() -> None:
        for manifest_id in ids:
            await store.put(manifests.key(manifest_id), body, mode="create")

    async with anyio.create_task_group() as tg:
        for _ in range(min(concurrency, count)):
            tg.start_soon(worker)


# ext4 allows 65,000 links to one inode; each chunk of ids links to its own first manifest.
_LINKS_PER_SOURCE = 50_000


async def prefill_linked(store: ObjectStore, folder: Path, count: int) -> None:
    """``prefill`` for a local store, fast: the first manifest of every ``_LINKS_PER_SOURCE`` ids
    is written through the store, the others are hard links to it, made directly in the store's
    folder (documented layout: key ``a/b`` is the file ``root/a/b``; the store's own create is
    a hard link too). 100,000 manifests take seconds instead of minutes, and deleting them frees
    one inode per chunk: on a filesystem mounted with ``discard``, freeing 100,000 written-back
    files one by one takes minutes. Every key reads back the same bytes as with ``prefill``
    (their etags are equal too, which no claim looks at)."""
    if count < 1:
        return
    await prefill(store, 1)
    manifests = ManifestStore(store)
    body = (await store.get(manifests.key(1))).body
    for first in range(1, count + 1, _LINKS_PER_SOURCE):
        if first > 1:
            await store.put(manifests.key(first), body, mode="create")
        last = min(first + _LINKS_PER_SOURCE, count + 1)
        paths = [folder / manifests.key(i) for i in range(first, last)]
        await anyio.to_thread.run_sync(_link_all, paths)


def _link_all(paths: Sequence[Path]) -> None:
    """Hard-link ``paths[1:]`` to ``paths[0]``."""
    for path in paths[1:]:
        os.link(paths[0], path)


def call_kinds(calls: Sequence[Call]) -> Counter[str]:
    """Requests by kind in recorded calls."""
    return Counter(call.kind for call in calls)


def per_claim(counts: Counter[str], claims: int) -> dict[str, float]:
    """Requests per claim by kind (in ``KINDS`` order) and their ``total``."""
    out = {k: counts[k] / claims for k in KINDS if counts[k]}
    out["total"] = sum(out.values())
    return out
