"""The fenced write-ahead log: the writer's appends between manifest updates.

Entries live at ``{root}/wal/{id:020d}.wal`` (an ``ObjectSequence``), ids contiguous from 1,
each written once with create-if-absent. An entry is framed (``_framing``: magic ``SLEW``,
CRC-32, format version) around the writer's epoch (8 bytes, big-endian) and the payload.

A *fence* is a zero-byte object at an id. A new writer, after its claim, writes one at the first
free id: the old writer's next append meets it, re-reads the manifest, finds the newer epoch and
stops with ``FencedError`` - its append lands nowhere.

Why claiming first and fencing second is safe (SlateDB picks its slot before the bump, and found
races around that): a fence is written only after its writer's claim is in the manifest. So an
old writer that meets a fence always finds the newer epoch when it re-reads - it can never take
the fence for a stale one and step over it. And the fence goes at the *first* free id: every
append the old writer had acknowledged lies below it (appends are acknowledged in id order), so
a replay from the replay point sees them all; an append still in flight either lands below the
fence (and is replayed) or meets the fence and fails (and was never acknowledged).

Trimming deletes entries - fences too - so it follows the manifests' retention rule: it first
moves the log's boundary (``{root}/wal-boundary``) up to the replay point, then deletes at or
below it; and every append reads the boundary after its create. An old writer whose next id was
trimmed away would otherwise recreate it and believe it appended; instead its append lands at or
below the boundary, counts as a conflict, and the re-read manifest fences it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Final, Protocol, TypeVar

import anyio
import msgspec

from ._boundary import advance_boundary, read_boundary
from ._errors import (
    AlreadyExistsError,
    FencedError,
    InvariantViolationError,
    NotFoundError,
    StoreError,
    WalCorruptError,
    WalTrimmedError,
    WriteOutcomeUnknownError,
)
from ._framing import HEADER_SIZE, frame, unframe
from ._layout import log_boundary_key, log_entries
from ._manifest import Manifest
from ._observe import WAL_LOG, fields, own_write_found, quiet, span, store_for, violated
from ._retry import Retrier, gather
from ._sequence import ObjectSequence
from ._store import Body, ObjectStore, as_body

__all__ = [
    "FenceAttempt",
    "LogHolder",
    "WalEntry",
    "WalWriter",
    "attempt_fence",
    "decode_entry",
    "encode_entry",
    "fence_log",
    "read_wal",
    "replay_point_mover",
    "wal_sequence",
]

T = TypeVar("T")

MAGIC: Final = b"SLEW"
FENCE: Final = b""
_EPOCH_BYTES: Final = 8


class WalEntry(msgspec.Struct, frozen=True):
    """One appended entry: its id, the epoch of the writer that appended it, the payload."""

    id: int
    epoch: int
    data: bytes


def encode_entry(epoch: int, data: bytes) -> bytes:
    return frame(MAGIC, epoch.to_bytes(_EPOCH_BYTES, "big") + data)


def decode_entry(raw: bytes, key: str, entry_id: int) -> WalEntry | None:
    """The entry stored at ``key``, or None for a fence."""
    if raw == FENCE:
        return None
    if len(raw) < HEADER_SIZE + _EPOCH_BYTES:
        raise WalCorruptError(key, f"{len(raw)} bytes is neither a fence nor an entry")
    body = unframe(MAGIC, raw, key, WalCorruptError)
    epoch = int.from_bytes(body[:_EPOCH_BYTES], "big")
    if epoch < 1:
        raise WalCorruptError(key, f"impossible epoch {epoch}")
    return WalEntry(id=entry_id, epoch=epoch, data=bytes(body[_EPOCH_BYTES:]))


def wal_sequence(store: ObjectStore, root: str) -> ObjectSequence:
    """A root's log entries on ``store``."""
    return ObjectSequence(store, log_entries(root))


async def read_wal(
    store: ObjectStore, root: str = "", *, after: int = 0
) -> AsyncIterator[WalEntry]:
    """The log's entries above ``after``, in id order, up to the first missing id.

    Fences are skipped; an entry whose epoch is below an earlier entry's is never yielded (only
    a fenced writer could have left it, and it never acknowledged it). A damaged entry raises
    ``WalCorruptError`` naming its key - a reader never skips past one. Entries the reader asks
    for that were trimmed raise ``WalTrimmedError``: at the start (``after`` lies below the trim
    boundary), or in the middle, when a trim overtakes the reader; it is never a silent end. A
    reader that gets it starts again from the manifest's replay point (the state absorbed what
    was trimmed). Store errors (``TransientStoreError`` included) propagate: read again from the
    last id seen.
    """
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ValueError(f"after must be an int >= 0, got {after!r}")
    log = wal_sequence(store, root)
    store = store_for(store)
    boundary_key = log_boundary_key(root)
    entry_id = after + 1
    newest_epoch = 0
    while True:
        key = log.key(entry_id)
        try:
            raw = (await store.get(key)).body
        except NotFoundError:
            # The end of the log, or trimmed under us: trims move the boundary before they
            # delete, so an id missing at or below it was trimmed.
            boundary = await read_boundary(store, boundary_key)
            if entry_id <= boundary:
                raise WalTrimmedError(entry_id - 1, boundary + 1) from None
            return
        if entry_id == after + 1:
            # The first entry, read before the boundary: if the boundary is still below it, it
            # is the entry first written there (not a stale writer's recreation of a trimmed id).
            boundary = await read_boundary(store, boundary_key)
            if entry_id <= boundary:
                raise WalTrimmedError(after, boundary + 1)
        entry = decode_entry(raw, key, entry_id)
        if entry is not None and entry.epoch >= newest_epoch:
            newest_epoch = entry.epoch
            yield entry
        entry_id += 1


class LogHolder(Protocol):
    """What the log needs from the handle holding the writer role (``EpochHandle`` gives it)."""

    @property
    def store(self) -> ObjectStore: ...

    @property
    def root(self) -> str: ...

    @property
    def epoch(self) -> int: ...

    @property
    def replay_after(self) -> int:
        """The replay point in the newest manifest the holder has seen."""
        ...

    @property
    def log_fence(self) -> int:
        """Where the last writer fenced the log, as the newest manifest the holder has seen
        records it (0: not recorded)."""
        ...

    async def confirm(self, retrier: Retrier) -> None:
        """``FencedError`` if a newer claim of the role has landed; cheap when none has (the
        next manifest id is absent, and not for retention's sake)."""
        ...

    async def refresh(self) -> Manifest:
        """The newest manifest; ``FencedError`` once a newer epoch holds the role."""
        ...

    def check(self) -> None:
        """``FencedError`` if the holder already knows it is fenced (no I/O)."""
        ...

    async def run(
        self, what: str, timeout: float | None, operation: Callable[[Retrier], Awaitable[T]]
    ) -> T:
        """``operation`` under the holder's deadline (``timeout``, or its default)."""
        ...


class WalWriter:
    """The log as seen by the writer that fenced it: ``append`` and ``trim``.

    Created by ``EpochHandle.fence_wal()``. ``fence_id`` is where this writer's fence stands;
    ``last_id`` the newest id this writer appended (or its fence).
    """

    def __init__(self, holder: LogHolder, fence_id: int) -> None:
        self._holder = holder
        self._log = wal_sequence(holder.store, holder.root)
        self._boundary_key = log_boundary_key(holder.root)
        self._lock = anyio.Lock()
        self.fence_id = fence_id
        self._next = fence_id + 1

    @property
    def epoch(self) -> int:
        return self._holder.epoch

    @property
    def last_id(self) -> int:
        return self._next - 1

    def __repr__(self) -> str:
        return f"WalWriter(epoch={self.epoch}, fence_id={self.fence_id}, last_id={self.last_id})"

    async def append(self, data: Body, *, timeout: float | None = None) -> int:
        """Append ``data`` (bytes-like; anything else is a ``TypeError``) as the next entry and
        return its id, once it is durable.

        Appends are serialised: one is reported durable only after every earlier one is.
        ``FencedError`` once a newer writer has fenced the log (nothing of this append lands),
        at once if the handle already knows it is fenced.
        """
        body = encode_entry(self.epoch, as_body(data))
        holder = self._holder
        holder.check()

        async def append(retrier: Retrier) -> int:
            # in order: never acknowledge an append past an unresolved one
            async with self._lock:
                holder.check()
                return await self._append(body, retrier)

        if quiet(WAL_LOG):  # nobody listens: not even a no-op span
            return await holder.run("append to the log", timeout, append)
        with span("append", "writer", holder.root, holder.epoch) as scope:
            entry_id = await holder.run("append to the log", timeout, append)
            scope.set("log_id", entry_id)
            return entry_id

    async def _append(self, body: bytes, retrier: Retrier) -> int:
        store = store_for(self._log.store)
        unknown_at = 0  # an id where a send of this append had an unknown outcome (0: none)
        while True:
            entry_id = self._next
            key = self._log.key(entry_id)
            transient = retrier.transient
            found_ours = False
            try:
                await retrier.call(partial(store.put, key, body, mode="create"))
            except AlreadyExistsError:
                if retrier.transient > transient:
                    unknown_at = entry_id
                try:
                    existing = (await retrier.call(partial(store.get, key))).body
                except NotFoundError:  # trimmed since: only a newer writer trims up here
                    await self._fenced_by_a_trim(entry_id, unknown=unknown_at == entry_id)
                    continue
                if existing != body:  # our own bytes: a lost response, acknowledged once
                    await self._someone_else_at(entry_id, key, existing)
                    continue
                found_ours = True
            else:
                if retrier.transient > transient:
                    unknown_at = entry_id
            boundary = await retrier.call(partial(read_boundary, store, self._boundary_key))
            if entry_id <= boundary:
                # A trimmed id, written again: only a newer writer trims past our next id. What
                # we recreated is garbage nobody reads: take it away (else the next trim does).
                with suppress(StoreError):
                    await store.delete(key)
                await self._fenced_by_a_trim(entry_id, unknown=unknown_at == entry_id)
                raise violated(
                    InvariantViolationError(
                        f"{key} lies at or below the log's trim boundary, but the manifest "
                        f"still names epoch {self.epoch} as the writer"
                    ),
                    **fields("writer", self.epoch, self._holder.root, log_id=entry_id),
                )
            if found_ours:
                own_write_found("writer", self._holder.root, self.epoch, "append", entry_id)
            self._next = entry_id + 1
            return entry_id

    async def _fenced_by_a_trim(self, entry_id: int, *, unknown: bool) -> None:
        """Our id was trimmed: only a newer writer trims up here, so the refresh raises
        ``FencedError``. If a send of this append had an unknown outcome, it may have landed
        before the newer writer fenced the log, been replayed by it and trimmed: then nothing
        left can tell, and the error is ``WriteOutcomeUnknownError``."""
        try:
            await self._holder.refresh()
        except FencedError as exc:
            if unknown and not isinstance(exc, WriteOutcomeUnknownError):
                raise WriteOutcomeUnknownError(
                    exc.role, exc.epoch, exc.newer_epoch, write=f"append at log id {entry_id}"
                ) from exc
            raise

    async def _someone_else_at(self, entry_id: int, key: str, existing: bytes) -> None:
        """The id holds another's object: a newer writer's fence or entry fences us; a stale
        fencer's fence or an unacknowledged entry of ours or older is stepped over."""
        await self._holder.refresh()  # FencedError if a newer epoch holds the role
        entry = decode_entry(existing, key, entry_id)
        if entry is not None and entry.epoch > self.epoch:
            raise violated(
                InvariantViolationError(
                    f"{key} holds an entry of epoch {entry.epoch}, but the manifest still names "
                    f"epoch {self.epoch} as the writer"
                ),
                **fields("writer", self.epoch, self._holder.root, log_id=entry_id),
            )
        self._next = entry_id + 1

    async def trim(self, *, timeout: float | None = None) -> int:
        """Delete the entries at or below the manifest's replay point (never above); return
        how many were deleted."""

        async def trim(retrier: Retrier) -> int:
            replay_after = (await self._holder.refresh()).replay_after
            if replay_after == 0:
                return 0
            # The boundary first: from here on no append at or below it counts.
            store = store_for(self._log.store)
            log = ObjectSequence(store, self._log.names)
            await retrier.call(partial(advance_boundary, store, self._boundary_key, replay_after))
            doomed = await retrier.call(partial(log.ids_up_to, replay_after))
            for entry_id in doomed:
                await retrier.call(partial(store.delete, log.key(entry_id)))
            return len(doomed)

        holder = self._holder
        with span("trim", "writer", holder.root, holder.epoch) as scope:
            deleted = await holder.run("trim of the log", timeout, trim)
            scope.set("deleted", deleted)
            return deleted


@dataclass(frozen=True)
class FenceAttempt:
    """The first step of a fence, one round trip: the trim boundary, our create of a fence at
    the id after ``start`` (``placed``: it succeeded; False: the id was taken, perhaps by our own
    first send after a lost response), and the log ids listed above ``start`` (None: more than
    one page of them) - all asked at once."""

    start: int
    floor: int
    placed: bool
    listed: tuple[int, ...] | None


# A fence attempt lists this many log ids above where it starts; a longer run is searched.
_LISTED: Final = 256


async def attempt_fence(
    store: ObjectStore, root: str, start: int, retrier: Retrier
) -> FenceAttempt:
    """Try the fence at ``start + 1`` while reading the trim boundary and listing the ids above
    ``start`` (see ``fence_log``). Run only once the writer's claim has landed."""
    store = store_for(store)
    log = wal_sequence(store, root)
    found: dict[str, object] = {}

    async def floor() -> None:
        found["floor"] = await retrier.call(partial(read_boundary, store, log_boundary_key(root)))

    async def fence() -> None:
        try:
            await retrier.call(partial(store.put, log.key(start + 1), FENCE, mode="create"))
            found["placed"] = True
        except AlreadyExistsError:
            found["placed"] = False

    async def listed() -> None:
        found["listed"] = await retrier.call(partial(log.ids_above, start, _LISTED))

    await gather(floor, fence, listed)
    boundary, placed, ids = found["floor"], found["placed"], found["listed"]
    assert isinstance(boundary, int)
    assert isinstance(placed, bool)
    assert ids is None or isinstance(ids, tuple)
    return FenceAttempt(start, boundary, placed, ids)


async def fence_log(
    holder: LogHolder, retrier: Retrier, attempt: FenceAttempt | None = None
) -> WalWriter:
    """Fence the log for ``holder`` (see ``EpochHandle.fence_wal``); the caller runs this under
    the holder's write lock and deadline. ``attempt``: the first step, if the claim already
    made it (``claim_epoch(..., fence_wal=True)``, beside its own last request).

    The fence goes at an id seen free after the claim, the first free one: every older writer
    then meets it (or something below it) and, re-reading, finds the claim. Where to look comes
    from the holder's manifest: above the replay point (only the writer moves it) and above the
    last writer's fence (each writer records it with its first manifest write after fencing;
    its appends come after it). Most often the very next id is free: the fence is tried there
    at once, while the trim boundary is read (a fence at or below it would fence nothing) and
    the ids above are listed (if the id was taken, the listing says which is free). Last, the
    holder checks that no newer claim landed before the fence stood.
    """
    log = wal_sequence(store_for(holder.store), holder.root)
    if attempt is None:
        start = max(holder.replay_after, holder.log_fence)
        attempt = await attempt_fence(holder.store, holder.root, start, retrier)
    placed, candidate = attempt.placed, attempt.start + 1
    if candidate <= attempt.floor:  # trimmed past where we looked: only a newer writer does that
        if placed:
            with suppress(StoreError):
                await log.store.delete(log.key(candidate))
        placed = False
        candidate = await retrier.call(partial(log.first_free, attempt.floor))
    elif not placed:
        # Taken: by the old writer's entry, or by a fence - and a fence standing there since
        # before our claim may have entries above it, from an older writer that stepped over
        # it (or our own create's, if its response was lost: we can't tell). Only an id seen
        # free after our claim is safe to fence: the listing (made after the claim) says which.
        gap = _first_gap(attempt.start, attempt.listed)
        if gap is None:  # more than a page of entries: search on from the last listed
            last = attempt.listed[-1] if attempt.listed else candidate
            gap = await retrier.call(partial(log.first_free, last))
        candidate = gap
    while not placed:
        key = log.key(candidate)
        try:
            await retrier.call(partial(log.store.put, key, FENCE, mode="create"))
            break
        except AlreadyExistsError:
            # The id was free when the search (after our claim) looked: a fence there now is
            # ours (a lost response) or a rival fencer's, placed after our claim too, so every
            # older writer that meets it will find our claim when it re-reads.
            if await _holds_a_fence(log, key, holder, retrier):
                break
        # the old writer took the slot first: still ours to fence? then the next id
        await holder.refresh()
        candidate += 1
    await holder.confirm(retrier)  # FencedError if a newer claim landed before the fence stood
    return WalWriter(holder, candidate)


def _first_gap(start: int, listed: tuple[int, ...] | None) -> int | None:
    """The first id above ``start`` missing from ``listed`` (ascending); None when the
    listing was cut at a page and has no gap."""
    if listed is None:
        return None
    expected = start + 1
    for object_id in listed:
        if object_id != expected:
            return expected
        expected += 1
    return expected if len(listed) < _LISTED else None


async def _holds_a_fence(
    log: ObjectSequence, key: str, holder: LogHolder, retrier: Retrier
) -> bool:
    """Whether the taken id ``key`` holds a fence (ours, after a lost response, or another
    fencer's): then the fence stands where we want it."""
    try:
        return (await retrier.call(partial(log.store.get, key))).body == FENCE
    except NotFoundError:  # trimmed since: only a newer writer trims up here
        await holder.refresh()  # FencedError
        return False


async def replay_point_mover(
    holder: LogHolder, entry_id: int, retrier: Retrier
) -> Callable[[Manifest], Manifest]:
    """The mutate that moves the replay point to ``entry_id``, after checking it may move
    there (see ``EpochHandle.mark_replayed``)."""
    if isinstance(entry_id, bool) or not isinstance(entry_id, int) or entry_id < 0:
        raise ValueError(f"a log id is an int >= 0, got {entry_id!r}")
    log = wal_sequence(store_for(holder.store), holder.root)
    # A free id above the replay point is past the end of the log (it is contiguous there)
    # - unless a newer writer trimmed it, which the refresh reports as FencedError.
    if (
        entry_id > holder.replay_after
        and not await retrier.call(partial(log.exists, entry_id))
        and entry_id > (await holder.refresh()).replay_after
    ):
        raise ValueError(f"log id {entry_id} is past the last appended id")

    def advance(manifest: Manifest) -> Manifest:
        if entry_id < manifest.replay_after:
            raise ValueError(
                f"the replay point is already {manifest.replay_after}; it never moves back"
            )
        return msgspec.structs.replace(manifest, replay_after=entry_id)

    return advance
