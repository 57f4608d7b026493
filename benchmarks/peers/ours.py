"""slate-epoch's claim and open, measured as the peers are: ``python -m benchmarks.peers.ours``.

Three cases, each on a store that starts with ``HISTORY`` manifests and an empty log:

- ``open``: what SlateDB's open does, done with slate-epoch: a cold claim (an empty cache, as in a
  new process) that fences the log too (``claim_epoch(..., fence_wal=True)``: a
  create-if-absent zero-byte fence above the replay point, tried beside the claim's boundary
  check, then one confirming round). Timed together. Afterwards (untimed) the manifest the claim
  wrote and the fence are deleted again, so every open meets the same state: 10 manifests,
  nothing in the log.
- ``cold``: the cold claim alone (its manifest deleted again, untimed, in the same way).
- ``warm``: the same store object claiming again: one create and the boundary read per claim.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from time import perf_counter

import anyio

from slate_epoch import ObjectStore, __version__, claim_epoch

from ..claims import cold_claim, cold_open, forget, timed_claim
from ..stores import CountingStore, Environment, open_backend, per_claim, prefill
from ._common import HISTORY, arguments, emit, timed

COUNTED = 20
DOES = {
    "memory": "open = cold claim with fence_wal=True; cold = list + get + create of the next "
    "manifest + boundary get; warm = create + boundary get",
    "local": "the same on LocalStore(durable=True): fsync of file and folder per create",
    "local-nofsync": "the same on LocalStore(durable=False): no fsync, as the peers",
}


async def time_an_open(store: ObjectStore) -> float:
    """Time a cold open (``cold_open``); then undo it (untimed)."""
    start = perf_counter()
    handle, wal = await cold_open(store)
    elapsed = perf_counter() - start
    await forget(handle, wal)
    return elapsed


async def count_opens(store: ObjectStore) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for _ in range(COUNTED):
        counter = CountingStore(store)
        handle, wal = await cold_open(counter)
        counts.update(counter.requests())
        await forget(handle, wal)
    return per_claim(counts, COUNTED)


async def main() -> None:
    args = arguments(__doc__)
    async with open_backend(args.backend, Environment(Path(args.folder))) as store:
        await prefill(store, HISTORY)
        first = await time_an_open(store)
        opens = [await time_an_open(store) for _ in range(args.cold)]
        open_requests = await count_opens(store)
        cold = []
        for _ in range(args.cold):
            handle, elapsed = await timed_claim(store, cold=True)
            cold.append(elapsed)
            await forget(handle)
        cold_counts: Counter[str] = Counter()
        for _ in range(COUNTED):
            counter = CountingStore(store)
            handle = await cold_claim(counter)
            cold_counts.update(counter.requests())
            await forget(handle)
        await claim_epoch(store)
        warm = [await timed(lambda: claim_epoch(store)) for _ in range(args.warm)]
        counter = CountingStore(store)
        await claim_epoch(counter)
        counter.counts.clear()
        for _ in range(COUNTED):
            await claim_epoch(counter)
    emit(
        {
            "peer": "slate-epoch",
            "version": __version__,
            "does": DOES[args.backend],
            "fsync": args.backend == "local",
            "first_s": first,
            "samples": {"open": opens, "cold": cold, "warm": warm},
            "requests": {
                "open": open_requests,
                "cold": per_claim(cold_counts, COUNTED),
                "warm": per_claim(counter.requests(), COUNTED),
            },
        }
    )


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
