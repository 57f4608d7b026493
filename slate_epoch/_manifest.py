"""The manifest: its fields, its bytes on the store, and where versions live.

On the store a manifest is a frozen header followed by a msgpack body::

    offset 0   4 bytes  magic b"SLEM"
    offset 4   4 bytes  CRC-32 (zlib) of every byte from offset 8 on, big-endian
    offset 8   2 bytes  format version, big-endian
    offset 10  ...      msgspec msgpack body (the ``Manifest`` struct)

The header layout and checksum never change across format versions, so any future reader can
tell "damaged" (``ManifestCorruptError``) from "newer than me" (``UnsupportedFormatError``):
the checksum is verified before the version is believed.

Versions live at ``{root}/manifest/{id:020d}.manifest``, ids contiguous from 1, each written
once with create-if-absent and never changed.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import weakref
import zlib
from collections.abc import Iterable
from typing import Final

import msgspec

from ._errors import (
    AlreadyExistsError,
    ManifestCorruptError,
    ManifestVersionExistsError,
    NotFoundError,
    UnsupportedFormatError,
)
from ._store import ObjectStore, listing, validate_key

__all__ = ["FORMAT_VERSION", "Manifest", "ManifestStore", "RoleClaim", "decode", "encode"]

MAGIC: Final = b"SLEM"
FORMAT_VERSION: Final = 1
_HEADER = struct.Struct(">4sIH")


def new_id() -> str:
    """A fresh random id for a claim or a write: 128 bits, so two never meet."""
    return os.urandom(16).hex()


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RoleClaim(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Who holds a role: the epoch, and the claim that set it."""

    role: str
    epoch: int
    claim_id: str
    claimed_at_ms: int = 0  # wall-clock time of the claim, for operators only
    owner: str = ""  # free text, host:pid by default


class Manifest(msgspec.Struct, frozen=True):
    """One version of the shared state. Immutable; change ``state`` with
    ``msgspec.structs.replace(manifest, state=...)`` inside ``EpochHandle.update``.

    ``roles`` holds one ``RoleClaim`` per role ever claimed, sorted by role. ``write_id`` is
    fresh for every write, so a writer can recognise its own landed write after a lost response.
    Every field added in a later version gets a default, so older manifests still decode.
    """

    roles: tuple[RoleClaim, ...] = ()
    state: bytes = b""
    write_id: str = ""

    def epoch(self, role: str) -> int:
        """The role's epoch; 0 if the role was never claimed."""
        claim = self.claim(role)
        return 0 if claim is None else claim.epoch

    def claim(self, role: str) -> RoleClaim | None:
        for claim in self.roles:
            if claim.role == role:
                return claim
        return None

    def with_claim(self, claim: RoleClaim) -> Manifest:
        """This manifest with ``claim`` replacing the role's previous one."""
        others = [c for c in self.roles if c.role != claim.role]
        roles = tuple(sorted([*others, claim], key=lambda c: c.role))
        return msgspec.structs.replace(self, roles=roles, write_id=claim.claim_id)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Manifest)


def encode(manifest: Manifest) -> bytes:
    """The manifest's bytes on the store: header, checksum, body."""
    tail = FORMAT_VERSION.to_bytes(2, "big") + _encoder.encode(manifest)
    return MAGIC + zlib.crc32(tail).to_bytes(4, "big") + tail


def decode(data: bytes, key: str = "<manifest>") -> Manifest:
    """Parse stored bytes, checking magic, checksum and format before the body."""
    if len(data) < _HEADER.size:
        raise ManifestCorruptError(key, f"{len(data)} bytes is shorter than the header")
    magic, checksum, version = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ManifestCorruptError(key, f"bad magic {magic!r}: not a slate-epoch manifest")
    if zlib.crc32(memoryview(data)[8:]) != checksum:
        raise ManifestCorruptError(key, "checksum mismatch")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(key, version, FORMAT_VERSION)
    if version < 1:
        raise ManifestCorruptError(key, f"format version {version} was never written")
    try:
        manifest = _decoder.decode(memoryview(data)[_HEADER.size :])
    except msgspec.DecodeError as exc:
        raise ManifestCorruptError(key, f"undecodable body: {exc}") from exc
    _check_roles(manifest.roles, key)
    return manifest


def _check_roles(roles: Iterable[RoleClaim], key: str) -> None:
    seen: set[str] = set()
    for claim in roles:
        if claim.role in seen or claim.epoch < 1:
            raise ManifestCorruptError(key, f"invalid role entry {claim!r}")
        seen.add(claim.role)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# The newest manifest each process has seen, per (store, root): ids never change once written,
# so the cached manifest stays true; only "is it still the newest?" can go stale, and the next
# create-if-absent answers that. Weak on the store, so a closed store's entry goes with it.
_latest_seen: weakref.WeakKeyDictionary[object, dict[str, tuple[int, Manifest]]] = (
    weakref.WeakKeyDictionary()
)

# A cold search lists one page of this many keys; a longer history is searched with probes.
_LIST_PAGE: Final = 1000
# Warm probing reads forward this many ids before switching to a galloping search.
_LINEAR_PROBES: Final = 4


class ManifestStore:
    """The versioned manifests under ``root`` on a store: read, write, find the newest."""

    def __init__(self, store: ObjectStore, root: str = "") -> None:
        root = root.strip("/")
        if root:
            validate_key(root)
        self.store = store
        self.root = root
        self._dir = f"{root}/manifest/" if root else "manifest/"
        try:
            self._cache = _latest_seen.setdefault(store, {})
        except TypeError:  # a store that can't be weakly referenced: cache per ManifestStore
            self._cache = {}

    def key(self, manifest_id: int) -> str:
        if manifest_id < 1:
            raise ValueError(f"manifest ids start at 1, got {manifest_id}")
        return f"{self._dir}{manifest_id:020d}.manifest"

    def _id_of(self, key: str) -> int | None:
        name = key[len(self._dir) :]
        if len(name) == 29 and name.endswith(".manifest") and name[:20].isdigit():
            return int(name[:20])
        return None  # a foreign object in the folder: never ours to read or touch

    # -- reading ------------------------------------------------------------------------------

    async def read(self, manifest_id: int) -> Manifest:
        """The manifest at ``manifest_id``; ``NotFoundError`` if there is none."""
        key = self.key(manifest_id)
        result = await self.store.get(key)
        manifest = decode(result.body, key)
        self._remember(manifest_id, manifest)
        return manifest

    async def read_latest(self, *, known: int = 0) -> tuple[int, Manifest] | None:
        """The newest manifest and its id, or None if there is none yet.

        ``known`` is an id the caller knows exists; the search starts from it or from the
        process-wide cache, whichever is newer. Costs O(1) requests when the newest is at or
        near what this process last saw, O(log n) from cold, never a listing of the history.
        """
        cached = self._cache.get(self.root)
        start = max(known, cached[0] if cached else 0)
        if start:
            return await self._read_forward(start)
        # Cold: the search itself ends at the newest id, as fresh as a probe would be.
        newest = await self._find_newest_cold()
        return (newest, await self.read(newest)) if newest else None

    async def _read_forward(self, start: int) -> tuple[int, Manifest]:
        """Read from ``start`` (which exists) to the newest id."""
        cached = self._cache.get(self.root)
        latest_id, latest = cached if cached and cached[0] == start else (start, None)
        for _ in range(_LINEAR_PROBES):
            try:
                manifest = await self.read(latest_id + 1)
            except NotFoundError:
                if latest is None:
                    latest = await self.read(latest_id)
                return latest_id, latest
            latest_id, latest = latest_id + 1, manifest
        # A long run of new versions: find the newest by galloping, then read it.
        latest_id = await self._gallop(latest_id)
        return latest_id, await self.read(latest_id)

    async def _exists(self, manifest_id: int) -> bool:
        try:
            await self.store.head(self.key(manifest_id))
        except NotFoundError:
            return False
        return True

    async def _gallop(self, low: int) -> int:
        """Given that ``low`` exists, the newest id: double until a miss, then bisect.
        ~2·log2(n/low) HEAD requests."""
        high = low * 2
        while await self._exists(high):
            low, high = high, high * 2
        while high - low > 1:  # invariant: low exists, high does not
            mid = (low + high) // 2
            if await self._exists(mid):
                low = mid
            else:
                high = mid
        return low

    async def _find_newest_cold(self) -> int:
        """With nothing cached: list one page. A short history ends within it (its last id is
        the newest); a longer one gives a lower bound to gallop from. 0: no manifest at all."""
        highest = 0
        count = 0
        async with listing(self.store, self._dir) as metas:
            async for meta in metas:
                manifest_id = self._id_of(meta.key)
                if manifest_id is not None:
                    highest = max(highest, manifest_id)
                count += 1
                if count >= _LIST_PAGE:
                    return await self._gallop(highest) if highest else 0
        return highest

    def _remember(self, manifest_id: int, manifest: Manifest) -> None:
        cached = self._cache.get(self.root)
        if cached is None or cached[0] < manifest_id:
            self._cache[self.root] = (manifest_id, manifest)

    def cached_latest(self) -> tuple[int, Manifest] | None:
        """The newest manifest this process has seen here, without I/O (may be stale)."""
        return self._cache.get(self.root)

    # -- writing ------------------------------------------------------------------------------

    async def write(self, manifest_id: int, manifest: Manifest) -> None:
        """Create ``manifest_id``; ``ManifestVersionExistsError`` if it is taken."""
        await self.write_bytes(manifest_id, encode(manifest), manifest)

    async def write_bytes(self, manifest_id: int, data: bytes, manifest: Manifest) -> None:
        """Create ``manifest_id`` from ``data`` (already ``encode(manifest)``), so that a retry
        after an unknown outcome resends the identical bytes."""
        try:
            await self.store.put(self.key(manifest_id), data, mode="create")
        except AlreadyExistsError as exc:
            raise ManifestVersionExistsError(manifest_id) from exc
        self._remember(manifest_id, manifest)
