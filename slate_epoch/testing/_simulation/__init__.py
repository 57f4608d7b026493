"""A deterministic simulation of the claim protocol under faults, and a checker of its history.

One *seed* is one run: between 2 and 16 writers share one ``MemoryStore``; each writer is a
simulated process that claims a role (``"writer"``, sometimes ``"compactor"``) and then appends
unique tokens to the manifest's ``state`` with ``EpochHandle.update``. Some writers of the
``"writer"`` role also use the write-ahead log: after the claim they ``fence_wal()``, then mix
appends of unique payloads with ``mark_replayed`` (of their last acknowledged id), ``trim`` and
updates; now and then a writer stalls for seconds, to wake up as a zombie. Up to two
*collectors* run ``collect_garbage(keep=1..4)`` now and then, under the same faults and crashes,
so manifest versions are deleted behind the retention boundary while everyone writes (and stale
processes recreate deleted ids). Every process talks to the store through its own
``FaultyStore`` (lost responses and errors up to 30%, random latency) and, below it, a *wire*
that records every call in the history and may deliver a create late (the caller times out at
once; the request lands, or fails, after a delay, even if the caller has crashed meanwhile).
Writers and collectors crash at random moments (their task is cancelled mid-operation) and may
restart, in the same process (warm manifest cache) or in a new one. The cold search for the
newest manifest runs as a scale model, with listing pages of 16 keys instead of 1,000, so that
short histories take its galloping path too.

Everything runs on trio with ``MockClock(autojump_threshold=0)``: simulated time costs nothing,
and a seed replays exactly. Every random choice comes from RNGs derived from the seed, including
backoff jitter and trio's own scheduling order (see ``deterministic_trio``). Claim and write ids
still come from ``os.urandom``; they are only ever compared for equality, so they never steer
control flow (``tests/test_simulation.py`` checks that two runs of one seed, in two processes,
record the same history up to renaming those ids).

After the run, ``check_history`` checks the recorded history and the final store against the
protocol's invariants; see its docstring. A violation names its seed and a command replaying it.
"""

from .checker import Violation, check_history
from .cli import main, soak, summary
from .config import DEFAULT_CONFIG, SimulationConfig, replay_command
from .history import History, OpRecord
from .run import SimulationReport, run_seeds, simulate

__all__ = [
    "DEFAULT_CONFIG",
    "History",
    "OpRecord",
    "SimulationConfig",
    "SimulationReport",
    "Violation",
    "check_history",
    "main",
    "replay_command",
    "run_seeds",
    "simulate",
    "soak",
    "summary",
]
