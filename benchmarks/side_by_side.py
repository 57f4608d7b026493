"""Scenario 5: slate-epoch beside its peers, each in its own subprocess.

A peer that is not installed is reported unavailable; one that crashes or hangs is reported
failed, with the end of its stderr; neither stops the run. Ratios are ours ÷ the peer's median,
each against the slate-epoch run that does the most similar work:

- SlateDB's open (read the manifest, bump the writer epoch, fence the WAL, replay it, start the
  writer; nothing cached) is compared with our open: a cold claim + ``fence_wal()``. On a local
  folder SlateDB does not fsync, so the headline compares it with our ``durable=False`` store;
  the ratio against our default (fsync) store is given too. Our claim-only rows (cold, warm)
  stay beside it.
- The hand-rolled obstore loop: warm with warm, cold with cold; no fsync either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .model import Job, Plan, Row, Scenario, ratio, summary_us
from .peers._common import MARKER
from .stores import Environment, new_folder

__all__ = ["NOTES", "PEERS", "exit_notes", "side_by_side"]

REPOSITORY = Path(__file__).resolve().parent.parent
PEERS = (
    ("slate-epoch", "memory", "benchmarks.peers.ours"),
    ("slate-epoch", "local", "benchmarks.peers.ours"),
    ("slate-epoch", "local-nofsync", "benchmarks.peers.ours"),
    ("slatedb", "memory", "benchmarks.peers.slatedb_open"),
    ("slatedb", "local", "benchmarks.peers.slatedb_open"),
    ("obstore", "memory", "benchmarks.peers.obstore_claim"),
    ("obstore", "local", "benchmarks.peers.obstore_claim"),
)
NOTES = (
    "SlateDB's open is compared with slate-epoch's open: a cold claim + fence_wal() (both bump "
    "the writer epoch and fence the WAL; SlateDB also replays its WAL and starts its writer). "
    "Each of our opens meets the same state: the manifest and the fence it wrote are deleted "
    "again afterwards (untimed), so it finds 10 manifests and nothing in the log.",
    "fsync: slate-epoch 'local' fsyncs file and folder on every create (durable=True, the "
    "default); 'local-nofsync' is durable=False. SlateDB's and obstore's local stores never "
    "fsync: compare them with 'local-nofsync'.",
)
TIMEOUT_QUICK = 120.0
TIMEOUT_FULL = 600.0


def side_by_side(plan: Plan, env: Environment) -> Scenario:
    jobs = [
        Job("peers", f"{peer}, {backend}", _runner(peer, backend, module, plan, env))
        for peer, backend, module in PEERS
    ]
    return Scenario("peers", jobs, finish=_ratios)


def _runner(
    peer: str, backend: str, module: str, plan: Plan, env: Environment
) -> Callable[[], list[Row]]:
    def run() -> list[Row]:
        return _run_peer(peer, backend, module, plan, env)

    return run


def _run_peer(peer: str, backend: str, module: str, plan: Plan, env: Environment) -> list[Row]:
    kind = "memory" if backend == "memory" else "local"
    command = [
        sys.executable,
        "-m",
        module,
        "--backend",
        backend,
        "--folder",
        str(new_folder(env, f"peer-{peer}")),
        "--warm",
        str(plan.peer_warm[kind]),
        "--cold",
        str(plan.peer_cold[kind]),
    ]
    timeout = TIMEOUT_QUICK if plan.quick else TIMEOUT_FULL
    try:
        done = subprocess.run(
            command,
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [_status_row(peer, backend, "failed", f"no result within {timeout:.0f} s")]
    result = _result_line(done.stdout)
    if result is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return [_status_row(peer, backend, "failed", f"exit {done.returncode}: {' | '.join(tail)}")]
    if "unavailable" in result:
        return [_status_row(peer, backend, "unavailable", str(result["unavailable"]))]
    rows = [
        _row(peer, backend, temp, samples, result) for temp, samples in result["samples"].items()
    ]
    for row in rows:  # it reported in full, then died: the numbers stand, the exit is noted
        row.values["exit_code"] = done.returncode
    return rows


def _result_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            parsed: dict[str, Any] = json.loads(line[len(MARKER) :])
            return parsed
    return None


def _case(peer: str, temp: str) -> str:
    if temp == "open":
        return f"{peer}, open (claim + fence_wal)" if peer == "slate-epoch" else f"{peer}, open"
    return f"{peer}, {temp}"


def _row(peer: str, backend: str, temp: str, samples: list[float], result: dict[str, Any]) -> Row:
    median, p99 = summary_us(samples)
    requests = result.get("requests")
    return Row(
        "peers",
        backend,
        _case(peer, temp),
        median,
        p99,
        len(samples),
        requests.get(temp) if isinstance(requests, dict) else None,
        values={
            "peer": peer,
            "temperature": temp,
            "status": "ok",
            "version": result.get("version"),
            "does": result.get("does"),
            "fsync": result.get("fsync"),
            "first_us": float(result.get("first_s", 0.0)) * 1e6,
        },
    )


def _status_row(peer: str, backend: str, status: str, reason: str) -> Row:
    return Row(
        "peers",
        backend,
        f"{peer}",
        None,
        None,
        0,
        None,
        result=f"{status}: {reason}",
        values={"peer": peer, "status": status, "reason": reason},
    )


# Which of our runs each peer is compared with: (our backend, label) per peer backend.
_OURS_FOR = {
    "memory": (("memory", ""),),
    "local": (("local-nofsync", "(no fsync)"), ("local", "(fsync)")),
}


def exit_notes(rows: list[Row]) -> list[str]:
    """A note for each peer process that died after reporting its results."""
    died = sorted(
        {
            (str(r.values["peer"]), r.backend, int(r.values["exit_code"]))
            for r in rows
            if r.scenario == "peers" and r.values.get("exit_code")
        }
    )
    return [
        f"{peer} ({backend}): its process exited with {code} after printing its results "
        "(an abort at interpreter exit, outside the measurement); the results are kept."
        for peer, backend, code in died
    ]


def _ratios(rows: list[Row]) -> list[Row]:
    ours = {
        (r.backend, r.values["temperature"]): r
        for r in rows
        if r.values.get("peer") == "slate-epoch" and r.values.get("status") == "ok"
    }
    for row in rows:
        peer, temp = row.values.get("peer"), row.values.get("temperature")
        if row.values.get("status") != "ok":
            continue
        if peer == "slate-epoch":
            row.result = {"memory": "ours", "local": "ours, fsync"}.get(
                row.backend, "ours, no fsync"
            )
            claim = ours.get((row.backend, "cold"))
            share = ratio(row.median_us, claim.median_us if claim else None)
            if temp == "open" and share is not None:
                row.values["open_over_cold_claim"] = share
                row.result += f"; {share:.2f}x our cold claim"
            continue
        ratios: dict[str, float | None] = {}
        parts = []
        for backend, label in _OURS_FOR[row.backend]:
            mine = ours.get((backend, temp))
            value = ratio(mine.median_us if mine else None, row.median_us)
            ratios[f"{backend} {temp}"] = value
            parts.append((f"{value:.2f} {label}" if value is not None else f"- {label}").strip())
        row.values["ours_over_peer"] = ratios
        row.result = "ours÷this " + ", ".join(parts)
    return rows
