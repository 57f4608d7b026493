"""Deliberately broken pieces of ``slate_epoch._claim``, to show that the simulation's checker
catches real protocol bugs. Each is a minimal change, installed with ``monkeypatch``; where the
original can be wrapped it is, so the breakage follows the core as it evolves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from slate_epoch import _claim
from slate_epoch._claim import EpochHandle
from slate_epoch._errors import ManifestVersionExistsError, TransientStoreError
from slate_epoch._manifest import Manifest, ManifestStore, encode
from slate_epoch._retry import Retrier
from slate_epoch._simulation import Violation

Newest = tuple[int, Manifest] | None
Create = Callable[[ManifestStore, int, Manifest, str, Retrier], Awaitable[tuple[bool, Newest]]]

_create: Create = _claim._create
_accept = EpochHandle._accept


async def create_trusting_any_conflict(
    manifests: ManifestStore, manifest_id: int, manifest: Manifest, role: str, retrier: Retrier
) -> tuple[bool, Newest]:
    """``_create`` that skips the claim-id check: whatever write took the id is taken to be
    ours."""
    landed, newest = await _create(manifests, manifest_id, manifest, role, retrier)
    return (True, newest) if newest is not None else (landed, newest)  # BUG: ignores `landed`


async def create_never_recognising_its_own(
    manifests: ManifestStore, manifest_id: int, manifest: Manifest, role: str, retrier: Retrier
) -> tuple[bool, Newest]:
    """``_create`` as SlateDB first had it: every conflict is a rival's, so a lost response
    costs an extra epoch (safe, but invariant 5 is broken)."""
    landed, newest = await _create(manifests, manifest_id, manifest, role, retrier)
    return (False, newest) if newest is not None else (landed, newest)  # BUG


async def create_without_rereading(
    manifests: ManifestStore, manifest_id: int, manifest: Manifest, role: str, retrier: Retrier
) -> tuple[bool, Newest]:
    """``_create`` that, when a conflict follows a resend, returns success without reading
    anything: "we sent it before, so it must be ours". Wrong when the first send was never
    performed (an error, not a lost response) and a rival took the id meanwhile."""
    data = encode(manifest)
    resent = False
    while True:
        retrier.attempts += 1
        try:
            await manifests.write_bytes(manifest_id, data, manifest)
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
    return await _create(manifests, manifest_id, manifest, role, retrier)  # the honest path


def claims_only(broken: Create) -> Create:
    """``broken`` for the claim's writes (a claim's write id is its claim id), the original
    ``_create`` for the handle's."""

    async def create(
        manifests: ManifestStore, manifest_id: int, manifest: Manifest, role: str, r: Retrier
    ) -> tuple[bool, Newest]:
        is_claim = any(claim.claim_id == manifest.write_id for claim in manifest.roles)
        return await (broken if is_claim else _create)(manifests, manifest_id, manifest, role, r)

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
    self: ManifestStore, manifest_id: int, data: bytes, manifest: Manifest
) -> None:
    """``ManifestStore.write_bytes`` with a plain overwrite instead of create-if-absent."""
    await self.store.put(self.key(manifest_id), data, mode="overwrite")  # BUG: not "create"
    self._remember(manifest_id, manifest)


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
]
