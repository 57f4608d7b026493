"""The lease object of a role: who leads it, and whether it is still renewing (see ``_lead``).

One object per role, outside the manifest, so that renewing it adds no manifest version::

    {root}/lease/{role, percent-encoded}

The role is percent-encoded to one valid key component whatever it holds: every character but
``a-z 0-9 - _ ~`` becomes ``%XX`` per UTF-8 byte, so ``/``, ``.``, ``..`` and a leading ``.``
never reach the store, and upper case is encoded too, so that two roles differing only in case
stay two objects on a case-insensitive filesystem (a local store on macOS).

On the store a lease is framed like every object (``_framing``: magic ``SLEL``, CRC-32, format
version) around the msgspec msgpack of the ``Lease`` struct.

A damaged or foreign object is ``LeaseCorruptError`` naming the key: it is never written over
(every write is a compare-and-swap on the etag of a lease that decoded).

Every write is a compare-and-swap (create-if-absent, or update-by-etag) carrying a fresh
``write_id``, so the writer can recognise its own write after a lost response, and so that no two
versions have the same bytes (S3's etag is a content hash: equal bytes would give equal etags,
and a standby watching for change would miss one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Final

import anyio
import msgspec

from ._errors import (
    AlreadyExistsError,
    LeaseCorruptError,
    NotFoundError,
    PreconditionError,
    TransientStoreError,
)
from ._framing import frame, unframe
from ._layout import lease_key
from ._observe import retrying, store_for
from ._retry import Backoff
from ._store import ObjectStore, PutMode, UpdateVersion

__all__ = [
    "Lease",
    "LeaseSlot",
    "decode_lease",
    "encode_lease",
    "lease_key",
    "read_lease",
]

LEASE_MAGIC: Final = b"SLEL"


class Lease(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One version of a role's lease. Every field has a default, so a later format that adds
    fields still decodes here (unknown fields are ignored).

    - ``epoch`` and ``claim_id``: the claim this lease speaks for (0 and "" while ``claiming``).
    - ``claiming``: a standby won the lease and is claiming the role; the claim follows.
    - ``renewals``: how many times the holder renewed it (0 right after the claim).
    - ``released``: the holder left; a standby may claim at once.
    - ``lease``: the holder's lease in seconds: a standby waits at least this long without
      seeing a change before it takes over.
    - ``renewed_at_ms``: wall-clock time of the write, for operators only (nothing compares
      clocks across processes).
    - ``write_id``: fresh for every write (see the module docstring).
    """

    role: str = ""
    epoch: int = 0
    claim_id: str = ""
    owner: str = ""
    renewals: int = 0
    released: bool = False
    claiming: bool = False
    lease: float = 0.0
    renewed_at_ms: int = 0
    write_id: str = ""

    def speaks_for(self, epoch: int, claim_id: str) -> bool:
        """Whether this lease is the one of the claim ``(epoch, claim_id)``."""
        return not self.claiming and self.epoch == epoch and self.claim_id == claim_id


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Lease)


def encode_lease(lease: Lease) -> bytes:
    return frame(LEASE_MAGIC, _encoder.encode(lease))


def decode_lease(data: bytes, key: str, role: str) -> Lease:
    """Parse a stored lease of ``role``: magic, checksum and format first, then the body."""
    body = unframe(LEASE_MAGIC, data, key, LeaseCorruptError)
    try:
        lease = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise LeaseCorruptError(key, f"undecodable body: {exc}") from exc
    if lease.role != role:
        raise LeaseCorruptError(key, f"holds the lease of role {lease.role!r}, not {role!r}")
    valid_lease = math.isfinite(lease.lease) and lease.lease >= 0
    if lease.epoch < 0 or lease.renewals < 0 or not valid_lease:
        raise LeaseCorruptError(key, f"impossible lease {lease!r}")
    return lease


async def read_lease(store: ObjectStore, root: str = "", *, role: str = "writer") -> Lease | None:
    """The lease of ``role`` under ``root``, or None if no ``lead`` ever held it. One GET; store
    errors propagate as they are (``TransientStoreError`` included); ``LeaseCorruptError`` for a
    damaged object. For operators: ``slate-epoch inspect`` shows it."""
    key = lease_key(root, role)
    try:
        result = await store_for(store).get(key)
    except NotFoundError:
        return None
    return decode_lease(result.body, key, role)


class LeaseSlot:
    """The lease object of one role as one writer sees it: reads, and compare-and-swap writes
    that settle their own lost responses.

    ``landed`` is this writer's newest write known to have landed, with its etag: recorded in
    the same step as the answer, so a caller cancelled right after still knows it. ``unknown``
    holds the write ids of writes whose outcome this writer never learned (a lost response, or a
    write cancelled in flight): if one of them turns out to be the stored version, it was ours,
    and the next write goes on top of it.
    """

    def __init__(self, store: ObjectStore, root: str, role: str, backoff: Backoff) -> None:
        self.store = store
        self.role = role
        self.key = lease_key(root, role)
        self.backoff = backoff
        self.unknown: set[str] = set()
        self.last_error: BaseException | None = None
        self.seen: Lease | None = None  # the lease as last read
        self.landed: tuple[Lease, str] | None = None

    async def read(self) -> tuple[Lease, str] | None:
        """The stored lease and its etag (None: absent). One GET; errors propagate."""
        try:
            result = await store_for(self.store).get(self.key)
        except NotFoundError:
            self.seen = None
            return None
        self.seen = decode_lease(result.body, self.key, self.role)
        return self.seen, result.etag

    async def swap(self, new: Lease, expected: str | None) -> str | None:
        """Write ``new`` if the stored lease is still the version ``expected`` (None: absent).
        Returns the etag written, or None if another version is there instead: another
        writer's, or an earlier write of ours that landed late (``landed`` then names it, so the
        caller can build its write again on top of it).

        Transient errors are retried with the identical bytes, after a backoff, for as long as
        the caller's deadline allows; a conflict after an unknown outcome is settled by reading
        the object back: our ``write_id`` there means our write landed.
        """
        data = encode_lease(new)
        waits = self.backoff.waits()
        mode: PutMode = "create" if expected is None else UpdateVersion(expected)
        store = store_for(self.store)
        transient = 0
        while True:  # each pass sleeps a backoff: bounded by the caller's deadline
            self.unknown.add(new.write_id)
            try:
                result = await store.put(self.key, data, mode=mode)
            except TransientStoreError as exc:
                self.last_error = exc
                transient += 1
                retrying(f"write of the lease {self.key!r}", transient, exc, {"role": self.role})
                await anyio.sleep(next(waits))
                continue
            except (AlreadyExistsError, PreconditionError) as exc:
                self.last_error = exc
                current = await self._read_retrying(waits)
                if current is None:
                    return None  # deleted by someone: not ours to recreate blindly
                stored, etag = current
                if stored.write_id in self.unknown:  # ours after all (this one, or earlier)
                    self.unknown.clear()
                    self.landed = stored, etag
                    return etag if stored.write_id == new.write_id else None
                self.unknown.discard(new.write_id)
                return None
            # Ours is the stored version now; an older write of ours can no longer land (its
            # condition names an etag that is gone).
            self.unknown.clear()
            self.landed = new, result.etag
            return result.etag

    async def _read_retrying(self, waits: Iterator[float]) -> tuple[Lease, str] | None:
        while True:  # bounded by the caller's deadline
            try:
                return await self.read()
            except TransientStoreError as exc:
                self.last_error = exc
                await anyio.sleep(next(waits))
