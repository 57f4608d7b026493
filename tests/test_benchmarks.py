"""The benchmark harness still runs, end to end: ``python -m benchmarks --quick`` in a subprocess,
writing to a temporary folder. Only the shape of ``results.json`` is checked: every scenario,
medians, p99 and request counts. No timing is asserted. The latency proxy of ``s3_latency`` is
checked on its own too: keep-alive towards the client over a server that closes every
connection, bodies both ways, and requests on two connections served at the same time.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from benchmarks.latency_proxy import STATS_PATH, LatencyProxy
from benchmarks.peers._common import S3Case
from benchmarks.scenarios.observability import MODES

REPOSITORY = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "uncontended",
    "history",
    "contention",
    "lost_responses",
    "peers",
    "s3_latency",
    "observability",
}
NEEDS_S3 = {"s3_latency"}
RUN_TIMEOUT = 400.0


def run_quick(tmp_path: Path, *options: str) -> dict[str, Any]:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)]
    done = subprocess.run(
        [*command, "--workdir", str(tmp_path), *options],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert (out / "table.md").read_text().count("\n|") > 2
    document: dict[str, Any] = json.loads((out / "results.json").read_text())
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "results.png").stat().st_size > 0
    return document


def measured(row: dict[str, Any], *, requests: bool = True) -> None:
    """A row with a median, a p99 not below it, and (optionally) requests per claim."""
    assert row["n"] > 0, row
    assert row["median_us"] > 0, row
    assert row["p99_us"] >= row["median_us"], row
    if requests:
        assert row["requests"]["total"] > 0, row


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_quick_run_covers_every_scenario(tmp_path: Path) -> None:
    document = run_quick(tmp_path)
    scenarios = document["scenarios"]
    assert set(scenarios) == SCENARIOS
    assert all(scenarios[name] for name in SCENARIOS - NEEDS_S3), "a scenario produced no rows"
    assert not scenarios["s3_latency"]
    assert any(note.startswith("s3_latency: not run") for note in document["notes"])
    assert document["meta"]["quick"] is True

    for row in scenarios["uncontended"]:
        measured(row)
        assert row["values"]["overhead_ratio"] > 0
        assert row["values"]["raw_median_us"] > 0
    uncontended = {(r["backend"], r["case"]) for r in scenarios["uncontended"]}
    for backend in ("memory", "local", "local-nofsync"):
        for case in ("warm, asyncio", "cold, asyncio", "warm, trio", "cold, trio"):
            assert (backend, case) in uncontended
    for row in scenarios["uncontended"]:  # every claim creates one manifest, at least
        assert row["requests"]["create"] >= 1, row

    for row in scenarios["history"]:
        measured(row)
        assert row["values"]["ratio_to_smallest"] > 0
    assert {r["backend"] for r in scenarios["history"]} == {"memory", "local"}

    for row in scenarios["contention"]:
        measured(row)
        assert row["values"]["all_done_median_us"] > 0
        assert row["values"]["timeouts"] == 0
        assert row["values"]["epochs_distinct_and_contiguous"] is True

    for row in scenarios["lost_responses"]:
        measured(row)
        assert row["values"]["succeeded"] == row["values"]["claims"]
        assert "extra_requests_per_claim" in row["values"]
    # The property the library exists for: a lost response never costs an epoch.
    ours = [r for r in scenarios["lost_responses"] if r["values"]["variant"] == "slate-epoch"]
    assert all(r["values"]["epochs_per_claim"] == 1.0 for r in ours)

    peers = scenarios["peers"]
    assert {r["values"]["peer"] for r in peers} == {"slate-epoch", "slatedb", "obstore"}
    for row in peers:
        status = row["values"]["status"]
        if row["values"]["peer"] == "slate-epoch":
            assert status == "ok", row
        assert status in ("ok", "unavailable"), row  # a crash ("failed") means the script rotted
        if status == "ok":
            measured(row, requests=row["values"]["peer"] != "slatedb")
        if status == "ok" and row["values"]["peer"] != "slate-epoch":
            assert any(v for v in row["values"]["ours_over_peer"].values()), row

    # Observability's cost: the claim before it, then quiet, INFO and (SDK installed) OTel,
    # each paired with the claim before it, on both loops.
    # (A clone without the revision before it - a shallow one - can't measure it, and says so.)
    observed = scenarios["observability"]
    if any(r["values"].get("status") == "unavailable" for r in observed):
        assert all("cannot export revision" in r["values"]["reason"] for r in observed)
    else:
        modes = {(r["values"]["loop"], r["values"]["mode"]) for r in observed}
        every = {(loop, mode) for loop in ("asyncio", "trio") for mode in ("before", *MODES)}
        assert modes == every
        for row in observed:
            assert row["median_us"] > 0, row
            if row["values"]["mode"] != "before":
                assert row["values"]["ratio_to_before"] > 0, row
            if row["values"]["mode"] == "quiet":
                assert isinstance(row["values"]["target_met"], bool), row


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_quick_run_on_s3(tmp_path: Path) -> None:
    """``--s3`` starts the tests' moto server and adds the S3 backend to a scenario."""
    document = run_quick(tmp_path, "--s3", "--only", "uncontended,lost_responses")
    rows = [r for name in ("uncontended", "lost_responses") for r in document["scenarios"][name]]
    s3 = [r for r in rows if r["backend"] == "s3"]
    assert s3, document["notes"]
    for row in s3:
        measured(row)
    assert {r["case"] for r in s3 if r["scenario"] == "uncontended"} == {
        "warm, asyncio",
        "cold, asyncio",
        "warm, trio",
        "cold, trio",
    }


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_quick_run_at_s3_latency(tmp_path: Path) -> None:
    """``--s3-latency`` implies ``--s3``: ours, SlateDB's open, obstore's claim and whole
    processes, on moto behind the latency proxy; round trips and ratios within the run."""
    document = run_quick(tmp_path, "--s3-latency", "5", "--only", "s3_latency")
    assert document["meta"]["s3_latency_ms"] == 5.0
    rows = document["scenarios"]["s3_latency"]
    assert {r["backend"] for r in rows} == {"s3 +5 ms"}
    measures = {(r["values"]["peer"], r["values"].get("measures")): r for r in rows}
    assert {peer for peer, _ in measures} == {"slate-epoch", "slatedb", "obstore", "process"}
    ours = [
        S3Case.ROUND_TRIP,
        S3Case.ROUND_TRIP_DIRECT,
        S3Case.WARM_CLAIM,
        S3Case.UPDATE,
        S3Case.OPEN_EMPTY,
        S3Case.OPEN_FENCED,
    ]
    for case in [*ours, S3Case.SECOND_STORE]:
        row = measures["slate-epoch", case]
        assert row["n"] > 0, row
        assert row["median_us"] > 0, row
        assert row["values"]["p90_us"] >= row["median_us"], row
        assert row["p99_us"] is None or row["p99_us"] >= row["values"]["p90_us"], row
    slatedb_ran = not any(
        r["values"]["status"] == "unavailable" for r in rows if r["values"]["peer"] == "slatedb"
    )
    for case in [
        S3Case.WARM_CLAIM,
        S3Case.UPDATE,
        S3Case.OPEN_EMPTY,
        S3Case.OPEN_FENCED,
    ]:  # counted by the CountingStore
        row = measures["slate-epoch", case]
        assert row["requests"]["total"] >= 2, row
        assert row["values"]["round_trips"] > 0
        assert row["values"]["time_over_requests_x_rtt"] > 0
        compared_with_slatedb = case in (S3Case.OPEN_EMPTY, S3Case.OPEN_FENCED)
        if not compared_with_slatedb or slatedb_ran:  # the open's target is a ratio to it
            assert isinstance(row["values"]["target_met"], bool), row
    # The earlier writers wrote no manifest after fencing, so none recorded its fence: the first
    # try meets the first of their fences, and the listing made beside it names the free id:
    # one create more, no search.
    fenced = measures["slate-epoch", S3Case.OPEN_FENCED]["requests"]
    empty = measures["slate-epoch", S3Case.OPEN_EMPTY]["requests"]
    assert fenced["total"] == empty["total"] + 1
    assert fenced["create"] == empty["create"] + 1
    assert fenced.get("head") == empty.get("head")
    assert isinstance(measures["slate-epoch", S3Case.SECOND_STORE]["values"]["target_met"], bool)
    for peer, cases in (
        ("slatedb", [S3Case.SLATEDB_OPEN_EMPTY, S3Case.SLATEDB_OPEN_FENCED]),
        ("obstore", [S3Case.WARM_CLAIM, "cold claim"]),
    ):
        if any(r["values"]["status"] == "unavailable" for r in rows if r["values"]["peer"] == peer):
            continue
        for case in cases:
            row = measures[peer, case]
            assert row["values"]["status"] == "ok", row
            assert row["median_us"] > 0, row
            assert row["requests"]["total"] > 0, row
    for case in S3Case.OPEN_EMPTY, S3Case.OPEN_FENCED:
        if measures.get(("slatedb", S3Case.SLATEDB_OPEN_EMPTY)):
            assert measures["slate-epoch", case]["values"]["ours_over_slatedb"] > 0
    process = [r for r in rows if r["values"]["peer"] == "process"]
    assert len(process) == 3
    assert all(r["median_us"] > 0 for r in process)
    whole = [r for r in process if r["requests"]]
    assert len(whole) == 1
    assert whole[0]["requests"]["total"] >= 2
    assert whole[0]["values"]["connections"] >= 1


# --- the latency proxy --------------------------------------------------------------------------

BODY = b"x" * 10_000


class _Closing(BaseHTTPRequestHandler):
    """Answers as werkzeug does, closing the connection after every response. A request to
    ``/together`` is answered only once a second one has arrived (or after 10 s: then 503)."""

    protocol_version = "HTTP/1.1"
    together = threading.Barrier(2, timeout=10)

    def do_GET(self) -> None:
        status = 200
        if self.path == "/together":
            try:
                self.together.wait()
            except threading.BrokenBarrierError:
                status = 503
        self._answer(status, BODY)

    def do_HEAD(self) -> None:
        self._answer(200, b"", length=len(BODY))

    def do_PUT(self) -> None:
        received = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(201, str(len(received)).encode())

    def _answer(self, status: int, body: bytes, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Closing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        upstream = f"http://127.0.0.1:{server.server_address[1]}"
        with LatencyProxy(tmp_path / "proxy", upstream, 1.0) as running:
            host, port = running.endpoint_url.removeprefix("http://").split(":")
            yield host, int(port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _request(connection: http.client.HTTPConnection, method: str, path: str) -> tuple[int, bytes]:
    body = b"y" * 70_000 if method == "PUT" else None
    connection.request(method, path, body=body)
    response = connection.getresponse()
    return response.status, response.read()


def _stats(host: str, port: int) -> dict[str, int]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        stats: dict[str, int] = json.loads(_request(connection, "GET", STATS_PATH)[1])
        return stats
    finally:
        connection.close()


def test_latency_proxy_keeps_the_client_connection(proxy: tuple[str, int]) -> None:
    connection = http.client.HTTPConnection(*proxy, timeout=10)
    try:
        assert _request(connection, "GET", "/a") == (200, BODY)
        sock = connection.sock
        assert _request(connection, "PUT", "/b") == (201, b"70000")
        assert _request(connection, "HEAD", "/c") == (200, b"")
        assert _request(connection, "GET", "/d") == (200, BODY)
        assert connection.sock is sock, "the proxy closed the client's connection"
    finally:
        connection.close()
    assert _stats(*proxy) == {"requests": 4, "connections": 1}


def test_latency_proxy_serves_connections_at_once(proxy: tuple[str, int]) -> None:
    """Two requests that the server answers only together: served one after another, the first
    would wait for the second in vain (503 after 10 s)."""
    answers: list[tuple[int, bytes]] = []

    def get() -> None:
        connection = http.client.HTTPConnection(*proxy, timeout=30)
        try:
            answers.append(_request(connection, "GET", "/together"))
        finally:
            connection.close()

    threads = [threading.Thread(target=get) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [(200, BODY), (200, BODY)]
