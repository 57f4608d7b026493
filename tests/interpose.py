"""A store wrapper for scenario tests: run a rival's code right before or after a create.

Races are hard to hit by timing; this makes them happen on purpose and on every backend. The
wrapped store is real; only the moment of interleaving is chosen by the test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from slate_epoch import ObjectStore, TransientStoreError
from slate_epoch.testing import ForwardingStore, Request

Hook = Callable[[], Awaitable[object]]
T = TypeVar("T")


@dataclass
class _Rule:
    prefix: str
    before: Hook | None
    after: Hook | None
    lose_response: bool
    times: int | None


class Interposer(ForwardingStore):
    """Forwards to ``inner`` (another store object: another process's view of the same
    storage); creates under a prefix can trigger hooks and lost responses."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
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

    async def forward(self, request: Request, perform: Callable[[], Awaitable[T]]) -> T:
        if request.kind != "create":
            return await perform()
        self.creates += 1
        rule = self._take(request.key)
        if rule and rule.before:
            await rule.before()
        result = await perform()
        if rule and rule.after:
            await rule.after()
        if rule and rule.lose_response:
            raise TransientStoreError(f"test: response to create {request.key!r} lost")
        return result

    async def aclose(self) -> None:
        """The inner store is the test's, and stays open."""

    async def __aenter__(self) -> Interposer:
        return self
