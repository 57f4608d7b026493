"""``ForwardingStore``: a store that passes every operation to another, through one hook.

The base of every wrapper that looks at or changes a store's traffic: ``FaultyStore`` (faults
and latency), the simulation's wire (records a history), the benchmarks' request counter, the
tests' interposer (runs a rival's code at a chosen moment). Each overrides ``forward`` only::

    class Counting(ForwardingStore):
        def __init__(self, inner):
            super().__init__(inner)
            self.counts = collections.Counter()

        async def forward(self, request, perform):
            self.counts[request.op] += 1
            return await perform()
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Literal, Self, TypeAlias, TypeVar

from .._store import (
    Body,
    GetResult,
    ObjectMeta,
    ObjectStore,
    PutMode,
    PutResult,
    StoreBase,
    UpdateVersion,
    as_body,
    listing,
)

__all__ = ["OPERATIONS", "ForwardingStore", "Operation", "Request"]

Operation: TypeAlias = Literal["get", "head", "put", "list", "delete"]
OPERATIONS: tuple[Operation, ...] = ("get", "head", "put", "list", "delete")
T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """One operation on its way to the inner store: ``key`` is the prefix of a ``list`` (and
    ``start_after`` its own); ``mode`` and ``body`` are a ``put``'s."""

    op: Operation
    key: str
    mode: PutMode | None = None
    body: bytes | None = None
    start_after: str | None = None

    @property
    def kind(self) -> str:
        """The operation, with a put named by its mode: ``create``, ``overwrite`` or
        ``update``."""
        if self.op != "put":
            return self.op
        return "update" if isinstance(self.mode, UpdateVersion) else str(self.mode)


async def _nothing() -> None:
    """What a ``list`` forwards: its pages are read from the inner store as they are wanted."""


class ForwardingStore(StoreBase):
    """An ``ObjectStore`` that sends each operation to ``inner`` through ``forward``.

    Entering it enters ``inner``; closing it closes ``inner``.
    """

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    async def forward(self, request: Request, perform: Callable[[], Awaitable[T]]) -> T:
        """Every operation passes here with ``perform``, which does it on ``inner``: override
        to count, delay, fail or record it (await ``perform()`` to let it happen). A ``list``
        passes once, before its first page; its keys then come from ``inner``."""
        return await perform()

    async def get(self, key: str) -> GetResult:
        return await self.forward(Request("get", key), partial(self.inner.get, key))

    async def head(self, key: str) -> ObjectMeta:
        return await self.forward(Request("head", key), partial(self.inner.head, key))

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        data = as_body(body)
        perform = partial(self.inner.put, key, data, mode=mode)
        return await self.forward(Request("put", key, mode, data), perform)

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectMeta]:
        await self.forward(Request("list", prefix, start_after=start_after), _nothing)
        async with listing(self.inner, prefix, start_after=start_after) as metas:
            async for meta in metas:
                yield meta

    async def delete(self, key: str) -> None:
        await self.forward(Request("delete", key), partial(self.inner.delete, key))

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)
