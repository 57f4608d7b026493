"""1. ``uncontended``: one claimer, warm and cold, on asyncio and trio, beside its raw requests.

Warm: the process has seen the root; cold: an empty cache (``cold_claim``), as in a new
process. Each sample runs three twin stores that start identical and stay identical: the claim
is timed on A; the same claim on B goes through a recording ``CountingStore``; B's recorded
requests are then replayed raw on C and timed (A goes first or last, at random). Overhead ratio
= median claim ÷ median raw requests: its floor is 1.0, and a value below it is noise (the disk,
mostly). Cold samples delete the manifest they wrote (untimed), so every cold claim meets the
same history.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from slate_epoch import claim_epoch

from ..claims import SEED, cold_claim, forget, in_loop, timed_claim
from ..model import Job, Row, Run, Scenario, fmt_us, ratio, summary_us
from ..peers._common import HISTORY
from ..stores import (
    CountingStore,
    Environment,
    call_kinds,
    open_backend,
    per_claim,
    prefill,
    replay,
)

NAME = "uncontended"


@dataclass(frozen=True)
class Samples:
    warm: Mapping[str, int]  # per backend
    cold: Mapping[str, int]


def jobs(samples: Samples, run: Run) -> list[Job]:
    return [
        in_loop(
            NAME,
            f"{kind}, {temp}, {loop}",
            loop,
            measure,
            kind,
            temp,
            loop,
            (samples.warm if temp == "warm" else samples.cold)[kind],
            run.env,
        )
        for kind in run.backends
        for loop in run.loops
        for temp in ("warm", "cold")
    ]


async def measure(kind: str, temp: str, loop: str, samples: int, env: Environment) -> list[Row]:
    warm = temp == "warm"
    claim_times: list[float] = []
    raw_times: list[float] = []
    counts: Counter[str] = Counter()
    async with AsyncExitStack() as stack:
        timed, recorded, raw = [
            await stack.enter_async_context(open_backend(kind, env)) for _ in range(3)
        ]
        for store in (timed, recorded, raw):
            await prefill(store, HISTORY)
        recorder = CountingStore(recorded, record=True)
        if warm:  # each twin learns the root: one manifest more on each
            for store in (timed, recorder, raw):
                await claim_epoch(store)
        order = random.Random(SEED)
        for _ in range(samples):
            # The timed claim goes before or after the recorded claim and its replay, at
            # random: nothing periodic on the machine (journal commits, say) can favour one.
            claim_first = order.random() < 0.5
            if claim_first:
                handle, elapsed = await timed_claim(timed, cold=not warm)
            recorder.calls.clear()
            await (claim_epoch(recorder) if warm else cold_claim(recorder))
            counts.update(call_kinds(recorder.calls))
            start = perf_counter()
            await replay(raw, recorder.calls)
            raw_times.append(perf_counter() - start)
            if not claim_first:
                handle, elapsed = await timed_claim(timed, cold=not warm)
            claim_times.append(elapsed)
            if not warm:  # every cold claim sees the same history (untimed)
                await forget(handle)
                created = [c.key for c in recorder.calls if c.op == "put"][-1]
                await recorded.delete(created)
                await raw.delete(created)
    median, p99 = summary_us(claim_times)
    raw_median, raw_p99 = summary_us(raw_times)
    overhead = ratio(median, raw_median)
    return [
        Row(
            NAME,
            kind,
            f"{temp}, {loop}",
            median,
            p99,
            samples,
            per_claim(counts, samples),
            result=f"overhead {overhead:.2f}x (raw {fmt_us(raw_median)})",
            values={
                "temperature": temp,
                "loop": loop,
                "raw_median_us": raw_median,
                "raw_p99_us": raw_p99,
                "overhead_ratio": overhead,
            },
        )
    ]


def plot(ax: Any, rows: list[Row]) -> None:
    labels = [f"{r.backend}\n{r.case.replace(', ', ' ')}" for r in rows]
    xs = list(range(len(rows)))
    ax.bar(xs, [r.median_us for r in rows], color="tab:blue", label="claim")
    ax.bar(
        xs,
        [r.values.get("raw_median_us") or 0 for r in rows],
        width=0.4,
        color="tab:orange",
        label="its raw requests",
    )
    for x, r in zip(xs, rows, strict=True):
        overhead = r.values.get("overhead_ratio")
        if overhead:
            ax.annotate(
                f"{overhead:.1f}x", (x, r.median_us or 0), ha="center", va="bottom", fontsize=7
            )
    ax.set_xticks(xs, labels, rotation=70, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median µs (log)")
    ax.set_title("1. Uncontended claim vs its raw requests (overhead ratio)")
    ax.legend(fontsize=8)


SCENARIO = Scenario(
    name=NAME,
    order=1,
    full=Samples(
        warm={"memory": 3000, "local": 400, "local-nofsync": 400, "s3": 100},
        cold={"memory": 1000, "local": 300, "local-nofsync": 300, "s3": 50},
    ),
    quick=Samples(
        warm={"memory": 200, "local": 20, "local-nofsync": 20, "s3": 5},
        cold={"memory": 50, "local": 10, "local-nofsync": 10, "s3": 3},
    ),
    jobs=jobs,
    panels=(plot,),
)
