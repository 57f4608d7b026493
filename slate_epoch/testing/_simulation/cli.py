"""``python -m slate_epoch.testing replay|run|soak``: the simulation's command line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from .config import DEFAULT_CONFIG, SimulationConfig
from .run import SimulationReport, run_seeds, simulate

__all__ = ["main", "soak", "summary"]


_SUMMARY: Final = (
    ("seeds", "seeds"),
    ("writers", "writers"),
    ("colocated", "writers sharing a process (and its cache)"),
    ("collectors", "collectors"),
    ("readers", "readers"),
    ("foreign_objects", "foreign objects in the root's folders"),
    ("manifests", "manifests written"),
    ("long_histories", "seeds starting from a long history"),
    ("lost", "lost responses"),
    ("errors", "errors"),
    ("late", "late deliveries"),
    ("crashes", "crashes"),
    ("restarts", "restarts"),
    ("conflicts", "conflicts (a rival's write at the id)"),
    ("own_writes_found", "own writes found after a lost response"),
    ("uncontended_lost_claims", "uncontended claims with a lost response (check 5)"),
    ("claim:ok", "claims succeeded"),
    ("claim:ClaimTimeoutError", "claims timed out or past max_conflicts"),
    ("claim:max_conflicts", "... of which past max_conflicts"),
    ("claim:crashed", "claims crashed"),
    ("update:ok", "updates acknowledged"),
    ("update:FencedError", "updates fenced (FencedError: nothing landed)"),
    ("update:WriteOutcomeUnknownError", "updates fenced, outcome unknown"),
    ("landed_unknown:update", "... of which had landed"),
    ("update:OperationTimeoutError", "updates timed out"),
    ("update:crashed", "updates crashed"),
    ("fence:ok", "fences written"),
    ("fence:FencedError", "fences fenced"),
    ("append:ok", "appends acknowledged"),
    ("append:FencedError", "appends fenced (FencedError: nothing landed)"),
    ("append:WriteOutcomeUnknownError", "appends fenced, outcome unknown"),
    ("landed_unknown:append", "... of which had landed"),
    ("append:OperationTimeoutError", "appends timed out"),
    ("append:crashed", "appends crashed"),
    ("mark:ok", "replay points marked"),
    ("mark:WriteOutcomeUnknownError", "replay points fenced, outcome unknown"),
    ("landed_unknown:mark", "... of which had landed"),
    ("trim:ok", "trims"),
    ("entries_trimmed", "log objects trimmed"),
    ("gc:ok", "collections run"),
    ("gc:OperationTimeoutError", "collections timed out"),
    ("gc:crashed", "collections crashed"),
    ("versions_deleted", "versions deleted"),
    ("read:ok", "log reads that ended cleanly"),
    ("read:WalTrimmedError", "log reads told of a trim"),
    ("version:ok", "versions read by id"),
    ("version:NotFoundError", "... not found (collected, or not yet written)"),
    ("misuse:TypeError", "misuses refused with TypeError"),
    ("misuse:ValueError", "misuses refused with ValueError"),
    ("misuse:FencedError", "misuses by a fenced handle (FencedError first)"),
    ("recreations", "deleted ids written again by stale writers"),
    ("lead_seeds", "seeds with leaders (lead)"),
    ("leaders", "leaders"),
    ("operators", "operators (plain claims of the leaders' role)"),
    ("lead:lives", "leader lives (lead calls)"),
    ("lead:entered", "... of which led"),
    ("takeover:first", "... entering a role nobody led"),
    ("takeover:release", "... taking over after a release"),
    ("takeover:crash", "... taking over after a crash"),
    ("takeover:pause", "... taking over after a pause"),
    ("takeover:outage", "... taking over after a store outage"),
    ("lead:released", "leaders that returned (released)"),
    ("lead:body error", "leaders whose body raised (released, re-raised)"),
    ("lead:stopped", "leaders stopped from outside (released)"),
    ("lead:crashed", "leaders killed (no release)"),
    ("lead:FencedError", "leaders fenced (body cancelled, FencedError)"),
    ("lead:LeaseLostError", "leaders cut off (body cancelled, LeaseLostError)"),
    ("lead:ClaimTimeoutError", "standbys that gave up waiting"),
    ("lead_pause", "leader processes paused (SIGSTOP)"),
    ("lead_outage", "leader processes cut off from the store"),
    ("lead_restarts", "leaders restarted after a crash"),
    ("lead_update:ok", "leader updates acknowledged"),
    ("update:interrupted", "leader updates interrupted (body cancelled)"),
    ("succession:released_checked", "releases held to the poll bound (check 9)"),
    ("succession:stopped_checked", "stopped holders held to the lease bound (check 9)"),
    ("succession:claims_checked", "takeover claims held to their bound (check 9)"),
)


_SHOWN: Final = 20  # failing seeds described in full; the rest are counted by kind


def summary(totals: Counter[str]) -> list[str]:
    """The fault and outcome counts of a run of seeds, as lines of text."""
    return [f"{label:>52}: {totals[key]:,}" for key, label in _SUMMARY]


def _first_seeds(reports: Iterable[SimulationReport]) -> dict[str, int]:
    """Per kind of violation, the lowest seed that shows it."""
    first: dict[str, int] = {}
    for report in reports:
        for violation in report.violations:
            first[violation.kind] = min(first.get(violation.kind, report.seed), report.seed)
    return first


def _run_chunk(
    args: tuple[list[int], SimulationConfig],
) -> tuple[Counter[str], list[str], dict[str, int]]:
    seeds, config = args
    totals, failures = run_seeds(seeds, config)
    return totals, [report.describe() for report in failures], _first_seeds(failures)


def soak(
    seeds: range, config: SimulationConfig = DEFAULT_CONFIG, *, workers: int = 2, chunk: int = 50
) -> tuple[Counter[str], list[str], dict[str, int]]:
    """Run ``seeds`` on ``workers`` processes with a progress bar (``rich`` if installed): the
    summed counts, the failing seeds described, and per kind of violation its lowest seed."""
    import multiprocessing

    chunks = [(list(seeds[i : i + chunk]), config) for i in range(0, len(seeds), chunk)]
    totals: Counter[str] = Counter()
    failures: list[str] = []
    first: dict[str, int] = {}
    with _progress(len(seeds)) as advance:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers) as pool:
            for chunk_totals, chunk_failures, chunk_first in pool.imap_unordered(
                _run_chunk, chunks
            ):
                totals.update(chunk_totals)
                failures.extend(chunk_failures)
                for kind, seed in chunk_first.items():
                    first[kind] = min(first.get(kind, seed), seed)
                advance(chunk_totals["seeds"], len(failures))
    return totals, failures, first


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[int, int], None]]:
    try:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
    except ImportError:  # pragma: no cover - rich is in the dev extra
        done = 0

        def plain(seeds: int, failed: int) -> None:
            nonlocal done
            done += seeds
            print(f"\r{done}/{total} seeds, {failed} failed", end="", file=sys.stderr)

        yield plain
        print(file=sys.stderr)
        return
    columns = (
        TextColumn("[bold]simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("seeds, {task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("soak", total=total, failed=0)

        def advance(seeds: int, failed: int) -> None:
            progress.update(task, advance=seeds, failed=failed)

        yield advance


def _config_from(settings: Sequence[str]) -> SimulationConfig:
    types = {
        f.name: type(getattr(DEFAULT_CONFIG, f.name)) for f in dataclasses.fields(DEFAULT_CONFIG)
    }
    changes: dict[str, Any] = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        if name not in types:
            raise SystemExit(f"unknown setting {name!r}; known: {', '.join(types)}")
        changes[name] = types[name](value)
    return SimulationConfig(**changes)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m slate_epoch.testing {replay,run,soak}``: see ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m slate_epoch.testing",
        description="The slate-epoch deterministic simulation: replay one seed, or run many.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="run one seed and print its history")
    replay.add_argument("--seed", type=int, required=True)
    replay.add_argument("--quiet", action="store_true", help="no history, only the verdict")
    replay.add_argument("--fingerprint", action="store_true", help="print the history digest")
    many = commands.add_parser("run", help="run a range of seeds in this process")
    many.add_argument("--seeds", type=int, default=1000, help="how many seeds")
    many.add_argument("--start", type=int, default=0, help="the first seed")
    bulk = commands.add_parser("soak", help="run many seeds on several processes")
    bulk.add_argument("--seeds", type=int, default=100_000, help="how many seeds")
    bulk.add_argument("--start", type=int, default=0, help="the first seed")
    bulk.add_argument("--workers", type=int, default=2, help="processes")
    for command in (replay, many, bulk):
        command.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="change a SimulationConfig field (replay commands name them)",
        )
    args = parser.parse_args(argv)
    config = _config_from(args.set)

    if args.command == "replay":
        report = simulate(args.seed, config)
        if not args.quiet:
            print("\n".join(report.history.trace()))
            print()
        if args.fingerprint:
            print(f"fingerprint {report.history.fingerprint()}")
        print("\n".join(summary(report.counts)))
        print(report.describe() if not report.ok else f"seed {args.seed}: ok")
        return 0 if report.ok else 1

    started = time.perf_counter()
    seeds = range(args.start, args.start + args.seeds)
    if args.command == "run":
        totals, reports = run_seeds(seeds, config)
        failures = [report.describe() for report in reports]
        first = _first_seeds(reports)
    else:
        totals, failures, first = soak(seeds, config, workers=args.workers)
    elapsed = time.perf_counter() - started
    for failure in failures[:_SHOWN]:
        print(failure)
    if len(failures) > _SHOWN:
        print(f"... and {len(failures) - _SHOWN:,} more failing seeds")
    print("\n".join(summary(totals)))
    print(f"{'violations':>52}: {len(failures):,} seed(s)")
    for key, seeds_with in totals.most_common():
        if key.startswith("violation "):
            kind = key.removeprefix("violation ")
            print(f"{seeds_with:>12,} seeds: {kind} (first: seed {first[kind]})")
    print(f"{'wall time':>52}: {elapsed:.1f} s ({totals['seeds'] / elapsed:,.0f} seeds/s)")
    return 1 if failures else 0
