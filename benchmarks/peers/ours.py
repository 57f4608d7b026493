"""slate-epoch's claim, measured the way the peers are: ``python -m benchmarks.peers.ours``.

Cold first (a new store object per claim, so nothing is cached; the manifest it wrote is
deleted again, untimed, so every cold claim meets the same history), then warm (the same store
object: one create per claim). The store starts with ``HISTORY`` manifests.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from time import perf_counter

import anyio

from slate_epoch import EpochHandle, ManifestStore, ObjectStore, __version__, claim_epoch

from ..stores import Alias, CountingStore, Environment, open_backend, per_claim, prefill
from ._common import HISTORY, arguments, emit, timed

COUNTED = 20
DOES = {
    "memory": "claim: cold = list + get + create of the next manifest, warm = create only; "
    "no WAL fence (not built yet)",
    "local": "the same on LocalStore(durable=True): fsync of file and folder per create",
    "local-nofsync": "the same on LocalStore(durable=False): no fsync, as the peers",
}


async def cold_claim(store: ObjectStore) -> tuple[float, EpochHandle]:
    start = perf_counter()
    handle = await claim_epoch(Alias(store))
    elapsed = perf_counter() - start
    await forget(handle)
    return elapsed, handle


async def forget(handle: EpochHandle) -> None:
    await handle.store.delete(ManifestStore(handle.store, handle.root).key(handle.manifest_id))


async def main() -> None:
    args = arguments(__doc__)
    async with open_backend(args.backend, Environment(Path(args.folder))) as store:
        await prefill(store, HISTORY)
        first, _ = await cold_claim(store)
        cold = [(await cold_claim(store))[0] for _ in range(args.cold)]
        cold_counts: Counter[str] = Counter()
        for _ in range(COUNTED):
            counter = CountingStore(store)
            handle = await claim_epoch(counter)
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
            "samples": {"cold": cold, "warm": warm},
            "requests": {
                "cold": per_claim(cold_counts, COUNTED),
                "warm": per_claim(counter.requests(), COUNTED),
            },
        }
    )


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
