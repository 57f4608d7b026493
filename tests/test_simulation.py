"""The deterministic simulation: thousands of seeds hold the invariants, a seed replays exactly,
and the checker catches deliberately broken claims, logs and collections."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
import trio._core._run as trio_run

from slate_epoch import _claim
from slate_epoch.testing import SimulationConfig, SimulationReport, _simulation, simulate
from slate_epoch.testing._simulation import run as simulation_run
from tests.simulation.breakages import BREAKAGES, Breakage

SEEDS_PER_CHUNK = 500
CHUNKS = 4  # 2,000 seeds in all
FOUND_WITHIN = 200  # seeds: each breakage must be caught by then

# Every kind of fault and outcome each chunk must have exercised, or the simulation has gone
# soft (say, a change that makes every claim time out before it reaches the store).
EXERCISED = (
    "lost",
    "errors",
    "late",
    "crashes",
    "restarts",
    "conflicts",
    "own_writes_found",
    "uncontended_lost_claims",
    "claim:ok",
    "claim:ClaimTimeoutError",
    "claim:crashed",
    "update:ok",
    "update:FencedError",
    "update:WriteOutcomeUnknownError",
    "update:OperationTimeoutError",
    "update:crashed",
    "refresh:ok",
    "fence:ok",
    "fence:FencedError",
    "append:ok",
    "append:FencedError",
    "append:OperationTimeoutError",
    "mark:ok",
    "trim:ok",
    "entries_trimmed",
    "gc:ok",
    "gc:OperationTimeoutError",
    "versions_deleted",
    "recreations",
    "lead:entered",
    "lead:released",
    "lead:body error",
    "lead:stopped",
    "lead:crashed",
    "lead:FencedError",
    "lead:LeaseLostError",
    "lead:ClaimTimeoutError",
    "takeover:release",
    "takeover:crash",
    "takeover:pause",
    "takeover:outage",
    "lead_update:ok",
    "succession:released_checked",
    "succession:stopped_checked",
    "succession:claims_checked",
)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_every_seed_holds_the_invariants(chunk: int) -> None:
    totals: Counter[str] = Counter()
    failures: list[str] = []
    for seed in range(chunk * SEEDS_PER_CHUNK, (chunk + 1) * SEEDS_PER_CHUNK):
        report = simulate(seed)
        totals.update(report.counts)
        if report.violations:
            failures.append(report.describe())
    assert not failures, "\n".join(failures)
    assert totals["seeds"] == SEEDS_PER_CHUNK
    missing = [key for key in EXERCISED if not totals[key]]
    assert not missing, f"never exercised: {missing}"


# Seeds the 100,000-seed soak of 2026-12-01 failed, each on a real bug since fixed; a seed
# replays its history exactly, so each fails again if its fix is undone.
SOAK_FINDINGS = {
    3216: "claim_epoch(fence_wal=True) passed fence_log every first step its create ran beside",
    9275: "an update that landed and that retention passed was reported a plain FencedError",
    19854: "fence_wal's confirmation read the boundary before a collection and its look after it",
    74535: "the same confirmation race: an older writer appended above a newer fence",
}


@pytest.mark.parametrize("seed", sorted(SOAK_FINDINGS))
def test_the_seeds_a_soak_failed_hold_the_invariants(seed: int) -> None:
    report = simulate(seed)
    assert report.ok, f"{SOAK_FINDINGS[seed]}:\n{report.describe()}"


def test_a_seed_replays_exactly() -> None:
    first, second = simulate(13), simulate(13)
    assert first.history.trace() == second.history.trace()
    assert len(first.history.trace()) > 100
    assert first.counts == second.counts
    assert simulate(14).history.fingerprint() != first.history.fingerprint()


def test_a_seed_replays_exactly_in_another_process() -> None:
    """The replay command, in a fresh interpreter with another hash seed and without
    Hypothesis loaded (which changes trio's scheduler), records the same history."""
    seed = 21
    expected = simulate(seed).history.fingerprint()
    command = [sys.executable, "-m", "slate_epoch.testing", "replay", "--seed", str(seed)]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [*command, "--quiet", "--fingerprint"], capture_output=True, text=True, env=env, check=False
    )
    assert f"fingerprint {expected}" in result.stdout, result.stderr
    assert result.returncode == (0 if simulate(seed).ok else 1)


def test_a_seed_with_leaders_replays_exactly_in_another_process() -> None:
    """``lead``'s standbys draw the jitter of their polls from the global ``random``, which the
    run seeds from the seed: a seed with leaders replays exactly, in another process too."""
    seed = 9
    report = simulate(seed)
    trace = report.history.trace()
    assert len(report.history.leads) >= 3
    assert any(" lease epoch=" in line for line in trace)  # the lease's versions, decoded
    assert simulate(seed).history.trace() == trace
    command = [sys.executable, "-m", "slate_epoch.testing", "replay", "--seed", str(seed)]
    env = {**os.environ, "PYTHONHASHSEED": "54321"}
    result = subprocess.run(
        [*command, "--quiet", "--fingerprint"], capture_output=True, text=True, env=env, check=False
    )
    assert f"fingerprint {report.history.fingerprint()}" in result.stdout, result.stderr


def test_trio_scheduling_order_is_part_of_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks often wake at the same instant, so trio's shuffle of its run queue matters; the
    simulation seeds it, and a differently seeded shuffle records other histories."""
    original = simulation_run.deterministic_trio

    @contextlib.contextmanager
    def other_shuffle(seed: int) -> Iterator[None]:
        with original(seed + 1_000_000):
            yield

    seeds = range(10)
    expected = [simulate(seed).history.fingerprint() for seed in seeds]
    monkeypatch.setattr(simulation_run, "deterministic_trio", other_shuffle)
    reshuffled = [simulate(seed).history.fingerprint() for seed in seeds]
    assert sum(a != b for a, b in zip(expected, reshuffled, strict=True)) >= 3


def test_trio_is_left_as_it_was() -> None:
    state = trio_run._r.getstate()
    allowed = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    simulate(3)
    assert trio_run._r.getstate() == state
    assert allowed == trio_run._ALLOW_DETERMINISTIC_SCHEDULING


def test_random_ids_do_not_steer_control_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Claim and write ids come from os.urandom. Replaced by a counter counting down (other
    values, another order), every seed records the same history: the ids are only compared
    for equality."""
    seeds = range(20)
    expected = [simulate(seed).history.trace() for seed in seeds]
    countdown = itertools.count()
    monkeypatch.setattr(_claim, "new_id", lambda: f"{10**32 - next(countdown):032d}")
    assert [simulate(seed).history.trace() for seed in seeds] == expected


def test_a_hang_is_a_violation_with_a_replay_command() -> None:
    config = SimulationConfig(deadline=0.5)
    report = simulate(5, config)
    assert not report.ok
    assert any(v.check == 4 and "still running after 0.5" in v.message for v in report.violations)
    assert report.replay_command == (
        "python -m slate_epoch.testing replay --seed 5 --set deadline=0.5"
    )
    assert report.replay_command in report.describe()


def test_the_config_draws_its_writers_from_its_range() -> None:
    config = SimulationConfig(min_writers=3, max_writers=3, max_updates=1)
    writers = {simulate(seed, config).history.writers for seed in range(5)}
    assert writers == {3}
    assert {simulate(seed).history.writers for seed in range(40)} <= set(range(2, 17))


def _first_failure(breakage: Breakage) -> SimulationReport | None:
    """The first seed where the breakage shows: a violation it catches, of a kind the same seed
    does not show unbroken (so that a flaw of the core itself never passes for a catch)."""
    for seed in range(FOUND_WITHIN):
        with pytest.MonkeyPatch.context() as monkeypatch:
            breakage.install(monkeypatch)
            report = simulate(seed, breakage.config)
        caught = {v.kind for v in report.violations if breakage.catches(v)}
        if caught and caught - {v.kind for v in simulate(seed, breakage.config).violations}:
            return report
    return None


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.name for b in BREAKAGES])
def test_the_checker_catches_a_broken_core(breakage: Breakage) -> None:
    report = _first_failure(breakage)
    assert report is not None, (
        f"{breakage.name}: not caught by {breakage.shown_by} within {FOUND_WITHIN} seeds"
    )
    description = report.describe()
    assert f"seed {report.seed}:" in description
    assert f"python -m slate_epoch.testing replay --seed {report.seed}" in description


def test_replay_of_a_failing_seed_prints_the_command_and_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    BREAKAGES[0].install(monkeypatch)
    seed = next(seed for seed in range(FOUND_WITHIN) if not simulate(seed).ok)
    assert _simulation.main(["replay", "--seed", str(seed)]) == 1
    out = capsys.readouterr().out
    assert "op0 " in out  # the history is printed
    assert f"replay: python -m slate_epoch.testing replay --seed {seed}" in out


def test_run_reports_counts(capsys: pytest.CaptureFixture[str]) -> None:
    _, failures = _simulation.run_seeds(range(100, 105))
    assert _simulation.main(["run", "--seeds", "5", "--start", "100"]) == (1 if failures else 0)
    out = capsys.readouterr().out
    assert "lost responses" in out
    assert f"violations: {len(failures)} seed(s)" in out


def test_seeds_are_independent_of_what_ran_before() -> None:
    random.seed(1)  # neither the global RNG nor earlier runs leak into a seed
    alone = simulate(8).history.fingerprint()
    random.seed(2)
    simulate(9)
    assert simulate(8).history.fingerprint() == alone
