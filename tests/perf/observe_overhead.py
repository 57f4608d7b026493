"""What observability costs a warm in-memory claim when nobody listens: this checkout's code
against an earlier revision's, in one process, alternating (ABBA) so that both see the same
machine load.

    python -m tests.perf.observe_overhead REVISION [--rounds 40] [--claims 3000] [--trio]

The revision's ``slate_epoch`` (and its memory store) is exported with ``git archive`` and
imported under another name, ``slate_base``. Logging stays at Python's default (WARNING, no
handler configured); nothing imports OpenTelemetry. Prints the median time of one claim for
each, and the median of the per-round ratios. Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import importlib
import io
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

import slate_epoch
from slate_epoch.backends.memory import MemoryStore

Claim = Callable[[Any], Awaitable[object]]


def export(revision: str, into: Path) -> None:
    """The revision's package as ``into/slate_base``, with its memory backend inside."""
    archive = subprocess.run(
        ["git", "archive", revision, "slate_epoch", "backends"],
        capture_output=True,
        check=True,
        cwd=Path(slate_epoch.__file__).parent.parent,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "slate_base"
    (into / "slate_epoch").rename(package)
    (package / "backends").unlink()  # a symlink to ../backends in the checkout
    (package / "backends").mkdir()
    for name in ("__init__.py", "memory.py"):
        text = (into / "backends" / name).read_text()
        (package / "backends" / name).write_text(text.replace("slate_epoch.", "slate_base."))
    shutil.rmtree(into / "backends")


async def median_claim(claim: Claim, store: object, claims: int) -> float:
    samples = []
    for _ in range(claims):
        started = time.perf_counter_ns()
        await claim(store)
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


async def compare(rounds: int, claims: int) -> None:
    base: Any = importlib.import_module("slate_base")
    base_memory: Any = importlib.import_module("slate_base.backends.memory")
    old_store, new_store = base_memory.MemoryStore(), MemoryStore()
    for _ in range(300):  # warm: both caches know the root, the code paths are hot
        await base.claim_epoch(old_store)
        await slate_epoch.claim_epoch(new_store)
    old: list[float] = []
    new: list[float] = []
    for index in range(rounds):
        pair = [
            (old, base.claim_epoch, old_store),
            (new, slate_epoch.claim_epoch, new_store),
        ]
        for samples, claim, store in pair if index % 2 == 0 else reversed(pair):
            samples.append(await median_claim(claim, store, claims))
    ratios = [b / a for a, b in zip(old, new, strict=True)]
    print(
        f"before {statistics.median(old):.2f} us, after {statistics.median(new):.2f} us per warm "
        f"claim; paired ratio median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {rounds} rounds of {claims})"
    )
    assert "opentelemetry" not in sys.modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="the code to compare with (a git revision)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--claims", type=int, default=3000)
    parser.add_argument("--trio", action="store_true", help="run on trio instead of asyncio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        export(args.revision, Path(folder))
        sys.path.insert(0, folder)
        anyio.run(compare, args.rounds, args.claims, backend="trio" if args.trio else "asyncio")


if __name__ == "__main__":
    main()
