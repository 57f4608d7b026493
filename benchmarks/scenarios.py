"""Scenarios 1-4, run in this process on the public API (the peers are in ``side_by_side``).

1. ``uncontended``: one claimer, warm (the process has seen the root) and cold (a new store
   object: nothing cached, as in a new process), on asyncio and trio. Each sample runs three
   twin stores that start identical and stay identical: the claim is timed on A; the same claim
   on B goes through a recording wrapper; B's recorded requests are then replayed raw on C and
   timed (A goes first or last, at random). Overhead ratio = median claim ÷ median raw
   requests: its floor is 1.0, and a value below it is noise (the disk, mostly). Cold samples
   delete the manifest they wrote (untimed), so every cold claim meets the same history.
2. ``history``: the same claims with 10 ... 100,000 manifests already stored; ratio to 10.
   Cold samples delete the manifest they wrote (untimed), so each meets the same history; the
   local folder is prefilled with hard links to one manifest (``stores.prefill_linked``).
3. ``contention``: N claimers start at once, each with its own store object over the same data.
4. ``lost_responses``: sequential warm claims through ``FaultyStore`` losing that share of put
   responses; beside them, SlateDB's rule (re-read and bump again after any conflict) on the
   same faults, written here on the public ``ManifestStore``. Both resend a write at once after
   a lost response; slate-epoch backs off only after a second unknown outcome in a row (and
   after a conflict with a rival, which a lost response of its own is not).

Every store starts with ``HISTORY`` manifests, so the numbers describe a root in use.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from time import perf_counter
from typing import TypeVarTuple, Unpack

import anyio

from slate_epoch import (
    ClaimTimeoutError,
    EpochHandle,
    Manifest,
    ManifestStore,
    ManifestVersionExistsError,
    ObjectStore,
    RoleClaim,
    TransientStoreError,
    claim_epoch,
)
from slate_epoch.testing import FaultyStore

from .model import Job, Plan, Row, Scenario, fmt_us, ratio, summary_us
from .stores import (
    Alias,
    CountingStore,
    Environment,
    call_kinds,
    new_folder,
    open_backend,
    per_claim,
    prefill,
    prefill_linked,
    replay,
)

__all__ = ["contention", "history", "lost_responses", "uncontended"]

HISTORY = 10  # manifests in every store before a scenario starts
CLAIM_TIMEOUT = 60.0
SEED = 20261126

Ts = TypeVarTuple("Ts")


def _job(
    scenario: str,
    label: str,
    loop: str,
    fn: Callable[[Unpack[Ts]], Awaitable[list[Row]]],
    *args: *Ts,
) -> Job:
    """A job that runs ``fn(*args)`` in a fresh event loop of ``loop`` (asyncio or trio)."""

    def run() -> list[Row]:
        return anyio.run(fn, *args, backend=loop)

    return Job(scenario, label, run)


# --- 1. uncontended ---------------------------------------------------------------------------


def uncontended(
    plan: Plan, env: Environment, backends: Sequence[str], loops: Sequence[str]
) -> Scenario:
    jobs = [
        _job(
            "uncontended",
            f"{kind}, {temp}, {loop}",
            loop,
            _uncontended,
            kind,
            temp,
            loop,
            (plan.warm if temp == "warm" else plan.cold)[kind],
            env,
        )
        for kind in backends
        for loop in loops
        for temp in ("warm", "cold")
    ]
    return Scenario("uncontended", jobs)


async def _uncontended(
    kind: str, temp: str, loop: str, samples: int, env: Environment
) -> list[Row]:
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
                handle, elapsed = await _timed_claim(timed if warm else Alias(timed))
            counter = recorder if warm else CountingStore(recorded, record=True)
            counter.calls.clear()
            await claim_epoch(counter)
            counts.update(call_kinds(counter.calls))
            start = perf_counter()
            await replay(raw, counter.calls)
            raw_times.append(perf_counter() - start)
            if not claim_first:
                handle, elapsed = await _timed_claim(timed if warm else Alias(timed))
            claim_times.append(elapsed)
            if not warm:  # every cold claim sees the same history (untimed)
                await _forget(handle)
                created = [c.key for c in counter.calls if c.kind == "put"][-1]
                await recorded.delete(created)
                await raw.delete(created)
    median, p99 = summary_us(claim_times)
    raw_median, raw_p99 = summary_us(raw_times)
    overhead = ratio(median, raw_median)
    return [
        Row(
            "uncontended",
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


# --- 2. history growth ------------------------------------------------------------------------


def history(plan: Plan, env: Environment, backends: Sequence[str]) -> Scenario:
    jobs = [
        _job(
            "history",
            f"{kind}, {size:,} manifests",
            "asyncio",
            _history,
            kind,
            size,
            plan.history_warm[kind],
            plan.history_cold[kind],
            plan.counted_claims,
            env,
        )
        for kind in backends
        if kind in plan.history_sizes
        for size in plan.history_sizes[kind]
    ]
    return Scenario("history", jobs, finish=_history_ratios)


async def _history(
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
            handle, elapsed = await _timed_claim(Alias(store))
            cold_times.append(elapsed)
            await _forget(handle)
        cold_counts: Counter[str] = Counter()
        for _ in range(counted):
            counter = CountingStore(store)
            handle = await claim_epoch(counter)
            cold_counts.update(counter.requests())
            await _forget(handle)

        await claim_epoch(store)
        warm_times = [(await _timed_claim(store))[1] for _ in range(warm)]
        counter = CountingStore(store)
        await claim_epoch(counter)
        counter.counts.clear()
        for _ in range(counted):
            await claim_epoch(counter)
        warm_counts = counter.requests()
    return [
        _history_row(kind, size, "cold", cold_times, per_claim(cold_counts, counted)),
        _history_row(kind, size, "warm", warm_times, per_claim(warm_counts, counted)),
    ]


async def _forget(handle: EpochHandle) -> None:
    """Delete the manifest a cold claim just wrote, so that the next cold claim (from a new
    store object, which caches nothing) meets the same history. Benchmarks only: a real
    deployment never deletes its newest manifest."""
    await handle.store.delete(ManifestStore(handle.store, handle.root).key(handle.manifest_id))


async def _timed_claim(store: ObjectStore) -> tuple[EpochHandle, float]:
    start = perf_counter()
    handle = await claim_epoch(store)
    return handle, perf_counter() - start


def _history_row(
    kind: str, size: int, temp: str, times: list[float], requests: dict[str, float]
) -> Row:
    median, p99 = summary_us(times)
    case = f"{temp}, {size:,} manifests"
    values = {"size": size, "temperature": temp}
    return Row("history", kind, case, median, p99, len(times), requests, values=values)


def _history_ratios(rows: list[Row]) -> list[Row]:
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


# --- 3. contention ----------------------------------------------------------------------------


def contention(plan: Plan, env: Environment, backends: Sequence[str]) -> Scenario:
    jobs = [
        _job(
            "contention",
            f"{kind}, {n} claimers",
            "asyncio",
            _contention,
            kind,
            n,
            plan.contention_rounds,
            env,
        )
        for kind in backends
        if kind in plan.contention_sizes
        for n in plan.contention_sizes[kind]
    ]
    return Scenario("contention", jobs)


async def _contention(kind: str, n: int, rounds: int, env: Environment) -> list[Row]:
    latencies: list[float] = []
    all_done: list[float] = []
    counts: Counter[str] = Counter()
    failures = 0
    epochs_distinct = True
    for _ in range(rounds):
        async with AsyncExitStack() as stack:
            folder = new_folder(env, "contention")
            first = await stack.enter_async_context(open_backend(kind, env, folder=folder))
            await prefill(first, HISTORY)
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
            "contention",
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


# --- 4. lost responses ------------------------------------------------------------------------

VARIANTS = ("slate-epoch", "SlateDB rule")


def lost_responses(plan: Plan, env: Environment, backends: Sequence[str]) -> Scenario:
    jobs = [
        _job(
            "lost_responses",
            f"{kind}, {rate:.0%} lost, {variant}",
            "asyncio",
            _lost,
            kind,
            rate,
            variant,
            plan.lost_claims[kind],
            env,
        )
        for kind in backends
        if kind in plan.lost_claims
        for rate in plan.lost_rates
        for variant in VARIANTS
    ]
    return Scenario("lost_responses", jobs, finish=_extra_requests)


async def _lost(kind: str, rate: float, variant: str, claims: int, env: Environment) -> list[Row]:
    claim = _ours if variant == "slate-epoch" else _slatedb_rule
    async with open_backend(kind, env) as store:
        await prefill(store, HISTORY)
        faulty = FaultyStore(
            store, seed=SEED + round(rate * 100), lost_response_rate=rate, ops={"put"}
        )
        first = last = await claim(faulty)  # learn the root (not counted)
        faulty.counts.clear()
        times: list[float] = []
        for _ in range(claims):
            start = perf_counter()
            try:
                last = await claim(faulty)
            except TimeoutError:  # ClaimTimeoutError, or the rule's own deadline
                continue
            times.append(perf_counter() - start)
    ok = len(times)
    epochs = (last - first) / ok if ok else None
    median, p99 = summary_us(times)
    counts = faulty.counts
    kinds = {"list": "list", "get": "get", "head": "head", "create": "put"}
    requests = per_claim(Counter({k: counts[op] for k, op in kinds.items()}), claims)
    return [
        Row(
            "lost_responses",
            kind,
            f"{rate:.0%} lost, {variant}",
            median,
            p99,
            ok,
            requests,
            result=f"{ok}/{claims} ok; {epochs:.2f} epochs/claim"
            if epochs is not None
            else "none ok",
            values={
                "rate": rate,
                "variant": variant,
                "claims": claims,
                "succeeded": ok,
                "epochs_per_claim": epochs,
                "lost_per_claim": counts["lost"] / claims,
            },
        )
    ]


async def _ours(store: ObjectStore) -> int:
    return (await claim_epoch(store, timeout=CLAIM_TIMEOUT)).epoch


async def _slatedb_rule(store: ObjectStore) -> int:
    """SlateDB's rule: a timeout resends the same create; any conflict (the own landed write
    included, which it cannot recognise) means re-read and bump again."""
    manifests = ManifestStore(store)
    with anyio.fail_after(CLAIM_TIMEOUT):
        latest = manifests.cached_latest() or await manifests.read_latest() or (0, Manifest())
        while True:
            base_id, base = latest
            epoch = base.epoch("writer") + 1
            claim = RoleClaim(role="writer", epoch=epoch, claim_id=os.urandom(16).hex())
            candidate = base.with_claim(claim)
            while True:
                try:
                    await manifests.write(base_id + 1, candidate)
                except TransientStoreError:
                    continue
                except ManifestVersionExistsError:
                    break
                return epoch
            latest = await manifests.read_latest(known=base_id + 1) or latest


def _extra_requests(rows: list[Row]) -> list[Row]:
    base = {
        (r.backend, r.values["variant"]): r for r in rows if r.values["rate"] == 0 and r.requests
    }
    for row in rows:
        zero = base.get((row.backend, row.values["variant"]))
        if zero is None or row.requests is None or zero.requests is None:
            continue
        extra = row.requests["total"] - zero.requests["total"]
        row.values["extra_requests_per_claim"] = extra
        row.result += f"; {extra:+.2f} req"
    return rows
