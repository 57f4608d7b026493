"""The ``slate-epoch`` command line: who holds each role, what happened, claim, retention.

``slate-epoch [--debug] COMMAND ...``, where COMMAND is ``inspect``, ``history``, ``claim`` or
``gc``; ``slate-epoch COMMAND --help`` for each. ``main(argv)`` returns the exit code (see
``EXIT_CODES``); errors are one line on stderr, with the traceback only under ``--debug``.

Every command opens the store with ``async with open_store(url)`` and runs under
``anyio.run`` on asyncio (the S3 store needs asyncio).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

import anyio

from ._claim import DEFAULT_TIMEOUT, claim_epoch
from ._errors import (
    FencedError,
    InvalidKeyError,
    ManifestCorruptError,
    NotFoundError,
    OperationTimeoutError,
    SlateEpochError,
    UnsupportedFormatError,
)
from ._gc import collect_garbage
from ._lease import Lease, read_lease
from ._manifest import Manifest, ManifestStore, RoleClaim
from ._open import open_store
from ._store import ObjectStore

__all__ = [
    "EXIT_CODES",
    "EXIT_CORRUPT",
    "EXIT_FENCED",
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING_THERE",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "build_parser",
    "exit_code_for",
    "main",
]

PROG: Final = "slate-epoch"

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1
EXIT_USAGE: Final = 2
EXIT_TIMEOUT: Final = 3
EXIT_FENCED: Final = 4
EXIT_CORRUPT: Final = 5
EXIT_NOTHING_THERE: Final = 6
EXIT_INTERRUPTED: Final = 130

EXIT_CODES: Final = {
    EXIT_OK: "ok",
    EXIT_UNEXPECTED: "unexpected error, or a store error (missing bucket, access denied, store "
    "unreachable)",
    EXIT_USAGE: "usage: unknown command or option, invalid URL, root or value",
    EXIT_TIMEOUT: "timeout: the operation's deadline passed (OperationTimeoutError, "
    "ClaimTimeoutError)",
    EXIT_FENCED: "fenced: a newer epoch holds the role (FencedError)",
    EXIT_CORRUPT: "corrupt or unsupported manifest (ManifestCorruptError, UnsupportedFormatError)",
    EXIT_NOTHING_THERE: "nothing there: no manifest under the root (or no such folder)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

DEFAULT_HISTORY_LIMIT: Final = 20
DEFAULT_GC_TIMEOUT: Final = 60.0


# -- errors and exit codes ---------------------------------------------------------------------


class CliError(Exception):
    """An error the command line reports with its own message and exit code."""

    exit_code = EXIT_UNEXPECTED


class UsageError(CliError):
    exit_code = EXIT_USAGE


class NothingThereError(CliError):
    exit_code = EXIT_NOTHING_THERE


def exit_code_for(exc: BaseException) -> int:
    """The exit code that reports ``exc``."""
    if isinstance(exc, CliError):
        return exc.exit_code
    if isinstance(exc, FencedError):
        return EXIT_FENCED
    if isinstance(exc, OperationTimeoutError):  # ClaimTimeoutError included
        return EXIT_TIMEOUT
    if isinstance(exc, ManifestCorruptError | UnsupportedFormatError):
        return EXIT_CORRUPT
    if isinstance(exc, InvalidKeyError):  # e.g. --root "../x"
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_UNEXPECTED


def describe(exc: BaseException) -> str:
    """``exc`` as one line: ``ErrorClass: message`` (our own errors: just the message)."""
    message = " ".join(str(exc).split())  # one line, whatever the message holds
    if isinstance(exc, CliError):
        return message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    line = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if not isinstance(exc, SlateEpochError):
        line += " (--debug shows the traceback)"
    return line


# -- the parser --------------------------------------------------------------------------------


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
        "memory:// (empty; gone when the command ends). S3 credentials: the AWS chain.",
        "Errors are one line on stderr; --debug (before COMMAND) adds the traceback.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Single-writer epochs on object storage: inspect, claim, garbage-collect.",
        epilog=_epilog(),
        formatter_class=formatter,
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, print the traceback as well"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=textwrap.fill(description, _WIDTH),
            epilog=_epilog(),
            formatter_class=formatter,
        )
        sub.add_argument("url", metavar="URL", help="the store: file:///..., s3://..., memory://")
        sub.add_argument(
            "--root", default="", help="the root under which the manifests live (default: none)"
        )
        return sub

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
    inspect.set_defaults(run=_inspect)

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
    history.set_defaults(run=_history)

    claim = command(
        "claim",
        "claim the next epoch of a role (fences its current holder)",
        "Claim the next epoch of a role and print it. This FENCES the role's current holder: "
        "its writes fail from now on. The claim is recorded with the time and --owner.",
    )
    claim.add_argument("--role", type=_role, default="writer", help="default: writer")
    claim.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"give up after this many seconds (exit 3; default: {DEFAULT_TIMEOUT:g})",
    )
    claim.add_argument(
        "--owner", default=None, help="who claims, recorded for operators (default: host:pid)"
    )
    json_flag(claim)
    claim.set_defaults(run=_claim)

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
    gc.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_GC_TIMEOUT,
        help=f"give up after this many seconds (exit 3; default: {DEFAULT_GC_TIMEOUT:g})",
    )
    json_flag(gc)
    gc.set_defaults(run=_gc)
    return parser


# -- running -----------------------------------------------------------------------------------

Command = Callable[[argparse.Namespace], Awaitable[str]]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)  # usage errors: argparse exits 2
    run = cast(Command, args.run)
    try:
        output = anyio.run(run, args, backend="asyncio")
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"{PROG}: error: {describe(exc)}", file=sys.stderr)
        return exit_code_for(exc)
    return _write(output)


def _write(output: str) -> int:
    try:
        sys.stdout.write(output)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `slate-epoch history ... | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return EXIT_UNEXPECTED
    return EXIT_OK


@asynccontextmanager
async def _opened(url: str, *, must_exist: bool) -> AsyncIterator[ObjectStore]:
    """The store ``url`` names, open. With ``must_exist`` (every command but ``claim``), a local
    folder that does not exist is "nothing there" (exit 6), never created."""
    if must_exist:
        _refuse_missing_folder(url)
    try:
        store = open_store(url)
    except (ValueError, TypeError) as exc:  # never echo the URL: open_store words it safely
        raise UsageError(f"invalid URL: {exc}") from exc
    async with store:
        yield store


def _refuse_missing_folder(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return
    if parts.query or parts.fragment:
        return  # open_store refuses it as a usage error
    path = unquote(parts.path)
    if path.startswith("/") and path != "/" and not Path(path).exists():
        raise NothingThereError(f"nothing there: no folder {path}")


def _manifests(store: ObjectStore, root: str) -> ManifestStore:
    return ManifestStore(store, root)  # InvalidKeyError (exit 2) for a bad root, before any I/O


def _where(root: str) -> str:
    return f"root {root!r}" if root.strip("/") else "the store's top level (no --root)"


async def _read_latest(manifests: ManifestStore, root: str) -> tuple[int, Manifest]:
    latest = await manifests.read_latest()
    if latest is None:
        raise NothingThereError(f"nothing there: no manifest under {_where(root)}")
    return latest


def _iso(ms: int) -> str | None:
    if ms <= 0:
        return None  # a claim written before timestamps were recorded
    seconds, millis = divmod(ms, 1000)  # integer arithmetic: no float rounding of the ms
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=millis * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Plain aligned columns; columns in ``right`` are right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _ranges(ids: Sequence[int]) -> str:
    """``1-3, 7`` for ids 1, 2, 3, 7."""
    spans: list[tuple[int, int]] = []
    for manifest_id in sorted(ids):
        if spans and manifest_id == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], manifest_id)
        else:
            spans.append((manifest_id, manifest_id))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _bytes(size: int) -> str:
    return f"{size} B"


# -- inspect -----------------------------------------------------------------------------------


def _claim_document(claim: RoleClaim) -> dict[str, Any]:
    return {
        "epoch": claim.epoch,
        "claim_id": claim.claim_id,
        "claimed_at": _iso(claim.claimed_at_ms),
        "claimed_at_ms": claim.claimed_at_ms or None,
        "owner": claim.owner or None,
        "last_write_id": claim.last_write_id or None,
    }


def _lease_state(claim: RoleClaim, lease: Lease) -> str:
    if lease.claiming:
        return "claiming"  # a standby won the lease and is claiming the role
    if not lease.speaks_for(claim.epoch, claim.claim_id):
        return "older"  # left by an older epoch: the holder claimed without lead()
    return "released" if lease.released else "held"


def _lease_document(claim: RoleClaim, lease: Lease | None) -> dict[str, Any] | None:
    if lease is None:
        return None
    return {
        "state": _lease_state(claim, lease),
        "epoch": lease.epoch,
        "owner": lease.owner or None,
        "renewals": lease.renewals,
        "released": lease.released,
        "lease_seconds": lease.lease,
        "renewed_at": _iso(lease.renewed_at_ms),
        "renewed_at_ms": lease.renewed_at_ms or None,
    }


def _lease_lines(manifest: Manifest, leases: dict[str, Lease | None]) -> list[str]:
    rows = [
        [
            claim.role,
            _lease_state(claim, lease),
            str(lease.epoch),
            lease.owner or "-",
            str(lease.renewals),
            _iso(lease.renewed_at_ms) or "-",
            f"{lease.lease:g}",
        ]
        for claim in manifest.roles
        if (lease := leases.get(claim.role)) is not None
    ]
    if not rows:
        return []
    headers = ["ROLE", "LEASE", "EPOCH", "OWNER", "RENEWALS", "WRITTEN AT (UTC)", "SECONDS"]
    return ["", *_table(headers, rows, right={2, 4, 6})]


async def _inspect(args: argparse.Namespace) -> str:
    root: str = args.root
    async with _opened(args.url, must_exist=True) as store:
        manifests = _manifests(store, root)
        latest_id, manifest = await _read_latest(manifests, root)
        boundary = await manifests.read_boundary()
        leases = {c.role: await read_lease(store, root, role=c.role) for c in manifest.roles}
    if args.json:
        return _json(
            {
                "root": root,
                "latest_id": latest_id,
                "gc_boundary": boundary,
                "state_size": len(manifest.state),
                "write_id": manifest.write_id,
                "roles": {claim.role: _claim_document(claim) for claim in manifest.roles},
                "leases": {
                    claim.role: _lease_document(claim, leases[claim.role])
                    for claim in manifest.roles
                },
            }
        )
    gc_note = f"{boundary} (ids 1-{boundary} may be gone)" if boundary else "0 (never collected)"
    lines = [
        f"root         {root.strip('/') or '(top level)'}",
        f"latest id    {latest_id}",
        f"state        {_bytes(len(manifest.state))}",
        f"write id     {manifest.write_id or '-'}",
        f"gc boundary  {gc_note}",
        "",
    ]
    rows = [
        [
            claim.role,
            str(claim.epoch),
            claim.claim_id,
            _iso(claim.claimed_at_ms) or "-",
            claim.owner or "-",
        ]
        for claim in manifest.roles
    ]
    if rows:
        headers = ["ROLE", "EPOCH", "CLAIM ID", "CLAIMED AT (UTC)", "OWNER"]
        lines += _table(headers, rows, right={1})
        lines += _lease_lines(manifest, leases)
    else:
        lines.append("(no role claimed)")
    return "\n".join(lines) + "\n"


# -- history -----------------------------------------------------------------------------------


async def _history(args: argparse.Namespace) -> str:
    root: str = args.root
    limit: int = args.limit
    async with _opened(args.url, must_exist=True) as store:
        manifests = _manifests(store, root)
        # The boundary first: anything GC deletes after this read shows up as a missing id.
        boundary = await manifests.read_boundary()
        latest_id, latest = await _read_latest(manifests, root)
        versions = [(latest_id, latest)]
        next_id = latest_id - 1
        gone_from = 0  # an id found missing below the boundary's promise (GC at work)
        while len(versions) < limit and next_id >= 1 and next_id > boundary:
            try:
                versions.append((next_id, await manifests.read(next_id)))
            except NotFoundError:
                gone_from = next_id
                break
            next_id -= 1
    more = not gone_from and next_id >= 1 and next_id > boundary
    if args.json:
        return _json(
            {
                "root": root,
                "latest_id": latest_id,
                "gc_boundary": boundary,
                "more": more,
                "versions": [
                    {
                        "id": manifest_id,
                        "epochs": {claim.role: claim.epoch for claim in manifest.roles},
                        "state_size": len(manifest.state),
                        "write_id": manifest.write_id,
                    }
                    for manifest_id, manifest in versions
                ],
            }
        )
    rows = [
        [
            str(manifest_id),
            " ".join(f"{claim.role}={claim.epoch}" for claim in manifest.roles) or "-",
            _bytes(len(manifest.state)),
            manifest.write_id or "-",
        ]
        for manifest_id, manifest in versions
    ]
    lines = _table(["ID", "EPOCHS", "STATE", "WRITE ID"], rows, right={0, 2})
    if more:
        lines.append(f"(older versions not shown: --limit {limit})")
    elif gone_from:
        lines.append(f"(ids {gone_from} and below are gone: garbage-collected)")
    elif next_id >= 1:
        lines.append(f"(ids 1-{next_id} were garbage-collected)")
    return "\n".join(lines) + "\n"


# -- claim -------------------------------------------------------------------------------------


async def _claim(args: argparse.Namespace) -> str:
    root: str = args.root
    async with _opened(args.url, must_exist=False) as store:
        _manifests(store, root)  # a bad root is a usage error, found before any I/O
        handle = await claim_epoch(
            store, root, role=args.role, timeout=args.timeout, owner=args.owner
        )
    claim = handle.manifest.claim(handle.role)
    assert claim is not None  # the handle's own manifest carries its claim
    if args.json:
        return _json(
            {
                "root": root,
                "role": handle.role,
                "epoch": handle.epoch,
                "manifest_id": handle.manifest_id,
                "claim_id": handle.claim_id,
                "claimed_at": _iso(claim.claimed_at_ms),
                "owner": claim.owner or None,
            }
        )
    return (
        f"role {handle.role!r}: epoch {handle.epoch} (manifest {handle.manifest_id}, "
        f"claim id {handle.claim_id})\n"
    )


# -- gc ----------------------------------------------------------------------------------------


async def _gc(args: argparse.Namespace) -> str:
    root: str = args.root
    keep: int = args.keep
    async with _opened(args.url, must_exist=True) as store:
        _manifests(store, root)
        report = await collect_garbage(
            store, root, keep=keep, dry_run=args.dry_run, timeout=args.timeout
        )
    if report.latest_id == 0:
        raise NothingThereError(f"nothing there: no manifest under {_where(root)}")
    deleted = sorted(report.deleted)
    if args.json:
        return _json(
            {
                "root": root,
                "latest_id": report.latest_id,
                "gc_boundary": report.boundary,
                "deleted": deleted,
                "dry_run": report.dry_run,
            }
        )
    verb = "would delete" if report.dry_run else "deleted"
    if deleted:
        what = f"{verb} {len(deleted)} manifest version{'s' if len(deleted) != 1 else ''}: "
        what += _ranges(deleted)
    else:
        what = f"{verb} nothing"
    return (
        f"{what}\n"
        f"gc boundary {report.boundary} (ids at or below it may be gone); "
        f"latest id {report.latest_id}, keeping the newest {keep}\n"
    )
