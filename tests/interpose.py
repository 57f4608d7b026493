"""A store wrapper for scenario tests: run a rival's code right before or after a create.

Races are hard to hit by timing; this makes them happen on purpose and on every backend. The
wrapped store is real; only the moment of interleaving is chosen by the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from slate_epoch import (
    GetResult,
    ObjectMeta,
    ObjectStore,
    PutMode,
    PutResult,
    TransientStoreError,
)
from slate_epoch._store import Body, listing

Hook = Callable[[], Awaitable[object]]


@dataclass
class _Rule:
    prefix: str
    before: Hook | None
    after: Hook | None
    lose_response: bool
    times: int | None


class Interposer:
    """Forwards to ``inner``; creates under a prefix can trigger hooks and lost responses."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.creates = 0
        self._rules: list[_Rule] = []

    def on_create(
        self,
        prefix: str,
        *,
        before: Hook | None = None,
        after: Hook | None = None,
        lose_response: bool = False,
        times: int | None = 1,
    ) -> None:
        """For the next ``times`` creates under ``prefix`` (None: all of them), await ``before``
        first, then create, then await ``after``, then raise a lost response if asked."""
        self._rules.append(_Rule(prefix, before, after, lose_response, times))

    def _take(self, key: str) -> _Rule | None:
        for rule in self._rules:
            if key.startswith(rule.prefix):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self._rules.remove(rule)
                return rule
        return None

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        rule = self._take(key) if mode == "create" else None
        if mode == "create":
            self.creates += 1
        if rule and rule.before:
            await rule.before()
        result = await self.inner.put(key, body, mode=mode)
        if rule and rule.after:
            await rule.after()
        if rule and rule.lose_response:
            raise TransientStoreError(f"test: response to create {key!r} lost")
        return result

    async def get(self, key: str) -> GetResult:
        return await self.inner.get(key)

    async def head(self, key: str) -> ObjectMeta:
        return await self.inner.head(key)

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectMeta]:
        async with listing(self.inner, prefix, start_after=start_after) as metas:
            async for meta in metas:
                yield meta

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
