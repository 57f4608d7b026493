"""The claim loop a user would hand-roll on obstore: ``python -m benchmarks.peers.obstore_claim``.

Manifests ``manifest/{id:020d}.manifest`` hold ``{"epoch": n, "claim_id": ...}`` as JSON. A claim
reads the newest (list the folder, get the highest id) unless it remembers one, then creates
the next id with ``put_async(mode="create")``; on "already exists" it re-reads and tries again.
No checksum, no claim-id check after a lost response, no backoff, no deadline. Cold: every
claim re-reads (and its manifest is deleted again, untimed, so every cold claim meets the same
history); warm: it creates at the id after the one it wrote last.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from time import perf_counter
from typing import Any

from ._common import HISTORY, arguments, emit, timed, unavailable

PREFIX = "manifest/"


def key(manifest_id: int) -> str:
    return f"{PREFIX}{manifest_id:020d}.manifest"


class HandRolled:
    """One process's claim loop over an obstore store, counting its requests."""

    def __init__(self, obs: Any, store: Any) -> None:
        self.obs = obs
        self.store = store
        self.counts: Counter[str] = Counter()
        self.latest: tuple[int, int] | None = None  # (id, epoch) last seen

    async def read_latest(self) -> tuple[int, int]:
        self.counts["list"] += 1
        metas = await self.obs.list(self.store, PREFIX).collect_async()
        if not metas:
            return 0, 0
        newest = max(str(meta["path"]) for meta in metas)
        self.counts["get"] += 1
        body = await (await self.obs.get_async(self.store, newest)).bytes_async()
        return int(newest[len(PREFIX) : len(PREFIX) + 20]), int(json.loads(bytes(body))["epoch"])

    async def claim(self, *, cold: bool) -> int:
        """Claim; return the id written."""
        from obstore.exceptions import AlreadyExistsError

        latest = await self.read_latest() if cold or self.latest is None else self.latest
        while True:
            manifest_id, epoch = latest[0] + 1, latest[1] + 1
            body = json.dumps({"epoch": epoch, "claim_id": os.urandom(16).hex()}).encode()
            self.counts["create"] += 1
            try:
                await self.obs.put_async(self.store, key(manifest_id), body, mode="create")
            except AlreadyExistsError:
                latest = await self.read_latest()
                continue
            self.latest = (manifest_id, epoch)
            return manifest_id

    async def cold_claim(self) -> float:
        start = perf_counter()
        manifest_id = await self.claim(cold=True)
        elapsed = perf_counter() - start
        await self.obs.delete_async(self.store, key(manifest_id))
        self.latest = None
        return elapsed


def per_op(counts: Counter[str], operations: int) -> dict[str, float]:
    out = {k: counts[k] / operations for k in ("list", "get", "create") if counts[k]}
    out["total"] = sum(out.values())
    return out


async def main() -> None:
    args = arguments(__doc__)
    try:
        import obstore
        from obstore.store import LocalStore, MemoryStore, S3Store
    except ImportError as exc:
        unavailable("obstore", f"obstore is not installed ({exc}); make bench installs it")
        return
    try:
        peer_version = version("obstore")
    except PackageNotFoundError:
        peer_version = "unknown"
    if args.backend == "memory":
        store: Any = MemoryStore()
        does = "hand-rolled claim on obstore MemoryStore, put_async(mode='create')"
    elif args.backend == "s3":
        store = S3Store(
            args.bucket,
            endpoint=args.endpoint,
            allow_http=True,
            region=os.environ.get("AWS_REGION", "us-east-1"),
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        )
        does = "hand-rolled claim on obstore S3Store through the latency proxy"
    else:
        store = LocalStore(prefix=args.folder, mkdir=True)
        does = "hand-rolled claim on obstore LocalStore (temp file + hard link, no fsync)"
    loop = HandRolled(obstore, store)
    for _ in range(HISTORY):
        await loop.claim(cold=False)
    first = await loop.cold_claim()
    loop.counts.clear()
    cold = [await loop.cold_claim() for _ in range(args.cold)]
    cold_requests = per_op(loop.counts, max(1, args.cold))
    await loop.claim(cold=True)  # learn the newest id again
    loop.counts.clear()
    warm = [await timed(lambda: loop.claim(cold=False)) for _ in range(args.warm)]
    warm_requests = per_op(loop.counts, max(1, args.warm))
    emit(
        {
            "peer": "obstore",
            "version": peer_version,
            "does": does,
            "fsync": False,
            "first_s": first,
            "samples": {"cold": cold, "warm": warm},
            "requests": {"cold": cold_requests, "warm": warm_requests},
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
