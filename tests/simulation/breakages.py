"""Deliberately broken pieces of the core (the claim, the write-ahead log, retention), to show
that the simulation's checker catches real protocol bugs. Each is a minimal change, installed
with ``monkeypatch``; where the original can be wrapped it is, so the breakage follows the core
as it evolves."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec
import pytest

from slate_epoch import _claim, _wal
from slate_epoch._boundary import read_boundary
from slate_epoch._claim import EpochHandle
from slate_epoch._errors import ManifestVersionExistsError, TransientStoreError
from slate_epoch._manifest import Manifest, ManifestStore, encode
from slate_epoch._retry import Retrier
from slate_epoch._sequence import ObjectSequence
from slate_epoch._store import ObjectStore
from slate_epoch._wal import WalWriter
from slate_epoch.testing import Violation

Newest = tuple[int, Manifest] | None


class Create(Protocol):
    def __call__(
        self,
        manifests: ManifestStore,
        manifest_id: int,
        manifest: Manifest,
        role: str,
        retrier: Retrier,
        *,
        base: Manifest | None = None,
    ) -> Awaitable[tuple[bool, Newest]]: ...


_create: Create = _claim._create
_accept = EpochHandle._accept


async def create_trusting_any_conflict(
    manifests: ManifestStore,
    manifest_id: int,
    manifest: Manifest,
    role: str,
    retrier: Retrier,
    *,
    base: Manifest | None = None,
) -> tuple[bool, Newest]:
    """``_create`` that skips the claim-id check: whatever write took the id is taken to be
    ours."""
    landed, newest = await _create(manifests, manifest_id, manifest, role, retrier, base=base)
    return (True, newest) if newest is not None else (landed, newest)  # BUG: ignores `landed`


async def create_never_recognising_its_own(
    manifests: ManifestStore,
    manifest_id: int,
    manifest: Manifest,
    role: str,
    retrier: Retrier,
    *,
    base: Manifest | None = None,
) -> tuple[bool, Newest]:
    """``_create`` as SlateDB first had it: every conflict is a rival's, so a lost response
    costs an extra epoch (safe, but invariant 5 is broken)."""
    landed, newest = await _create(manifests, manifest_id, manifest, role, retrier, base=base)
    return (False, newest) if newest is not None else (landed, newest)  # BUG


async def create_without_rereading(
    manifests: ManifestStore,
    manifest_id: int,
    manifest: Manifest,
    role: str,
    retrier: Retrier,
    *,
    base: Manifest | None = None,
) -> tuple[bool, Newest]:
    """``_create`` that, when a conflict follows a resend, returns success without reading
    anything: "we sent it before, so it must be ours". Wrong when the first send was never
    performed (an error, not a lost response) and a rival took the id meanwhile."""
    data = encode(manifest)
    resent = False
    while True:
        retrier.attempts += 1
        try:
            await manifests.write_bytes(manifest_id, data, manifest, resend=resent)
        except TransientStoreError as exc:
            retrier.failed(exc)
            resent = True
            await retrier.pause()
            continue
        except ManifestVersionExistsError as exc:
            retrier.failed(exc)
            if resent:
                return True, None  # BUG: success without re-reading
            break
        return True, None
    # the honest path
    return await _create(manifests, manifest_id, manifest, role, retrier, base=base)


def claims_only(broken: Create) -> Create:
    """``broken`` for the claim's writes (a claim's write id is its claim id), the original
    ``_create`` for the handle's."""

    async def create(
        manifests: ManifestStore,
        manifest_id: int,
        manifest: Manifest,
        role: str,
        retrier: Retrier,
        *,
        base: Manifest | None = None,
    ) -> tuple[bool, Newest]:
        is_claim = any(claim.claim_id == manifest.write_id for claim in manifest.roles)
        chosen = broken if is_claim else _create
        return await chosen(manifests, manifest_id, manifest, role, retrier, base=base)

    return create


def accept_without_fencing(self: EpochHandle, manifest_id: int, manifest: Manifest) -> None:
    """``EpochHandle._accept`` that adopts a newer manifest even when a newer epoch holds the
    role: the handle writes on top of the newer claim instead of raising ``FencedError``."""
    stored = manifest.claim(self.role)
    if stored is not None and stored.epoch > self.epoch:
        # BUG: should be `self._fenced_by = stored.epoch; raise FencedError(...)`
        if manifest_id > self.manifest_id:
            self.manifest_id, self.manifest = manifest_id, manifest
        return
    _accept(self, manifest_id, manifest)


async def write_bytes_overwriting(
    self: ManifestStore, manifest_id: int, data: bytes, manifest: Manifest, *, resend: bool = False
) -> None:
    """``ManifestStore.write_bytes`` with a plain overwrite instead of create-if-absent."""
    await self.store.put(self.key(manifest_id), data, mode="overwrite")  # BUG: not "create"
    self.cache.remember(self.root, manifest_id, manifest)


# -- retention ----------------------------------------------------------------------------------

# Set while the wrapped call runs, in its task only (a context variable), so that a breakage
# reaches one caller of a shared method and no other.
_INSIDE: contextvars.ContextVar[str] = contextvars.ContextVar("breakage_inside", default="")
_write_bytes = ManifestStore.write_bytes
_read_boundary = ManifestStore.read_boundary
_collectable_ids = ManifestStore.collectable_ids


async def write_bytes_marked(
    self: ManifestStore, manifest_id: int, data: bytes, manifest: Manifest, *, resend: bool = False
) -> None:
    token = _INSIDE.set("write_bytes")
    try:
        await _write_bytes(self, manifest_id, data, manifest, resend=resend)
    finally:
        _INSIDE.reset(token)


async def read_boundary_zero_in_write_bytes(self: ManifestStore) -> int:
    """``ManifestStore.read_boundary`` that answers 0 to ``write_bytes``' post-write check (the
    check is skipped: a stale writer that recreates a deleted id believes it won), and the
    truth to every other reader."""
    if _INSIDE.get() == "write_bytes":
        return 0  # BUG
    return await _read_boundary(self)


def skip_the_boundary_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ManifestStore, "write_bytes", write_bytes_marked)
    monkeypatch.setattr(ManifestStore, "read_boundary", read_boundary_zero_in_write_bytes)


async def collectable_ids_one_too_many(self: ManifestStore, boundary: int) -> list[int]:
    """``ManifestStore.collectable_ids`` off by one: collections also delete the first id above
    the boundary (with ``keep=1``, the newest version)."""
    return await _collectable_ids(self, boundary + 1)  # BUG: `boundary`


# -- the write-ahead log ------------------------------------------------------------------------

_first_free = ObjectSequence.first_free
_trim = WalWriter.trim
_refresh = EpochHandle.refresh


async def first_free_after_skipping_one(self: ObjectSequence, after: int) -> int:
    """``ObjectSequence.first_free`` (used by the log only) that answers one id too far:
    ``fence_wal`` leaves a gap below its fence."""
    return await _first_free(self, after) + 1  # BUG


async def step_over_without_refreshing(
    self: WalWriter, entry_id: int, key: str, existing: bytes
) -> None:
    """``WalWriter._someone_else_at`` that steps over whatever holds the id, without refreshing
    the manifest first: an old writer steps over a newer epoch's fence and appends on."""
    self._next = entry_id + 1  # BUG: no `await self._holder.refresh()`, no epoch check


async def trim_marked(self: WalWriter, *, timeout: float | None = None) -> int:
    token = _INSIDE.set("trim")
    try:
        return await _trim(self, timeout=timeout)
    finally:
        _INSIDE.reset(token)


async def refresh_one_past_in_trim(self: EpochHandle, *, timeout: float | None = None) -> Manifest:
    """``EpochHandle.refresh`` that, inside ``WalWriter.trim`` only, reports the replay point
    one id too high: trim deletes the first entry above it."""
    manifest = await _refresh(self, timeout=timeout)
    if _INSIDE.get() == "trim":
        return msgspec.structs.replace(manifest, replay_after=manifest.replay_after + 1)  # BUG
    return manifest


async def advance_boundary_not(store: ObjectStore, key: str, to: int) -> int:
    """``advance_boundary`` for the log that leaves the boundary where it is: trim deletes
    without moving the log's boundary first."""
    return await read_boundary(store, key)  # BUG: never moves it


def trim_one_past_the_replay_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WalWriter, "trim", trim_marked)
    monkeypatch.setattr(EpochHandle, "refresh", refresh_one_past_in_trim)


@dataclass(frozen=True)
class Breakage:
    name: str
    install: Callable[[pytest.MonkeyPatch], None]
    catches: Callable[[Violation], bool]  # the violations that show this breakage
    shown_by: str  # what catches it, in words


def _patch_create(create: Create) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.setattr(_claim, "_create", create)


def _check(number: int, text: str = "") -> Callable[[Violation], bool]:
    return lambda violation: violation.check == number and text in violation.message


def _either(*tests: Callable[[Violation], bool]) -> Callable[[Violation], bool]:
    return lambda violation: any(test(violation) for test in tests)


_LOST_ACK = _check(3, "acknowledged")  # an acknowledged update that is not in the history

BREAKAGES = [
    Breakage(
        "skip the claim-id check (claims only)",
        _patch_create(claims_only(create_trusting_any_conflict)),
        _check(2),
        "check 2",
    ),
    Breakage(
        "success without re-reading after a conflict (claims only)",
        _patch_create(claims_only(create_without_rereading)),
        _check(2),
        "check 2",
    ),
    Breakage(
        "skip the claim-id check",
        _patch_create(create_trusting_any_conflict),
        _either(_check(2), _LOST_ACK),
        "check 2, or check 3 (an acknowledged update missing)",
    ),
    Breakage(
        "success without re-reading after a conflict",
        _patch_create(create_without_rereading),
        _either(_check(2), _LOST_ACK),
        "check 2, or check 3 (an acknowledged update missing)",
    ),
    Breakage(
        "a fenced handle writes",
        lambda monkeypatch: monkeypatch.setattr(EpochHandle, "_accept", accept_without_fencing),
        _check(3, "a fenced write landed"),
        "check 3 (a fenced write landed)",
    ),
    Breakage(
        "a lost response burns an epoch (claims only)",
        _patch_create(claims_only(create_never_recognising_its_own)),
        _check(5),
        "check 5",
    ),
    Breakage(
        "manifests are overwritten",
        lambda monkeypatch: monkeypatch.setattr(
            ManifestStore, "write_bytes", write_bytes_overwriting
        ),
        _check(1),
        "check 1",
    ),
    Breakage(
        "the post-write boundary check skipped",
        skip_the_boundary_check,
        _either(_check(1), _check(2), _LOST_ACK),
        "check 1, 2, or 3 (an acknowledged update missing)",
    ),
    Breakage(
        "collections delete one id past the boundary",
        lambda monkeypatch: monkeypatch.setattr(
            ManifestStore, "collectable_ids", collectable_ids_one_too_many
        ),
        _check(1, "above the boundary"),
        "check 1 (a version deleted above the boundary)",
    ),
    Breakage(
        "fence_wal skips one free id (a gap below the fence)",
        lambda monkeypatch: monkeypatch.setattr(
            ObjectSequence, "first_free", first_free_after_skipping_one
        ),
        _check(6),
        "check 6",
    ),
    Breakage(
        "an append steps over a newer fence without refreshing",
        lambda monkeypatch: monkeypatch.setattr(
            WalWriter, "_someone_else_at", step_over_without_refreshing
        ),
        _check(6, "above the fence"),
        "check 6 (an entry above a newer fence)",
    ),
    Breakage(
        "trim deletes one entry past the replay point",
        trim_one_past_the_replay_point,
        _check(6, "above the replay point"),
        "check 6 (an entry deleted above the replay point)",
    ),
    Breakage(
        "trim deletes without moving the log's boundary first",
        lambda monkeypatch: monkeypatch.setattr(_wal, "advance_boundary", advance_boundary_not),
        _check(6, "above the log's boundary"),
        "check 6 (an entry deleted above the log's boundary)",
    ),
]
