"""The benchmark harness still runs, end to end: ``python -m benchmarks --quick`` in a subprocess,
writing to a temporary folder. Only the shape of ``results.json`` is checked: every scenario,
medians, p99 and request counts. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
SCENARIOS = {"uncontended", "history", "contention", "lost_responses", "peers"}
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
    assert (out / "table.md").read_text().count("\n|") > len(SCENARIOS)
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
    assert all(scenarios[name] for name in SCENARIOS), "a scenario produced no rows"
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
