"""``python -m benchmarks``: what a claim costs, how it scales, how it recovers, beside the peers,
and on S3 at a real region's latency.

Runs every scenario (``benchmarks.scenarios``) on the embedded backends (memory, a local folder
with and without fsync), plus S3 against a local moto server with ``--s3`` (which also runs
``s3_latency``: the same server behind a proxy that adds ``--s3-latency`` ms to each request);
prints one table and writes ``results.json``, ``table.md`` and ``results.png`` to ``--out``
(default ``bench-results/``). ``--quick`` runs every scenario with few samples, in seconds.
Nothing is asserted: medians, p90 and p99, and ratios between numbers measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .model import Job, Row, Run, Scenario
from .report import chart, markdown, print_table, write_json
from .scenarios import registered
from .stores import Environment

EMBEDDED = ("memory", "local", "local-nofsync")
LOOPS = ("asyncio", "trio")
DEFAULT_LATENCY_MS = 20.0


def parse(argv: Sequence[str] | None, names: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few samples: seconds, not minutes")
    parser.add_argument(
        "--s3", action="store_true", help="add S3 (a local moto server), and s3_latency"
    )
    parser.add_argument(
        "--s3-latency",
        type=float,
        default=None,
        metavar="MS",
        help=f"ms added to each S3 request in s3_latency (default {DEFAULT_LATENCY_MS:g}; "
        "implies --s3)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder")
    parser.add_argument(
        "--only",
        default=",".join(names),
        help=f"comma-separated scenarios (default: all of {','.join(names)})",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where local stores go")
    args = parser.parse_args(argv)
    if args.s3_latency is not None and args.s3_latency < 0:
        parser.error("--s3-latency must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    known = registered()
    names = [s.name for s in known]
    args = parse(argv, names)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(names))
    if unknown:
        print(f"unknown scenario(s) {unknown}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    chosen = [s for s in known if s.name in only]
    notes: list[str] = []
    started = time.perf_counter()
    load_before = os.getloadavg()
    with ExitStack() as stack:
        workdir = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-", dir=args.workdir))
        )
        s3 = args.s3 or args.s3_latency is not None
        endpoint = _start_s3(stack, workdir, notes) if s3 else None
        run = Run(
            quick=args.quick,
            env=Environment(workdir, endpoint),
            backends=(*EMBEDDED, *(["s3"] if endpoint else [])),
            loops=LOOPS,
            stack=stack,
            s3_latency_ms=DEFAULT_LATENCY_MS if args.s3_latency is None else args.s3_latency,
        )
        rows, timings, failed = _run(chosen, run, notes)
    meta = _meta(argv, args.quick, time.perf_counter() - started, load_before)
    meta["out"] = str(args.out)
    meta["s3_latency_ms"] = run.s3_latency_ms if run.s3 else None
    meta["jobs"] = timings
    args.out.mkdir(parents=True, exist_ok=True)
    problem = chart(args.out / "results.png", rows, known)
    if problem:
        notes.append(problem)
    write_json(args.out / "results.json", rows, meta, notes, known)
    (args.out / "table.md").write_text(markdown(rows, meta, notes, known))
    print_table(rows, notes, known)
    written = ["results.json", "table.md", *([] if problem else ["results.png"])]
    print(f"\nwrote {', '.join(written)} to {args.out}/ in {meta['wall_s']:.0f} s")
    return 1 if failed else 0


def _run(
    scenarios: Sequence[Scenario[Any]], run: Run, notes: list[str]
) -> tuple[list[Row], list[dict[str, Any]], bool]:
    """Run every job under the progress bar; a job that raises becomes a failed row. What a job
    leaves in the work folder is deleted right after it: young files are cheap to delete, while
    deleting thousands of written-back files at the end can take minutes (``discard``)."""
    workdir = run.env.workdir
    rows: list[Row] = []
    timings: list[dict[str, Any]] = []
    failed = False
    plans = [(scenario, scenario.plan(run)) for scenario in scenarios]
    total = sum(len(jobs) for _, jobs in plans)
    with _progress(total) as step:
        for scenario, jobs in plans:
            produced: list[Row] = []
            for job in jobs:
                step(f"{job.scenario}: {job.label}")
                before = set(workdir.iterdir())
                started = time.perf_counter()
                try:
                    produced += job.run()
                except Exception as exc:
                    failed = True
                    produced.append(_failed_row(job, exc))
                measured = time.perf_counter() - started
                for path in set(workdir.iterdir()) - before:
                    shutil.rmtree(path, ignore_errors=True)
                os.sync()  # let the disk settle (writeback, discards) before the next job
                timings.append(
                    {
                        "scenario": job.scenario,
                        "job": job.label,
                        "seconds": measured,
                        "cleanup_seconds": time.perf_counter() - started - measured,
                    }
                )
            finished = scenario.finish([r for r in produced if "error" not in r.values])
            rows += finished
            rows += [r for r in produced if "error" in r.values]
            notes += scenario.notes(run, finished)
        step(None)
    return rows, timings, failed


def _failed_row(job: Job, exc: Exception) -> Row:
    text = "".join(traceback.format_exception_only(exc)).strip()
    traceback.print_exc()
    return Row(
        job.scenario, "-", job.label, None, None, 0, None, f"FAILED: {text}", {"error": text}
    )


@contextmanager
def _progress(total: int) -> Iterator[Callable[[str | None], None]]:
    """A progress bar (rich) or, without rich, one line per job on stderr. ``step(label)``
    starts the next job; ``step(None)`` completes the last."""
    try:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        count = 0

        def plain(label: str | None) -> None:
            nonlocal count
            if label is not None:
                count += 1
                print(f"[{count}/{total}] {label}", file=sys.stderr, flush=True)

        yield plain
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    # Two refreshes a second: the bar's thread takes the GIL briefly, so few is better.
    with Progress(*columns, refresh_per_second=2, transient=False) as progress:
        task = progress.add_task("starting", total=total)
        started = False

        def bar(label: str | None) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, description=label or "done")

        yield bar


def _start_s3(stack: ExitStack, workdir: Path, notes: list[str]) -> str | None:
    """Start a moto server (slate_epoch.testing.servers) if S3Store imports; else a note."""
    try:
        import slate_epoch.backends.s3  # noqa: F401
        from slate_epoch.testing.servers import TEST_ENVIRONMENT, UNSET_ENVIRONMENT, MotoServer
    except ImportError as exc:
        notes.append(f"S3 skipped: the S3 backend is not importable ({exc})")
        return None
    for name in UNSET_ENVIRONMENT:
        os.environ.pop(name, None)
    os.environ.update(TEST_ENVIRONMENT)  # dummy credentials; nothing talks to real AWS
    server = stack.enter_context(MotoServer(workdir / "moto"))
    notes.append(
        "S3: a moto server on 127.0.0.1 serving one request at a time (as in the tests); "
        "latency is moto's, not AWS's. Cold S3 claims reuse the open client's connections."
    )
    return server.endpoint_url


def _meta(argv: Sequence[str], quick: bool, wall: float, load: tuple[float, ...]) -> dict[str, Any]:
    def package(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{cpus} cores ({_cpu_model()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        "nproc": cpus,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": " ".join(["python -m benchmarks", *argv]),
        "quick": quick,
        "wall_s": wall,
        "load_average_before": load,
        "load_average_after": os.getloadavg(),
        "versions": {
            name: package(name)
            for name in ("slate-epoch", "anyio", "trio", "msgspec", "slatedb", "obstore")
        },
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
