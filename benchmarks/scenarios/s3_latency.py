"""6. ``s3_latency``: S3 at a real region's latency, where what users feel is the number of round
trips and whether they run one after another (runs with ``--s3``, or ``--s3-latency MS``).

The run's moto server is put ``--s3-latency`` ms (default 20) away by ``LatencyProxy``: every
request and its response cost one added round trip, ``100 Continue`` one more, a new connection
one more. On it, each in its own process, one after another:

- ours (``peers.ours_s3``): one bare GET (the round trip, the unit of everything else, measured
  in the same process and run), a warm claim, an update, our open (a cold claim + ``fence_wal``)
  on an empty log and on a log 8 earlier writers fenced, and opening a second ``S3Store``;
- SlateDB's open (``peers.slatedb_open --backend s3``), on a database 1 (its creator) or 8
  earlier writers opened; the proxy counts its requests;
- obstore's hand-rolled claim loop (``peers.obstore_claim --backend s3``), warm and cold;
- a cold process start: ``python -c`` opening the store, claiming and fencing, timed whole, beside
  ``python -c pass`` and the imports alone.

Round trips = median ÷ the round trip; ``÷ (requests x RTT)`` = median ÷ (requests x round trip):
1.0 when the requests run one after another and cost nothing but the network, below 1 when some
overlap, above 1 for a round trip a request makes twice (``100 Continue``, a new connection).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from typing import Any

import anyio

from ..latency_proxy import LatencyProxy
from ..model import Job, Row, Run, Scenario, fmt_us, p90, ratio, summary_us
from ..peer_process import REPOSITORY, run_peer, sample_row, status_row
from ..peers._common import HISTORY, S3Case, proxy_counts
from ..stores import new_folder, prefill

NAME = "s3_latency"
ENOUGH_FOR_P99 = 100  # samples; below, p99 is left out (it would be the maximum)
PROCESS_TIMEOUT = 120.0

# The targets, for information (never asserted): (what, limit, unit).
ROUND_TRIP_TARGET = 2.2  # round trips, for a warm claim and an update
OPEN_TARGETS = {
    S3Case.OPEN_EMPTY: (S3Case.SLATEDB_OPEN_EMPTY, 0.55),
    S3Case.OPEN_FENCED: (S3Case.SLATEDB_OPEN_FENCED, 0.60),
}
SECOND_STORE_TARGET_US = 10_000.0

PYTHON_ONLY = "python -c pass"
IMPORTS_ONLY = "python: imports only"
WHOLE_PROCESS = "python: open S3Store + claim with fence_wal=True"
IMPORTS = "import anyio, slate_epoch, slate_epoch.backends.s3"
PROGRAM = """
import sys
import anyio
from slate_epoch import claim_epoch
from slate_epoch.backends.s3 import S3Store

async def main() -> None:
    bucket, root, endpoint = sys.argv[1:4]
    async with S3Store(bucket, endpoint_url=endpoint) as store:
        await claim_epoch(store, root, fence_wal=True)

anyio.run(main, backend="asyncio")
"""


@dataclass(frozen=True)
class Samples:
    warm: int  # round trips, warm claims, updates; obstore's warm claims
    cold: int  # our opens per log state, second S3Store opens; obstore's cold claims
    slatedb: int  # SlateDB opens per database state
    processes: int  # cold process starts (and each of the two baselines)
    timeout: float  # seconds a peer process may take


class _Proxy:
    """The latency proxy in front of the run's moto server: started by the first job that asks,
    stopped (by PID) when the run ends."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            assert self.run.env.s3_endpoint is not None
            proxy = LatencyProxy(
                self.run.env.workdir / "latency-proxy",
                self.run.env.s3_endpoint,
                self.run.s3_latency_ms,
            )
            self._url = self.run.stack.enter_context(proxy).endpoint_url
        return self._url


def jobs(samples: Samples, run: Run) -> list[Job]:
    if not run.s3:
        return []
    proxy = _Proxy(run)
    peers = (
        ("slate-epoch", "benchmarks.peers.ours_s3", samples.warm, samples.cold),
        ("slatedb", "benchmarks.peers.slatedb_open", 0, samples.slatedb),
        ("obstore", "benchmarks.peers.obstore_claim", samples.warm, samples.cold),
    )
    where = _backend(run)
    steps = [
        Job(NAME, f"{peer}, {where}", partial(_peer, peer, module, n, m, samples, run, proxy))
        for peer, module, n, m in peers
    ]
    processes = partial(_processes, samples.processes, run, proxy)
    return [*steps, Job(NAME, f"cold process start, {where}", processes)]


def _backend(run: Run) -> str:
    return f"s3 +{run.s3_latency_ms:g} ms"


def _bucket(run: Run) -> str:
    from slate_epoch.testing.servers import create_bucket

    assert run.env.s3_endpoint is not None
    return anyio.run(create_bucket, run.env.s3_endpoint, backend="asyncio")


def _peer(
    peer: str, module: str, warm: int, cold: int, samples: Samples, run: Run, proxy: _Proxy
) -> list[Row]:
    assert run.env.s3_endpoint is not None
    arguments = ["--backend", "s3", "--folder", str(new_folder(run.env, f"s3-{peer}"))]
    arguments += ["--warm", str(warm), "--cold", str(cold), "--bucket", _bucket(run)]
    arguments += ["--endpoint", proxy.url, "--setup-endpoint", run.env.s3_endpoint]
    result = run_peer(module, arguments, samples.timeout)
    if result.result is None:
        return [status_row(NAME, _backend(run), peer, result)]
    labels = {"warm": S3Case.WARM_CLAIM, "cold": "cold claim"} if peer == "obstore" else {}
    rows = []
    for key in result.result["samples"]:
        case = labels.get(key, key)
        rows.append(_tidy(sample_row(NAME, _backend(run), peer, key, f"{peer}: {case}", result)))
        rows[-1].values["measures"] = case
    return rows


def _tidy(row: Row) -> Row:
    """p99 only where there are enough samples for it (else it is the maximum)."""
    if row.n < ENOUGH_FOR_P99:
        row.p99_us = None
    return row


def _processes(runs: int, run: Run, proxy: _Proxy) -> list[Row]:
    """Whole processes, timed from outside: ``python -c pass``, the imports, and a program that
    opens the store, claims and fences (each run on a root of its own, ``HISTORY`` manifests)."""
    assert run.env.s3_endpoint is not None
    bucket = _bucket(run)
    roots = [f"process-{i}" for i in range(runs)]
    anyio.run(_prefill_roots, run.env.s3_endpoint, bucket, roots, backend="asyncio")
    url = proxy.url
    times: dict[str, list[float]] = {PYTHON_ONLY: [], IMPORTS_ONLY: [], WHOLE_PROCESS: []}
    requests = connections = 0
    for root in roots:  # the cases take turns
        for case in times:
            code = {PYTHON_ONLY: ["pass"], IMPORTS_ONLY: [IMPORTS]}.get(
                case, [PROGRAM, bucket, root, url]
            )
            before = proxy_counts(url)
            start = perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", *code],
                cwd=REPOSITORY,
                timeout=PROCESS_TIMEOUT,  # the child is killed (by PID) past it
                capture_output=True,
                text=True,
                check=False,
            )
            times[case].append(perf_counter() - start)
            if done.returncode:
                raise RuntimeError(f"{case} exited {done.returncode}: {done.stderr[-1500:]}")
            after = proxy_counts(url)
            requests += after["requests"] - before["requests"]
            connections += after["connections"] - before["connections"]
    rows = []
    for case, samples in times.items():
        median, p99 = summary_us(samples)
        row = Row(NAME, _backend(run), case, median, p99, len(samples), None)
        row.values.update(peer="process", measures=case, p90_us=p90(samples) * 1e6)
        if case == WHOLE_PROCESS:
            row.requests = {"total": requests / runs}
            row.values["connections"] = connections / runs
        rows.append(_tidy(row))
    return rows


async def _prefill_roots(endpoint: str, bucket: str, roots: list[str]) -> None:
    from slate_epoch.backends.s3 import S3Store

    async with S3Store(bucket, endpoint_url=endpoint) as store:
        for root in roots:
            await prefill(store, HISTORY, root=root)


def in_round_trips(rows: list[Row]) -> list[Row]:
    """Round trips, time ÷ (requests x round trip), ours ÷ SlateDB and the targets."""
    by = {(r.values.get("peer"), r.values.get("measures")): r for r in rows if r.median_us}
    unit = by.get(("slate-epoch", S3Case.ROUND_TRIP))
    rtt = unit.median_us if unit else None
    direct = by.get(("slate-epoch", S3Case.ROUND_TRIP_DIRECT))
    imports = by.get(("process", IMPORTS_ONLY))
    for row in rows:
        if row.median_us:
            row.values["round_trip_us"] = rtt
            row.result = "; ".join(_figures(row, rtt, direct, imports, by))
    return rows


def _figures(
    row: Row, rtt: float | None, direct: Row | None, imports: Row | None, by: dict[Any, Row]
) -> list[str]:
    """The result column of one row: p90, round trips, the requests' share, the target."""
    assert row.median_us is not None
    measures = row.values.get("measures")
    figures = [f"p90 {fmt_us(row.values.get('p90_us'))}"]
    if measures in (S3Case.ROUND_TRIP_DIRECT, PYTHON_ONLY, IMPORTS_ONLY, S3Case.SECOND_STORE):
        return figures + _targets(row, by, None)
    if measures == S3Case.ROUND_TRIP:
        row.values["round_trips"] = 1.0
        figures.append("the unit (RTT)")
        if direct is not None and direct.median_us is not None:
            figures.append(f"{fmt_us(row.median_us - direct.median_us)} more than without proxy")
        return figures
    spent = row.median_us
    if measures == WHOLE_PROCESS and imports is not None and imports.median_us is not None:
        spent = row.median_us - imports.median_us
        row.values["beyond_imports_us"] = spent
        connections = row.values.get("connections")
        figures.append(f"{fmt_us(spent)} beyond the imports, {connections:.0f} connection(s)")
    trips = ratio(spent, rtt)
    row.values["round_trips"] = trips
    if trips is None:
        return figures
    figures.append(f"{trips:.2f} RTT")
    total = (row.requests or {}).get("total")
    per_request = ratio(spent, total * rtt if total and rtt else None)
    if per_request is not None:
        row.values["time_over_requests_x_rtt"] = per_request
        figures.append(f"{per_request:.2f}x (requests x RTT)")
    return figures + _targets(row, by, trips)


def _targets(row: Row, by: dict[Any, Row], trips: float | None) -> list[str]:
    """The issue's target for this row, if it has one, and whether this run meets it."""
    if row.values.get("peer") != "slate-epoch":
        return []
    measures = row.values.get("measures")
    if measures in (S3Case.WARM_CLAIM, S3Case.UPDATE) and trips is not None:
        return [_target(row, ROUND_TRIP_TARGET, trips <= ROUND_TRIP_TARGET, " RTT")]
    if measures in OPEN_TARGETS:
        theirs, limit = OPEN_TARGETS[str(measures)]
        slatedb = by.get(("slatedb", theirs))
        value = ratio(row.median_us, slatedb.median_us if slatedb else None)
        row.values["ours_over_slatedb"] = value
        if value is None:
            return []
        return [f"ours÷SlateDB {value:.2f}", _target(row, limit, value <= limit, "")]
    if measures == S3Case.SECOND_STORE and row.median_us is not None:
        limit_ms = SECOND_STORE_TARGET_US / 1e3
        return [_target(row, limit_ms, row.median_us <= SECOND_STORE_TARGET_US, " ms")]
    return []


def _target(row: Row, limit: float, met: bool, unit: str) -> str:
    row.values["target"] = limit
    row.values["target_met"] = met
    return f"target ≤ {limit:g}{unit}: {'met' if met else 'not met'}"


def notes(run: Run, rows: list[Row]) -> list[str]:
    if not run.s3:
        return [f"{NAME}: not run; it needs --s3 (or --s3-latency MS)"]
    return [
        f"{NAME}: moto behind a proxy adding {run.s3_latency_ms:g} ms to each round trip (a "
        "request and its response; 100 Continue and a new connection cost one more each); RTT "
        "= the median of one bare GET through it, measured in our process in this run. Targets "
        "are the issue's, for information.",
    ]


def plot(ax: Any, rows: list[Row]) -> None:
    rows = [r for r in rows if r.values.get("round_trips")]
    colors = {
        "slate-epoch": "tab:blue",
        "slatedb": "tab:grey",
        "obstore": "tab:olive",
        "process": "tab:purple",  # a whole process: the time beyond its imports
    }
    ys = list(range(len(rows)))
    trips = [r.values["round_trips"] for r in rows]
    ax.barh(ys, trips, color=[colors[r.values["peer"]] for r in rows])
    for y, x, row in zip(ys, trips, rows, strict=True):
        spent = row.values.get("beyond_imports_us", row.median_us)
        ax.annotate(fmt_us(spent), (x, y), va="center", fontsize=7)
    labels = [
        f"{r.case} (beyond imports)" if "beyond_imports_us" in r.values else r.case for r in rows
    ]
    ax.set_yticks(ys, labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(ROUND_TRIP_TARGET, color="tab:red", linestyle=":", linewidth=0.8)
    ax.set_xlabel("median ÷ one round trip; dotted: 2.2 (warm claim, update target)")
    ax.set_title("6. S3 at real latency: round trips (blue: slate-epoch; purple: a process)")


SCENARIO = Scenario(
    name=NAME,
    order=6,
    full=Samples(warm=100, cold=30, slatedb=20, processes=10, timeout=900.0),
    quick=Samples(warm=5, cold=3, slatedb=2, processes=2, timeout=180.0),
    jobs=jobs,
    finish=in_round_trips,
    notes=notes,
    panels=(plot,),
)
