"""Writing the next manifest version exactly once, and finding out whether a write landed:
steps 2-4 of the claim (``_claim``), used by the claim and by every write of its handle.

- Create the id, create-if-absent, from bytes encoded once.
- Outcome unknown (``TransientStoreError``): resend the identical bytes to the identical id.
- Conflict: read the newest version. Only our write carries our write id, and every later
  version carries the role's last write id on: so the newest version tells whether our write is
  in the history, even after other roles wrote on top, even after retention deleted the id. A
  newer claim replaces the role's lineage; then the version we wrote (or the first one above the
  retention boundary) tells, and if retention took both, nothing can (``None``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, TypeAlias

from ._errors import (
    InvariantViolationError,
    ManifestVersionExistsError,
    NotFoundError,
    TransientStoreError,
)
from ._manifest import Manifest, ManifestStore, encode
from ._observe import violated
from ._retry import Retrier

__all__ = ["Landed", "landed_at", "read_newest", "write_next"]

# Whether a write is in the history: True, False, or None when nothing left on the store can
# tell (see ``write_next``).
Landed: TypeAlias = bool | None


async def write_next(
    manifests: ManifestStore,
    manifest_id: int,
    manifest: Manifest,
    role: str,
    retrier: Retrier,
    *,
    base: Manifest | None = None,
    beside: Callable[[], Awaitable[None]] | None = None,
) -> tuple[Landed, tuple[int, Manifest] | None]:
    """Create ``manifest_id`` as ``role``'s holder. Returns whether our write is in the history
    (None: it may be, and nothing left on the store can tell), and, after a conflict, the newest
    version read to find out (None when the create simply succeeded). ``base`` is the version an
    update was computed from (None for a claim); ``beside`` runs beside the boundary check of a
    create that landed."""
    data = encode(manifest)  # once: every retry resends these exact bytes
    resent = False
    # Whether our bytes may be at the id: a resend (our first send may have landed), or a create
    # that landed at or below the retention boundary - a recreation of a deleted id, or our own
    # version that others wrote on top of and retention then passed, before the check read it.
    maybe_ours = False
    while True:
        retrier.attempts += 1
        try:
            await manifests.write_bytes(manifest_id, data, manifest, resend=resent, beside=beside)
        except TransientStoreError as exc:  # step 4: it may have landed; ask again, same bytes
            retrier.failed(exc)
            # A lost response is the common case and costs nothing to settle: resend at once.
            # (The store's client has already backed off between its own tries.) Only a second
            # unknown outcome in a row waits.
            if resent:
                await retrier.pause()
            resent = True
            continue
        except ManifestVersionExistsError as exc:
            retrier.failed(exc)
            maybe_ours = resent or exc.collected
            break
        return True, None
    # Step 3: is our write in the history? Only ours carries our write id.
    newest = await read_newest(manifests, retrier, known=manifest_id)
    claim = manifest.claim(role)
    assert claim is not None  # the caller writes as the role's holder
    if newest[1].carries(role, claim.claim_id, manifest.write_id):
        return True, newest
    if base is None:
        return False, newest  # a claim: a newer version that does not carry it is a rival's
    if not maybe_ours:
        return False, newest  # our one send found the id taken: nothing written
    before = base.claim(role)
    assert before is not None
    if newest[1].carries(role, claim.claim_id, before.last_write_id):
        # The role's newest write is still the one ours was based on: nothing of this handle
        # landed since, ours included (only this handle's writes change it, and they'd carry
        # their own write id on). True whatever else was in flight.
        return False, newest
    # Something replaced the role's lineage: a newer claim, or (only if writes of one handle
    # overlapped) another write of ours. The version we wrote, or the first one left above
    # the retention boundary, can tell; if retention took both, nothing can (None).
    return await landed_at(manifests, manifest_id, manifest, role, retrier), newest


# How often a check of a landed write chases a boundary that moves while it reads.
_LANDED_CHASES: Final = 8


async def landed_at(
    manifests: ManifestStore, manifest_id: int, manifest: Manifest, role: str, retrier: Retrier
) -> bool | None:
    """Whether our write ``manifest`` is the version at ``manifest_id``; None if nothing left on
    the store can tell.

    A version is read first, then the boundary: if the boundary was still below the id after we
    read it, the id had never been deleted when we read it, so what we read was its one and only
    create. (Boundary first would race: retention could delete the id and a late resend of ours
    recreate it in between.) At or below the boundary the id may hold a stale recreation, so we
    look at the first version above the boundary instead: if it still carries our claim, the
    role's last write before it is in its lineage (``last_write_id``), and tells. If it carries
    a newer claim, the versions that could tell are gone.
    """
    claim = manifest.claim(role)
    assert claim is not None
    target = manifest_id
    for _ in range(_LANDED_CHASES):
        try:
            version: Manifest | None = await retrier.call(partial(manifests.read_unchecked, target))
        except NotFoundError:
            version = None
        boundary = await retrier.call(manifests.read_boundary)
        if target > boundary:
            if version is None:
                return None  # never written, or deleted since: the boundary moved, look again
            if target == manifest_id:
                return version.write_id == manifest.write_id
            stored = version.claim(role)
            if stored is None or stored.claim_id != claim.claim_id:
                return None  # a newer claim: the versions between ours and it are gone
            return stored.last_write_id == manifest.write_id
        target = max(boundary + 1, manifest_id)  # retention keeps the newest: it exists
    return None


async def read_newest(
    manifests: ManifestStore, retrier: Retrier, *, known: int = 0, verify_boundary: bool = True
) -> tuple[int, Manifest]:
    """The newest manifest, retrying transient errors; ``known`` is an id known to exist."""
    latest = await retrier.call(
        lambda: manifests.read_latest(known=known, verify_boundary=verify_boundary)
    )
    if latest is None:
        if known:
            raise violated(
                InvariantViolationError(
                    f"manifest {known} was seen under {manifests.root!r} but no manifest exists now"
                ),
                root=manifests.root,
                manifest_id=known,
            )
        return 0, Manifest()
    return latest
