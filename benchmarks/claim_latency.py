"""What an uncontended claim costs, and whether it grows with history.

    python -m benchmarks.claim_latency [--claims N] [--history N]

1. Warm claims on the in-memory store, asyncio and trio: each claim fences the previous one, in
   a process that has seen the root before (a restarting service, or a second role).
2. History growth: warm claims with 10 and with ``--history`` manifests already in the store, on
   memory and on a local folder; the ratio is the figure (it should stay near 1.0).
3. A cold claim (a new store object: nothing cached) at that history: its store requests.

Medians and p99, measured as ratios within one run; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from slate_epoch import Manifest, ManifestStore, ObjectStore, RoleClaim, claim_epoch
from slate_epoch.backends.local import LocalStore
from slate_epoch.backends.memory import MemoryStore
from slate_epoch.testing import FaultyStore


def summary(samples: list[float]) -> tuple[float, float]:
    """(median, p99) in microseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1e6, p99 * 1e6


async def warm_claims(store: ObjectStore, claims: int) -> list[float]:
    await claim_epoch(store)  # the process learns the root; measure the steady state after it
    samples = []
    for _ in range(claims):
        start = time.perf_counter()
        await claim_epoch(store)
        samples.append(time.perf_counter() - start)
    return samples


async def prefill(store: ObjectStore, count: int) -> None:
    """``count`` manifests, as a long-lived service leaves behind (written concurrently)."""
    manifests = ManifestStore(store)
    claim = RoleClaim(role="writer", epoch=1, claim_id="prefill")

    async def write_range(first: int, last: int) -> None:
        for manifest_id in range(first, last):
            await manifests.write(manifest_id, Manifest(roles=(claim,), state=b"x" * 64))

    step = max(1, count // 16)
    async with anyio.create_task_group() as tg:
        for first in range(1, count + 1, step):
            tg.start_soon(write_range, first, min(first + step, count + 1))


async def history_growth(kind: str, folder: Path, history: int, claims: int) -> None:
    medians = {}
    for size in (10, history):
        if kind == "memory":
            store: ObjectStore = MemoryStore()
        else:
            store = LocalStore(folder / f"h{size}", durable=False)
            await prefill(store, size)
            store = LocalStore(folder / f"h{size}")  # measured durable, as deployed
        if kind == "memory":
            await prefill(store, size)
        counted = FaultyStore(store, seed=0)
        start = time.perf_counter()
        await claim_epoch(counted)
        cold = time.perf_counter() - start
        cold_requests = sum(counted.counts.values())
        median, p99 = summary(await warm_claims(store, claims))
        medians[size] = median
        print(
            f"{kind:6} history {size:>7}: warm claim median {median:8.1f} us  p99 {p99:8.1f} us"
            f"   cold claim {cold * 1e3:7.2f} ms, {cold_requests} requests"
        )
    print(
        f"{kind:6} warm claim ratio, {history} vs 10 manifests: "
        f"{medians[history] / medians[10]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--claims", type=int, default=20_000)
    parser.add_argument("--history", type=int, default=100_000)
    args = parser.parse_args()
    for backend in ("asyncio", "trio"):
        median, p99 = summary(anyio.run(warm_claims, MemoryStore(), args.claims, backend=backend))
        print(
            f"memory store, uncontended warm claim, {backend:7}: "
            f"median {median:6.1f} us  p99 {p99:6.1f} us"
        )
    with tempfile.TemporaryDirectory(prefix="slate-epoch-bench-") as tmp:
        for kind in ("memory", "local"):
            claims = args.claims if kind == "memory" else max(100, args.claims // 20)
            anyio.run(history_growth, kind, Path(tmp), args.history, claims)


if __name__ == "__main__":
    main()
