"""The manifest: its fields, its bytes on the store, and where versions live.

On the store a manifest is a framed (``_framing``: magic ``SLEM``, CRC-32, format version)
msgspec msgpack body, the ``Manifest`` struct. A damaged one is ``ManifestCorruptError``, an
intact one from a newer format ``UnsupportedFormatError``.

Versions live at ``{root}/manifest/{id:020d}.manifest`` (see ``_layout``), ids contiguous from
1, each written once with create-if-absent and never changed. Retention may delete old versions,
but only behind the boundary ``{root}/manifest-boundary`` (``_boundary``): a version that lands
at or below it counts as a conflict, so a stale writer can never recreate a deleted id and
believe it won, and nothing at or below it is ever read as a version.
"""

from __future__ import annotations

import copy
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from functools import partial
from typing import Final

import msgspec

from ._boundary import advance_boundary, read_boundary
from ._errors import (
    AlreadyExistsError,
    ManifestCorruptError,
    ManifestVersionExistsError,
    NotFoundError,
    StoreError,
    TransientStoreError,
)
from ._framing import frame, unframe
from ._layout import check_root, manifest_boundary_key, manifest_versions
from ._observe import store_for
from ._retry import gather
from ._sequence import ObjectSequence
from ._store import ObjectStore

__all__ = [
    "DEFAULT_LIST_PAGE",
    "Manifest",
    "ManifestCache",
    "ManifestStore",
    "RoleClaim",
    "cache_of",
    "decode",
    "default_owner",
    "encode",
    "new_id",
    "now_ms",
    "use_cache",
]

MAGIC: Final = b"SLEM"


def new_id() -> str:
    """A fresh random id for a claim or a write: 128 bits, so two never meet."""
    return os.urandom(16).hex()


_owner: tuple[int, str] | None = None


def default_owner() -> str:
    """``host:pid`` of this process (computed once per process, and again after a fork)."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:
        _owner = (pid, f"{socket.gethostname()}:{pid}")
    return _owner[1]


class RoleClaim(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Who holds a role: the epoch, and the claim that set it."""

    role: str
    epoch: int
    claim_id: str
    claimed_at_ms: int = 0  # wall-clock time of the claim, for operators only
    owner: str = ""  # free text, host:pid by default
    # The write id of this holder's newest write (its claim, then each update). Every later
    # version carries it unchanged until the holder writes again, so a holder that lost a
    # response can tell from the newest version alone whether its write landed, even after
    # retention deleted the version it wrote.
    last_write_id: str = ""


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
    # How far the write-ahead log has been absorbed into ``state``: entries at or below this id
    # may be trimmed. Moved by ``EpochHandle.mark_replayed`` only.
    replay_after: int = 0
    # Where the newest writer fenced the log (0: not recorded). Its appends come after its
    # fence, so the next writer looks for the first free log id from here rather than from the
    # replay point: one request instead of a search. A hint kept by ``fence_wal``: a mutate's
    # value for it is ignored.
    log_fence: int = 0

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
        """This manifest, written by ``claim``'s holder as its claim: the role's previous claim
        replaced, and the write id set to the claim id."""
        claim = msgspec.structs.replace(claim, last_write_id=claim.claim_id)
        others = [c for c in self.roles if c.role != claim.role]
        roles = tuple(sorted([*others, claim], key=lambda c: c.role))
        return msgspec.structs.replace(self, roles=roles, write_id=claim.claim_id)

    def with_write(self, role: str, write_id: str) -> Manifest:
        """This manifest as a new write by ``role``'s holder, identified by ``write_id``."""
        roles = tuple(
            msgspec.structs.replace(c, last_write_id=write_id) if c.role == role else c
            for c in self.roles
        )
        return msgspec.structs.replace(self, roles=roles, write_id=write_id)

    def carries(self, role: str, claim_id: str, write_id: str) -> bool:
        """Whether this version descends from the write ``write_id`` of claim ``claim_id``."""
        claim = self.claim(role)
        return claim is not None and claim.claim_id == claim_id and claim.last_write_id == write_id


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Manifest)


def encode(manifest: Manifest) -> bytes:
    """The manifest's bytes on the store: frame and body.

    ``TypeError`` (or ``ValueError``) if a field holds what no reader could decode (``state``
    not bytes, an ``owner`` that is not a str, ...): every field is checked by decoding the body
    before it can be written, so a root never holds a manifest that other processes can't read.
    """
    body = _encoder.encode(manifest)
    try:
        decoded = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise TypeError(f"a manifest field has the wrong type: {exc}") from None
    if decoded.replay_after < 0 or decoded.log_fence < 0:
        raise ValueError(
            f"replay_after and log_fence must be >= 0, got {decoded.replay_after}, "
            f"{decoded.log_fence}"
        )
    try:
        _check_roles(decoded.roles, "<the manifest to write>")
    except ManifestCorruptError as exc:
        raise ValueError(exc.reason) from None
    return frame(MAGIC, body)


def decode(data: bytes, key: str = "<manifest>") -> Manifest:
    """Parse stored bytes, checking magic, checksum and format before the body."""
    body = unframe(MAGIC, data, key, ManifestCorruptError)
    try:
        manifest = _decoder.decode(body)
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


# -- what a process remembers ------------------------------------------------------------------
# What a process remembers about the manifests it has seen, and who owns that memory.
#
# Per root, a ``ManifestCache`` keeps the newest version seen (its id and contents) and the
# highest id a search has seen exist. Both stay true forever: a version, once written, never
# changes, so the cached contents are right; only "is it still the newest?" goes stale, and the
# next create-if-absent answers that (a conflict means: look further). That is why a warm claim
# needs no read at all, and why a search that failed halfway can resume where it was.
#
# The owner: by default, each store object has its own cache (held weakly: it goes with the
# store). A store object stands for one process's view of the storage: two store objects on the
# same bucket behave as two processes would, whatever they share underneath. To give a piece of
# code a view of its own without a new store object, pass ``cache=ManifestCache()`` where it is
# taken (``claim_epoch``, ``ManifestStore``, ``collect_garbage``).
#
# ``list_page`` is how many keys a cold search lists before it switches to probing (1,000: one
# page of S3's ``ListObjectsV2``); a scale model (the simulation) makes it small.

DEFAULT_LIST_PAGE: Final = 1000


class ManifestCache:
    """The newest manifest seen, and the highest id seen to exist, per root."""

    def __init__(self, *, list_page: int = DEFAULT_LIST_PAGE) -> None:
        if isinstance(list_page, bool) or not isinstance(list_page, int) or list_page < 1:
            raise ValueError(f"list_page must be an int >= 1, got {list_page!r}")
        self.list_page = list_page
        self._newest: dict[str, tuple[int, Manifest]] = {}
        self._seen: dict[str, int] = {}

    def newest(self, root: str) -> tuple[int, Manifest] | None:
        """The newest version seen under ``root`` (it may no longer be the newest)."""
        return self._newest.get(root)

    def remember(self, root: str, manifest_id: int, manifest: Manifest) -> None:
        known = self._newest.get(root)
        if known is None or known[0] < manifest_id:
            self._newest[root] = (manifest_id, manifest)

    def seen_to_exist(self, root: str) -> int:
        """The highest id a search found to exist under ``root`` (0: none)."""
        return self._seen.get(root, 0)

    def saw(self, root: str, manifest_id: int) -> None:
        if manifest_id > self._seen.get(root, 0):
            self._seen[root] = manifest_id


_by_store: weakref.WeakKeyDictionary[object, ManifestCache] = weakref.WeakKeyDictionary()


def cache_of(store: object) -> ManifestCache:
    """The cache of ``store``'s process view (made on first use)."""
    try:
        return _by_store.setdefault(store, ManifestCache())
    except TypeError:  # a store that can't be weakly referenced: nothing is remembered
        return ManifestCache()


def use_cache(store: object, cache: ManifestCache) -> None:
    """Make ``cache`` the process view of ``store`` from now on: for a caller that builds its own
    (the simulation's processes scale down the cold search)."""
    _by_store[store] = cache


# -- the versions -------------------------------------------------------------------------------

# Warm probing reads forward this many ids before switching to a galloping search.
_LINEAR_PROBES: Final = 4
# How often a reader chases a boundary that moves while it reads, before giving up for now.
_BOUNDARY_CHASES: Final = 8


class ManifestStore:
    """The versioned manifests under ``root`` on a store: read, write, find the newest.

    ``cache`` is what this process remembers of them (default: the store object's own, see
    ``ManifestCache``)."""

    def __init__(
        self, store: ObjectStore, root: str = "", *, cache: ManifestCache | None = None
    ) -> None:
        self.root = check_root(root)
        self.store = store
        self._cache = cache_of(store) if cache is None else cache
        self._names = manifest_versions(self.root)
        self._versions = ObjectSequence(
            store, self._names, seen=partial(self._cache.saw, self.root)
        )
        self.boundary_key = manifest_boundary_key(self.root)

    @property
    def cache(self) -> ManifestCache:
        return self._cache

    def observed(self) -> ManifestStore:
        """These manifests as one operation reaches them: this object while nobody listens to
        store requests, else a view through a watching store (``_observe.store_for``) with the
        same cache. Asked once per operation."""
        store = store_for(self.store)
        if store is self.store:
            return self
        view = copy.copy(self)
        view.store = store
        view._versions = ObjectSequence(
            store, self._names, seen=partial(self._cache.saw, self.root)
        )
        return view

    def key(self, manifest_id: int) -> str:
        if manifest_id < 1:
            raise ValueError(f"manifest ids start at 1, got {manifest_id}")
        return self._names.key(manifest_id)

    def id_of(self, key: str) -> int | None:
        """The manifest id ``key`` names; None for any other key (a foreign object)."""
        return self._names.id_of(key)

    # -- reading ------------------------------------------------------------------------------

    async def read(self, manifest_id: int) -> Manifest:
        """The version at ``manifest_id``; ``NotFoundError`` if there is none, or if the id lies
        at or below the retention boundary (what is there may be a stale writer's recreation of
        a deleted id, which is no version). Two requests: the object, then the boundary."""
        manifest = await self.read_unchecked(manifest_id)
        boundary = await self.read_boundary()
        if manifest_id <= boundary:
            raise NotFoundError(
                f"manifest {manifest_id} lies at or below the retention boundary {boundary}"
            )
        return manifest

    async def exists(self, manifest_id: int) -> bool:
        """Whether an object stands at ``manifest_id`` (one HEAD; the boundary unchecked)."""
        return await self._versions.exists(manifest_id)

    async def read_unchecked(self, manifest_id: int) -> Manifest:
        """The object at ``manifest_id``, decoded, without the boundary check of ``read``: for a
        caller that checks the boundary itself, after this read."""
        key = self.key(manifest_id)
        result = await self.store.get(key)
        manifest = decode(result.body, key)
        self._cache.remember(self.root, manifest_id, manifest)
        return manifest

    async def read_latest(
        self, *, known: int = 0, verify_boundary: bool = True
    ) -> tuple[int, Manifest] | None:
        """The newest manifest and its id, or None if there is none yet.

        ``known`` is an id the caller knows existed; the search starts from it or from the
        cache, whichever is newer. Costs O(1) requests when the newest is at or near what this
        process last saw, O(log n) from cold, never a listing of the history.

        Retention may have deleted what this process saw last: the answer is then checked
        against the boundary (one more request), and the search starts again above it.
        ``verify_boundary=False`` skips that check when nothing went missing, for a caller
        whose next step is a write (the write's own boundary check covers it).
        """
        cached = self._cache.newest(self.root)
        start = max(known, cached[0] if cached else 0, self._cache.seen_to_exist(self.root))
        try:
            if start:
                found: tuple[int, Manifest] | None = await self._read_forward(start)
            else:
                # Cold: the search itself ends at the newest id, as fresh as a probe would be.
                newest = await self._versions.newest_cold(self._cache.list_page)
                found = (newest, await self.read_unchecked(newest)) if newest else None
        except NotFoundError:
            found = None  # an id we started from was deleted: retention ran meanwhile
        else:
            if not verify_boundary:
                return found
        return await self._above_boundary(found)

    async def _above_boundary(
        self, found: tuple[int, Manifest] | None
    ) -> tuple[int, Manifest] | None:
        """``found`` if it lies above the boundary, else the newest manifest above it."""
        for _ in range(_BOUNDARY_CHASES):
            boundary = await self.read_boundary()
            if found is not None and found[0] > boundary:
                return found
            if boundary == 0:
                return found  # retention never ran: nothing is missing
            try:  # retention keeps at least the newest version, so boundary + 1 exists ...
                return await self._read_forward(boundary + 1)
            except NotFoundError:
                found = None  # ... unless retention moved on again meanwhile: chase it
        raise TransientStoreError(
            f"manifests under {self.root!r} kept disappearing under retention; try again"
        )

    async def _read_forward(self, start: int) -> tuple[int, Manifest]:
        """Read from ``start`` (which exists) to the newest id."""
        cached = self._cache.newest(self.root)
        latest_id, latest = cached if cached and cached[0] == start else (start, None)
        for _ in range(_LINEAR_PROBES):
            try:
                manifest = await self.read_unchecked(latest_id + 1)
            except NotFoundError:
                if latest is None:
                    latest = await self.read_unchecked(latest_id)
                return latest_id, latest
            latest_id, latest = latest_id + 1, manifest
        # A long run of new versions: find the newest by galloping, then read it.
        latest_id = await self._versions.newest_from(latest_id)
        return latest_id, await self.read_unchecked(latest_id)

    def cached_latest(self) -> tuple[int, Manifest] | None:
        """The newest manifest this process has seen here, without I/O (may be stale)."""
        return self._cache.newest(self.root)

    # -- writing ------------------------------------------------------------------------------

    async def write(self, manifest_id: int, manifest: Manifest) -> None:
        """Create ``manifest_id``; ``ManifestVersionExistsError`` if it is taken."""
        await self.write_bytes(manifest_id, encode(manifest), manifest)

    async def write_bytes(
        self,
        manifest_id: int,
        data: bytes,
        manifest: Manifest,
        *,
        resend: bool = False,
        beside: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Create ``manifest_id`` from ``data`` (already ``encode(manifest)``), so that a retry
        after an unknown outcome resends the identical bytes (``resend=True``). ``beside`` runs
        once the create has landed, at the same time as the boundary check (it must not raise).

        A create that lands at or below the retention boundary recreated a deleted id: it is a
        conflict like any other, and what it left there is taken away at once (anything at or
        below the boundary may be deleted; readers never take it for a version). A resend that
        finds the id taken may have found its own first send there: below the boundary, that is
        such a recreation too.
        """
        key = self.key(manifest_id)
        try:
            await self.store.put(key, data, mode="create")
        except AlreadyExistsError as exc:
            if resend and manifest_id <= await self.read_boundary():
                await self._discard(key)
                raise ManifestVersionExistsError(manifest_id, collected=True) from exc
            raise ManifestVersionExistsError(manifest_id) from exc
        if beside is None:
            boundary = await self.read_boundary()
        else:
            boundary = 0

            async def check() -> None:
                nonlocal boundary
                boundary = await self.read_boundary()

            await gather(check, beside)
        if manifest_id <= boundary:
            await self._discard(key)
            raise ManifestVersionExistsError(manifest_id, collected=True)
        self._cache.remember(self.root, manifest_id, manifest)

    async def _discard(self, key: str) -> None:
        """Delete a recreation at or below the boundary; if that fails, the next collection
        does it (nothing reads it meanwhile)."""
        with suppress(StoreError):
            await self.store.delete(key)

    # -- the retention boundary ---------------------------------------------------------------

    async def read_boundary(self) -> int:
        """The retention boundary: ids at or below it may have been deleted (0: none were)."""
        return await read_boundary(self.store, self.boundary_key)

    async def advance_boundary(self, manifest_id: int) -> int:
        """Move the boundary up to ``manifest_id`` (never down); return where it stands.
        The caller must already know that ``manifest_id`` lies below the newest version."""
        return await advance_boundary(self.store, self.boundary_key, manifest_id)

    async def collectable_ids(self, boundary: int) -> list[int]:
        """The manifest ids stored at or below ``boundary``, ascending (one listing, stopped at
        the first id above it)."""
        return await self._versions.ids_up_to(boundary)
