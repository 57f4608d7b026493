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
EARLIER_WRITERS = 8  # on the fenced log of s3_latency: writers that claimed and fenced before


class S3Case:
    """The cases the S3 scripts report (their ``samples`` and ``requests`` keys), which the
    ``s3_latency`` scenario reads."""

    ROUND_TRIP = "round trip"  # one GET through the proxy
    ROUND_TRIP_DIRECT = "round trip, no proxy"
    WARM_CLAIM = "warm claim"
    UPDATE = "update"
    OPEN_EMPTY = "open, empty log"
    OPEN_FENCED = f"open, {EARLIER_WRITERS} earlier fences"
    SECOND_STORE = "second S3Store open"
    SLATEDB_OPEN_EMPTY = "open, 1 earlier writer"
    SLATEDB_OPEN_FENCED = f"open, {EARLIER_WRITERS} earlier writers"


def arguments(description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", required=True, help="memory, local, local-nofsync or s3")
    parser.add_argument("--folder", required=True, help="an empty folder for local stores")
    parser.add_argument("--warm", type=int, default=100, help="warm samples")
    parser.add_argument("--cold", type=int, default=50, help="cold samples")
    parser.add_argument("--bucket", help="s3: an empty bucket")
    parser.add_argument("--endpoint", help="s3: the server, as measured (behind the proxy)")
    parser.add_argument("--setup-endpoint", help="s3: the same server, for untimed setup")
    args = parser.parse_args()
    if args.backend == "s3" and not (args.bucket and args.endpoint and args.setup_endpoint):
        parser.error("--backend s3 needs --bucket, --endpoint and --setup-endpoint")
    return args


def proxy_counts(endpoint: str) -> dict[str, int]:
    """What the latency proxy at ``endpoint`` relayed so far: ``requests``, ``connections``."""
    from urllib.request import urlopen

    from ..latency_proxy import STATS_PATH

    with urlopen(endpoint + STATS_PATH, timeout=10) as answer:
        counts: dict[str, int] = json.loads(answer.read())
    return counts


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
