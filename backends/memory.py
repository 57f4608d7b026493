"""An in-process store: a dict per instance, for tests, simulations and single-process use."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from itertools import count
from typing import Any

import anyio.lowlevel

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


class MemoryStore(StoreBase):
    """Objects in a dict owned by this instance.

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
        self._objects: dict[str, tuple[bytes, str]] = {}
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
        with self._lock:
            keys = sorted(
                k
                for k in self._objects
                if k.startswith(prefix) and (start_after is None or k > start_after)
            )
        for key in keys:
            entry = self._objects.get(key)
            # deleted since the snapshot of keys: skipped, as a paged store would
            if entry is not None:
                yield ObjectMeta(key=key, size=len(entry[0]), etag=entry[1])

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
