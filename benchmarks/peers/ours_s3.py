"""slate-epoch on S3 a network round trip away: ``python -m benchmarks.peers.ours_s3 --backend s3
--bucket B --endpoint PROXY --setup-endpoint SERVER`` (run by the ``s3_latency`` scenario).

Every case goes through one ``S3Store`` on ``--endpoint`` (the latency proxy), wrapped in a
``CountingStore`` that counts its requests; setup and undoing (untimed) go through another on
``--setup-endpoint`` (the same server, without the proxy). Each root starts with ``HISTORY``
manifests. The cases take turns, one sample each a round, so that they meet the same machine.

- ``round trip``: one GET of a one-byte object through the proxy (the unit of the others);
  ``round trip, no proxy``: the same on the server itself.
- ``warm claim``: a claim by a process that has claimed under this root before.
- ``update``: ``EpochHandle.update`` of the holder (a new state).
- ``open, empty log``: a cold claim (an empty cache, as a new process) with ``fence_wal=True``; then
  the manifest and the fence are deleted again (untimed), so every open meets the same state.
- ``open, 8 earlier fences``: the same on a root where 8 writers each claimed and fenced before.
- ``second S3Store open``: ``async with S3Store(...)`` in this process, where others were
  opened before (entering only: it makes no request); ``first_s`` is the first one's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from time import perf_counter
from typing import TypeVar

import anyio
import msgspec

from slate_epoch import Manifest, ObjectStore, __version__, claim_epoch
from slate_epoch.backends.s3 import S3Store

from ..claims import cold_claim, cold_open, forget
from ..stores import CountingStore, per_claim, prefill
from ._common import EARLIER_WRITERS, HISTORY, S3Case, arguments, emit

T = TypeVar("T")
ONE_BYTE = "round-trip"
ROOTS = {
    S3Case.WARM_CLAIM: "warm",
    S3Case.UPDATE: "update",
    S3Case.OPEN_EMPTY: "empty",
    S3Case.OPEN_FENCED: "fenced",
}


class Cases:
    """Samples (seconds) and requests, by case."""

    def __init__(self, counter: CountingStore) -> None:
        self.counter = counter
        self.samples: defaultdict[str, list[float]] = defaultdict(list)
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)

    async def time(self, case: str, operation: Callable[[], Awaitable[T]]) -> T:
        before = self.counter.requests()
        start = perf_counter()
        result = await operation()
        self.samples[case].append(perf_counter() - start)
        self.requests[case].update(self.counter.requests() - before)
        return result

    def per_operation(self) -> dict[str, dict[str, float]]:
        return {
            case: per_claim(counts, len(self.samples[case]))
            for case, counts in self.requests.items()
            if sum(counts.values())
        }


async def open_and_forget(cases: Cases, case: str, setup: ObjectStore) -> None:
    """Time a cold open (``cold_open``), then undo it through ``setup`` (untimed)."""
    handle, wal = await cases.time(case, partial(cold_open, cases.counter, ROOTS[case]))
    await forget(handle, wal, via=setup)


def with_state(state: bytes) -> Callable[[Manifest], Manifest]:
    return lambda manifest: msgspec.structs.replace(manifest, state=state)


async def main() -> None:
    args = arguments(__doc__)
    start = perf_counter()
    async with S3Store(args.bucket, endpoint_url=args.setup_endpoint) as setup:
        first_open = perf_counter() - start
        async with S3Store(args.bucket, endpoint_url=args.endpoint) as proxied:
            cases = Cases(CountingStore(proxied))
            for root in ROOTS.values():
                await prefill(setup, HISTORY, root=root)
            for _ in range(EARLIER_WRITERS):
                await (await cold_claim(setup, ROOTS[S3Case.OPEN_FENCED])).fence_wal()
            await setup.put(ONE_BYTE, b"x")
            await proxied.get(ONE_BYTE)  # the connection to the proxy, opened untimed
            await claim_epoch(cases.counter, ROOTS[S3Case.WARM_CLAIM])
            holder = await claim_epoch(cases.counter, ROOTS[S3Case.UPDATE])
            counter = cases.counter
            for i in range(max(args.warm, args.cold)):
                if i < args.warm:
                    await cases.time(S3Case.ROUND_TRIP, lambda: counter.get(ONE_BYTE))
                    await cases.time(S3Case.ROUND_TRIP_DIRECT, lambda: setup.get(ONE_BYTE))
                    await cases.time(
                        S3Case.WARM_CLAIM, lambda: claim_epoch(counter, ROOTS[S3Case.WARM_CLAIM])
                    )
                    await cases.time(
                        S3Case.UPDATE, partial(holder.update, with_state(b"state %d" % i))
                    )
                if i < args.cold:
                    await open_and_forget(cases, S3Case.OPEN_EMPTY, setup)
                    await open_and_forget(cases, S3Case.OPEN_FENCED, setup)
            for _ in range(args.cold):
                another = S3Store(args.bucket, endpoint_url=args.endpoint)
                start = perf_counter()
                async with another:
                    cases.samples[S3Case.SECOND_STORE].append(perf_counter() - start)
    emit(
        {
            "peer": "slate-epoch",
            "version": __version__,
            "does": "slate-epoch on S3Store (aiobotocore) through the latency proxy",
            "fsync": None,
            "first_s": first_open,
            "samples": dict(cases.samples),
            "requests": cases.per_operation(),
        }
    )


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
