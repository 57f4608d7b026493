"""What each command found or did, before it is shown as text or JSON."""

from __future__ import annotations

from dataclasses import dataclass

from .._check import StoreCheckReport
from .._gc import GarbageReport
from .._lease import Lease
from .._manifest import Manifest, RoleClaim

__all__ = ["CheckResult", "ClaimResult", "GcResult", "HistoryResult", "InspectResult"]


@dataclass(frozen=True)
class InspectResult:
    root: str
    latest_id: int
    gc_boundary: int
    manifest: Manifest
    leases: dict[str, Lease | None]  # per role: its lease object, if lead() ever wrote one


@dataclass(frozen=True)
class HistoryResult:
    root: str
    latest_id: int
    gc_boundary: int
    limit: int
    versions: list[tuple[int, Manifest]]  # newest first
    next_id: int  # the next older id not shown (0: none left)
    gone_from: int  # an id found missing above the boundary read first (GC at work), or 0

    @property
    def more(self) -> bool:
        """Older versions exist that --limit left out."""
        return not self.gone_from and self.next_id >= 1 and self.next_id > self.gc_boundary


@dataclass(frozen=True)
class ClaimResult:
    root: str
    role: str
    epoch: int
    manifest_id: int
    claim: RoleClaim


@dataclass(frozen=True)
class GcResult:
    root: str
    keep: int
    report: GarbageReport


@dataclass(frozen=True)
class CheckResult:
    report: StoreCheckReport  # every check passed (a failed one raises UnsupportedStoreError)
