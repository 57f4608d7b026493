"""How long to wait between tries (exponential backoff with full jitter, slept on anyio), and
the one deadline each operation runs under.

The schedule comes from the ``backoff`` package's wait generators; its own async decorators
call ``asyncio.sleep``, which would not run on trio, so we drive the generators ourselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Final, TypeVar

import anyio
import backoff
import msgspec

from ._errors import OperationTimeoutError, TransientStoreError
from ._observe import retrying

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_TIMEOUT",
    "Backoff",
    "Retrier",
    "gather",
    "with_deadline",
]

T = TypeVar("T")


class Backoff(msgspec.Struct, frozen=True):
    """The wait between tries: ``jitter(min(initial * multiplier**n, maximum))`` seconds.

    Defaults: start at 10 ms, double each time, never above 1 s, full jitter (a uniform draw from
    zero to that value, which spreads racing claimants apart best). ``jitter`` may be replaced,
    e.g. by a seeded draw in a deterministic simulation.
    """

    initial: float = 0.01
    multiplier: float = 2.0
    maximum: float = 1.0
    jitter: Callable[[float], float] = backoff.full_jitter

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.multiplier < 1:
            raise ValueError(f"invalid backoff {self!r}")

    def waits(self) -> Iterator[float]:
        """An endless schedule of waits, in seconds."""
        schedule = backoff.expo(base=self.multiplier, factor=self.initial, max_value=self.maximum)
        next(schedule)  # backoff's generators are primed with one next() before the first value
        for value in schedule:
            yield self.jitter(value)


class Retrier:
    """Counts the tries of one operation, remembers the last error, and sleeps between tries.
    The caller bounds it all with a deadline.

    ``what`` names the operation and ``facts`` are its log fields, for the WARNING that every
    transient error after the first one logs (the first is the common lost response). Both are
    kept as given and only formatted for that record: a warm claim can't spare the time."""

    def __init__(
        self, backoff: Backoff, what: str = "operation", facts: Mapping[str, object] | None = None
    ) -> None:
        self.attempts = 0
        self.transient = 0  # transient errors met (outcome unknown), each followed by a retry
        self.last_error: BaseException | None = None
        self.what = what
        self.facts = facts
        self._backoff = backoff
        self._waits: Iterator[float] | None = None  # made at the first pause: most never pause

    def failed(self, error: BaseException) -> None:
        self.last_error = error
        if isinstance(error, TransientStoreError):
            self.transient += 1
            if self.transient > 1:
                retrying(self.what, self.transient, error, self.facts or {})

    async def pause(self) -> None:
        if self._waits is None:
            self._waits = self._backoff.waits()
        await anyio.sleep(next(self._waits))

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``await operation()``, again after a backoff for as long as the outcome is unknown
        (``TransientStoreError``): for reads, and for writes that are safe to repeat."""
        while True:
            self.attempts += 1
            try:
                return await operation()
            except TransientStoreError as exc:
                self.failed(exc)
                await self.pause()


DEFAULT_TIMEOUT: Final = 60.0
DEFAULT_BACKOFF: Final = Backoff()


async def with_deadline(
    what: str,
    timeout: float,
    backoff: Backoff,
    operation: Callable[[Retrier], Awaitable[T]],
    *,
    error: type[OperationTimeoutError] = OperationTimeoutError,
    facts: Mapping[str, object] | None = None,
) -> T:
    """``await operation(retrier)`` within ``timeout`` seconds; past it, ``error`` saying that
    ``what`` timed out, with the tries counted and the last error seen. ``facts`` are the
    operation's log fields."""
    retrier = Retrier(backoff, what, facts)
    with anyio.move_on_after(timeout):
        return await operation(retrier)
    raise error(
        f"{what} timed out after {timeout} s",
        attempts=retrier.attempts,
        last_error=retrier.last_error,
    )


async def gather(*steps: Callable[[], Awaitable[None]]) -> None:
    """Run ``steps`` at once; if any fails, raise its error once all are done (a plain
    exception, never an exception group, so a caller's retry sees what it expects)."""
    errors: list[Exception] = []

    async def run(step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except Exception as exc:  # re-raised below, once the others are done
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for step in steps:
            group.start_soon(run, step)
    if errors:
        raise errors[0]
