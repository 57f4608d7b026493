"""SlateDB's writer open, through its official Python bindings (PyPI ``slatedb``):
``python -m benchmarks.peers.slatedb_open``.

Each sample builds a new ``DbBuilder`` on one ``ObjectStore`` and awaits ``build()``: SlateDB
reads the newest manifest, bumps ``writer_epoch`` (a create-if-absent manifest write), fences
its WAL (a create-if-absent empty WAL object), replays the WAL and starts the writer. The
compactor and the garbage collector are switched off, so the open does the writer's work only.
``shutdown()`` after each open is not timed (it writes one more manifest). Every open starts
from nothing cached: these are cold opens, reported as ``open`` and compared with slate-epoch's
open (a cold claim + ``fence_wal()``, ``benchmarks.peers.ours``). The first open in the process
(tokio runtime start, database creation) is reported apart.

SlateDB's open lists its manifest and WAL folders, so it slows down as they grow (without GC,
400 open/close cycles take it from about 2 ms to 18 ms on a local folder here). To compare at
a history like ours (10 manifests), each database is opened ``PER_DB`` times, then the next
sample starts a new one (created by an untimed open): histories stay between 3 and about 20
manifests.
"""

from __future__ import annotations

import asyncio
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ._common import arguments, emit, timed, unavailable

PER_DB = 8


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
        builder = slatedb.DbBuilder(path, store)
        settings = slatedb.Settings.default()
        settings.set("compactor_options", "null")
        settings.set("garbage_collector_options", "null")
        builder.with_settings(settings)
        db: Any = None

        async def open_db() -> None:
            nonlocal db
            db = await builder.build()

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
