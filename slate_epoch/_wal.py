"""The fenced write-ahead log: the writer's appends between manifest updates.

Entries live at ``{root}/wal/{id:020d}.wal``, ids contiguous from 1, each written once with
create-if-absent. An entry is a frozen header and the payload::

    offset 0   4 bytes  magic b"SLEW"
    offset 4   4 bytes  CRC-32 (zlib) of every byte from offset 8 on, big-endian
    offset 8   2 bytes  format version, big-endian
    offset 10  8 bytes  the writer's epoch, big-endian
    offset 18  ...      the payload

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

import struct
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Final

import anyio
import msgspec

from ._errors import (
    AlreadyExistsError,
    InvariantViolationError,
    NotFoundError,
    StoreError,
    UnsupportedFormatError,
    WalCorruptError,
    WalTrimmedError,
)
from ._manifest import FORMAT_VERSION, Manifest, advance_boundary, numbered_id, read_boundary
from ._retry import Retrier
from ._store import Body, ObjectStore, as_body, listing, validate_key

if TYPE_CHECKING:
    from ._claim import EpochHandle

__all__ = ["WalEntry", "WalWriter", "read_wal"]

WAL_MAGIC: Final = b"SLEW"
_HEADER = struct.Struct(">4sIHQ")
FENCE: Final = b""


class WalEntry(msgspec.Struct, frozen=True):
    """One appended entry: its id, the epoch of the writer that appended it, the payload."""

    id: int
    epoch: int
    data: bytes


def encode_entry(epoch: int, data: bytes) -> bytes:
    tail = _HEADER.pack(WAL_MAGIC, 0, FORMAT_VERSION, epoch)[8:] + data
    return WAL_MAGIC + zlib.crc32(tail).to_bytes(4, "big") + tail


def decode_entry(raw: bytes, key: str, entry_id: int) -> WalEntry | None:
    """The entry stored at ``key``, or None for a fence."""
    if raw == FENCE:
        return None
    if len(raw) < _HEADER.size:
        raise WalCorruptError(key, f"{len(raw)} bytes is neither a fence nor an entry")
    magic, checksum, version, epoch = _HEADER.unpack_from(raw)
    if magic != WAL_MAGIC:
        raise WalCorruptError(key, f"bad magic {magic!r}: not a slate-epoch log entry")
    if zlib.crc32(memoryview(raw)[8:]) != checksum:
        raise WalCorruptError(key, "checksum mismatch")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(key, version, FORMAT_VERSION)
    if version < 1 or epoch < 1:
        raise WalCorruptError(key, f"impossible header (format {version}, epoch {epoch})")
    return WalEntry(id=entry_id, epoch=epoch, data=bytes(raw[_HEADER.size :]))


class _Log:
    """Where a root's log entries live."""

    def __init__(self, store: ObjectStore, root: str) -> None:
        root = root.strip("/")
        if root:
            validate_key(root)
        self.store = store
        self.dir = f"{root}/wal/" if root else "wal/"
        self.boundary_key = f"{root}/wal-boundary" if root else "wal-boundary"

    def key(self, entry_id: int) -> str:
        if entry_id < 1:
            raise ValueError(f"log ids start at 1, got {entry_id}")
        return f"{self.dir}{entry_id:020d}.wal"

    def id_of(self, key: str) -> int | None:
        name = key[len(self.dir) :]
        return numbered_id(name, ".wal")

    async def taken(self, entry_id: int) -> bool:
        try:
            await self.store.head(self.key(entry_id))
        except NotFoundError:
            return False
        return True

    async def first_free(self, after: int) -> int:
        """The first free id above ``after``; ids above it are contiguous, so gallop and bisect:
        ~2·log2(entries since ``after``) HEAD requests."""
        low, step = after, 1  # low: taken (or ``after``, the replay point)
        while await self.taken(after + step):
            low, step = after + step, step * 2
        high = after + step  # free
        while high - low > 1:
            mid = (low + high) // 2
            if await self.taken(mid):
                low = mid
            else:
                high = mid
        return high

    async def ids_up_to(self, last: int) -> list[int]:
        """The stored ids at or below ``last``, ascending (one listing, stopped past it)."""
        ids: list[int] = []
        async with listing(self.store, self.dir) as metas:
            async for meta in metas:
                entry_id = self.id_of(meta.key)
                if entry_id is None:
                    continue
                if entry_id > last:
                    break
                ids.append(entry_id)
        return ids

    async def first_kept(self) -> int | None:
        """The lowest id still stored (entries below it were trimmed), or None if none is."""
        async with listing(self.store, self.dir) as metas:
            async for meta in metas:
                entry_id = self.id_of(meta.key)
                if entry_id is not None:
                    return entry_id
        return None


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
    log = _Log(store, root)
    entry_id = after + 1
    newest_epoch = 0
    while True:
        key = log.key(entry_id)
        try:
            raw = (await store.get(key)).body
        except NotFoundError:
            # The end of the log, or trimmed under us: trims move the boundary before they
            # delete, so an id missing at or below it was trimmed.
            boundary = await read_boundary(store, log.boundary_key)
            if entry_id <= boundary:
                raise WalTrimmedError(entry_id - 1, boundary + 1) from None
            return
        if entry_id == after + 1:
            # The first entry, read before the boundary: if the boundary is still below it, it
            # is the entry first written there (not a stale writer's recreation of a trimmed id).
            boundary = await read_boundary(store, log.boundary_key)
            if entry_id <= boundary:
                raise WalTrimmedError(after, boundary + 1)
        entry = decode_entry(raw, key, entry_id)
        if entry is not None and entry.epoch >= newest_epoch:
            newest_epoch = entry.epoch
            yield entry
        entry_id += 1


class WalWriter:
    """The log as seen by the writer that fenced it: ``append`` and ``trim``.

    Created by ``EpochHandle.fence_wal()``. ``fence_id`` is where this writer's fence stands;
    ``last_id`` the newest id this writer appended (or its fence).
    """

    def __init__(self, handle: EpochHandle, log: _Log, fence_id: int) -> None:
        self._handle = handle
        self._log = log
        self._lock = anyio.Lock()
        self.fence_id = fence_id
        self._next = fence_id + 1

    @property
    def epoch(self) -> int:
        return self._handle.epoch

    @property
    def last_id(self) -> int:
        return self._next - 1

    def __repr__(self) -> str:
        return f"WalWriter(epoch={self.epoch}, fence_id={self.fence_id}, last_id={self.last_id})"

    async def append(self, data: Body, *, timeout: float | None = None) -> int:
        """Append ``data`` as the next entry and return its id, once it is durable.

        Appends are serialised: one is reported durable only after every earlier one is.
        ``FencedError`` once a newer writer has fenced the log (nothing of this append lands).
        """
        body = encode_entry(self.epoch, as_body(data))
        self._handle._raise_if_fenced()  # a handle that knows it is fenced writes nothing

        async def append(retrier: Retrier) -> int:
            # in order: never acknowledge an append past an unresolved one
            async with self._lock:
                self._handle._raise_if_fenced()
                return await self._append(body, retrier)

        return await self._handle._with_deadline("append to the log", timeout, append)

    async def _append(self, body: bytes, retrier: Retrier) -> int:
        while True:
            entry_id = self._next
            key = self._log.key(entry_id)
            try:
                await retrier.call(partial(self._log.store.put, key, body, mode="create"))
            except AlreadyExistsError:
                try:
                    existing = (await retrier.call(partial(self._log.store.get, key))).body
                except NotFoundError:  # trimmed since: only a newer writer trims up here
                    await self._handle.refresh()  # FencedError
                    continue
                if existing != body:  # our own bytes: a lost response, acknowledged once
                    await self._someone_else_at(entry_id, key, existing)
                    continue
            store, boundary_key = self._log.store, self._log.boundary_key
            if entry_id <= await retrier.call(partial(read_boundary, store, boundary_key)):
                # A trimmed id, written again: only a newer writer trims past our next id. What
                # we recreated is garbage nobody reads: take it away (else the next trim does).
                with suppress(StoreError):
                    await store.delete(key)
                await self._handle.refresh()  # FencedError
                raise InvariantViolationError(
                    f"{key} lies at or below the log's trim boundary, but the manifest still "
                    f"names epoch {self.epoch} as the writer"
                )
            self._next = entry_id + 1
            return entry_id

    async def _someone_else_at(self, entry_id: int, key: str, existing: bytes) -> None:
        """The id holds another's object: a newer writer's fence or entry fences us; a stale
        fencer's fence or an unacknowledged entry of ours or older is stepped over."""
        await self._handle.refresh()  # FencedError if a newer epoch holds the role
        entry = decode_entry(existing, key, entry_id)
        if entry is not None and entry.epoch > self.epoch:
            raise InvariantViolationError(
                f"{key} holds an entry of epoch {entry.epoch}, but the manifest still names "
                f"epoch {self.epoch} as the writer"
            )
        self._next = entry_id + 1

    async def trim(self, *, timeout: float | None = None) -> int:
        """Delete the entries at or below the manifest's replay point (never above); return
        how many were deleted."""

        async def trim(retrier: Retrier) -> int:
            replay_after = (await self._handle.refresh()).replay_after
            if replay_after == 0:
                return 0
            # The boundary first: from here on no append at or below it counts.
            log = self._log
            await retrier.call(partial(advance_boundary, log.store, log.boundary_key, replay_after))
            doomed = await retrier.call(partial(log.ids_up_to, replay_after))
            for entry_id in doomed:
                key = self._log.key(entry_id)
                await retrier.call(partial(self._log.store.delete, key))
            return len(doomed)

        return await self._handle._with_deadline("trim of the log", timeout, trim)


async def fence_wal(handle: EpochHandle, retrier: Retrier) -> WalWriter:
    """Fence the log for ``handle`` (see ``EpochHandle.fence_wal``); the caller holds the
    handle's write lock and its deadline."""
    if handle.role != "writer":
        raise ValueError(f"only the writer role fences the log, not {handle.role!r}")
    log = _Log(handle.store, handle.root)
    # Only the writer moves the replay point (mark_replayed is a fenced update), so while this
    # handle holds the role its own manifest has the current one; if it no longer holds the
    # role, the refresh after the fence says so. Never fence at or below the trim boundary: a
    # fence there (where ids may be gone) would fence nothing.
    floor = await retrier.call(partial(read_boundary, log.store, log.boundary_key))
    start = max(handle.manifest.replay_after, floor)
    candidate = await retrier.call(lambda: log.first_free(start))
    while True:
        key = log.key(candidate)
        try:
            await retrier.call(partial(log.store.put, key, FENCE, mode="create"))
            break
        except AlreadyExistsError:
            try:
                if (await retrier.call(partial(log.store.get, key))).body == FENCE:
                    break  # a fence stands there (ours, after a lost response, or another's)
            except NotFoundError:  # trimmed since: only a newer writer trims up here
                await handle.refresh()  # FencedError
                continue
        # the old writer took the slot first: still ours to fence? then the next id
        await handle.refresh()
        candidate += 1
    await handle.refresh()  # still the holder once the fence stands
    return WalWriter(handle, log, candidate)


async def replay_point_mover(
    handle: EpochHandle, entry_id: int, retrier: Retrier
) -> Callable[[Manifest], Manifest]:
    """The mutate that moves the replay point to ``entry_id``, after checking it may move
    there (see ``EpochHandle.mark_replayed``)."""
    if handle.role != "writer":
        raise ValueError(f"only the writer role moves the replay point, not {handle.role!r}")
    if isinstance(entry_id, bool) or not isinstance(entry_id, int) or entry_id < 0:
        raise ValueError(f"a log id is an int >= 0, got {entry_id!r}")
    log = _Log(handle.store, handle.root)
    # A free id above the replay point is past the end of the log (it is contiguous there)
    # - unless a newer writer trimmed it, which the refresh reports as FencedError.
    if (
        entry_id > handle.manifest.replay_after
        and not await retrier.call(partial(log.taken, entry_id))
        and entry_id > (await handle.refresh()).replay_after
    ):
        raise ValueError(f"log id {entry_id} is past the last appended id")

    def advance(manifest: Manifest) -> Manifest:
        if entry_id < manifest.replay_after:
            raise ValueError(
                f"the replay point is already {manifest.replay_after}; it never moves back"
            )
        return msgspec.structs.replace(manifest, replay_after=entry_id)

    return advance
