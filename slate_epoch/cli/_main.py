"""The ``slate-epoch`` command line: parse, run a command, render its result, exit."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, cast

import anyio

from .._retry import DEFAULT_TIMEOUT
from ._commands import check as run_check
from ._commands import claim as run_claim
from ._commands import gc as run_gc
from ._commands import history as run_history
from ._commands import inspect as run_inspect
from ._exit import EXIT_CODES, EXIT_OK, EXIT_UNEXPECTED, describe, exit_code_for
from ._render import render

__all__ = ["build_parser", "main"]

PROG: Final = "slate-epoch"
DEFAULT_HISTORY_LIMIT: Final = 20


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _role(text: str) -> str:
    if not text or not text.isprintable():
        raise argparse.ArgumentTypeError(f"must be a non-empty printable name, got {text!r}")
    return text


_WIDTH: Final = 79


def _epilog() -> str:
    lines = ["exit codes:"]
    lines += [
        textwrap.fill(meaning, _WIDTH, initial_indent=f"  {code:<3}  ", subsequent_indent=" " * 7)
        for code, meaning in EXIT_CODES.items()
    ]
    lines += [
        "",
        "URLs: file:///absolute/folder, s3://bucket/prefix?endpoint_url=...&region=...,",
        "gs://bucket/prefix, memory:// (empty; gone when the command ends).",
        "S3 credentials: the AWS chain. GCS: Application Default Credentials.",
        "Errors are one line on stderr; --debug (before COMMAND) adds the traceback.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Single-writer epochs on object storage: inspect, claim, garbage-collect, "
        "check a store.",
        epilog=_epilog(),
        formatter_class=formatter,
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, print the traceback as well"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, summary: str, description: str, *, rooted: bool = True
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=textwrap.fill(description, _WIDTH),
            epilog=_epilog(),
            formatter_class=formatter,
        )
        sub.add_argument(
            "url", metavar="URL", help="the store: file:///..., s3://..., gs://..., memory://"
        )
        if rooted:
            sub.add_argument(
                "--root",
                default="",
                help="the root under which the manifests live (default: none)",
            )
        return sub

    def timeout_flag(sub: argparse.ArgumentParser, default: float = DEFAULT_TIMEOUT) -> None:
        sub.add_argument(
            "--timeout",
            type=_seconds,
            default=default,
            help=f"give up after this many seconds, retrying transient errors until then "
            f"(exit 3; default: {default:g})",
        )

    def json_flag(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--json", action="store_true", help="print one JSON document on stdout, for scripts"
        )

    inspect = command(
        "inspect",
        "the newest manifest: each role's holder, the state's size, the GC boundary",
        "Show the newest manifest: its id, each role's epoch, claim id, when (UTC) and by whom "
        "it was claimed, the size of the application state, and the GC boundary (ids at or "
        "below it may have been deleted). For a role held through lead(), its lease: held, "
        "released, claiming (a standby is taking over) or older (left by an older epoch), its "
        "owner, how many renewals, when (UTC, the holder's clock) it was last written.",
    )
    json_flag(inspect)
    timeout_flag(inspect)
    inspect.set_defaults(run=run_inspect)

    history = command(
        "history",
        "the manifest versions, newest first",
        "List manifest versions, newest first: id, each role's epoch, size of the state, write "
        "id. Stops at --limit, at the GC boundary, or at the first version that is gone.",
    )
    history.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_HISTORY_LIMIT,
        help=f"show at most this many versions (default: {DEFAULT_HISTORY_LIMIT})",
    )
    json_flag(history)
    timeout_flag(history)
    history.set_defaults(run=run_history)

    claim = command(
        "claim",
        "claim the next epoch of a role (fences its current holder)",
        "Claim the next epoch of a role and print it. This FENCES the role's current holder: "
        "its writes fail from now on. The claim is recorded with the time and --owner.",
    )
    claim.add_argument("--role", type=_role, default="writer", help="default: writer")
    timeout_flag(claim)
    claim.add_argument(
        "--owner", default=None, help="who claims, recorded for operators (default: host:pid)"
    )
    json_flag(claim)
    claim.set_defaults(run=run_claim)

    gc = command(
        "gc",
        "delete manifest versions older than the newest --keep",
        "Delete manifest versions older than the newest --keep (never the newest). Writes the "
        "GC boundary first, then deletes; --dry-run only reports what would be deleted and "
        "changes nothing.",
    )
    gc.add_argument(
        "--keep", type=_positive_int, required=True, help="how many of the newest versions to keep"
    )
    gc.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    timeout_flag(gc)
    json_flag(gc)
    gc.set_defaults(run=run_gc)

    check = command(
        "check",
        "prove that the store enforces what slate-epoch needs (run it before production)",
        "Prove on the live store, with a few small probe objects under slate-epoch-check/ "
        "(removed again), that it enforces what slate-epoch relies on: a second create of one "
        "key is refused; of several creates of one key sent at once exactly one succeeds; an "
        "update with a stale etag is refused; one with the current etag succeeds; a listing "
        "honours start_after. Prints each check; exits 7 naming the first that failed. "
        "Touches nothing outside slate-epoch-check/.",
        rooted=False,
    )
    timeout_flag(check)
    json_flag(check)
    check.set_defaults(run=run_check)
    return parser


# -- running -----------------------------------------------------------------------------------

Command = Callable[[argparse.Namespace], Awaitable[Any]]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)  # usage errors: argparse exits 2
    run = cast(Command, args.run)
    try:
        result = anyio.run(run, args, backend="asyncio")
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"{PROG}: error: {describe(exc)}", file=sys.stderr)
        return exit_code_for(exc)
    return _write(render(result, as_json=getattr(args, "json", False)))


def _write(output: str) -> int:
    try:
        sys.stdout.write(output)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `slate-epoch history ... | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return EXIT_UNEXPECTED
    return EXIT_OK
