"""The retention boundary: ids at or below it may have been deleted.

Manifests and the log are both folders of numbered objects that retention thins out from the
bottom, by the same rule (SlateDB's): first the boundary object moves up, then what lies at or
below it is deleted. So every writer that creates an id and then finds it at or below the
boundary knows it recreated a deleted id (a conflict, never a success), and every reader that
misses an id at or below it knows the id was collected, not never written. The boundary only
ever moves up: it is moved by compare-and-swap.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ._errors import (
    AlreadyExistsError,
    ManifestCorruptError,
    NotFoundError,
    PreconditionError,
    TransientStoreError,
)
from ._framing import frame, unframe
from ._store import ObjectStore, PutMode, UpdateVersion

__all__ = ["advance_boundary", "decode_boundary", "encode_boundary", "read_boundary"]

MAGIC: Final = b"SLEB"
# How often a mover re-reads a boundary that others keep moving, before giving up for now.
_CHASES: Final = 8


class Boundary(msgspec.Struct, frozen=True):
    """Ids at or below ``manifest_id`` may have been deleted (the name is historical: the log's
    boundary uses the same struct for log ids)."""

    manifest_id: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Boundary)


def encode_boundary(value: int) -> bytes:
    return frame(MAGIC, _encoder.encode(Boundary(value)))


def decode_boundary(data: bytes, key: str) -> int:
    """The boundary stored in ``data`` (``ManifestCorruptError`` naming ``key`` if damaged)."""
    body = unframe(MAGIC, data, key, ManifestCorruptError)
    try:
        boundary = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ManifestCorruptError(key, f"undecodable body: {exc}") from exc
    if boundary.manifest_id < 0:
        raise ManifestCorruptError(key, f"negative boundary {boundary.manifest_id}")
    return boundary.manifest_id


async def _read(store: ObjectStore, key: str) -> tuple[int, str | None]:
    try:
        result = await store.get(key)
    except NotFoundError:
        return 0, None
    return decode_boundary(result.body, key), result.etag


async def read_boundary(store: ObjectStore, key: str) -> int:
    """The boundary stored at ``key`` (0: nothing was ever deleted)."""
    return (await _read(store, key))[0]


async def advance_boundary(store: ObjectStore, key: str, to: int) -> int:
    """Move the boundary at ``key`` up to ``to`` (never down); return where it stands. The
    caller must know that everything up to ``to`` may go."""
    for _ in range(_CHASES):
        current, etag = await _read(store, key)
        if current >= to:
            return current
        mode: PutMode = "create" if etag is None else UpdateVersion(etag)
        try:
            await store.put(key, encode_boundary(to), mode=mode)
        except (AlreadyExistsError, PreconditionError):
            continue  # another one moved it: look again
        return to
    raise TransientStoreError(f"the boundary {key!r} keeps moving")
