"""Uncontended claim latency on the in-memory store: ``python -m benchmarks.claim_latency``.

Each claim fences the previous one, as a restarting writer would, in a process that has seen the
root before (a service re-claiming, or claiming a second role). Prints the median and p99 in
microseconds, per event loop.
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio

from slate_epoch import claim_epoch
from slate_epoch.backends.memory import MemoryStore


def _summary(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return f"median {statistics.median(samples) * 1e6:7.1f} us   p99 {p99 * 1e6:7.1f} us"


async def _measure(claims: int) -> list[float]:
    store = MemoryStore()
    await claim_epoch(store)  # the first claim writes manifest 1; measure the steady state
    samples = []
    for _ in range(claims):
        start = time.perf_counter()
        await claim_epoch(store)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--claims", type=int, default=20_000)
    args = parser.parse_args()
    for backend in ("asyncio", "trio"):
        samples = anyio.run(_measure, args.claims, backend=backend)
        print(f"memory store, uncontended warm claim, {backend:7}: {_summary(samples)}")


if __name__ == "__main__":
    main()
