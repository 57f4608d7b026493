"""Deliberately broken pieces of the core (the claim, the write-ahead log, retention, lead), to show
that the simulation's checker catches real protocol bugs. Each is a minimal change, installed
with ``monkeypatch``; where the original can be wrapped it is, so the breakage follows the core
as it evolves."""

from __future__ import annotations

import contextvars
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import msgspec
import pytest

from slate_epoch import _claim, _holding, _layout, _manifest, _next_version, _standby, _wal
from slate_epoch._boundary import read_boundary
from slate_epoch._claim import EpochHandle
from slate_epoch._errors import (
    ClaimTimeoutError,
    FencedError,
    ManifestVersionExistsError,
    NotFoundError,
    TransientStoreError,
    WalTrimmedError,
    WriteOutcomeUnknownError,
)
from slate_epoch._framing import frame
from slate_epoch._manifest import Manifest, ManifestStore, encode
from slate_epoch._retry import DEFAULT_BACKOFF, Backoff, Retrier, with_deadline
from slate_epoch._sequence import ObjectSequence
from slate_epoch._standby import Standby, View
from slate_epoch._store import ObjectStore
from slate_epoch._wal import WalEntry, WalWriter
from slate_epoch.testing import SimulationConfig, Violation
from slate_epoch.testing._simulation import watchers
from slate_epoch.testing._simulation import world as world_module

Newest = tuple[int, Manifest] | None
Beside = Callable[[], Awaitable[None]] | None  # runs beside a landed create's boundary check
Landed = bool | None  # None: nothing left on the store can tell


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
        beside: Beside = None,
    ) -> Awaitable[tuple[Landed, Newest]]: ...


_create: Create = _next_version.write_next
_accept = EpochHandle._accept


async def create_trusting_any_conflict(
    manifests: ManifestStore,
    manifest_id: int,
    manifest: Manifest,
    role: str,
    retrier: Retrier,
    *,
    base: Manifest | None = None,
    beside: Beside = None,
) -> tuple[Landed, Newest]:
    """``_create`` that skips the claim-id check: whatever write took the id is taken to be
    ours."""
    landed, newest = await _create(
        manifests, manifest_id, manifest, role, retrier, base=base, beside=beside
    )
    return (True, newest) if newest is not None else (landed, newest)  # BUG: ignores `landed`


async def create_never_recognising_its_own(
    manifests: ManifestStore,
    manifest_id: int,
    manifest: Manifest,
    role: str,
    retrier: Retrier,
    *,
    base: Manifest | None = None,
    beside: Beside = None,
) -> tuple[Landed, Newest]:
    """``_create`` as SlateDB first had it: every conflict is a rival's, so a lost response
    costs an extra epoch (safe, but invariant 5 is broken)."""
    landed, newest = await _create(
        manifests, manifest_id, manifest, role, retrier, base=base, beside=beside
    )
    return (False, newest) if newest is not None else (landed, newest)  # BUG


async def create_without_rereading(
    manifests: ManifestStore,
    manifest_id: int,
    manifest: Manifest,
    role: str,
    retrier: Retrier,
    *,
    base: Manifest | None = None,
    beside: Beside = None,
) -> tuple[Landed, Newest]:
    """``_create`` that, when a conflict follows a resend, returns success without reading
    anything: "we sent it before, so it must be ours". Wrong when the first send was never
    performed (an error, not a lost response) and a rival took the id meanwhile."""
    data = encode(manifest)
    resent = False
    while True:
        retrier.attempts += 1
        try:
            await manifests.write_bytes(manifest_id, data, manifest, resend=resent, beside=beside)
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
    return await _create(manifests, manifest_id, manifest, role, retrier, base=base, beside=beside)


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
        beside: Beside = None,
    ) -> tuple[Landed, Newest]:
        is_claim = any(claim.claim_id == manifest.write_id for claim in manifest.roles)
        chosen = broken if is_claim else _create
        return await chosen(
            manifests, manifest_id, manifest, role, retrier, base=base, beside=beside
        )

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
    self: ManifestStore,
    manifest_id: int,
    data: bytes,
    manifest: Manifest,
    *,
    resend: bool = False,
    beside: Beside = None,
) -> None:
    """``ManifestStore.write_bytes`` with a plain overwrite instead of create-if-absent."""
    await self.store.put(self.key(manifest_id), data, mode="overwrite")  # BUG: not "create"
    if beside is not None:
        await beside()
    self.cache.remember(self.root, manifest_id, manifest)


# -- retention ----------------------------------------------------------------------------------

# Set while the wrapped call runs, in its task only (a context variable), so that a breakage
# reaches one caller of a shared method and no other.
_INSIDE: contextvars.ContextVar[str] = contextvars.ContextVar("breakage_inside", default="")
_write_bytes = ManifestStore.write_bytes
_read_boundary = ManifestStore.read_boundary
_collectable_ids = ManifestStore.collectable_ids


async def write_bytes_marked(
    self: ManifestStore,
    manifest_id: int,
    data: bytes,
    manifest: Manifest,
    *,
    resend: bool = False,
    beside: Beside = None,
) -> None:
    token = _INSIDE.set("write_bytes")
    try:
        await _write_bytes(self, manifest_id, data, manifest, resend=resend, beside=beside)
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
_first_gap = _wal._first_gap
_trim = WalWriter.trim
_refresh = EpochHandle.refresh


async def first_free_after_skipping_one(self: ObjectSequence, after: int) -> int:
    """``ObjectSequence.first_free`` (used by the log only) that answers one id too far:
    ``fence_wal`` leaves a gap below its fence."""
    return await _first_free(self, after) + 1  # BUG


def first_gap_after_skipping_one(start: int, listed: tuple[int, ...] | None) -> int | None:
    """``_wal._first_gap`` one id too far, as ``first_free_after_skipping_one``."""
    gap = _first_gap(start, listed)
    return None if gap is None else gap + 1  # BUG


def fence_skipping_one_free_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ObjectSequence, "first_free", first_free_after_skipping_one)
    monkeypatch.setattr(_wal, "_first_gap", first_gap_after_skipping_one)


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


# -- the holes two reviews found (issue 10), put back one at a time -----------------------------


async def update_without_the_lock(
    self: EpochHandle, mutate: Callable[[Manifest], Manifest], *, timeout: float | None = None
) -> Manifest:
    """``EpochHandle.update`` that lets several updates of one handle run at once."""
    self._raise_if_fenced()

    async def write(retrier: Retrier) -> Manifest:  # BUG: no `async with self._write_lock`
        return await self._write(mutate, retrier, self._manifests.observed())

    return await self._with_deadline("update", timeout, write)


async def create_trusting_the_lineage_alone(
    manifests: ManifestStore,
    manifest_id: int,
    manifest: Manifest,
    role: str,
    retrier: Retrier,
    *,
    base: Manifest | None = None,
    beside: Beside = None,
) -> tuple[Landed, Newest]:
    """``_create`` before the fix: "the newest version does not carry my write id, and my claim
    is still there, so my write did not land" - wrong when another write of this handle landed
    on top of it."""
    landed, newest = await _create(
        manifests,
        manifest_id,
        manifest,
        role,
        retrier,
        beside=beside,  # no base: the lineage check below
    )
    if landed or newest is None or base is None:
        return landed, newest
    claim, stored = manifest.claim(role), newest[1].claim(role)
    if claim is not None and stored is not None and stored.claim_id != claim.claim_id:
        return await _next_version.landed_at(
            manifests, manifest_id, manifest, role, retrier
        ) is True, (newest)
    return False, newest  # BUG


def concurrent_updates_unserialised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EpochHandle, "update", update_without_the_lock)
    monkeypatch.setattr(_claim, "write_next", create_trusting_the_lineage_alone)


async def fence_wal_every_time(self: EpochHandle, *, timeout: float | None = None) -> WalWriter:
    """``EpochHandle.fence_wal`` that makes a new log writer on every call: two writers of one
    handle do not fence each other."""

    async def fence(retrier: Retrier) -> WalWriter:
        async with self._write_lock:
            return await _wal.fence_log(_claim._HolderOfTheLog(self), retrier)  # BUG: not kept

    return await self._with_deadline("fence of the log", timeout, fence)


async def write_moving_the_replay_point(
    self: EpochHandle,
    mutate: Callable[[Manifest], Manifest],
    retrier: Retrier,
    io: ManifestStore,
    *,
    keeps_the_log: bool = False,
    write: str = "update",
) -> Manifest:
    """``EpochHandle._write`` that lets any mutate move the replay point (back, too)."""
    return await _write(self, mutate, retrier, io, keeps_the_log=True, write=write)  # BUG


_write = EpochHandle._write
_encode = _manifest.encode


def encode_unchecked(manifest: Manifest) -> bytes:
    """``encode`` that writes whatever the fields hold, even what no reader can decode."""
    try:
        return _encode(manifest)
    except (TypeError, ValueError):  # BUG: written anyway
        return frame(_manifest.MAGIC, msgspec.msgpack.encode(manifest))


def bytes_of_anything(data: object) -> bytes:
    """``as_body`` as ``bytes(data)``: an int makes that many zero bytes."""
    converted: bytes = bytes(data)  # type: ignore[call-overload]  # BUG
    return converted


async def read_without_the_boundary(self: ManifestStore, manifest_id: int) -> Manifest:
    """``ManifestStore.read`` that trusts whatever stands at the id."""
    return await self.read_unchecked(manifest_id)  # BUG: no boundary check


async def discard_nothing(self: ManifestStore, key: str) -> None:
    """Recreations below the boundary stay where they landed."""


def recreations_read_as_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ManifestStore, "read", read_without_the_boundary)
    monkeypatch.setattr(ManifestStore, "_discard", discard_nothing)


async def read_wal_ending_at_any_gap(
    store: ObjectStore, root: str = "", *, after: int = 0
) -> AsyncIterator[WalEntry]:
    """``read_wal`` before the fix: trims are looked for only at the first id; a trim that
    overtakes the reader ends it silently, as if the log ended."""
    log = _wal.wal_sequence(store, root)
    entry_id, newest_epoch = after + 1, 0
    while True:
        key = log.key(entry_id)
        try:
            raw = (await store.get(key)).body
        except NotFoundError:
            if entry_id == after + 1:
                boundary = await read_boundary(store, _layout.log_boundary_key(root))
                if entry_id <= boundary:
                    raise WalTrimmedError(after, boundary + 1) from None
            return  # BUG: a gap further on ends the read silently
        entry = _wal.decode_entry(raw, key, entry_id)
        if entry is not None and entry.epoch >= newest_epoch:
            newest_epoch = entry.epoch
            yield entry
        entry_id += 1


async def read_wal_without_the_epoch_filter(
    store: ObjectStore, root: str = "", *, after: int = 0
) -> AsyncIterator[WalEntry]:
    """``read_wal`` that yields every entry, a lower epoch after a higher one too."""
    log, boundary_key = _wal.wal_sequence(store, root), _layout.log_boundary_key(root)
    entry_id = after + 1
    while True:
        key = log.key(entry_id)
        try:
            raw = (await store.get(key)).body
        except NotFoundError:
            boundary = await read_boundary(store, boundary_key)
            if entry_id <= boundary:
                raise WalTrimmedError(entry_id - 1, boundary + 1) from None
            return
        entry = _wal.decode_entry(raw, key, entry_id)
        if entry is not None:  # BUG: no `entry.epoch >= newest_epoch`
            yield entry
        entry_id += 1


def no_epoch_filter_beside_a_broken_fence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a fencing bug, a lower epoch never follows a higher one in the log (checks 6 and
    7 hold that on every write), so the readers' epoch filter never acts and removing it alone
    shows nothing. With appends that step over a newer fence, it would act: this shows that
    the checker sees, on the readers' side, what the filter hides."""
    monkeypatch.setattr(WalWriter, "_someone_else_at", step_over_without_refreshing)
    monkeypatch.setattr(watchers, "read_wal", read_wal_without_the_epoch_filter)
    monkeypatch.setattr(world_module, "read_wal", read_wal_without_the_epoch_filter)


def numbered_id_any_digits(name: str, suffix: str) -> int | None:
    """Ids parsed with ``str.isdigit``: any Unicode digit passes, and ``int`` reads some."""
    digits = name[:20]
    if len(name) == 20 + len(suffix) and name.endswith(suffix) and digits.isdigit():
        try:
            return int(digits)
        except ValueError:
            return None
        # BUG: isdigit() instead of ASCII digits
    return None


# -- the honest outcome -------------------------------------------------------------------------


async def write_reporting_a_plain_fence(
    self: EpochHandle,
    mutate: Callable[[Manifest], Manifest],
    retrier: Retrier,
    io: ManifestStore,
    *,
    keeps_the_log: bool = False,
    write: str = "update",
) -> Manifest:
    """``EpochHandle._write`` that says plain ``FencedError`` where the outcome is unknown."""
    try:
        return await _write(self, mutate, retrier, io, keeps_the_log=keeps_the_log, write=write)
    except WriteOutcomeUnknownError as exc:
        raise FencedError(exc.role, exc.epoch, exc.newer_epoch) from None  # BUG


_fenced_by_a_trim = WalWriter._fenced_by_a_trim


async def fenced_by_a_trim_plainly(self: WalWriter, entry_id: int, *, unknown: bool) -> None:
    """``WalWriter._fenced_by_a_trim`` that forgets an earlier send's unknown outcome."""
    await _fenced_by_a_trim(self, entry_id, unknown=False)  # BUG: `unknown=unknown`


def unknown_outcomes_reported_as_plain_fences(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EpochHandle, "_write", write_reporting_a_plain_fence)
    monkeypatch.setattr(WalWriter, "_fenced_by_a_trim", fenced_by_a_trim_plainly)


def fenced_handles_keep_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handle that knows it is fenced is no longer stopped before it writes to the log."""
    monkeypatch.setattr(EpochHandle, "_raise_if_fenced", lambda self: None)


# -- lead ---------------------------------------------------------------------------------------

_claim_epoch = _claim.claim_epoch
_takeover_at = Standby._takeover_at


async def claim_epoch_adopting_the_claim(
    store: ObjectStore,
    root: str = "",
    *,
    role: str = "writer",
    timeout: float = 60.0,
    backoff: Backoff = DEFAULT_BACKOFF,
    **options: Any,
) -> EpochHandle:
    """``claim_epoch`` as ``lead``'s takeover calls it, "saving an epoch": a role that is
    claimed already is adopted - the standby takes the stopped holder's claim for its own
    instead of claiming anew - so two holders share one epoch, and nothing fences the old one
    from the new one."""
    manifests = ManifestStore(store, root)

    async def newest(retrier: Retrier) -> tuple[int, Manifest] | None:
        return await retrier.call(manifests.read_latest)

    latest = await with_deadline("adoption", timeout, backoff, newest, error=ClaimTimeoutError)
    if latest is not None and latest[1].claim(role) is not None:
        return EpochHandle(manifests, *latest, role, timeout=timeout, backoff=backoff)  # BUG
    return await _claim_epoch(store, root, role=role, timeout=timeout, backoff=backoff, **options)


async def claim_epoch_unfenced(store: ObjectStore, root: str = "", **options: Any) -> EpochHandle:
    """``claim_epoch`` as ``lead``'s takeover calls it, handing the body a handle that does not
    fence: a newer claim is adopted instead of raising ``FencedError``, so the holder is never
    cancelled and its writes land on top of the newer claim."""
    handle = await _claim_epoch(store, root, **options)
    vars(handle)["_accept"] = partial(accept_without_fencing, handle)  # BUG
    return handle


def takeover_at_ignoring_the_release(self: Standby, view: View, now: float) -> float:
    """``Standby._takeover_at`` that reads a released lease as a held one: the role is taken
    over only once the lease runs out, as if the holder had died."""
    lease = view.lease
    if lease is not None and lease.released:
        view = View(view.claim, msgspec.structs.replace(lease, released=False), view.etag)  # BUG
    return _takeover_at(self, view, now)


def takeover_at_adding_the_leases(self: Standby, view: View, now: float) -> float:
    """``Standby._takeover_at`` that waits its own lease and the holder's one after the other
    (``own + lease.lease``, not the larger of the two)."""
    at = _takeover_at(self, view, now)
    lease = view.lease
    if lease is not None and math.isfinite(at):
        return at + min(self.settings.lease, lease.lease)  # BUG: max(...) already waited
    return at


def takeover_at_by_the_wall_clock(self: Standby, view: View, now: float) -> float:
    """``Standby._takeover_at`` that measures a held lease from its ``renewed_at_ms``, by this
    standby's wall clock: it trusts the holder's clock."""
    at = _takeover_at(self, view, now)
    lease = view.lease
    if lease is not None and not lease.released and lease.renewed_at_ms and math.isfinite(at):
        expires = lease.renewed_at_ms / 1000 + max(self.settings.lease, lease.lease)
        return now + expires - _manifest.now_ms() / 1000  # BUG: the holder's clock and ours
    return at


def trust_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standby trusts the lease's wall-clock time, with clocks that disagree: the simulation
    runs on a mock clock, and its wall clocks stand still (as a standby's that lags the holder's
    more and more would): a stopped holder's lease never runs out."""
    # the holders' clocks (renewed_at_ms), and the standby's
    for module in (_holding, _standby, _manifest):
        monkeypatch.setattr(module, "now_ms", lambda: 1_700_000_000_000)
    monkeypatch.setattr(Standby, "_takeover_at", takeover_at_by_the_wall_clock)


@dataclass(frozen=True)
class Breakage:
    name: str
    install: Callable[[pytest.MonkeyPatch], None]
    catches: Callable[[Violation], bool]  # the violations that show this breakage
    shown_by: str  # what catches it, in words
    # The ranges the seeds draw from: the defaults, or (for a breakage that shows only in a
    # rare corner) ranges that make the corner common; the replay command names them.
    config: SimulationConfig = field(default_factory=SimulationConfig)


def _patch_create(create: Create) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.setattr(_claim, "write_next", create)


def _check(number: int, text: str = "") -> Callable[[Violation], bool]:
    return lambda violation: violation.check == number and text in violation.message


def _either(*tests: Callable[[Violation], bool]) -> Callable[[Violation], bool]:
    return lambda violation: any(test(violation) for test in tests)


# The corner where a fenced write's outcome is unknown needs a lost response, a newer claim on
# top and retention taking the version that could tell: likelier with every collection keeping
# one version, more of them, more faults and more updates.
HARD_RETENTION = SimulationConfig(
    max_keep=1, collector_rate=1.0, max_collections=12, max_fault_rate=0.5, max_updates=8
)

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
        fence_skipping_one_free_id,
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
        "updates of one handle run at once, and the landed-check trusts the lineage alone",
        concurrent_updates_unserialised,
        _check(3, "applied twice"),
        "check 3 (an update applied twice)",
    ),
    Breakage(
        "a second fence_wal makes a second log writer",
        lambda monkeypatch: monkeypatch.setattr(EpochHandle, "fence_wal", fence_wal_every_time),
        _check(6, "were all acknowledged at"),
        "check 6 (two appends acknowledged at one id)",
    ),
    Breakage(
        "a mutate may move the replay point",
        lambda monkeypatch: monkeypatch.setattr(
            EpochHandle, "_write", write_moving_the_replay_point
        ),
        _either(_check(6, "moved back"), _check(7, "refused")),
        "check 6 (the replay point moved back) or 7 (a refused misuse wrote)",
    ),
    Breakage(
        "wrongly typed manifests are written",
        lambda monkeypatch: monkeypatch.setattr(_next_version, "encode", encode_unchecked),
        _either(_check(1, "not intact"), _check(7, "refused")),
        "check 1 (a manifest not intact) or 7 (a refused misuse wrote)",
    ),
    Breakage(
        "a payload that is not bytes is converted",
        lambda monkeypatch: monkeypatch.setattr(_wal, "as_body", bytes_of_anything),
        _either(_check(4, "misuse"), _check(7, "refused")),
        "check 4 (a misuse acknowledged) or 7 (a refused misuse wrote)",
    ),
    Breakage(
        "a recreation below the boundary is read as a version",
        recreations_read_as_versions,
        _check(7, "not the history's version"),
        "check 7 (ManifestStore.read returned a recreation)",
    ),
    Breakage(
        "read_wal ends silently when a trim overtakes it",
        lambda monkeypatch: monkeypatch.setattr(watchers, "read_wal", read_wal_ending_at_any_gap),
        _check(7, "ended without an error"),
        "check 7 (a reader missed an acknowledged append)",
    ),
    Breakage(
        "read_wal without its epoch filter, beside appends that step over a newer fence",
        no_epoch_filter_beside_a_broken_fence,
        _either(_check(6, "after epoch"), _check(7, "after epoch")),
        "check 6 or 7 (a reader yielded a lower epoch after a higher one)",
    ),
    Breakage(
        "ids parsed with str.isdigit",
        lambda monkeypatch: monkeypatch.setattr(_layout, "numbered_id", numbered_id_any_digits),
        _either(_check(4), _check(2), _check(1)),
        "check 4 (a claim ended in an unexpected error) or checks 1-2",
    ),
    Breakage(
        "a handle that knows it is fenced still writes to the log",
        fenced_handles_keep_writing,
        _check(7, "already knew it was fenced"),
        "check 7 (a fenced handle wrote)",
    ),
    Breakage(
        "a fenced write whose outcome is unknown is reported as a plain FencedError",
        unknown_outcomes_reported_as_plain_fences,
        _either(_check(3, "raised FencedError but landed"), _check(6, "raised FencedError")),
        "check 3 or 6 (a write that raised a plain FencedError landed)",
        HARD_RETENTION,
    ),
    Breakage(
        "lead's takeover adopts the holder's claim instead of claiming",
        lambda monkeypatch: monkeypatch.setattr(
            _standby, "claim_epoch", claim_epoch_adopting_the_claim
        ),
        _check(8),
        "check 8 (two holders at one epoch, or interleaved writes)",
    ),
    Breakage(
        "lead hands the body a handle that does not fence",
        lambda monkeypatch: monkeypatch.setattr(_standby, "claim_epoch", claim_epoch_unfenced),
        _check(8, "after the newer claim"),
        "check 8 (an older holder's acknowledged write after a newer claim)",
    ),
    Breakage(
        "a standby ignores a released lease (waits it out)",
        lambda monkeypatch: monkeypatch.setattr(
            Standby, "_takeover_at", takeover_at_ignoring_the_release
        ),
        _check(9, "stood released"),
        "check 9 (a released holder not succeeded within a poll)",
    ),
    Breakage(
        "a standby waits its own lease and the holder's one after the other",
        lambda monkeypatch: monkeypatch.setattr(
            Standby, "_takeover_at", takeover_at_adding_the_leases
        ),
        _check(9, "not renewed"),
        "check 9 (a stopped holder not succeeded within its lease and a poll)",
    ),
    Breakage(
        "a standby trusts the lease's wall-clock time",
        trust_the_wall_clock,
        _check(9, "not renewed"),
        "check 9 (a stopped holder not succeeded within its lease and a poll)",
    ),
    Breakage(
        "trim deletes without moving the log's boundary first",
        lambda monkeypatch: monkeypatch.setattr(_wal, "advance_boundary", advance_boundary_not),
        _check(6, "above the log's boundary"),
        "check 6 (an entry deleted above the log's boundary)",
    ),
]
