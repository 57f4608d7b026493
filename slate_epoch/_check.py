"""``check_store``: prove, on the live store, the few promises every guarantee of slate-epoch
rests on, before production trusts it.

Fencing is a race for create-if-absent, the boundaries and leases move by update-by-etag, and
the cold search for the newest manifest lists from a key. A store that accepts those requests
but does not enforce them (an emulator that ignores preconditions, a proxy that drops a header)
answers every call without an error, and two writers then both win one epoch. So the check
does not trust what the store says it supports; it tries each promise on probe objects and
looks at the outcome:

1. ``create-if-absent``: a second create of one key is refused, and leaves the first object;
2. ``one-winner``: of several creates of one key sent at once, exactly one succeeds;
3. ``stale-etag``: an update naming an etag the object no longer has is refused;
4. ``current-etag``: an update naming the current etag succeeds;
5. ``list-start-after``: a listing returns exactly the keys after ``start_after``, in order.

The probes live under ``slate-epoch-check/<random>/`` (``_layout.check_probes``), a prefix that
manifests, logs and leases never use, and are removed again: in a shielded, bounded cleanup that
runs whatever happened. A check that meets a transient error (its outcome unknown) runs again
on fresh keys, under the one deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

import anyio
import msgspec

from ._errors import (
    AlreadyExistsError,
    PreconditionError,
    StoreError,
    TransientStoreError,
    UnsupportedStoreError,
)
from ._layout import check_probes
from ._manifest import new_id
from ._observe import CHECK_LOG
from ._observe import store_for as observed_store
from ._retry import DEFAULT_BACKOFF, DEFAULT_TIMEOUT, Backoff, Retrier, with_deadline
from ._store import ObjectStore, UpdateVersion, listing

__all__ = ["CLEANUP_TIMEOUT", "CONTENDERS", "STORE_CHECKS", "StoreCheckReport", "check_store"]

CONTENDERS: Final = 8  # creates of one key sent at once by the one-winner check
CLEANUP_TIMEOUT: Final = 30.0  # seconds the cleanup may take, whatever happened before it

STORE_CHECKS: Final = {
    "create-if-absent": "a second create of one key is refused",
    "one-winner": f"of {CONTENDERS} creates of one key sent at once, exactly one succeeds",
    "stale-etag": "an update with a stale etag is refused",
    "current-etag": "an update with the current etag succeeds",
    "list-start-after": "a listing returns exactly the keys after start_after",
}


class StoreCheckReport(msgspec.Struct, frozen=True):
    """What ``check_store`` proved: ``passed`` names every check (``STORE_CHECKS``), in the
    order run. ``prefix`` is where the probe objects lived; ``leftovers`` the ones the cleanup
    could not remove within ``CLEANUP_TIMEOUT`` (normally none)."""

    passed: tuple[str, ...]
    prefix: str
    seconds: float
    leftovers: tuple[str, ...] = ()


async def check_store(
    store: ObjectStore, *, timeout: float = DEFAULT_TIMEOUT, backoff: Backoff = DEFAULT_BACKOFF
) -> StoreCheckReport:
    """Prove on ``store`` what slate-epoch needs of it (see ``STORE_CHECKS``), fail closed.

    Raises ``UnsupportedStoreError`` (its ``check`` names the first check that failed) when the
    store does not enforce one of them. Other errors propagate as they are (unreachable, access
    denied, a missing bucket); transient ones are retried on fresh keys until ``timeout``, then
    ``OperationTimeoutError``. Writes and deletes a few small objects under
    ``slate-epoch-check/``, and removes them again even when a check fails.
    """
    prefix = check_probes(new_id())
    watched = observed_store(store)  # each request logged at DEBUG, if anyone listens
    started = time.perf_counter()
    try:
        passed = await with_deadline(
            "store check", timeout, backoff, partial(_run_checks, watched, prefix)
        )
    except BaseException:
        try:
            await _clean_up(watched, prefix, backoff)
        except StoreError as cleanup_error:  # the check's own error matters more
            CHECK_LOG.warning(
                "could not remove the store check's probe objects under %r: %s",
                prefix,
                cleanup_error,
                extra={"prefix": prefix},
            )
        raise
    leftovers = await _clean_up(watched, prefix, backoff)
    return StoreCheckReport(passed, prefix, time.perf_counter() - started, leftovers)


@dataclass(frozen=True)
class _Probe:
    """One attempt of one check: a folder of keys that no other attempt uses, and a token that
    makes its bodies unique."""

    store: ObjectStore
    folder: str  # ends with "/"
    token: str

    def key(self, name: str) -> str:
        return self.folder + name

    def body(self, what: str) -> bytes:
        return f"slate-epoch store check: {what} {self.token}".encode()


def _failed(check: str, finding: str) -> UnsupportedStoreError:
    return UnsupportedStoreError(f"check {check!r} failed: {finding}", check=check)


async def _create_if_absent(probe: _Probe) -> None:
    store, key = probe.store, probe.key("object")
    first = probe.body("first")
    await store.put(key, first, mode="create")
    try:
        await store.put(key, probe.body("second"), mode="create")
    except AlreadyExistsError:
        pass
    else:
        raise _failed(
            "create-if-absent",
            "a second create of one key succeeded: the store does not enforce create-if-absent, "
            "so two writers could both win one manifest id",
        )
    if (await store.get(key)).body != first:
        raise _failed("create-if-absent", "a refused create replaced the object anyway")


async def _one_winner(probe: _Probe) -> None:
    store, key = probe.store, probe.key("raced")
    bodies = [probe.body(f"contender {i}") for i in range(CONTENDERS)]
    won: list[int] = []
    errors: list[Exception] = []

    async def contend(index: int) -> None:
        try:
            await store.put(key, bodies[index], mode="create")
        except AlreadyExistsError:
            return
        except Exception as exc:  # re-raised below, once every contender is done
            errors.append(exc)
            return
        won.append(index)

    async with anyio.create_task_group() as group:
        for index in range(CONTENDERS):
            group.start_soon(contend, index)
    if errors:  # a permanent error first; a transient one makes the check run again
        errors.sort(key=lambda error: isinstance(error, TransientStoreError))
        raise errors[0]
    if len(won) != 1:
        raise _failed(
            "one-winner",
            f"{len(won)} of {CONTENDERS} creates of one key sent at once succeeded: the store's "
            "conditional create is not atomic",
        )
    if (await store.get(key)).body != bodies[won[0]]:
        raise _failed("one-winner", "the object stored is not the one whose create succeeded")


async def _stale_etag(probe: _Probe) -> None:
    store, key = probe.store, probe.key("versioned")
    old = await store.put(key, probe.body("version 1"), mode="create")
    current_body = probe.body("version 2")
    current = await store.put(key, current_body, mode="overwrite")
    if current.etag == old.etag:
        raise _failed(
            "stale-etag",
            f"two versions of one object have the same etag ({old.etag!r}): etags do not tell "
            "versions apart",
        )
    try:
        await store.put(key, probe.body("version 3"), mode=UpdateVersion(old.etag))
    except PreconditionError:
        pass
    else:
        raise _failed(
            "stale-etag",
            "an update naming an etag the object no longer has succeeded: the store does not "
            "enforce update-by-etag",
        )
    if (await store.get(key)).body != current_body:
        raise _failed("stale-etag", "a refused update replaced the object anyway")


async def _current_etag(probe: _Probe) -> None:
    store, key = probe.store, probe.key("versioned")
    old = await store.put(key, probe.body("version 1"), mode="create")
    new_body = probe.body("version 2")
    try:
        new = await store.put(key, new_body, mode=UpdateVersion(old.etag))
    except PreconditionError:
        raise _failed(
            "current-etag",
            "an update naming the object's current etag was refused: the store's etags do not "
            "match what it compares them with",
        ) from None
    got = await store.get(key)
    if (got.body, got.etag) != (new_body, new.etag):
        raise _failed("current-etag", "after an update, the object is not what the update wrote")


async def _list_start_after(probe: _Probe) -> None:
    store, folder = probe.store, probe.key("listed/")
    names = ["a", "b", "b0", "c"]
    for name in names:
        await store.put(folder + name, probe.body(name), mode="create")
    for after, expected in ((None, names), ("a", names[1:]), ("b", names[2:]), ("c", [])):
        start_after = None if after is None else folder + after
        async with listing(store, folder, start_after=start_after) as metas:
            found = [meta.key.removeprefix(folder) async for meta in metas]
        if found != expected:
            raise _failed(
                "list-start-after",
                f"listing {folder!r} after {after!r} returned {found}, not {expected}",
            )


_CHECKS: Final[tuple[tuple[str, Callable[[_Probe], Awaitable[None]]], ...]] = (
    ("create-if-absent", _create_if_absent),
    ("one-winner", _one_winner),
    ("stale-etag", _stale_etag),
    ("current-etag", _current_etag),
    ("list-start-after", _list_start_after),
)


async def _run_checks(store: ObjectStore, prefix: str, retrier: Retrier) -> tuple[str, ...]:
    """Every check in order; the first that fails raises. A transient error (an outcome
    unknown) runs the check again on fresh keys, after a backoff."""
    passed: list[str] = []
    for name, check in _CHECKS:
        attempt = 0
        while True:
            attempt += 1
            retrier.attempts += 1
            probe = _Probe(store, f"{prefix}{name}/{attempt}/", new_id())
            try:
                await check(probe)
            except TransientStoreError as exc:
                retrier.failed(exc)
                await retrier.pause()
                continue
            except UnsupportedStoreError as exc:
                if exc.check is not None:
                    raise
                # The store said so itself (say, HTTP 501 for a conditional request).
                raise _failed(name, str(exc)) from exc
            break
        passed.append(name)
        if CHECK_LOG.isEnabledFor(logging.INFO):
            CHECK_LOG.info(
                "store check %r passed: %s", name, STORE_CHECKS[name], extra={"check": name}
            )
    return tuple(passed)


async def _clean_up(store: ObjectStore, prefix: str, backoff: Backoff) -> tuple[str, ...]:
    """Delete every probe object under ``prefix``, until a listing finds none: shielded (it
    runs while the caller is being cancelled, too) and bounded by ``CLEANUP_TIMEOUT``. Returns
    the keys still there when time ran out. Transient errors are retried; others raise."""
    remaining: tuple[str, ...] = (prefix,)  # not listed yet: the whole folder, as far as known
    waits = backoff.waits()
    with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
        while True:
            try:
                async with listing(store, prefix) as metas:
                    remaining = tuple([meta.key async for meta in metas])
                if not remaining:
                    return ()
                for key in remaining:
                    await store.delete(key)
            except TransientStoreError:
                await anyio.sleep(next(waits))
    return remaining
