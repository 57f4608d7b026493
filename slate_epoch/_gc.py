"""Retention: delete old manifest versions, safely, while writers keep writing.

Deleting is safe only behind the boundary (SlateDB's rule): first the boundary moves up (ids at
or below it may be gone), then the versions at or below it are deleted. Every manifest write
checks the boundary after its create and counts an id at or below it as a conflict, so a stale
writer that recreates a deleted id never believes it won; readers that miss an id they expected
look at the boundary and search again above it. The newest ``keep`` versions always stay, and so
the newest version is never deleted.
"""

from __future__ import annotations

from functools import partial

import msgspec

from ._manifest import ManifestCache, ManifestStore
from ._observe import collected, span
from ._retry import DEFAULT_BACKOFF, DEFAULT_TIMEOUT, Backoff, Retrier, with_deadline
from ._store import ObjectStore

__all__ = ["GarbageReport", "collect_garbage"]


class GarbageReport(msgspec.Struct, frozen=True):
    """What a collection did (or, with ``dry_run``, would do)."""

    latest_id: int  # the newest version seen (0: the root holds no manifest)
    boundary: int  # ids at or below it may be gone (after a dry run: would be)
    deleted: tuple[int, ...]  # ids deleted (with dry_run: ids that would be)
    dry_run: bool = False


async def collect_garbage(
    store: ObjectStore,
    root: str = "",
    *,
    keep: int,
    dry_run: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    backoff: Backoff = DEFAULT_BACKOFF,
    cache: ManifestCache | None = None,
) -> GarbageReport:
    """Delete the manifest versions older than the newest ``keep`` (``keep >= 1``: the newest
    is never deleted). Also deletes leftovers at or below an older boundary (a stale writer's
    recreated id, or a collection that was interrupted). ``dry_run`` changes nothing at all.
    Transient errors are retried under ``timeout``; past it, ``OperationTimeoutError``.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(
            f"keep must be an int >= 1 (the newest version always stays), not {keep!r}"
        )
    manifests = ManifestStore(store, root, cache=cache)

    async def collect(retrier: Retrier) -> GarbageReport:
        io = manifests.observed()  # as this collection reaches the store
        latest = await retrier.call(io.read_latest)
        current = await retrier.call(io.read_boundary)
        if latest is None:
            return GarbageReport(latest_id=0, boundary=current, deleted=(), dry_run=dry_run)
        latest_id = latest[0]
        boundary = max(current, latest_id - keep)
        if not dry_run and boundary > current:
            # The boundary first: from here on no writer can win at or below it.
            boundary = await retrier.call(lambda: io.advance_boundary(latest_id - keep))
        doomed = await retrier.call(lambda: io.collectable_ids(boundary))
        if not dry_run:
            for manifest_id in doomed:
                await retrier.call(partial(io.store.delete, io.key(manifest_id)))
        return GarbageReport(
            latest_id=latest_id, boundary=boundary, deleted=tuple(doomed), dry_run=dry_run
        )

    with span("collect_garbage", None, manifests.root) as scope:
        report = await with_deadline(
            f"garbage collection under {root!r}",
            timeout,
            backoff,
            collect,
            facts={"root": manifests.root},
        )
        scope.set("manifest_id", report.latest_id)
        scope.set("boundary", report.boundary)
        scope.set("deleted", len(report.deleted))
        scope.set("dry_run", dry_run)
    collected(manifests.root, report.latest_id, report.boundary, len(report.deleted), dry_run)
    return report
