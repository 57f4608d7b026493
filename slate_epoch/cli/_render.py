"""One renderer for every command's result: plain text for people, ``--json`` for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import singledispatch
from typing import Any

from .._check import STORE_CHECKS
from .._lease import Lease
from .._manifest import RoleClaim
from ._results import CheckResult, ClaimResult, GcResult, HistoryResult, InspectResult

__all__ = ["render"]


def render(result: object, *, as_json: bool) -> str:
    """``result`` as the command's output (ending with a newline)."""
    if as_json:
        return json.dumps(document(result), indent=2) + "\n"
    return "\n".join(text(result)) + "\n"


@singledispatch
def document(result: object) -> dict[str, Any]:
    raise TypeError(f"no JSON form for {type(result).__name__}")


@singledispatch
def text(result: object) -> list[str]:
    raise TypeError(f"no text form for {type(result).__name__}")


def iso(ms: int) -> str | None:
    if ms <= 0:
        return None  # a claim written before timestamps were recorded
    seconds, millis = divmod(ms, 1000)  # integer arithmetic: no float rounding of the ms
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=millis * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Plain aligned columns; columns in ``right`` are right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def ranges(ids: Sequence[int]) -> str:
    """``1-3, 7`` for ids 1, 2, 3, 7."""
    spans: list[tuple[int, int]] = []
    for manifest_id in sorted(ids):
        if spans and manifest_id == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], manifest_id)
        else:
            spans.append((manifest_id, manifest_id))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _claim_document(claim: RoleClaim) -> dict[str, Any]:
    return {
        "epoch": claim.epoch,
        "claim_id": claim.claim_id,
        "claimed_at": iso(claim.claimed_at_ms),
        "claimed_at_ms": claim.claimed_at_ms or None,
        "owner": claim.owner or None,
        "last_write_id": claim.last_write_id or None,
    }


# -- inspect -----------------------------------------------------------------------------------


def _lease_state(claim: RoleClaim, lease: Lease) -> str:
    if lease.claiming:
        return "claiming"  # a standby won the lease and is claiming the role
    if not lease.speaks_for(claim.epoch, claim.claim_id):
        return "older"  # left by an older epoch: the holder claimed without lead()
    return "released" if lease.released else "held"


def _lease_document(claim: RoleClaim, lease: Lease | None) -> dict[str, Any] | None:
    if lease is None:
        return None
    return {
        "state": _lease_state(claim, lease),
        "epoch": lease.epoch,
        "owner": lease.owner or None,
        "renewals": lease.renewals,
        "released": lease.released,
        "lease_seconds": lease.lease,
        "renewed_at": iso(lease.renewed_at_ms),
        "renewed_at_ms": lease.renewed_at_ms or None,
    }


def _lease_lines(result: InspectResult) -> list[str]:
    rows = [
        [
            claim.role,
            _lease_state(claim, lease),
            str(lease.epoch),
            lease.owner or "-",
            str(lease.renewals),
            iso(lease.renewed_at_ms) or "-",
            f"{lease.lease:g}",
        ]
        for claim in result.manifest.roles
        if (lease := result.leases.get(claim.role)) is not None
    ]
    if not rows:
        return []
    headers = ["ROLE", "LEASE", "EPOCH", "OWNER", "RENEWALS", "WRITTEN AT (UTC)", "SECONDS"]
    return ["", *table(headers, rows, right={2, 4, 6})]


@document.register
def _(result: InspectResult) -> dict[str, Any]:
    manifest = result.manifest
    return {
        "root": result.root,
        "latest_id": result.latest_id,
        "gc_boundary": result.gc_boundary,
        "state_size": len(manifest.state),
        "write_id": manifest.write_id,
        "roles": {claim.role: _claim_document(claim) for claim in manifest.roles},
        "leases": {
            claim.role: _lease_document(claim, result.leases.get(claim.role))
            for claim in manifest.roles
        },
    }


@text.register
def _(result: InspectResult) -> list[str]:
    manifest, boundary = result.manifest, result.gc_boundary
    gc_note = f"{boundary} (ids 1-{boundary} may be gone)" if boundary else "0 (never collected)"
    lines = [
        f"root         {result.root.strip('/') or '(top level)'}",
        f"latest id    {result.latest_id}",
        f"state        {len(manifest.state)} B",
        f"write id     {manifest.write_id or '-'}",
        f"gc boundary  {gc_note}",
        "",
    ]
    rows = [
        [c.role, str(c.epoch), c.claim_id, iso(c.claimed_at_ms) or "-", c.owner or "-"]
        for c in manifest.roles
    ]
    if rows:
        headers = ["ROLE", "EPOCH", "CLAIM ID", "CLAIMED AT (UTC)", "OWNER"]
        lines += table(headers, rows, right={1})
        lines += _lease_lines(result)
    else:
        lines.append("(no role claimed)")
    return lines


# -- history -----------------------------------------------------------------------------------


@document.register
def _(result: HistoryResult) -> dict[str, Any]:
    return {
        "root": result.root,
        "latest_id": result.latest_id,
        "gc_boundary": result.gc_boundary,
        "more": result.more,
        "versions": [
            {
                "id": manifest_id,
                "epochs": {claim.role: claim.epoch for claim in manifest.roles},
                "state_size": len(manifest.state),
                "write_id": manifest.write_id,
            }
            for manifest_id, manifest in result.versions
        ],
    }


@text.register
def _(result: HistoryResult) -> list[str]:
    rows = [
        [
            str(manifest_id),
            " ".join(f"{claim.role}={claim.epoch}" for claim in manifest.roles) or "-",
            f"{len(manifest.state)} B",
            manifest.write_id or "-",
        ]
        for manifest_id, manifest in result.versions
    ]
    lines = table(["ID", "EPOCHS", "STATE", "WRITE ID"], rows, right={0, 2})
    if result.more:
        lines.append(f"(older versions not shown: --limit {result.limit})")
    elif result.gone_from:
        lines.append(f"(ids {result.gone_from} and below are gone: garbage-collected)")
    elif result.next_id >= 1:
        lines.append(f"(ids 1-{result.next_id} were garbage-collected)")
    return lines


# -- claim -------------------------------------------------------------------------------------


@document.register
def _(result: ClaimResult) -> dict[str, Any]:
    return {
        "root": result.root,
        "role": result.role,
        "epoch": result.epoch,
        "manifest_id": result.manifest_id,
        "claim_id": result.claim.claim_id,
        "claimed_at": iso(result.claim.claimed_at_ms),
        "owner": result.claim.owner or None,
    }


@text.register
def _(result: ClaimResult) -> list[str]:
    return [
        f"role {result.role!r}: epoch {result.epoch} (manifest {result.manifest_id}, "
        f"claim id {result.claim.claim_id})"
    ]


# -- gc ----------------------------------------------------------------------------------------


@document.register
def _(result: GcResult) -> dict[str, Any]:
    report = result.report
    return {
        "root": result.root,
        "latest_id": report.latest_id,
        "gc_boundary": report.boundary,
        "deleted": sorted(report.deleted),
        "dry_run": report.dry_run,
    }


@text.register
def _(result: GcResult) -> list[str]:
    report = result.report
    deleted = sorted(report.deleted)
    verb = "would delete" if report.dry_run else "deleted"
    if deleted:
        what = f"{verb} {len(deleted)} manifest version{'s' if len(deleted) != 1 else ''}: "
        what += ranges(deleted)
    else:
        what = f"{verb} nothing"
    return [
        what,
        f"gc boundary {report.boundary} (ids at or below it may be gone); "
        f"latest id {report.latest_id}, keeping the newest {result.keep}",
    ]


# -- check -------------------------------------------------------------------------------------


@document.register
def _(result: CheckResult) -> dict[str, Any]:
    report = result.report
    return {
        "ok": True,
        "checks": [
            {"name": name, "proves": STORE_CHECKS[name], "passed": True} for name in report.passed
        ],
        "probe_prefix": report.prefix,
        "leftovers": list(report.leftovers),
        "seconds": round(report.seconds, 3),
    }


@text.register
def _(result: CheckResult) -> list[str]:
    report = result.report
    width = max(len(name) for name in report.passed)
    lines = [f"ok  {name:<{width}}  {STORE_CHECKS[name]}" for name in report.passed]
    lines.append(
        f"the store enforces what slate-epoch needs ({len(report.passed)} checks in "
        f"{report.seconds:.2f} s)"
    )
    if report.leftovers:
        lines.append(
            f"note: {len(report.leftovers)} probe object(s) under {report.prefix} could not be "
            "removed in time: delete them by hand"
        )
    return lines
