"""7. ``observability``: what logs, spans and metrics cost a warm in-memory claim.

The claim of this checkout against the claim of ``BEFORE`` (the revision just before
observability landed), in one process (``benchmarks.peers.observed_claim``), alternating
(ABBA), on asyncio and trio: with nobody listening (logging at Python's default WARNING, no
OpenTelemetry: the issue's limit is 5 % slower), with ``slate_epoch`` at INFO into a handler
that drops the records, and with the OpenTelemetry SDK configured. Ratio = the median of the
per-round ratios (this checkout ÷ before). Everything else that changed on the warm-claim path
since ``BEFORE`` is in the ratio too.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from ..model import Job, Row, Run, Scenario, summary_us
from ..peer_process import PeerResult, run_peer, status_row

NAME = "observability"
BEFORE = "57b6266"  # main just before the observability work was merged
QUIET_LIMIT = 1.05  # the issue's: a warm claim at most 5 % slower when nobody listens
MODES = {
    "quiet": "nobody listening (WARNING)",
    "info": "slate_epoch at INFO, records dropped",
    "otel": "OpenTelemetry SDK configured",
}


@dataclass(frozen=True)
class Samples:
    rounds: int
    claims: int  # per round and side
    timeout: float


def jobs(samples: Samples, run: Run) -> list[Job]:
    def job(loop: str) -> Job:
        return Job(NAME, f"warm claim, {loop}", lambda: measure(loop, samples))

    return [job(loop) for loop in run.loops]


def measure(loop: str, samples: Samples) -> list[Row]:
    arguments = ["--revision", BEFORE, "--loop", loop]
    arguments += ["--rounds", str(samples.rounds), "--claims", str(samples.claims)]
    result = run_peer("benchmarks.peers.observed_claim", arguments, samples.timeout)
    if result.result is None:
        return [status_row(NAME, "memory", f"warm claim, {loop}", result)]
    return _rows(loop, samples, result)


def _rows(loop: str, samples: Samples, result: PeerResult) -> list[Row]:
    reported: dict[str, Any] = result.result or {}
    medians: dict[str, list[float]] = reported["samples"]
    ratios: dict[str, list[float]] = reported["ratios"]
    rows = []
    before, _ = summary_us(medians["before, quiet"])
    rows.append(
        Row(
            NAME,
            "memory",
            f"warm claim, {loop}, before ({BEFORE})",
            before,
            None,
            samples.rounds,
            None,
            result="the baseline",
            values={"loop": loop, "mode": "before", "revision": BEFORE},
        )
    )
    for mode, label in MODES.items():
        if mode not in ratios:
            continue
        median, _ = summary_us(medians[mode])
        paired = statistics.median(ratios[mode])
        result_text = f"{paired:.3f}x before (paired rounds, min {min(ratios[mode]):.3f})"
        values: dict[str, Any] = {"loop": loop, "mode": mode, "ratio_to_before": paired}
        if mode == "quiet":
            values["target_met"] = paired <= QUIET_LIMIT
            met = "met" if values["target_met"] else "not met"
            result_text += f"; target ≤ {QUIET_LIMIT:.2f}x: {met}"
        rows.append(
            Row(
                NAME,
                "memory",
                f"warm claim, {loop}, {label}",
                median,
                None,
                samples.rounds,
                None,
                result=result_text,
                values=values,
            )
        )
    return rows


def notes(run: Run, rows: list[Row]) -> list[str]:
    return [
        f"observability: medians are of per-round medians ({BEFORE}'s code and this checkout's "
        "alternating in one process); each ratio pairs the rounds. Nothing else runs in that "
        "process.",
    ]


def plot(ax: Any, rows: list[Row]) -> None:
    shown = [r for r in rows if r.median_us is not None]
    ys = list(range(len(shown)))
    ax.barh(ys, [r.median_us for r in shown], color="tab:blue")
    ax.set_yticks(ys, [r.case for r in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("median µs per warm claim (memory)")
    ax.set_title("7. What observability costs a warm claim")


SCENARIO = Scenario(
    name=NAME,
    order=7,
    full=Samples(rounds=30, claims=2000, timeout=600.0),
    quick=Samples(rounds=2, claims=50, timeout=120.0),
    jobs=jobs,
    notes=notes,
    panels=(plot,),
)
