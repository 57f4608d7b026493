"""The ``slate-epoch`` command line: who holds each role, what happened, claim, retention, and
whether a store can be trusted at all.

``slate-epoch [--debug] COMMAND ...``, where COMMAND is ``inspect``, ``history``, ``claim``,
``gc`` or ``check``; ``slate-epoch COMMAND --help`` for each. ``main(argv)`` returns the exit
code (see ``EXIT_CODES``); errors are one line on stderr, with the traceback only under
``--debug``.

Each command (``_commands``) opens the store with ``async with open_store(url)``, does its work
under ``--timeout`` (retrying transient errors until then) on asyncio, and returns a result;
``_render`` shows it as text or, with ``--json``, as one JSON document.
"""

from ._exit import (
    EXIT_CODES,
    EXIT_CORRUPT,
    EXIT_FENCED,
    EXIT_INTERRUPTED,
    EXIT_NOTHING_THERE,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNEXPECTED,
    EXIT_UNSUPPORTED_STORE,
    EXIT_USAGE,
    exit_code_for,
)
from ._main import build_parser, main

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
    "build_parser",
    "exit_code_for",
    "main",
]
