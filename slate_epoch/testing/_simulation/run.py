"""Running a seed: a deterministic trio run in simulated time, then the checker."""

from __future__ import annotations

import contextlib
import gc
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .checker import Violation, check_history
from .config import DEFAULT_CONFIG, SimulationConfig, replay_command
from .history import History
from .world import World

__all__ = ["SimulationReport", "deterministic_trio", "run_seeds", "simulate"]


@contextlib.contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    """Make trio's scheduling order a function of ``seed``, for the duration of one run.

    trio shuffles each batch of runnable tasks with a private module RNG,
    ``trio._core._run._r``, seeded from the OS: that is what makes two runs of one program
    interleave differently. When Hypothesis is imported, trio's own plugin
    (``_hypothesis_plugin_setup``) sets ``_ALLOW_DETERMINISTIC_SCHEDULING``, which first sorts
    each batch by task creation order and only then shuffles it with ``_r``: the order then
    depends on nothing but ``_r``'s state. We do the same, and seed ``_r`` from ``seed``: the
    schedule is still shuffled (interleavings differ from seed to seed) but replays exactly,
    in any process, whether or not Hypothesis is loaded. Both are restored afterwards.
    (Whatever else trio orders arbitrarily - simultaneous deadlines by ``id()``, sets of tasks
    - only decides the order in which tasks enter the run queue, which the sort erases.)

    The cyclic garbage collector is paused for the run, too: when it runs depends on everything
    the process allocated before, and what it frees may act - an async generator left unclosed
    in a reference cycle, say, makes trio schedule its ``aclose()`` as a task, which changes the
    schedule. With it paused, objects die by reference counting alone, at moments the seed
    decides. (Found the hard way: an unclosed generator made seeds replay differently after
    thousands of others had run in the same process.)

    The global ``random`` is seeded from ``seed`` for the run, and restored afterwards: ``lead``'s
    standbys draw the jitter of their polls from it (the simulation's own draws all come from
    RNGs of their own).
    """
    import trio._core._run as trio_run

    rng = getattr(trio_run, "_r", None)
    if not isinstance(rng, random.Random) or not hasattr(
        trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING"
    ):
        raise RuntimeError(
            "this trio has no trio._core._run._r / _ALLOW_DETERMINISTIC_SCHEDULING: the "
            "simulation cannot make its schedule replayable"
        )
    state = rng.getstate()
    allowed = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", True)  # noqa: B010 - it is Final
    rng.seed(f"slate-epoch-sim/trio/{seed}")
    global_state = random.getstate()
    random.seed(f"slate-epoch-sim/random/{seed}")
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        random.setstate(global_state)
        setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", allowed)  # noqa: B010
        rng.setstate(state)


@dataclass
class SimulationReport:
    """The result of one seed: its violations (none, if the protocol held), its fault counts,
    and its full history (``history.trace()`` prints it)."""

    seed: int
    config: SimulationConfig
    violations: list[Violation]
    history: History

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def counts(self) -> Counter[str]:
        return self.history.counts

    @property
    def replay_command(self) -> str:
        return replay_command(self.seed, self.config)

    def describe(self) -> str:
        """A paragraph for a failing seed: what broke, and how to replay it."""
        lines = [f"seed {self.seed}: {len(self.violations)} violation(s)"]
        lines += [f"  {violation}" for violation in self.violations[:10]]
        if len(self.violations) > 10:
            lines.append(f"  ... and {len(self.violations) - 10} more")
        lines.append(f"  replay: {self.replay_command}")
        return "\n".join(lines)


def simulate(seed: int, config: SimulationConfig = DEFAULT_CONFIG) -> SimulationReport:
    """Run one seed of the simulation (on trio, in simulated time) and check its history.

    Needs trio (``pip install trio``). The same seed and config replay exactly.
    """
    import trio
    import trio.testing

    world = World(seed, config)
    with deterministic_trio(seed):
        trio.run(world.run, clock=trio.testing.MockClock(autojump_threshold=0))
    violations = check_history(world.history)
    return SimulationReport(seed, config, violations, world.history)


def run_seeds(
    seeds: Iterable[int], config: SimulationConfig = DEFAULT_CONFIG
) -> tuple[Counter[str], list[SimulationReport]]:
    """Run many seeds: the summed counts, and the reports of the seeds that failed."""
    totals: Counter[str] = Counter()
    failures: list[SimulationReport] = []
    for seed in seeds:
        report = simulate(seed, config)
        totals.update(report.counts)
        if not report.ok:
            failures.append(report)
            totals.update(f"violation {kind}" for kind in {v.kind for v in report.violations})
    return totals, failures
