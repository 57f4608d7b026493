"""What every scenario produces: rows of numbers, the sample counts of a run, and statistics.

A ``Row`` is one line of the printed table and one object in ``results.json``. Times are in
microseconds; ``requests`` is store requests per claim (or per claimer) by kind; ``result`` is the
table's last column, the figure the row exists for; ``values`` holds the numbers behind it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Job",
    "Plan",
    "Row",
    "Scenario",
    "fmt_us",
    "p99",
    "ratio",
    "requests_text",
    "summary_us",
]

SCENARIOS = ("uncontended", "history", "contention", "lost_responses", "peers")


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
class Scenario:
    """A scenario's jobs, and ``finish``: figures that need all its rows (ratios between rows)."""

    name: str
    jobs: list[Job]
    finish: Callable[[list[Row]], list[Row]] = lambda rows: rows


@dataclass(frozen=True)
class Plan:
    """Sample counts and sizes for one run: the full run, or ``--quick``."""

    quick: bool
    warm: Mapping[str, int]  # uncontended warm claims, per backend
    cold: Mapping[str, int]  # uncontended cold claims, per backend
    history_sizes: Mapping[str, Sequence[int]]
    history_warm: Mapping[str, int]
    history_cold: Mapping[str, int]
    contention_sizes: Mapping[str, Sequence[int]]
    contention_rounds: int
    lost_rates: Sequence[float]
    lost_claims: Mapping[str, int]
    peer_warm: Mapping[str, int]  # per peer backend kind: "memory" or "local"
    peer_cold: Mapping[str, int]
    counted_claims: int  # claims counted through the wrapper, per measurement

    @classmethod
    def full(cls) -> Plan:
        return cls(
            quick=False,
            warm={"memory": 3000, "local": 400, "local-nofsync": 400, "s3": 100},
            cold={"memory": 1000, "local": 300, "local-nofsync": 300, "s3": 50},
            history_sizes={
                "memory": (10, 1_000, 10_000, 100_000),
                "local": (10, 1_000, 10_000, 100_000),
                "s3": (10, 1_000),
            },
            history_warm={"memory": 2000, "local": 300, "s3": 50},
            history_cold={"memory": 100, "local": 30, "s3": 10},
            contention_sizes={
                "memory": (1, 2, 4, 8, 16, 32, 64),
                "local": (1, 2, 4, 8, 16, 32, 64),
                "s3": (1, 2, 4, 8, 16),
            },
            contention_rounds=3,
            lost_rates=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
            lost_claims={"memory": 300, "local": 150, "s3": 40},
            peer_warm={"memory": 3000, "local": 400},
            peer_cold={"memory": 800, "local": 200},
            counted_claims=20,
        )

    @classmethod
    def quick_run(cls) -> Plan:
        return cls(
            quick=True,
            warm={"memory": 200, "local": 20, "local-nofsync": 20, "s3": 5},
            cold={"memory": 50, "local": 10, "local-nofsync": 10, "s3": 3},
            history_sizes={"memory": (10, 100, 1_000), "local": (10, 100, 1_000), "s3": (10, 50)},
            history_warm={"memory": 100, "local": 10, "s3": 3},
            history_cold={"memory": 5, "local": 3, "s3": 2},
            contention_sizes={"memory": (1, 2, 4, 8), "local": (1, 2, 4, 8), "s3": (1, 2, 4)},
            contention_rounds=1,
            lost_rates=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
            lost_claims={"memory": 20, "local": 10, "s3": 5},
            peer_warm={"memory": 50, "local": 10},
            peer_cold={"memory": 20, "local": 5},
            counted_claims=3,
        )


def p99(samples: Sequence[float]) -> float:
    """The 99th percentile, nearest rank (the maximum below 100 samples)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)]


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
