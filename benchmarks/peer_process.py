"""Running one peer script (``benchmarks.peers.*``) in its own process, bounded in time, and
reading its result line. A peer that is not installed reports itself unavailable; one that
crashes or hangs is reported failed, with the end of its stderr; neither stops the run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import Row, p90, summary_us
from .peers._common import MARKER

__all__ = ["REPOSITORY", "PeerResult", "exit_notes", "run_peer", "sample_row", "status_row"]

REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PeerResult:
    """What a peer process reported (``result``), or why it reported nothing (``status`` and
    ``reason``: ``unavailable`` or ``failed``)."""

    result: dict[str, Any] | None
    exit_code: int | None
    status: str = "ok"
    reason: str = ""


def run_peer(module: str, arguments: Sequence[str], timeout: float) -> PeerResult:
    """``python -m module *arguments`` from the repository, killed after ``timeout`` s."""
    command = [sys.executable, "-m", module, *arguments]
    try:
        done = subprocess.run(
            command, cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:  # subprocess.run kills the child (by PID) before raising
        return PeerResult(None, None, "failed", f"no result within {timeout:.0f} s")
    result = _result_line(done.stdout)
    if result is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return PeerResult(
            None, done.returncode, "failed", f"exit {done.returncode}: " + " | ".join(tail)
        )
    if "unavailable" in result:
        return PeerResult(None, done.returncode, "unavailable", str(result["unavailable"]))
    return PeerResult(result, done.returncode)


def _result_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            parsed: dict[str, Any] = json.loads(line[len(MARKER) :])
            return parsed
    return None


def sample_row(
    scenario: str, backend: str, peer: str, key: str, case: str, result: PeerResult
) -> Row:
    """The row of the samples (in seconds) a peer process reported under ``key``, with the
    requests it counted under the same key, if any."""
    reported = result.result or {}
    samples = reported["samples"][key]
    median, p99 = summary_us(samples)
    requests = reported.get("requests")
    return Row(
        scenario,
        backend,
        case,
        median,
        p99,
        len(samples),
        requests.get(key) if isinstance(requests, dict) else None,
        values={
            "peer": peer,
            "status": "ok",
            "p90_us": p90(samples) * 1e6 if samples else None,
            "version": reported.get("version"),
            "does": reported.get("does"),
            "fsync": reported.get("fsync"),
            "first_us": float(reported.get("first_s", 0.0)) * 1e6,
            "exit_code": result.exit_code,
        },
    )


def status_row(scenario: str, backend: str, peer: str, result: PeerResult) -> Row:
    """The row of a peer that reported nothing: unavailable, or failed."""
    return Row(
        scenario,
        backend,
        peer,
        None,
        None,
        0,
        None,
        result=f"{result.status}: {result.reason}",
        values={"peer": peer, "status": result.status, "reason": result.reason},
    )


def exit_notes(rows: Sequence[Row]) -> list[str]:
    """A note for each peer process that died after reporting its results."""
    died = sorted(
        {
            (str(r.values["peer"]), r.backend, int(r.values["exit_code"]))
            for r in rows
            if r.values.get("exit_code")
        }
    )
    return [
        f"{peer} ({backend}): its process exited with {code} after printing its results "
        "(an abort at interpreter exit, outside the measurement); the results are kept."
        for peer, backend, code in died
    ]
