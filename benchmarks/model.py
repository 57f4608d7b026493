"""What the harness is made of: scenarios (``Scenario``, registered by ``benchmarks.scenarios``),
the run they belong to (``Run``), their jobs, the rows they produce, and statistics.

A ``Row`` is one line of the printed table and one object in ``results.json``. Times are in
microseconds; ``requests`` is store requests per claim (or per claimer) by kind; ``result`` is the
table's last column, the figure the row exists for; ``values`` holds the numbers behind it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .stores import Environment

__all__ = [
    "Job",
    "Panel",
    "Row",
    "Run",
    "Scenario",
    "fmt_us",
    "p90",
    "p99",
    "percentile",
    "ratio",
    "requests_text",
    "summary_us",
]

Counts = TypeVar("Counts")
# A chart panel: draws a scenario's rows (those with a median) on a matplotlib Axes.
Panel = Callable[[Any, list["Row"]], None]


@dataclass
class Row:
    scenario: str
    backend: str
    case: str
    median_us: float | None
    p99_us: float | None
    n: int
    requests: dict[str, float] | None
    result: str = ""
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One step of the progress bar: ``run()`` returns its rows."""

    scenario: str
    label: str
    run: Callable[[], list[Row]]


@dataclass(frozen=True)
class Run:
    """What every scenario's jobs share in one run of the harness.

    ``backends``: the store kinds on (the embedded ones, plus ``s3`` with ``--s3``); ``stack``:
    closed when the run ends, for what a scenario starts once and uses in several jobs (a
    server, a proxy), so that it is stopped whatever happens."""

    quick: bool
    env: Environment
    backends: tuple[str, ...]
    loops: tuple[str, ...]
    stack: ExitStack
    s3_latency_ms: float = 20.0

    @property
    def s3(self) -> bool:
        return self.env.s3_endpoint is not None


def _rows_as_they_are(rows: list[Row]) -> list[Row]:
    return rows


def _no_notes(run: Run, rows: list[Row]) -> list[str]:
    return []


@dataclass(frozen=True)
class Scenario(Generic[Counts]):
    """One scenario: one module of ``benchmarks.scenarios`` holds one, as ``SCENARIO``.

    - ``full``, ``quick``: its sample counts (any frozen dataclass of its own) for a full run
      and for ``--quick``; ``jobs`` gets the one this run uses.
    - ``jobs(counts, run)``: its steps; each returns rows (none: the scenario does not apply to
      this run, e.g. without ``--s3``).
    - ``finish(rows)``: figures that need all its rows (ratios between rows).
    - ``notes(run, rows)``: lines printed under the table.
    - ``panels``: its chart panels, drawn in ``order``.
    """

    name: str
    order: int
    full: Counts
    quick: Counts
    jobs: Callable[[Counts, Run], list[Job]]
    finish: Callable[[list[Row]], list[Row]] = _rows_as_they_are
    notes: Callable[[Run, list[Row]], list[str]] = _no_notes
    panels: tuple[Panel, ...] = ()

    @property
    def title(self) -> str:
        """As the table shows it: ``4 lost responses``."""
        return f"{self.order} {self.name.replace('_', ' ')}"

    def plan(self, run: Run) -> list[Job]:
        return self.jobs(self.quick if run.quick else self.full, run)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest rank: the smallest sample with at least ``fraction`` of them at or below it."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(len(ordered) * fraction) - 1)]


def p99(samples: Sequence[float]) -> float:
    """The 99th percentile, nearest rank (the maximum below 100 samples)."""
    return percentile(samples, 0.99)


def p90(samples: Sequence[float]) -> float:
    """The 90th percentile, nearest rank (the maximum below 10 samples)."""
    return percentile(samples, 0.90)


def summary_us(samples: Sequence[float]) -> tuple[float | None, float | None]:
    """(median, p99) of samples in seconds, as microseconds; (None, None) without samples."""
    if not samples:
        return None, None
    return statistics.median(samples) * 1e6, p99(samples) * 1e6


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def requests_text(requests: Mapping[str, float] | None) -> str:
    """``3.0 (list 1, get 1, create 1)``: the total, then each kind that occurred."""
    if requests is None:
        return "n/a"
    kinds = {k: v for k, v in requests.items() if v and k != "total"}
    total = requests.get("total", sum(kinds.values()))
    if not kinds:
        return f"{total:.1f}"
    parts = ", ".join(f"{k} {_short(v)}" for k, v in kinds.items())
    return f"{_short(total)} ({parts})"


def _short(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 0.005 else f"{value:.2f}"


def fmt_us(value: float | None) -> str:
    """A duration in µs, in the unit that reads best: ``13.4 µs``, ``1.23 ms``, ``2.1 s``."""
    if value is None:
        return "-"
    if value < 1_000:
        return f"{value:.1f} µs"
    if value < 1_000_000:
        return f"{value / 1e3:.2f} ms"
    return f"{value / 1e6:.2f} s"
