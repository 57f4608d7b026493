"""The commands: each opens the store, does its work under a deadline, and returns a result.
Nothing here prints."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .._check import check_store
from .._claim import claim_epoch
from .._errors import NotFoundError
from .._gc import collect_garbage
from .._lease import read_lease
from .._manifest import Manifest, ManifestStore
from .._open import open_store
from .._retry import DEFAULT_BACKOFF, Retrier, with_deadline
from .._store import ObjectStore
from ._exit import NothingThereError, UsageError
from ._results import CheckResult, ClaimResult, GcResult, HistoryResult, InspectResult

__all__ = ["check", "claim", "gc", "history", "inspect"]


@asynccontextmanager
async def opened(url: str, *, must_exist: bool) -> AsyncIterator[ObjectStore]:
    """The store ``url`` names, open. With ``must_exist`` (every command but ``claim``), a local
    folder that does not exist is "nothing there" (exit 6), never created."""
    if must_exist:
        _refuse_missing_folder(url)
    try:
        store = open_store(url)
    except (ValueError, TypeError) as exc:  # never echo the URL: open_store words it safely
        raise UsageError(f"invalid URL: {exc}") from exc
    async with store:
        yield store


def _refuse_missing_folder(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return
    if parts.query or parts.fragment:
        return  # open_store refuses it as a usage error
    path = unquote(parts.path)
    if path.startswith("/") and path != "/" and not Path(path).exists():
        raise NothingThereError(f"nothing there: no folder {path}")


def where(root: str) -> str:
    return f"root {root!r}" if root.strip("/") else "the store's top level (no --root)"


async def _newest(manifests: ManifestStore, root: str, retrier: Retrier) -> tuple[int, Manifest]:
    latest = await retrier.call(manifests.read_latest)
    if latest is None:
        raise NothingThereError(f"nothing there: no manifest under {where(root)}")
    return latest


async def inspect(args: argparse.Namespace) -> InspectResult:
    root: str = args.root
    async with opened(args.url, must_exist=True) as store:
        manifests = ManifestStore(store, root)  # a bad root: InvalidKeyError, before any I/O

        async def look(retrier: Retrier) -> InspectResult:
            latest_id, manifest = await _newest(manifests, root, retrier)
            boundary = await retrier.call(manifests.read_boundary)
            leases = {
                claim.role: await retrier.call(partial(read_lease, store, root, role=claim.role))
                for claim in manifest.roles
            }
            return InspectResult(root, latest_id, boundary, manifest, leases)

        return await with_deadline("inspect", args.timeout, DEFAULT_BACKOFF, look)


async def history(args: argparse.Namespace) -> HistoryResult:
    root: str = args.root
    limit: int = args.limit
    async with opened(args.url, must_exist=True) as store:
        manifests = ManifestStore(store, root)

        async def walk(retrier: Retrier) -> HistoryResult:
            # The boundary first: anything GC deletes after this read shows up as a missing id.
            boundary = await retrier.call(manifests.read_boundary)
            latest_id, latest = await _newest(manifests, root, retrier)
            versions = [(latest_id, latest)]
            next_id = latest_id - 1
            gone_from = 0
            while len(versions) < limit and next_id >= 1 and next_id > boundary:
                try:
                    read = partial(manifests.read_unchecked, next_id)
                    versions.append((next_id, await retrier.call(read)))
                except NotFoundError:
                    gone_from = next_id
                    break
                next_id -= 1
            # Versions read above a boundary that GC moved past them meanwhile may have been
            # recreated by a stale writer: show only what lies above the boundary now.
            moved = await retrier.call(manifests.read_boundary)
            if moved > boundary:
                boundary = moved
                versions = [(i, m) for i, m in versions if i > moved or i == latest_id]
                gone_from = gone_from or (moved if next_id <= moved else 0)
            return HistoryResult(root, latest_id, boundary, limit, versions, next_id, gone_from)

        return await with_deadline("history", args.timeout, DEFAULT_BACKOFF, walk)


async def claim(args: argparse.Namespace) -> ClaimResult:
    root: str = args.root
    async with opened(args.url, must_exist=False) as store:
        ManifestStore(store, root)  # a bad root is a usage error, found before any I/O
        handle = await claim_epoch(
            store, root, role=args.role, timeout=args.timeout, owner=args.owner
        )
    held = handle.manifest.claim(handle.role)
    assert held is not None  # the handle's own manifest carries its claim
    return ClaimResult(root, handle.role, handle.epoch, handle.manifest_id, held)


async def gc(args: argparse.Namespace) -> GcResult:
    root: str = args.root
    async with opened(args.url, must_exist=True) as store:
        ManifestStore(store, root)
        report = await collect_garbage(
            store, root, keep=args.keep, dry_run=args.dry_run, timeout=args.timeout
        )
    if report.latest_id == 0:
        raise NothingThereError(f"nothing there: no manifest under {where(root)}")
    return GcResult(root, args.keep, report)


async def check(args: argparse.Namespace) -> CheckResult:
    """Every check of ``check_store``; the first that fails is ``UnsupportedStoreError``
    (exit 7). A local folder that does not exist yet is made, as a claim would."""
    async with opened(args.url, must_exist=False) as store:
        return CheckResult(await check_store(store, timeout=args.timeout))
