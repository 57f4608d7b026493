"""Exit codes, and how an error becomes one line on stderr."""

from __future__ import annotations

from typing import Final

from .._errors import (
    FencedError,
    InvalidKeyError,
    ManifestCorruptError,
    OperationTimeoutError,
    SlateEpochError,
    UnsupportedFormatError,
    UnsupportedStoreError,
)

__all__ = [
    "EXIT_CODES",
    "EXIT_CORRUPT",
    "EXIT_FENCED",
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING_THERE",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNEXPECTED",
    "EXIT_UNSUPPORTED_STORE",
    "EXIT_USAGE",
    "CliError",
    "NothingThereError",
    "UsageError",
    "describe",
    "exit_code_for",
]

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1
EXIT_USAGE: Final = 2
EXIT_TIMEOUT: Final = 3
EXIT_FENCED: Final = 4
EXIT_CORRUPT: Final = 5
EXIT_NOTHING_THERE: Final = 6
EXIT_UNSUPPORTED_STORE: Final = 7
EXIT_INTERRUPTED: Final = 130

EXIT_CODES: Final = {
    EXIT_OK: "ok",
    EXIT_UNEXPECTED: "unexpected error, or a store error (missing bucket, access denied, store "
    "unreachable)",
    EXIT_USAGE: "usage: unknown command or option, invalid URL, root or value",
    EXIT_TIMEOUT: "timeout: the operation's deadline passed (OperationTimeoutError, "
    "ClaimTimeoutError)",
    EXIT_FENCED: "fenced: a newer epoch holds the role (FencedError, WriteOutcomeUnknownError)",
    EXIT_CORRUPT: "corrupt or unsupported manifest (ManifestCorruptError, UnsupportedFormatError)",
    EXIT_NOTHING_THERE: "nothing there: no manifest under the root (or no such folder)",
    EXIT_UNSUPPORTED_STORE: "unsupported store: it does not enforce the conditional writes "
    "slate-epoch needs (UnsupportedStoreError; `check` names the first check that failed)",
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
    if isinstance(exc, FencedError):  # WriteOutcomeUnknownError included
        return EXIT_FENCED
    if isinstance(exc, UnsupportedStoreError):
        return EXIT_UNSUPPORTED_STORE
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
