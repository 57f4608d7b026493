"""2. ``history``: the same claims with 10 ... 100,000 manifests already stored; ratio to the
smallest history.

Cold samples delete the manifest they wrote (untimed), so each meets the same history; the local
folder is prefilled with hard links to one manifest (``stores.prefill_linked``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slate_epoch import claim_epoch

from ..claims import cold_claim, forget, in_loop, timed_claim
from ..model import Job, Row, Run, Scenario, ratio, summary_us
from ..stores import (
    CountingStore,
    Environment,
    new_folder,
    open_backend,
    per_claim,
    prefill,
    prefill_linked,
)

NAME = "history"


@dataclass(frozen=True)
class Samples:
    sizes: Mapping[str, Sequence[int]]  # manifests stored, per backend
    warm: Mapping[str, int]
    cold: Mapping[str, int]
    counted: int  # claims counted through a CountingStore, per measurement


def jobs(samples: Samples, run: Run) -> list[Job]:
    return [
        in_loop(
            NAME,
            f"{kind}, {size:,} manifests",
            "asyncio",
            measure,
            kind,
            size,
            samples.warm[kind],
            samples.cold[kind],
            samples.counted,
            run.env,
        )
        for kind in run.backends
        if kind in samples.sizes
        for size in samples.sizes[kind]
    ]


async def measure(
    kind: str, size: int, warm: int, cold: int, counted: int, env: Environment
) -> list[Row]:
    folder = new_folder(env, "history")
    async with open_backend(kind, env, folder=folder) as store:
        if kind == "local":
            await prefill_linked(store, folder, size)
        else:
            await prefill(store, size, concurrency=1 if kind == "memory" else 16)
        cold_times: list[float] = []
        for _ in range(cold):
            handle, elapsed = await timed_claim(store, cold=True)
            cold_times.append(elapsed)
            await forget(handle)
        counter = CountingStore(store)
        cold_counts: Counter[str] = Counter()
        for _ in range(counted):
            counter.counts.clear()
            handle = await cold_claim(counter)
            cold_counts.update(counter.requests())
            await forget(handle)  # not counted

        await claim_epoch(store)
        warm_times = [(await timed_claim(store))[1] for _ in range(warm)]
        await claim_epoch(counter)
        counter.counts.clear()
        for _ in range(counted):
            await claim_epoch(counter)
        warm_counts = counter.requests()
    return [
        _row(kind, size, "cold", cold_times, per_claim(cold_counts, counted)),
        _row(kind, size, "warm", warm_times, per_claim(warm_counts, counted)),
    ]


def _row(kind: str, size: int, temp: str, times: list[float], requests: dict[str, float]) -> Row:
    median, p99 = summary_us(times)
    case = f"{temp}, {size:,} manifests"
    values = {"size": size, "temperature": temp}
    return Row(NAME, kind, case, median, p99, len(times), requests, values=values)


def ratios_to_smallest(rows: list[Row]) -> list[Row]:
    base: dict[tuple[str, str], Row] = {}
    for row in sorted(rows, key=lambda r: int(r.values["size"])):
        key = (row.backend, str(row.values["temperature"]))
        base.setdefault(key, row)
        first = base[key]
        value = ratio(row.median_us, first.median_us)
        row.values["ratio_to_smallest"] = value
        row.values["smallest_size"] = first.values["size"]
        row.result = f"{value:.2f}x vs {first.values['size']:,}" if value else "-"
    return rows


def plot(ax: Any, rows: list[Row]) -> None:
    series: dict[str, list[Row]] = {}
    for r in rows:
        series.setdefault(f"{r.backend} {r.values['temperature']}", []).append(r)
    for label, points in sorted(series.items()):
        points.sort(key=lambda r: int(r.values["size"]))
        ax.plot(
            [int(r.values["size"]) for r in points],
            [r.values.get("ratio_to_smallest") or math.nan for r in points],
            marker="o",
            label=label,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("manifests in the folder")
    ax.set_ylabel("median claim ÷ median at the smallest history (log)")
    ax.set_title("2. History growth")
    ax.legend(fontsize=8)


SCENARIO = Scenario(
    name=NAME,
    order=2,
    full=Samples(
        sizes={
            "memory": (10, 1_000, 10_000, 100_000),
            "local": (10, 1_000, 10_000, 100_000),
            "s3": (10, 1_000),
        },
        warm={"memory": 2000, "local": 300, "s3": 50},
        cold={"memory": 100, "local": 30, "s3": 10},
        counted=20,
    ),
    quick=Samples(
        sizes={"memory": (10, 100, 1_000), "local": (10, 100, 1_000), "s3": (10, 50)},
        warm={"memory": 100, "local": 10, "s3": 3},
        cold={"memory": 5, "local": 3, "s3": 2},
        counted=3,
    ),
    jobs=jobs,
    finish=ratios_to_smallest,
    panels=(plot,),
)
