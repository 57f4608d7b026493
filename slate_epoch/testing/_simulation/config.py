"""The simulation's settings, and where its root's objects live."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

from ..._layout import (
    lease_key,
    log_boundary_key,
    log_entries,
    manifest_boundary_key,
    manifest_versions,
)

__all__ = [
    "BOUNDARY_KEY",
    "DEFAULT_CONFIG",
    "FENCED",
    "LEASES",
    "LOG",
    "LOG_BOUNDARY_KEY",
    "MANIFESTS",
    "MISUSE",
    "ROOT",
    "SAME",
    "UNKNOWN",
    "SimulationConfig",
    "replay_command",
]

ROOT: Final = "sim"
# Every misuse (what the library must refuse) carries a token starting with this: none may ever
# land anywhere.
MISUSE: Final = b"MISUSE:"
# Appends whose payload starts with this repeat it (as services append the same bytes): they
# can't be told apart by payload, so only by id.
SAME: Final = b"same:"
# The outcomes of a fenced operation: plain (nothing of it landed), or with its write's outcome
# unknown (it may have landed; nothing left on the store can tell).
UNKNOWN: Final = "WriteOutcomeUnknownError"
FENCED: Final = frozenset({"FencedError", UNKNOWN})
MANIFESTS: Final = manifest_versions(ROOT)
LOG: Final = log_entries(ROOT)
BOUNDARY_KEY: Final = manifest_boundary_key(ROOT)
LOG_BOUNDARY_KEY: Final = log_boundary_key(ROOT)
# The folder of the roles' leases (``lead``): one object per role.
LEASES: Final = lease_key(ROOT, "x")[:-1]


@dataclass(frozen=True)
class SimulationConfig:
    """The ranges a seed draws from. ``replay_command`` names every field that differs from
    these defaults, so a replay uses the same ranges."""

    min_writers: int = 2
    max_writers: int = 16
    max_fault_rate: float = 0.3  # per process: lost-response and error rates each in [0, this]
    max_late_rate: float = 0.1  # per process: creates whose request lands after the timeout
    max_latency: float = 0.05  # seconds; per process, latency drawn from [0, up to this]
    max_updates: int = 5  # per claim: 0..this updates (or refreshes, or log steps)
    # ... or, with this chance for a writer with a log, a long session of up to ``long_session``
    # steps, so that the log grows, is marked and trimmed while readers read it
    long_session_rate: float = 0.3
    long_session: int = 30
    compactor_rate: float = 0.25  # chance that a writer claims "compactor" instead of "writer"
    crash_rate: float = 0.3  # chance that a life of a writer (or collector) ends in a crash
    restart_rate: float = 0.7  # chance that a crashed writer (or collector) starts again
    max_restarts: int = 3
    # A scale model of the cold search: the library lists one page of 1,000 keys, then gallops;
    # the simulation runs it with pages this small, so that short histories cross a page.
    list_page: int = 16
    long_history_rate: float = 0.1  # chance that the store starts with a history of ...
    long_history: int = 200  # ... between half a page and this many manifests
    deadline: float = 3600.0  # simulated seconds: a seed still running then has hung
    # The write-ahead log: the chance that a claim of the "writer" role goes on to fence the log
    # and append (a fenced writer's next claim draws again).
    wal_rate: float = 0.5
    # Retention: each of up to ``max_collectors`` collectors runs with this chance; a life of
    # one runs 1..``max_collections`` collections, each with ``keep`` drawn from 1..``max_keep``.
    max_collectors: int = 2
    collector_rate: float = 0.5
    max_collections: int = 6
    max_keep: int = 4
    # How services really use a handle: several of its operations in flight at once (a round of
    # 2-3 steps run concurrently), mutates that rebuild the manifest from scratch, misuse that
    # must be refused with nothing written (wrong types, moving the replay point, a non-bytes
    # payload), a second fence_wal on one handle, and a fenced handle that keeps being used.
    parallel_rate: float = 0.3
    rebuild_rate: float = 0.2
    misuse_rate: float = 0.08
    refence_rate: float = 0.1
    same_payload_rate: float = 0.15
    zombie_rate: float = 0.3
    # Readers: up to ``max_readers`` processes (each with this chance) that read the log with
    # read_wal while writers append and trim, and read manifest versions by id, up to
    # ``max_reads`` times a life.
    max_readers: int = 2
    reader_rate: float = 0.6
    max_reads: int = 12
    # The chance that the store starts with foreign objects in every folder (names a careless
    # parser would take for ids: Unicode digits, suffixes, near misses).
    foreign_rate: float = 0.3
    # Leading (``lead``): with ``lead_rate`` a seed also runs ``min_leaders``..``max_leaders``
    # leader processes of one role ("leader", or with ``lead_writer_rate`` the writers' own
    # "writer"), each with a lease drawn from [``min_lease``, ``max_lease``] seconds, for up to
    # ``max_lead_lives`` lives (entering, leading, ending; restarting after a crash). A life is
    # disrupted, with these chances, by a crash (the process killed: no release), a pause
    # (SIGSTOP for 0.3..3 leases, then SIGCONT), a stop (cancelled from outside: released) or a
    # store outage (every request of the process fails for 0.5..2.5 leases). With
    # ``lead_calm_rate`` a leader's process sees no random faults (only those events). Up to
    # ``max_operators`` operators (each with ``operator_rate``) claim the "leader" role with
    # plain ``claim_epoch``, as ``slate-epoch claim`` would.
    lead_rate: float = 0.3
    min_leaders: int = 2
    max_leaders: int = 4
    min_lease: float = 0.5
    max_lease: float = 5.0
    max_lead_lives: int = 3
    lead_writer_rate: float = 0.25
    lead_crash_rate: float = 0.2
    lead_pause_rate: float = 0.15
    lead_stop_rate: float = 0.1
    lead_outage_rate: float = 0.15
    lead_calm_rate: float = 0.5
    max_operators: int = 2
    operator_rate: float = 0.4

    def __post_init__(self) -> None:
        if not 1 <= self.min_writers <= self.max_writers:
            raise ValueError("need 1 <= min_writers <= max_writers")
        if not 0.0 <= self.max_fault_rate <= 0.5:
            raise ValueError("max_fault_rate must be within [0, 0.5]")
        if self.max_keep < 1 or self.max_collections < 1:
            raise ValueError("need max_keep >= 1 and max_collections >= 1")
        if not 1 <= self.min_leaders <= self.max_leaders:
            raise ValueError("need 1 <= min_leaders <= max_leaders")
        if not 0.0 < self.min_lease <= self.max_lease:
            raise ValueError("need 0 < min_lease <= max_lease")
        if self.max_lead_lives < 1:
            raise ValueError("need max_lead_lives >= 1")

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the defaults."""
        default = SimulationConfig()
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


DEFAULT_CONFIG: Final = SimulationConfig()


def replay_command(seed: int, config: SimulationConfig = DEFAULT_CONFIG) -> str:
    """The one-line shell command that replays ``seed`` and prints its history."""
    extra = "".join(f" --set {name}={value}" for name, value in config.changed().items())
    return f"python -m slate_epoch.testing replay --seed {seed}{extra}"
