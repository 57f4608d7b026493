"""What observability costs a warm in-memory claim: ``python -m benchmarks.peers.observed_claim
--revision REV`` (run by the ``observability`` scenario, in its own process).

The revision's ``slate_epoch`` (with its memory store) is exported with ``git archive`` and
imported under another name, ``slate_base``: the same claim, before observability. Each round
times ``--claims`` warm claims of each side, alternating which goes first (ABBA), so both meet
the same machine; the figure is the median of the per-round ratios. Three ways of running this
checkout's code, in this order (an OpenTelemetry provider, once set, stays set):

- ``quiet``: logging as Python leaves it (WARNING, no handler configured), nothing imports
  OpenTelemetry: what every service that does not ask for records pays;
- ``info``: ``slate_epoch`` at INFO into a handler that drops every record;
- ``otel``: the OpenTelemetry SDK configured (a tracer provider with no exporter, a meter
  provider with an in-memory reader), if it is installed.
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
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

from ._common import emit, unavailable

PEER = "slate-epoch"
Claim = Callable[[Any], Awaitable[object]]


def export(revision: str, into: Path) -> None:
    """The revision's package as ``into/slate_base``, with its memory backend inside."""
    archive = subprocess.run(
        ["git", "archive", revision, "slate_epoch", "backends"],
        capture_output=True,
        check=True,
        cwd=Path(slate_epoch.__file__).resolve().parent.parent,
        timeout=60,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "slate_base"
    (into / "slate_epoch").rename(package)
    (package / "backends").unlink(missing_ok=True)  # a symlink to ../backends in the checkout
    (package / "backends").mkdir()
    for name in ("__init__.py", "memory.py"):
        text = (into / "backends" / name).read_text()
        (package / "backends" / name).write_text(text.replace("slate_epoch.", "slate_base."))
    shutil.rmtree(into / "backends")


async def _median_claim(claim: Claim, store: object, claims: int) -> float:
    samples = []
    for _ in range(claims):
        started = time.perf_counter()
        await claim(store)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def _compare(rounds: int, claims: int) -> dict[str, Any]:
    base: Any = importlib.import_module("slate_base")
    base_memory: Any = importlib.import_module("slate_base.backends.memory")
    old_store, new_store = base_memory.MemoryStore(), MemoryStore()
    for _ in range(300):  # warm: both caches know the root, the code paths are hot
        await base.claim_epoch(old_store)
        await slate_epoch.claim_epoch(new_store)
    samples: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}

    async def rounds_of(mode: str) -> None:
        old, new = samples.setdefault(f"before, {mode}", []), samples.setdefault(mode, [])
        for index in range(rounds):
            pair = [
                (old, base.claim_epoch, old_store),
                (new, slate_epoch.claim_epoch, new_store),
            ]
            for into, claim, store in pair if index % 2 == 0 else reversed(pair):
                into.append(await _median_claim(claim, store, claims))
        ratios[mode] = [b / a for a, b in zip(old, new, strict=True)]

    await rounds_of("quiet")
    assert "opentelemetry" not in sys.modules
    logger = logging.getLogger("slate_epoch")
    dropping = logging.NullHandler()
    logger.addHandler(dropping)
    logger.setLevel(logging.INFO)
    await anyio.sleep(1.1)  # the library looks again for listeners at most once a second
    await rounds_of("info")
    logger.removeHandler(dropping)
    logger.setLevel(logging.NOTSET)
    if _configure_otel():
        await anyio.sleep(1.1)
        await rounds_of("otel")
    return {"samples": samples, "ratios": ratios}


def _configure_otel() -> bool:
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return False
    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revision", required=True, help="the code before (a git revision)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        try:
            export(args.revision, Path(folder))
        except (OSError, subprocess.SubprocessError) as exc:
            unavailable(PEER, f"cannot export revision {args.revision}: {exc}")
            return
        sys.path.insert(0, folder)
        result = anyio.run(_compare, args.rounds, args.claims, backend=args.loop)
    emit({"peer": PEER, "version": slate_epoch.__version__, "revision": args.revision, **result})


if __name__ == "__main__":
    main()
