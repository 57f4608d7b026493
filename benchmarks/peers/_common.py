"""What the peer scripts share: arguments, the timing loop and the result line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

MARKER = "BENCH-RESULT "
HISTORY = 10  # manifests written before measuring, as in the in-process scenarios


def arguments(description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", required=True, help="memory, local or local-nofsync")
    parser.add_argument("--folder", required=True, help="an empty folder for local stores")
    parser.add_argument("--warm", type=int, default=100, help="warm samples")
    parser.add_argument("--cold", type=int, default=50, help="cold samples")
    return parser.parse_args()


async def timed(operation: Callable[[], Awaitable[object]]) -> float:
    start = perf_counter()
    await operation()
    return perf_counter() - start


def emit(result: dict[str, Any]) -> None:
    """Print the result line (the runner reads the last line starting with ``MARKER``)."""
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def unavailable(peer: str, reason: str) -> None:
    emit({"peer": peer, "unavailable": reason})
