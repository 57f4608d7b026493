"""SlateDB's writer open, through its official Python bindings (PyPI ``slatedb``):
``python -m benchmarks.peers.slatedb_open``.

Each sample builds a new ``DbBuilder`` on one ``ObjectStore`` and awaits ``build()``: SlateDB
reads the newest manifest, bumps ``writer_epoch`` (a create-if-absent manifest write), fences
its WAL (a create-if-absent empty WAL object), replays the WAL and starts the writer. The
compactor and the garbage collector are switched off, so the open does the writer's work only.
``shutdown()`` after each open is not timed (it writes one more manifest). Every open starts
from nothing cached: these are cold opens, reported as ``open`` and compared with
slate-epoch's open (a cold claim with ``fence_wal=True``, ``benchmarks.peers.ours``). The first
open in the process (tokio runtime start, database creation) is reported apart.

SlateDB's open lists its manifest and WAL folders, so it slows down as they grow (without GC,
400 open/close cycles take it from about 2 ms to 18 ms on a local folder here). To compare at
a history like ours (10 manifests), each database is opened ``PER_DB`` times, then the next
sample starts a new one (created by an untimed open): histories stay between 3 and about 20
manifests.

``--backend s3`` (the ``s3_latency`` scenario): opens through ``--endpoint`` (the latency proxy),
each of a database that earlier writers opened and closed through ``--setup-endpoint`` (the
same server without the proxy, untimed): 1 earlier writer (the one that created it: the nearest
SlateDB has to our empty log) or ``EARLIER_WRITERS``. A new database for every sample. The
proxy counts the HTTP requests of each open (``proxy_counts``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from time import perf_counter
from typing import Any

from ._common import EARLIER_WRITERS, S3Case, arguments, emit, proxy_counts, timed, unavailable

PER_DB = 8


async def open_writer(slatedb: Any, path: str, store: Any) -> Any:
    """``DbBuilder(path, store).build()``, with the compactor and the garbage collector off."""
    builder = slatedb.DbBuilder(path, store)
    settings = slatedb.Settings.default()
    settings.set("compactor_options", "null")
    settings.set("garbage_collector_options", "null")
    builder.with_settings(settings)
    return await builder.build()


def s3_store(slatedb: Any, bucket: str, endpoint: str) -> Any:
    """An object_store S3 client for ``bucket`` on ``endpoint`` (plain HTTP, path-style)."""
    builder = slatedb.ObjectStoreBuilder(slatedb.ObjectStoreType.S3)
    config = {
        "bucket": bucket,
        "endpoint": endpoint,
        "allow_http": "true",
        "access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "region": os.environ.get("AWS_REGION", "us-east-1"),
    }
    for key, value in config.items():
        builder.with_config(key, value)
    return builder.build()


async def on_s3(slatedb: Any, args: argparse.Namespace, peer_version: str) -> None:
    measured = s3_store(slatedb, args.bucket, args.endpoint)
    setup = s3_store(slatedb, args.bucket, args.setup_endpoint)
    states = {S3Case.SLATEDB_OPEN_EMPTY: 1, S3Case.SLATEDB_OPEN_FENCED: EARLIER_WRITERS}
    samples: dict[str, list[float]] = {case: [] for case in states}
    requests: dict[str, int] = dict.fromkeys(states, 0)
    for i in range(args.cold):
        for case, earlier in states.items():
            path = f"db-{earlier}-{i}"
            for _ in range(earlier):
                await (await open_writer(slatedb, path, setup)).shutdown()
            before = proxy_counts(args.endpoint)["requests"]
            start = perf_counter()
            db = await open_writer(slatedb, path, measured)
            samples[case].append(perf_counter() - start)
            requests[case] += proxy_counts(args.endpoint)["requests"] - before
            await db.shutdown()
    emit(
        {
            "peer": "slatedb",
            "version": peer_version,
            "does": "DbBuilder.build() on object_store's S3 client through the latency proxy: "
            "read manifest, bump writer epoch, fence WAL, replay WAL, start writer; compactor "
            "and GC off; a new database each sample, opened and closed before by earlier writers",
            "fsync": None,
            "samples": samples,
            "requests": {
                case: {"total": count / max(1, args.cold)} for case, count in requests.items()
            },
        }
    )


def prepare(folder: str) -> str:
    """The absolute path of ``folder``, created if missing."""
    path = Path(folder).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


async def main() -> None:
    args = arguments(__doc__)
    try:
        slatedb: Any = import_module("slatedb.uniffi")
    except ImportError as exc:
        unavailable("slatedb", f"slatedb is not installed ({exc}); make bench installs it")
        return
    try:
        peer_version = version("slatedb")
    except PackageNotFoundError:
        peer_version = "unknown"
    if args.backend == "s3":
        await on_s3(slatedb, args, peer_version)
        return
    if args.backend == "memory":
        store = slatedb.ObjectStore.resolve("memory:///")
        base = "dbs"
        where = "in-memory object store"
    else:
        # object_store's local file system takes the folder as the database path under file:///
        store = slatedb.ObjectStore.resolve("file:///")
        base = prepare(args.folder).lstrip("/")
        where = "local folder (object_store LocalFileSystem: hard-link create, no fsync)"

    async def open_and_close(path: str) -> float:
        db: Any = None

        async def open_db() -> None:
            nonlocal db
            db = await open_writer(slatedb, path, store)

        elapsed = await timed(open_db)
        await db.shutdown()
        return elapsed

    first = await open_and_close(f"{base}/first")
    opens = []
    for i in range(args.cold):
        path = f"{base}/db{i // PER_DB}"
        if i % PER_DB == 0:
            await open_and_close(path)  # creates the database; not timed
        opens.append(await open_and_close(path))
    emit(
        {
            "peer": "slatedb",
            "version": peer_version,
            "does": "DbBuilder.build(): read manifest, bump writer epoch, fence WAL, replay WAL,"
            f" start writer; compactor and GC off; {where}; histories of 3-20 manifests",
            "fsync": False,
            "first_s": first,
            "samples": {"open": opens},
            "requests": None,
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
