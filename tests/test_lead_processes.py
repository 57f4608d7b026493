"""``lead`` the way a service is deployed: three OS processes of ``examples/service.py`` on one
store (a local folder, and a moto S3 server), driven by ``examples.takeover``.

The leader is SIGKILLed: another replica leads within lease + one poll + one claim. The new
leader is SIGSTOPped for longer than the lease: the third takes over meanwhile, and once
SIGCONTed the paused one stops at once (fenced, or its lease lost by its own clock). At the end
every acknowledged update is in the final state exactly once, and none of the paused replica's
updates landed after the takeover. Times are asserted only as the promised bounds plus
``SLACK``; the measured medians are in docs/leading.md (``python -m examples.takeover``).
"""

from __future__ import annotations

import socket
from collections import Counter
from itertools import groupby
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from examples.service import EXIT_FENCED, EXIT_LOST
from examples.takeover import Run, run_once
from slate_epoch.backends.s3 import S3Store
from slate_epoch.testing.servers import create_bucket

LEASE = 2.0
POLL = RENEW = LEASE / 3
# Added to every promised bound: process start-up and scheduling on a busy 2-core machine.
SLACK = 3.0


def check(run: Run) -> None:
    # The promised bounds.
    # (At least half a lease: the standbys waited for the lease to run out.)
    assert LEASE / 2 < run.kill_takeover < LEASE + POLL + SLACK
    assert run.paused_for > LEASE
    assert run.pause_takeover < LEASE + POLL + SLACK
    assert run.stopped_after_resume < RENEW + SLACK
    # The paused replica stopped: fenced, or its own clock said the lease had run out.
    outcome = run.paused_outcome.split()[0]
    assert (outcome, run.paused_exit) in (("fenced", EXIT_FENCED), ("lost", EXIT_LOST))
    assert run.third_exit == 0
    # Every acknowledged update is in the final state exactly once; nothing is in twice.
    counts = Counter(run.state)
    for name, acks in run.acks.items():
        assert acks, f"{name} acknowledged nothing"
        assert all(counts[ack] == 1 for ack in acks), name
    assert max(counts.values()) == 1
    # The state is the killed leader's updates, then the paused one's, then the third's: none
    # of the paused replica's updates landed after the third took over.
    owners = [owner for owner, _ in groupby(entry.split(":")[0] for entry in run.state)]
    assert owners == [run.killed, run.paused, run.third]
    # Each replica's updates are its numbers 1..n in order; it acknowledged all of them, but
    # perhaps the last (which landed as it was killed or paused).
    for name, acks in run.acks.items():
        mine = [entry for entry in run.state if entry.startswith(f"{name}:")]
        assert mine == [f"{name}:{number}" for number in range(1, len(mine) + 1)]
        assert acks in (mine, mine[:-1])


def test_kill_and_pause_the_leader_on_a_local_folder(tmp_path: Path) -> None:
    check(run_once(f"file://{tmp_path / 'store'}", LEASE, tmp_path / "replicas"))


def test_kill_and_pause_the_leader_on_s3(s3_endpoint: str, tmp_path: Path) -> None:
    bucket = anyio.run(create_bucket, s3_endpoint, backend="asyncio")
    check(run_once(f"s3://{bucket}?endpoint_url={s3_endpoint}", LEASE, tmp_path / "replicas"))


def test_moto_serves_others_while_a_client_stalls_mid_request(s3_endpoint: str) -> None:
    """What the pause test relies on: a replica stopped halfway through sending a request body
    must not hold up the others (the test server reads a body before taking its lock)."""
    bucket = anyio.run(create_bucket, s3_endpoint, backend="asyncio")
    endpoint = urlsplit(s3_endpoint)
    assert endpoint.hostname is not None
    assert endpoint.port is not None

    async def others_get_through() -> None:
        with anyio.fail_after(10.0):
            async with S3Store(bucket, endpoint_url=s3_endpoint) as store:
                await store.put("other", b"still served", mode="create")
                assert (await store.get("other")).body == b"still served"

    with socket.create_connection((endpoint.hostname, endpoint.port), timeout=10.0) as stalled:
        head = f"PUT /{bucket}/stalled HTTP/1.1\r\nHost: {endpoint.netloc}\r\n"
        stalled.sendall(f"{head}Content-Length: 1000\r\n\r\n".encode() + b"x" * 10)
        anyio.run(others_get_through, backend="asyncio")
