"""3. ``contention``: N claimers start at once, each with its own store object (local folder) or
its own ``CountingStore`` over one shared store (memory, S3), so each starts cold."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import anyio

from slate_epoch import ClaimTimeoutError, ObjectStore, claim_epoch

from ..claims import CLAIM_TIMEOUT, in_loop
from ..model import Job, Row, Run, Scenario, fmt_us, summary_us
from ..peers._common import HISTORY
from ..stores import CountingStore, Environment, new_folder, open_backend, per_claim, prefill

NAME = "contention"


@dataclass(frozen=True)
class Samples:
    claimers: Mapping[str, Sequence[int]]  # per backend
    rounds: int


def jobs(samples: Samples, run: Run) -> list[Job]:
    return [
        in_loop(NAME, f"{kind}, {n} claimers", "asyncio", measure, kind, n, samples.rounds, run.env)
        for kind in run.backends
        if kind in samples.claimers
        for n in samples.claimers[kind]
    ]


async def measure(kind: str, n: int, rounds: int, env: Environment) -> list[Row]:
    latencies: list[float] = []
    all_done: list[float] = []
    counts: Counter[str] = Counter()
    failures = 0
    epochs_distinct = True
    for _ in range(rounds):
        async with AsyncExitStack() as stack:
            folder = new_folder(env, NAME)
            first = await stack.enter_async_context(open_backend(kind, env, folder=folder))
            await prefill(first, HISTORY)
            stores: list[ObjectStore]
            if kind in ("local", "local-nofsync"):  # one store object per claimer, same folder
                stores = [first] + [
                    await stack.enter_async_context(open_backend(kind, env, folder=folder))
                    for _ in range(n - 1)
                ]
            else:  # one shared store (one dict, one S3 client); its own wrapper per claimer
                stores = [first] * n
            claimers = [CountingStore(store) for store in stores]
            times, epochs = await _race(claimers)
        finished = [t for t in times if t is not None]
        latencies += finished
        all_done.append(max(finished, default=CLAIM_TIMEOUT))
        failures += sum(t is None for t in times)
        won = sorted(e for e in epochs if e)
        epochs_distinct &= won == list(range(2, 2 + len(won)))
        for claimer in claimers:
            counts.update(claimer.counts)
    median, p99 = summary_us(latencies)
    done_median, done_max = summary_us(all_done)
    conflicts = counts["conflicts"] / (n * rounds)
    return [
        Row(
            NAME,
            kind,
            f"{n} claimers",
            median,
            p99,
            len(latencies),
            per_claim(counts, n * rounds),
            result=f"all done {fmt_us(done_median)}; {conflicts:.1f} conflicts/claimer"
            + (f"; {failures} timed out" if failures else ""),
            values={
                "claimers": n,
                "rounds": rounds,
                "all_done_median_us": done_median,
                "all_done_max_us": done_max,
                "conflicts_per_claimer": conflicts,
                "timeouts": failures,
                "epochs_distinct_and_contiguous": epochs_distinct,
            },
        )
    ]


async def _race(claimers: list[CountingStore]) -> tuple[list[float | None], list[int]]:
    """Start every claim at once; each claimer's time to return (None: timed out) and epoch."""
    n = len(claimers)
    times: list[float | None] = [None] * n
    epochs = [0] * n
    ready = 0
    all_ready = anyio.Event()
    go = anyio.Event()
    start = 0.0

    async def claimer(i: int) -> None:
        nonlocal ready
        ready += 1
        if ready == n:
            all_ready.set()
        await go.wait()
        try:
            handle = await claim_epoch(claimers[i], timeout=CLAIM_TIMEOUT)
        except ClaimTimeoutError:
            return
        times[i] = perf_counter() - start
        epochs[i] = handle.epoch

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(claimer, i)
        await all_ready.wait()
        start = perf_counter()
        go.set()
    return times, epochs


def plot(ax: Any, rows: list[Row]) -> None:
    series: dict[str, list[Row]] = {}
    for r in rows:
        series.setdefault(r.backend, []).append(r)
    for backend, points in sorted(series.items()):
        points.sort(key=lambda r: int(r.values["claimers"]))
        ns = [int(r.values["claimers"]) for r in points]
        ax.plot(
            ns,
            [r.values["all_done_median_us"] / 1e3 for r in points],
            marker="o",
            label=f"{backend}: all returned",
        )
        ax.plot(
            ns,
            [(r.median_us or math.nan) / 1e3 for r in points],
            linestyle="--",
            marker=".",
            label=f"{backend}: median claimer",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent claimers")
    ax.set_ylabel("ms (log)")
    ax.set_title("3. Contention")
    ax.legend(fontsize=8)


SCENARIO = Scenario(
    name=NAME,
    order=3,
    full=Samples(
        claimers={
            "memory": (1, 2, 4, 8, 16, 32, 64),
            "local": (1, 2, 4, 8, 16, 32, 64),
            "s3": (1, 2, 4, 8, 16),
        },
        rounds=3,
    ),
    quick=Samples(
        claimers={"memory": (1, 2, 4, 8), "local": (1, 2, 4, 8), "s3": (1, 2, 4)}, rounds=1
    ),
    jobs=jobs,
    panels=(plot,),
)
