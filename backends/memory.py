"""An in-process store: a dict per instance, for tests, simulations and single-process use."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from itertools import count, islice
from typing import Any, Final

import anyio.lowlevel
from sortedcontainers import SortedDict

from slate_epoch._errors import AlreadyExistsError, NotFoundError, PreconditionError
from slate_epoch._store import (
    Body,
    GetResult,
    ObjectMeta,
    PutMode,
    PutResult,
    StoreBase,
    UpdateVersion,
    as_body,
    validate_key,
    validate_prefix,
)
from slate_epoch._url import parse_store_url

__all__ = ["MemoryStore"]

_LIST_BATCH: Final = 1000


class MemoryStore(StoreBase):
    """Objects in a sorted dict owned by this instance.

    Every operation is atomic: it checks and changes the dict under one lock and never awaits in
    between, so it is safe under any number of tasks (and threads). Each operation is still a
    checkpoint, so concurrent tasks interleave between operations as they would over a network.
    Etags are unique per instance: an object rewritten with the same bytes gets a new etag.
    """

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryStore:
        """``memory://``: a fresh, empty store (no location, no options)."""
        parsed = parse_store_url(url)
        if parsed.scheme != "memory":
            raise ValueError("not a memory:// URL")
        if parsed.location or parsed.path or options:
            raise ValueError("memory:// takes no location or options")
        return cls()

    def __init__(self) -> None:
        # Kept in key order, so a listing costs O(log n + what is read), however many other
        # keys the store holds.
        self._objects: SortedDict[str, tuple[bytes, str]] = SortedDict()
        self._lock = threading.Lock()
        self._versions = count(1)

    async def get(self, key: str) -> GetResult:
        validate_key(key)
        await anyio.lowlevel.checkpoint()
        try:
            body, etag = self._objects[key]
        except KeyError:
            raise NotFoundError(key) from None
        return GetResult(body=body, etag=etag)

    async def head(self, key: str) -> ObjectMeta:
        validate_key(key)
        await anyio.lowlevel.checkpoint()
        try:
            body, etag = self._objects[key]
        except KeyError:
            raise NotFoundError(key) from None
        return ObjectMeta(key=key, size=len(body), etag=etag)

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        validate_key(key)
        body = as_body(body)
        await anyio.lowlevel.checkpoint()
        with self._lock:
            current = self._objects.get(key)
            if mode == "create":
                if current is not None:
                    raise AlreadyExistsError(key)
            elif isinstance(mode, UpdateVersion):
                if current is None or current[1] != mode.etag:
                    raise PreconditionError(key)
            elif mode != "overwrite":
                raise ValueError(f"unknown put mode {mode!r}")
            etag = f"m{next(self._versions)}"
            self._objects[key] = (body, etag)
        return PutResult(etag=etag)

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectMeta]:
        validate_prefix(prefix)
        await anyio.lowlevel.checkpoint()
        # Keys under a prefix are one run in key order. Read it in batches, each under the
        # lock: a key deleted between batches is skipped, as a paged store would.
        low, inclusive = prefix, True
        if start_after is not None and start_after >= prefix:
            low, inclusive = start_after, False
        while True:
            with self._lock:
                keys = self._objects.irange(minimum=low, inclusive=(inclusive, True))
                batch = [(key, self._objects[key]) for key in islice(keys, _LIST_BATCH)]
            for key, (body, etag) in batch:
                if not key.startswith(prefix):
                    return
                yield ObjectMeta(key=key, size=len(body), etag=etag)
            if len(batch) < _LIST_BATCH:
                return
            low, inclusive = batch[-1][0], False

    async def delete(self, key: str) -> None:
        await self.pop(key)

    async def pop(self, key: str) -> GetResult | None:
        """Delete ``key`` and return what it held (None: nothing), in one atomic step: for
        tests and simulations that must know exactly which version a delete took."""
        validate_key(key)
        await anyio.lowlevel.checkpoint()
        with self._lock:
            removed = self._objects.pop(key, None)
        return None if removed is None else GetResult(body=removed[0], etag=removed[1])
