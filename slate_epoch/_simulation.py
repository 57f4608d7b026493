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
backoff jitter and trio's own scheduling order (see ``_deterministic_trio``). Claim and write ids
still come from ``os.urandom``; they are only ever compared for equality, so they never steer
control flow (``tests/test_simulation.py`` checks that two runs of one seed, in two processes,
record the same history up to renaming those ids).

After the run, ``check_history`` checks the recorded history and the final store against the
protocol's invariants; see its docstring. A violation names its seed and a command replaying it.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import contextvars
import dataclasses
import gc
import hashlib
import math
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import anyio.lowlevel
import msgspec

from . import _manifest
from ._claim import EpochHandle, claim_epoch
from ._errors import (
    AlreadyExistsError,
    ClaimTimeoutError,
    FencedError,
    ManifestError,
    NotFoundError,
    OperationTimeoutError,
    PreconditionError,
    TransientStoreError,
    WalError,
)
from ._gc import GarbageReport, collect_garbage
from ._manifest import Manifest, RoleClaim, decode, encode
from ._retry import Backoff
from ._store import (
    Body,
    GetResult,
    ObjectMeta,
    PutMode,
    PutResult,
    UpdateVersion,
    as_body,
    listing,
    validate_key,
)
from ._wal import WalWriter, decode_entry, encode_entry, read_wal
from .backends.memory import MemoryStore
from .testing._faulty import FaultyStore

if TYPE_CHECKING:
    import trio

__all__ = [
    "History",
    "OpRecord",
    "SimulationConfig",
    "SimulationReport",
    "Violation",
    "check_history",
    "main",
    "replay_command",
    "simulate",
]

T = TypeVar("T")

ROOT: Final = "sim"
_PREFIX: Final = f"{ROOT}/manifest/"
_SUFFIX: Final = ".manifest"
_WAL_PREFIX: Final = f"{ROOT}/wal/"
_WAL_SUFFIX: Final = ".wal"
_BOUNDARY_KEY: Final = f"{ROOT}/manifest-boundary"
_WAL_BOUNDARY_KEY: Final = f"{ROOT}/wal-boundary"


# The operation the current task is performing: store calls and faults are charged to it.
_CURRENT_OP: contextvars.ContextVar[OpRecord | None] = contextvars.ContextVar(
    "slate_epoch_simulation_op", default=None
)


def _current_op() -> int:
    record = _CURRENT_OP.get()
    return -1 if record is None else record.index


def _numbered(key: str, prefix: str, suffix: str) -> int | None:
    if key.startswith(prefix) and key.endswith(suffix):
        name = key[len(prefix) : -len(suffix)]
        if len(name) == 20 and name.isdigit():
            return int(name)
    return None


def _manifest_id(key: str) -> int | None:
    """The manifest id a key names, or None for any other key."""
    return _numbered(key, _PREFIX, _SUFFIX)


def _wal_id(key: str) -> int | None:
    """The log id a key names, or None for any other key."""
    return _numbered(key, _WAL_PREFIX, _WAL_SUFFIX)


# -- configuration ------------------------------------------------------------------------------


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

    def __post_init__(self) -> None:
        if not 1 <= self.min_writers <= self.max_writers:
            raise ValueError("need 1 <= min_writers <= max_writers")
        if not 0.0 <= self.max_fault_rate <= 0.5:
            raise ValueError("max_fault_rate must be within [0, 0.5]")
        if self.max_keep < 1 or self.max_collections < 1:
            raise ValueError("need max_keep >= 1 and max_collections >= 1")

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


# -- the recorded history -----------------------------------------------------------------------


@dataclass(slots=True)
class OpRecord:
    """One call of ``claim_epoch``, ``EpochHandle.update``/``refresh``/``fence_wal``/
    ``mark_replayed``, ``WalWriter.append``/``trim``, or ``collect_garbage``.

    ``kind`` is ``claim``, ``update``, ``refresh``, ``fence``, ``append``, ``mark``, ``trim``
    or ``gc``. ``start_seq``/``end_seq`` place it among the store calls (``History.calls``).
    ``outcome`` is ``"ok"``, the exception's class name, ``"crashed"`` (cancelled by a
    simulated crash) or ``"cancelled"`` (cancelled by anything else: the seed's deadline).
    ``epoch`` and ``claim_id`` are the handle's (for a claim: the handle it returned);
    ``manifest_id`` is the handle's after the operation (the newest version it has seen, which
    may lie above the one it wrote; for ``gc``: the boundary it reported); ``write_id`` is the
    write id of the manifest ``update`` (or ``mark_replayed``) returned. ``token`` is the
    update's token, or the append's payload. ``entry_id`` is the log id ``append`` returned, the
    fence id ``fence_wal`` returned, or the id ``mark_replayed`` was asked to mark; ``count``
    what ``trim`` or ``gc`` deleted; ``keep`` the collection's ``keep``.
    """

    index: int
    actor: str
    kind: str
    role: str
    timeout: float
    start_seq: int
    start_time: float
    end_seq: int = -1
    end_time: float = math.nan
    outcome: str = "running"
    detail: str = ""
    epoch: int = 0
    claim_id: str = ""
    manifest_id: int = 0
    write_id: str = ""
    token: bytes = b""
    entry_id: int = 0
    count: int = 0
    keep: int = 0
    lost: int = 0  # faults injected during the operation, by kind
    errors: int = 0
    late: int = 0


@dataclass(slots=True)
class Call:
    """One call that reached the shared store through a wire. ``op`` is the index of the
    operation that issued it (-1: none). ``result`` is ``ok``, ``missing`` (NotFoundError),
    ``landed`` (a put that wrote), ``own`` (a create that found these same bytes already
    there), ``exists`` (a create that found other bytes), ``stale`` (a compare-and-swap that
    found another version), ``late`` (a create whose caller was told "timed out" and whose
    request is still in flight), ``deleted`` or ``absent`` (a delete that removed an object,
    or found none)."""

    seq: int
    time: float
    op: int
    kind: str  # get head create overwrite update list delete
    key: str
    result: str
    body: bytes | None = None


@dataclass
class History:
    """Everything a seed did, in order, and the final store.

    Every object under the root is written through a wire (or by the prehistory), and every
    put and delete takes effect atomically with its record: so ``current`` is exactly what the
    store holds at each point of the history, and ``first_seen`` the version of each manifest id
    that is part of the history (its first create: an id is first created only once every lower
    id exists, so never at or below the boundary; a later create at the same id can only follow
    its deletion, and is a stale writer's *recreation*).
    """

    seed: int
    config: SimulationConfig
    writers: int = 0
    collectors: int = 0
    ops: list[OpRecord] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    events: list[tuple[int, float, str]] = field(default_factory=list)  # crash, restart, ...
    # manifest id -> (bytes, etag) of its first create: the version that is in the history
    first_seen: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    # manifest id -> what the store holds there now (None: deleted)
    current: dict[int, tuple[bytes, str] | None] = field(default_factory=dict)
    # observations that contradicted ``current``: (manifest id, seq, what differed)
    changed: list[tuple[int, int, str]] = field(default_factory=list)
    # first creates of manifest ids (the history's versions): (seq, op, manifest id)
    landings: list[tuple[int, int, int]] = field(default_factory=list)
    # creates at an id that had been created and deleted before: (seq, op, manifest id)
    recreations: list[tuple[int, int, int]] = field(default_factory=list)
    # deletes that removed a manifest: (seq, op, manifest id, the boundary at that moment)
    deletions: list[tuple[int, int, int, int]] = field(default_factory=list)
    boundary: int = 0  # the retention boundary the store holds now
    boundary_moves: list[tuple[int, int]] = field(default_factory=list)  # (seq, new value)
    wal_boundary: int = 0  # the log's trim boundary the store holds now
    wal_boundary_moves: list[tuple[int, int]] = field(default_factory=list)  # (seq, new value)
    # log objects written: (seq, op, log id, body); deleted: (..., the log boundary then)
    wal_landings: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    wal_deletions: list[tuple[int, int, int, int]] = field(default_factory=list)
    wal_current: dict[int, bytes | None] = field(default_factory=dict)
    # the final store: the manifest folder (key -> (bytes, etag)), the boundary object, the log
    final: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    final_boundary: bytes | None = None
    final_wal: dict[str, bytes] = field(default_factory=dict)
    # read_wal from the newest manifest's replay point: (id, epoch, data), or the error it raised
    final_log: list[tuple[int, int, bytes]] = field(default_factory=list)
    final_log_error: str = ""
    hung: bool = False
    end_time: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    _seq: int = 0

    def tick(self) -> int:
        self._seq += 1
        return self._seq

    def observe(self, manifest_id: int, body: bytes | None, etag: str, seq: int) -> None:
        """A read found ``body`` (None: a head) and ``etag`` at ``manifest_id``."""
        now = self.current.get(manifest_id)
        if now is None:
            what = "deleted" if manifest_id in self.first_seen else "never created"
            self.changed.append((manifest_id, seq, f"read while {what}"))
        elif body is not None and body != now[0]:
            self.changed.append((manifest_id, seq, "bytes"))
        elif etag != now[1]:
            self.changed.append((manifest_id, seq, f"etag {now[1]} -> {etag}"))

    def landed(self, manifest_id: int, body: bytes, etag: str, seq: int, op: int) -> None:
        """A put wrote ``body`` at ``manifest_id``."""
        if self.current.get(manifest_id) is not None:
            self.changed.append((manifest_id, seq, "overwritten"))
        self.current[manifest_id] = (body, etag)
        if manifest_id in self.first_seen:
            self.recreations.append((seq, op, manifest_id))
        else:
            self.first_seen[manifest_id] = (body, etag)
            self.landings.append((seq, op, manifest_id))

    def deleted(self, manifest_id: int, seq: int, op: int) -> None:
        self.current[manifest_id] = None
        self.deletions.append((seq, op, manifest_id, self.boundary))

    def moved_boundary(self, key: str, body: bytes, seq: int) -> None:
        """A put wrote ``body`` to a boundary object (the manifests' or the log's)."""
        try:
            value = _manifest._decode_boundary(body, key)
        except ManifestError:
            value = -1  # checks 1 and 6 report it as moving back
        if key == _BOUNDARY_KEY:
            self.boundary = value
            self.boundary_moves.append((seq, value))
        else:
            self.wal_boundary = value
            self.wal_boundary_moves.append((seq, value))

    def trace(self) -> list[str]:
        """The history as text, one line per operation boundary, store call and event, in
        order. Random claim and write ids are renamed ``#1``, ``#2``... in order of first
        appearance, and wall-clock fields dropped, so two runs of one seed trace identically."""
        names: dict[str, str] = {}

        def name(random_id: str) -> str:
            return names.setdefault(random_id, f"#{len(names) + 1}")

        def show(key: str, body: bytes) -> str:
            if _wal_id(key) is not None:
                return _show_wal(body, key)
            if key in (_BOUNDARY_KEY, _WAL_BOUNDARY_KEY):
                try:
                    return f"boundary={_manifest._decode_boundary(body, key)}"
                except ManifestError as exc:
                    return f"<undecodable: {exc}>"
            try:
                m = decode(body)
            except ManifestError as exc:
                return f"<undecodable: {exc}>"
            roles = " ".join(f"{c.role}={c.epoch}{name(c.claim_id)}" for c in m.roles)
            replay = f" replay_after={m.replay_after}" if m.replay_after else ""
            return f"[{roles}] state={_tokens(m.state)}{replay} write={name(m.write_id)}"

        rows: list[tuple[int, str]] = []
        for op in self.ops:
            what = f"{op.kind} {op.role}"
            if op.kind == "gc":
                what = f"gc keep={op.keep}"
            elif op.kind != "claim":
                what += f"@{op.epoch}{name(op.claim_id)}"
            if op.token:
                what += f" +{op.token.decode()}"
            if op.kind == "mark":
                what += f" ->{op.entry_id}"
            rows.append((op.start_seq, f"{op.start_time:.9f} op{op.index} {op.actor} {what}"))
            result = op.outcome + (f" ({op.detail})" if op.detail else "")
            if op.outcome == "ok":
                if op.kind == "claim":
                    result += f" epoch={op.epoch}{name(op.claim_id)} newest={op.manifest_id}"
                elif op.kind in ("update", "mark"):
                    result += f" write={name(op.write_id)} newest={op.manifest_id}"
                elif op.kind in ("fence", "append"):
                    result += f" id={op.entry_id}"
                elif op.kind == "trim":
                    result += f" deleted={op.count}"
                elif op.kind == "gc":
                    result += f" boundary={op.manifest_id} deleted={op.count}"
            faults = f" lost={op.lost} errors={op.errors} late={op.late}"
            rows.append((op.end_seq, f"{op.end_time:.9f} op{op.index} end {result}{faults}"))
        for call in self.calls:
            text = f"{call.time:.9f} op{call.op} {call.kind} {call.key} {call.result}"
            if call.body is not None and call.result in ("landed", "late"):
                text += " " + show(call.key, call.body)
            rows.append((call.seq, text))
        for seq, at, text in self.events:
            rows.append((seq, f"{at:.9f} {text}"))
        rows.sort(key=lambda row: row[0])
        return [text for _, text in rows]

    def fingerprint(self) -> str:
        """A digest of ``trace()``: equal for two runs that did the same thing."""
        digest = hashlib.sha256()
        for line in self.trace():
            digest.update(line.encode())
            digest.update(b"\n")
        return digest.hexdigest()


def _tokens(state: bytes) -> list[bytes]:
    return [token for token in state.split(b";") if token]


def _show_wal(body: bytes, key: str) -> str:
    try:
        entry = decode_entry(body, key, 1)
    except (WalError, ManifestError) as exc:
        return f"<undecodable: {exc}>"
    return "fence" if entry is None else f"entry epoch={entry.epoch} {entry.data.decode()}"


# -- the checker --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """A broken invariant: ``check`` is its number in ``check_history``'s list."""

    check: int
    message: str

    def __str__(self) -> str:
        return f"[check {self.check}] {self.message}"

    @property
    def kind(self) -> str:
        """The message with its numbers and names blanked: violations of one kind share it."""
        message = re.sub(r"\([^)]*\)", "(...)", self.message)
        return f"[check {self.check}] " + re.sub(r"[0-9]+", "N", message)


_WRITES: Final = {"ok", "FencedError", "OperationTimeoutError", "crashed"}
_EXPECTED_OUTCOMES: Final = {
    "claim": {"ok", "ClaimTimeoutError", "crashed"},
    "update": _WRITES,
    "refresh": _WRITES,
    "fence": _WRITES,
    "append": _WRITES,
    "mark": _WRITES,
    "trim": _WRITES,
    "gc": {"ok", "OperationTimeoutError", "crashed"},
}
_SLACK: Final = 1e-6  # simulated seconds of float rounding allowed on a deadline


def check_history(history: History) -> list[Violation]:
    """Check a finished seed's history and final store against the protocol's invariants.

    The *lineage* is the history's versions: for each manifest id from 1 to the newest, the
    bytes of its first create (recorded as it landed: collectors delete versions, so the final
    store alone no longer holds them). Checks 2, 3 and 5 run on the lineage.

    1. **Versions and retention.** Every object under the manifest folder is an intact manifest
       that some create wrote. The final ids above the final retention boundary are contiguous
       from the boundary up to the newest id ever created (the newest is never deleted); each
       holds its lineage version, bytes and etag. Ids at or below the boundary may be missing,
       and may hold a stale writer's recreation (other bytes than the lineage's). No read ever
       saw an object the store did not hold at that moment (an id's bytes and etag never change
       while it stands; a put never replaces a standing version). Every delete of a version
       happened at or below the boundary standing at that moment, and the boundary never moved
       back.
    2. **Epochs.** Per role, epochs never decrease along ids, and an epoch is set by exactly one
       claim manifest (same epoch, same claim id until the next claim). Two successful claims
       never returned the same (role, epoch); each returned handle's claim is in the history,
       set at or below the newest manifest the handle names, which carries it.
    3. **Writes.** Along ids, each manifest's state is the previous one's, or it plus one token
       (nothing lost, nothing reordered); no token appears twice (exactly-once). Every
       acknowledged update's token first appears in the manifest ``update`` returned (found
       by its write id), at or below the handle's newest manifest. Every token
       that landed lies in a manifest carrying its handle's own claim, and before the manifest
       of any newer claim of that role: no write by a fenced handle ever landed. An update that
       raised ``FencedError`` left no trace - except the corner the README documents: when a
       newer claim of the role landed on top and the retention boundary passed the version the
       update wrote before the update could look (counted as ``ambiguous_fenced_updates``).
       The same for ``mark_replayed``: an acknowledged one wrote the version its write id names,
       with the replay point at the id it marked; a fenced one never moved the replay point.
    4. **Termination.** Every claim ended in success, ``ClaimTimeoutError`` or a crash (the
       handle's and the log's operations: success, ``FencedError``, ``OperationTimeoutError`` or
       a crash; collections: success, ``OperationTimeoutError`` or a crash); nothing ended in
       any other error; each operation ended within its own timeout; and the seed finished
       before its deadline (``SimulationConfig.deadline`` simulated seconds), so nothing hung.
    5. **No burned epochs.** A successful claim is *uncontended* when no create issued by any
       other operation landed between the claim's start and its end (in the order of recorded
       store calls; a late create of the claimant's own earlier, abandoned operation counts as
       another operation's). An uncontended claim must have landed exactly one version of the
       lineage, at the id after the newest one that existed when it started, with the role's
       epoch there plus one, and returned that epoch: lost responses, errors and late deliveries
       cost it no extra epoch (a recreation of a deleted id, by a process whose cache fell
       behind the boundary, is garbage, not a version). (The issue
       asks this of claims "whose only trouble was a lost response, with no rival writing in
       between"; this checks it of every uncontended claim, whatever faults it met, and counts
       those that met a lost response or a late delivery as ``uncontended_lost_claims``.)
    6. **The write-ahead log.** The *replay point at a moment* is the ``replay_after`` of the
       newest lineage version landed before it; it never decreases along the lineage. Every
       object under the log folder, ever written or left at the end, is a fence or an intact
       entry. Trims only delete at or below the replay point of the moment, and (the log's
       retention rule) at or below the log's boundary standing at that moment, which never moves
       back nor above the replay point of its moment. A successful
       ``fence_wal`` (recorded with its writer's epoch) stands on a zero-byte object it or
       another fencer wrote. No entry of epoch *e* ever landed above the fence of a newer epoch.
       For every acknowledged append (id *i*, the writer's epoch, a unique payload): its bytes
       landed at *i* before it was acknowledged, above the replay point of that moment (else no
       writer ever replays it) and below every newer epoch's fence; and it is not lost - it
       stands at *i* in the final store, and is yielded by ``read_wal`` from the final replay
       point when it lies above it, unless a delete (a trim, checked above) removed it after it
       landed. No payload landed at two ids (no duplicate, trimmed or not), and the payload of
       an append that raised ``FencedError`` never landed above the replay point of its moment
       (below it, where nobody replays, a fenced writer's recreation of a trimmed id is garbage
       for the next trim). ``read_wal`` from the final replay point succeeds and never yields a
       lower epoch after a higher one.
    """
    violations: list[Violation] = []

    def fail(check: int, message: str) -> None:
        violations.append(Violation(check, message))

    lineage = _check_versions(history, fail)
    ids = sorted(lineage)
    first_at_epoch = _check_epochs(history, lineage, ids, fail)
    _check_writes(history, lineage, ids, first_at_epoch, fail)
    _check_termination(history, fail)
    _check_burned_epochs(history, lineage, first_at_epoch, fail)
    _check_log(history, lineage, ids, fail)
    return violations


Fail = Callable[[int, str], None]


def _check_versions(history: History, fail: Fail) -> dict[int, Manifest]:
    """Check 1; returns the lineage: id -> the history's version."""
    boundary = 0
    if history.final_boundary is not None:
        try:
            boundary = _manifest._decode_boundary(history.final_boundary, _BOUNDARY_KEY)
        except ManifestError as exc:
            fail(1, f"the retention boundary is not intact: {exc}")
    stored: list[int] = []
    for key, (body, etag) in sorted(history.final.items()):
        manifest_id = _manifest_id(key)
        if manifest_id is None:
            fail(1, f"foreign object {key!r} in the manifest folder")
            continue
        stored.append(manifest_id)
        try:
            decode(body, key)
        except ManifestError as exc:
            fail(1, f"manifest {manifest_id} is not intact: {exc}")
        first = history.first_seen.get(manifest_id)
        if first is None:
            fail(1, f"manifest {manifest_id} holds an object no recorded create wrote")
        elif manifest_id > boundary and (body, etag) != first:
            fail(
                1,
                f"manifest {manifest_id}, above the boundary {boundary}, differs from the "
                "version first created there",
            )
    newest = max(history.first_seen, default=0)
    above = [manifest_id for manifest_id in stored if manifest_id > boundary]
    if above != list(range(boundary + 1, newest + 1)):
        fail(
            1,
            f"manifest ids above the boundary {boundary} are not contiguous up to the newest "
            f"{newest}: {_ranges(above)}",
        )
    for manifest_id, seq, what in history.changed:
        fail(1, f"manifest {manifest_id} changed while it stood ({what}, call {seq})")
    for seq, op, manifest_id, standing in history.deletions:
        if manifest_id > standing:
            fail(
                1,
                f"op{op} deleted manifest {manifest_id} (call {seq}) above the boundary {standing}",
            )
    previous = 0
    for seq, value in history.boundary_moves:
        if value < previous:
            fail(1, f"the boundary moved back from {previous} to {value} (call {seq})")
        previous = max(previous, value)
    lineage: dict[int, Manifest] = {}
    for manifest_id in range(1, newest + 1):
        first = history.first_seen.get(manifest_id)
        if first is None:
            fail(1, f"manifest {manifest_id} was never created, but {newest} was")
            continue
        try:
            lineage[manifest_id] = decode(first[0], _key(manifest_id))
        except ManifestError as exc:
            fail(1, f"manifest {manifest_id} was created not intact: {exc}")
    return lineage


def _check_epochs(
    history: History, lineage: dict[int, Manifest], ids: list[int], fail: Fail
) -> dict[tuple[str, int], int]:
    """Check 2; returns where each (role, epoch) was first set."""
    roles = sorted({claim.role for m in lineage.values() for claim in m.roles})
    first_at_epoch: dict[tuple[str, int], int] = {}
    for role in roles:
        previous_epoch, previous_claim = 0, ""
        for manifest_id in ids:
            claim = lineage[manifest_id].claim(role)
            epoch, claim_id = (0, "") if claim is None else (claim.epoch, claim.claim_id)
            if epoch < previous_epoch:
                fail(
                    2,
                    f"role {role!r}: epoch {epoch} at manifest {manifest_id} after "
                    f"{previous_epoch}",
                )
            elif epoch == previous_epoch and claim_id != previous_claim:
                fail(2, f"role {role!r}: epoch {epoch} claimed twice (manifest {manifest_id})")
            elif epoch > previous_epoch:
                first_at_epoch[(role, epoch)] = manifest_id
                if lineage[manifest_id].write_id != claim_id:
                    fail(
                        2,
                        f"role {role!r}: epoch {epoch} set at manifest {manifest_id} by a "
                        "write that is not its claim",
                    )
            previous_epoch, previous_claim = epoch, claim_id
    claimed: dict[tuple[str, int], OpRecord] = {}
    for op in history.ops:
        if op.kind != "claim" or op.outcome != "ok":
            continue
        twin = claimed.setdefault((op.role, op.epoch), op)
        if twin is not op:
            fail(
                2,
                f"two claims returned role {op.role!r} epoch {op.epoch}: op{twin.index} "
                f"({twin.actor}) and op{op.index} ({op.actor})",
            )
        version = lineage.get(op.manifest_id)
        claim = None if version is None else version.claim(op.role)
        first = first_at_epoch.get((op.role, op.epoch))
        if claim is None or (claim.epoch, claim.claim_id) != (op.epoch, op.claim_id):
            fail(
                2,
                f"op{op.index} ({op.actor}) returned role {op.role!r} epoch {op.epoch} at "
                f"manifest {op.manifest_id}, which does not carry that claim",
            )
        elif first is None or first > op.manifest_id:
            fail(2, f"op{op.index} returned manifest {op.manifest_id}, below its claim's ({first})")
    return first_at_epoch


def _check_writes(
    history: History,
    lineage: dict[int, Manifest],
    ids: list[int],
    first_at_epoch: dict[tuple[str, int], int],
    fail: Fail,
) -> None:
    """Check 3."""
    landed_at: dict[bytes, int] = {}
    previous: list[bytes] = []
    for manifest_id in ids:
        tokens = _tokens(lineage[manifest_id].state)
        if tokens[: len(previous)] != previous or len(tokens) > len(previous) + 1:
            fail(
                3,
                f"manifest {manifest_id}'s state does not extend manifest "
                f"{manifest_id - 1}'s by at most one update",
            )
        for token in tokens[len(previous) :]:
            if token in landed_at:
                fail(
                    3,
                    f"update {token.decode()} applied twice (manifests "
                    f"{landed_at[token]} and {manifest_id})",
                )
            else:
                landed_at[token] = manifest_id
        previous = tokens
    id_of_write = {m.write_id: manifest_id for manifest_id, m in lineage.items()}

    def newer_claim(op: OpRecord) -> int | None:
        newer = [
            first
            for (role, epoch), first in first_at_epoch.items()
            if role == op.role and epoch > op.epoch
        ]
        return min(newer) if newer else None

    def carries_own_claim(op: OpRecord, manifest_id: int, what: str) -> None:
        claim = lineage[manifest_id].claim(op.role)
        if claim is None or (claim.epoch, claim.claim_id) != (op.epoch, op.claim_id):
            held = "nobody" if claim is None else f"epoch {claim.epoch}"
            fail(
                3,
                f"op{op.index} ({op.actor}): {what} by the handle at role {op.role!r} epoch "
                f"{op.epoch} landed at manifest {manifest_id}, held by {held}: a fenced write "
                "landed",
            )
        newer = newer_claim(op)
        if newer is not None and manifest_id > newer:
            fail(
                3,
                f"op{op.index} ({op.actor}): {what} of epoch {op.epoch} landed at manifest "
                f"{manifest_id}, after the newer claim at {newer}",
            )

    def ambiguous(op: OpRecord, where: int) -> bool:
        """The README's corner: a write fenced after it landed, when a newer claim of its role
        landed on top and the boundary passed its version before it could look."""
        passed = any(seq < op.end_seq and value >= where for seq, value in history.boundary_moves)
        newer = newer_claim(op)
        if passed and newer is not None and newer > where:
            history.counts["ambiguous_fenced_updates"] += 1
            return True
        return False

    # Each handle marks ids of its own appends, each once: only a handle's own mark can move the
    # replay point to such an id - unless two handles were acknowledged the same log id (check 6
    # reports that), and then a move is not attributed to either.
    marked = Counter(op.entry_id for op in history.ops if op.kind == "mark")
    for op in history.ops:
        written = id_of_write.get(op.write_id)
        if op.kind == "mark":
            what = f"mark_replayed({op.entry_id})"
            if op.outcome == "ok":
                if written is None or written > op.manifest_id:
                    fail(
                        3,
                        f"op{op.index} ({op.actor}): {what} acknowledged, but its write is at "
                        f"{written} (the handle at {op.manifest_id})",
                    )
                elif lineage[written].replay_after != op.entry_id:
                    fail(
                        3,
                        f"op{op.index} ({op.actor}): {what} acknowledged, but manifest {written} "
                        f"has the replay point at {lineage[written].replay_after}",
                    )
                else:
                    carries_own_claim(op, written, what)
                continue
            where = _moved_replay_point(op, lineage, ids) if marked[op.entry_id] == 1 else None
        elif op.kind == "update":
            token = op.token.rstrip(b";")
            what = f"update {token.decode()}"
            where = landed_at.get(token)
            if op.outcome == "ok" and (where is None or where != written or where > op.manifest_id):
                fail(
                    3,
                    f"op{op.index} ({op.actor}): {what} acknowledged (its write at manifest "
                    f"{written}, the handle at {op.manifest_id}) but found at {where}",
                )
        else:
            continue
        if op.outcome == "FencedError" and where is not None and not ambiguous(op, where):
            fail(
                3,
                f"op{op.index} ({op.actor}): {what} raised FencedError but landed at manifest "
                f"{where}",
            )
        if where is not None:
            carries_own_claim(op, where, what)


def _moved_replay_point(op: OpRecord, lineage: dict[int, Manifest], ids: list[int]) -> int | None:
    """Where the ``mark_replayed`` of ``op`` landed: the first version that moved the replay
    point to the id it marks (the caller makes sure that no other operation marked that id)."""
    previous = 0
    for manifest_id in ids:
        replay_after = lineage[manifest_id].replay_after
        if replay_after == op.entry_id > previous:
            return manifest_id
        previous = max(previous, replay_after)
    return None


def _check_termination(history: History, fail: Fail) -> None:
    """Check 4."""
    if history.hung:
        running = [
            f"op{op.index} {op.kind} ({op.actor})"
            for op in history.ops
            if op.outcome in ("running", "cancelled")
        ]
        fail(
            4,
            f"still running after {history.config.deadline} simulated seconds: "
            f"{', '.join(running) or 'no operation (a writer or a late write)'}",
        )
    for op in history.ops:
        if op.outcome in ("running", "cancelled"):
            if not history.hung:
                fail(4, f"op{op.index} {op.kind} ({op.actor}) never ended")
        elif op.outcome not in _EXPECTED_OUTCOMES[op.kind]:
            fail(4, f"op{op.index} {op.kind} ({op.actor}) ended in {op.outcome}: {op.detail}")
        elif op.end_time - op.start_time > op.timeout + _SLACK:
            fail(
                4,
                f"op{op.index} {op.kind} ({op.actor}) took {op.end_time - op.start_time} s, "
                f"past its timeout of {op.timeout} s",
            )


def _check_burned_epochs(
    history: History,
    lineage: dict[int, Manifest],
    first_at_epoch: dict[tuple[str, int], int],
    fail: Fail,
) -> None:
    """Check 5."""
    landings = history.landings  # the lineage's versions, in seq order
    creates = sorted(landings + history.recreations)  # everything that landed
    for op in history.ops:
        if op.kind != "claim" or op.outcome != "ok":
            continue
        if any(o != op.index for seq, o, _ in creates if op.start_seq < seq < op.end_seq):
            continue  # contended
        if op.lost or op.late:
            history.counts["uncontended_lost_claims"] += 1
        before = [mid for seq, _, mid in landings if seq < op.start_seq]
        newest = max(before, default=0)
        base = lineage.get(newest) if newest else Manifest()
        expected_epoch = (0 if base is None else base.epoch(op.role)) + 1
        own = [mid for seq, _, mid in landings if op.start_seq < seq < op.end_seq]
        landed = first_at_epoch.get((op.role, op.epoch))
        if len(own) != 1 or landed != newest + 1 or op.epoch != expected_epoch:
            fail(
                5,
                f"op{op.index} ({op.actor}): uncontended claim of {op.role!r} (lost "
                f"{op.lost}, errors {op.errors}, late {op.late}) started at manifest "
                f"{newest} (epoch {expected_epoch - 1}), landed {len(own)} manifest(s) and "
                f"returned epoch {op.epoch}, set at manifest {landed}: expected epoch "
                f"{expected_epoch} at {newest + 1}",
            )


def _check_log(history: History, lineage: dict[int, Manifest], ids: list[int], fail: Fail) -> None:
    """Check 6."""
    # The replay point at each moment: the newest version landed before it.
    version_seqs: list[int] = []
    replay_points: list[int] = []
    seq_of = {mid: seq for seq, _, mid in history.landings}
    previous = 0
    for manifest_id in ids:
        replay_after = lineage[manifest_id].replay_after
        if replay_after < previous:
            fail(
                6,
                f"the replay point moved back from {previous} to {replay_after} at manifest "
                f"{manifest_id}",
            )
        previous = max(previous, replay_after)
        if manifest_id in seq_of:  # else: the prehistory, replay point 0
            version_seqs.append(seq_of[manifest_id])
            replay_points.append(previous)

    def replay_at(seq: int) -> int:
        index = bisect.bisect_left(version_seqs, seq)
        return replay_points[index - 1] if index else 0

    # What landed where: (epoch, payload) per landing, None for a fence.
    entries: list[tuple[int, int, int, tuple[int, bytes] | None]] = []
    for seq, by, entry_id, raw in history.wal_landings:
        key = f"{_WAL_PREFIX}{entry_id:020d}{_WAL_SUFFIX}"
        try:
            decoded = decode_entry(raw, key, entry_id)
        except (WalError, ManifestError) as exc:
            fail(6, f"op{by} wrote a log object at {entry_id} that is not intact: {exc}")
            continue
        content = None if decoded is None else (decoded.epoch, decoded.data)
        entries.append((seq, by, entry_id, content))
    for key, raw in sorted(history.final_wal.items()):
        final_id = _wal_id(key)
        if final_id is None:
            fail(6, f"foreign object {key!r} in the log folder")
            continue
        try:
            decode_entry(raw, key, final_id)
        except (WalError, ManifestError) as exc:
            fail(6, f"log object {final_id} is not intact: {exc}")

    for seq, by, entry_id, standing in history.wal_deletions:
        replay_after = replay_at(seq)
        if entry_id > replay_after:
            fail(
                6,
                f"op{by} deleted log entry {entry_id} (call {seq}) above the replay point "
                f"{replay_after}",
            )
        elif entry_id > standing:
            fail(
                6,
                f"op{by} deleted log entry {entry_id} (call {seq}) above the log's boundary "
                f"{standing}",
            )
    previous = 0
    for seq, value in history.wal_boundary_moves:
        if value < previous:
            fail(6, f"the log's boundary moved back from {previous} to {value} (call {seq})")
        if value > replay_at(seq):
            fail(
                6,
                f"the log's boundary moved to {value} (call {seq}), above the replay point "
                f"{replay_at(seq)}",
            )
        previous = max(previous, value)

    fence_landings = {(entry_id, seq) for seq, _, entry_id, content in entries if content is None}
    fences: list[tuple[int, int]] = []  # (epoch, fence id)
    for op in history.ops:
        if op.kind == "fence" and op.outcome == "ok":
            fences.append((op.epoch, op.entry_id))
            if not any(i == op.entry_id and s < op.end_seq for i, s in fence_landings):
                fail(
                    6,
                    f"op{op.index} ({op.actor}): fence_wal returned fence {op.entry_id}, but no "
                    "fence was written there",
                )

    def newer_fence(epoch: int) -> tuple[int, int] | None:
        """The lowest fence of an epoch above ``epoch``: (fence id, its epoch)."""
        newer = [(fence_id, e) for e, fence_id in fences if e > epoch]
        return min(newer) if newer else None

    first_landing: dict[tuple[int, bytes], int] = {}
    ids_of_payload: defaultdict[bytes, set[int]] = defaultdict(set)
    replayable: defaultdict[bytes, list[int]] = defaultdict(list)  # landed above the point
    for seq, by, entry_id, content in entries:
        if content is None:
            continue
        epoch, payload = content
        first_landing.setdefault((entry_id, encode_entry(epoch, payload)), seq)
        ids_of_payload[payload].add(entry_id)
        if entry_id > replay_at(seq):
            replayable[payload].append(entry_id)
        fence = newer_fence(epoch)
        if fence is not None and entry_id > fence[0]:
            fail(
                6,
                f"op{by}: a log entry of epoch {epoch} ({payload.decode()}) landed at "
                f"{entry_id}, above the fence of epoch {fence[1]} at {fence[0]}",
            )
    for payload, where in sorted(ids_of_payload.items()):
        if len(where) > 1:
            fail(6, f"payload {payload.decode()} landed at {len(where)} log ids: {sorted(where)}")

    deleted_at: defaultdict[int, list[int]] = defaultdict(list)
    for seq, _, entry_id, _ in history.wal_deletions:
        deleted_at[entry_id].append(seq)
    final_replay = lineage[ids[-1]].replay_after if ids else 0
    final_log = set(history.final_log)
    final_wal = {_wal_id(key): body for key, body in history.final_wal.items()}
    for op in history.ops:
        if op.kind != "append":
            continue
        name = op.token.decode()
        if op.outcome == "FencedError" and op.token in replayable:
            fail(
                6,
                f"op{op.index} ({op.actor}): append {name} raised FencedError but landed "
                f"at {sorted(replayable[op.token])}, above the replay point",
            )
        if op.outcome != "ok":
            continue
        entry_id, body = op.entry_id, encode_entry(op.epoch, op.token)
        landed_seq = first_landing.get((entry_id, body))
        if landed_seq is None or landed_seq > op.end_seq:
            fail(
                6,
                f"op{op.index} ({op.actor}): append {name} acknowledged at log id "
                f"{entry_id}, where it never landed",
            )
            continue
        seq = landed_seq
        replay_after = replay_at(seq)
        if entry_id <= replay_after:
            fail(
                6,
                f"op{op.index} ({op.actor}): append {name} of epoch {op.epoch} acknowledged "
                f"at log id {entry_id}, which it wrote (call {seq}) at or below the replay "
                f"point {replay_after}: no writer ever replays it",
            )
        fence = newer_fence(op.epoch)
        if fence is not None and entry_id >= fence[0]:
            fail(
                6,
                f"op{op.index} ({op.actor}): append {name} of epoch {op.epoch} acknowledged "
                f"at log id {entry_id}, at or above the fence of epoch {fence[1]} at {fence[0]}",
            )
        if any(s > seq for s in deleted_at[entry_id]):
            continue  # trimmed after it landed (check above that it was replayed by then)
        if final_wal.get(entry_id) != body:
            fail(
                6,
                f"op{op.index} ({op.actor}): acknowledged append {name} at log id "
                f"{entry_id} is lost: not in the final log",
            )
        elif (
            not history.final_log_error
            and entry_id > final_replay
            and (entry_id, op.epoch, op.token) not in final_log
        ):
            fail(
                6,
                f"op{op.index} ({op.actor}): acknowledged append {name} at log id "
                f"{entry_id} is not yielded by read_wal from the replay point {final_replay}",
            )

    if history.final_log_error:
        fail(6, f"read_wal from the replay point {final_replay} failed: {history.final_log_error}")
    newest_epoch, last_id = 0, final_replay
    for entry_id, epoch, _ in history.final_log:
        if epoch < newest_epoch:
            fail(
                6, f"read_wal yielded log id {entry_id} of epoch {epoch} after epoch {newest_epoch}"
            )
        if entry_id <= last_id:
            fail(6, f"read_wal yielded log id {entry_id} after {last_id}")
        newest_epoch, last_id = max(newest_epoch, epoch), entry_id


def _key(manifest_id: int) -> str:
    return f"{_PREFIX}{manifest_id:020d}{_SUFFIX}"


def _ranges(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids[:20]) + (" ..." if len(ids) > 20 else "")


# -- the simulated world ------------------------------------------------------------------------


class _SharedStore(MemoryStore):
    """The store every process shares: a ``MemoryStore`` whose delete also says what it
    removed, atomically, so the history knows exactly which version each delete took."""

    async def remove(self, key: str) -> bytes | None:
        validate_key(key)
        await anyio.lowlevel.checkpoint()
        with self._lock:
            removed = self._objects.pop(key, None)
        return None if removed is None else removed[0]


class _Wire:
    """The network between one simulated process and the shared store. Records each call in
    the history; with probability ``late_rate`` a create times out at once while its request
    stays in flight and lands (or finds the id taken) after a delay, whatever became of the
    caller. With ``tick_latency`` each call first sleeps a whole number of ticks. Lost responses
    and errors are the ``FaultyStore`` above's business.

    Each call is recorded right after the shared store performed it, with no checkpoint in
    between, so the order of the records is the order in which the store changed."""

    def __init__(self, world: _World, rng: random.Random, plan: _WriterPlan):
        self.world = world
        self.rng = rng
        self.late_rate = plan.late_rate
        self.tick_latency = plan.tick_latency
        self.late = 0

    async def _travel(self) -> None:
        if self.tick_latency is not None:
            tick, most = self.tick_latency
            await self.world.sleep(tick * self.rng.randint(0, most))

    def _call(self, kind: str, key: str, result: str, body: bytes | None = None) -> int:
        history = self.world.history
        seq = history.tick()
        history.calls.append(Call(seq, self.world.now(), _current_op(), kind, key, result, body))
        return seq

    async def get(self, key: str) -> GetResult:
        await self._travel()
        try:
            result = await self.world.store.get(key)
        except NotFoundError:
            self._call("get", key, "missing")
            raise
        seq = self._call("get", key, "ok")
        manifest_id = _manifest_id(key)
        if manifest_id is not None:
            self.world.history.observe(manifest_id, result.body, result.etag, seq)
        return result

    async def head(self, key: str) -> ObjectMeta:
        await self._travel()
        try:
            meta = await self.world.store.head(key)
        except NotFoundError:
            self._call("head", key, "missing")
            raise
        seq = self._call("head", key, "ok")
        manifest_id = _manifest_id(key)
        if manifest_id is not None:
            self.world.history.observe(manifest_id, None, meta.etag, seq)
        return meta

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        body = as_body(body)
        await self._travel()
        if mode == "create" and self.late_rate and self.rng.random() < self.late_rate:
            self.late += 1
            record = _CURRENT_OP.get()
            if record is not None:
                record.late += 1
            delay = self.rng.uniform(0.0, 1.0)
            op = _current_op()
            self._call("create", key, "late", body)
            self.world.nursery.start_soon(self._deliver_late, key, body, op, delay)
            raise TransientStoreError(f"simulated timeout on create {key!r} (still in flight)")
        return await self._put(key, body, mode, _current_op())

    async def _deliver_late(self, key: str, body: bytes, op: int, delay: float) -> None:
        await self.world.sleep(delay)
        with contextlib.suppress(AlreadyExistsError):
            await self._put(key, body, "create", op)

    async def _put(self, key: str, body: bytes, mode: PutMode, op: int) -> PutResult:
        history = self.world.history
        kind = "update" if isinstance(mode, UpdateVersion) else str(mode)
        manifest_id = _manifest_id(key)
        wal_id = _wal_id(key)
        try:
            result = await self.world.store.put(key, body, mode=mode)
        except AlreadyExistsError:
            if manifest_id is not None:
                now = history.current.get(manifest_id)
                own = now is not None and now[0] == body
            else:
                own = wal_id is not None and history.wal_current.get(wal_id) == body
            result_name = "own" if own else "exists"
            history.calls.append(Call(history.tick(), self.world.now(), op, kind, key, result_name))
            raise
        except PreconditionError:
            history.calls.append(Call(history.tick(), self.world.now(), op, kind, key, "stale"))
            raise
        seq = history.tick()
        history.calls.append(Call(seq, self.world.now(), op, kind, key, "landed", body))
        if manifest_id is not None:
            history.landed(manifest_id, body, result.etag, seq, op)
        elif wal_id is not None:
            history.wal_current[wal_id] = body
            history.wal_landings.append((seq, op, wal_id, body))
        elif key in (_BOUNDARY_KEY, _WAL_BOUNDARY_KEY):
            history.moved_boundary(key, body, seq)
        return result

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectMeta]:
        await self._travel()
        self._call("list", prefix, "ok")
        async with listing(self.world.store, prefix, start_after=start_after) as metas:
            async for meta in metas:
                yield meta

    async def delete(self, key: str) -> None:
        await self._travel()
        op = _current_op()
        removed = await self.world.store.remove(key)
        seq = self._call("delete", key, "absent" if removed is None else "deleted")
        if removed is None:
            return
        history = self.world.history
        manifest_id = _manifest_id(key)
        wal_id = _wal_id(key)
        if manifest_id is not None:
            history.deleted(manifest_id, seq, op)
        elif wal_id is not None:
            history.wal_current[wal_id] = None
            history.wal_deletions.append((seq, op, wal_id, history.wal_boundary))

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


class _Process:
    """A simulated OS process: its own store objects, so its own manifest cache (shared by the
    writers it hosts), and its own faults (``plan``'s rates)."""

    def __init__(self, world: _World, name: str, rng: random.Random, plan: _WriterPlan) -> None:
        self.name = name
        self.wire = _Wire(world, random.Random(rng.getrandbits(64)), plan)
        self.store = FaultyStore(
            self.wire,
            seed=rng.getrandbits(64),
            lost_response_rate=plan.lost_rate,
            error_rate=plan.error_rate,
            latency=plan.latency,
            on_fault=self._charge,
        )

    @staticmethod
    def _charge(action: str, op: str, key: str) -> None:
        record = _CURRENT_OP.get()
        if record is not None:
            if action == "lost":
                record.lost += 1
            else:
                record.errors += 1


@dataclass
class _Life:
    """One incarnation of a writer (or collector), from its start to its end or crash."""

    actor: str
    process: _Process
    rng: random.Random
    crashed: bool = False
    updates: int = 0
    appends: int = 0
    acknowledged: int = 0  # the last log id an append of the current handle acknowledged
    marked: int = 0  # the last log id the current handle tried to mark replayed


@dataclass(frozen=True)
class _WriterPlan:
    index: int
    role: str  # "writer", "compactor", or "gc" for a collector
    lost_rate: float
    error_rate: float
    late_rate: float
    latency: tuple[float, float] | None  # FaultyStore's: a uniform draw
    tick_latency: tuple[float, int] | None  # the wire's: (tick, n): a whole number of ticks <= n
    start_at: float
    host: int  # the writer whose process this one starts in (itself, or an earlier one)


_NOT_FENCED: Final = {"ok", "OperationTimeoutError"}


class _World:
    """One seed's run: the shared store, the writers, the collectors, the history."""

    def __init__(self, seed: int, config: SimulationConfig) -> None:
        self.seed = seed
        self.config = config
        self.store = _SharedStore()
        self.history = History(seed=seed, config=config)
        rng = random.Random(f"slate-epoch-sim/{seed}")
        self.plans: list[_WriterPlan] = []
        for _ in range(rng.randint(config.min_writers, config.max_writers)):
            self.plans.append(self._plan(rng, self.plans))
        self.history.writers = len(self.plans)
        self.processes: list[_Process] = []
        # Each writer starts in a process of its own, or (one in five) in an earlier writer's:
        # several handles then share one store object and so one manifest cache.
        self.hosts: dict[int, _Process] = {}
        for plan in self.plans:
            if plan.host == plan.index:
                self.hosts[plan.index] = self._new_process(plan, rng)
        # Collectors: each in a process of its own.
        self.collectors: list[tuple[_WriterPlan, _Process]] = []
        for index in range(config.max_collectors):
            if rng.random() < config.collector_rate:
                plan = dataclasses.replace(self._plan(rng, []), index=index, role="gc", host=-1)
                process = _Process(self, f"gc{index}", rng, plan)
                self.processes.append(process)
                self.collectors.append((plan, process))
        self.history.collectors = len(self.collectors)
        self._rng = rng
        self._nursery: trio.Nursery | None = None

    def _plan(self, rng: random.Random, earlier: list[_WriterPlan]) -> _WriterPlan:
        c = self.config
        index = len(earlier)
        calm = rng.random() < 0.1  # some processes see no faults at all
        # Latency: none (every call a bare checkpoint), FaultyStore's continuous draw, or the
        # wire's whole number of ticks. With none or ticks, and the writers that start at 0,
        # several tasks wake at the same instant and trio's (seeded) shuffle orders them.
        latency: tuple[float, float] | None = None
        tick_latency: tuple[float, int] | None = None
        kind = rng.random()
        if kind < 0.4:
            latency = (0.0, rng.uniform(0.0, c.max_latency))
        elif kind < 0.8:
            tick = rng.choice((0.001, 0.005, 0.01))
            tick_latency = (tick, max(0, int(c.max_latency / tick)))
        return _WriterPlan(
            index=index,
            role="compactor" if rng.random() < c.compactor_rate else "writer",
            lost_rate=0.0 if calm else rng.uniform(0.0, c.max_fault_rate),
            error_rate=0.0 if calm else rng.uniform(0.0, c.max_fault_rate),
            late_rate=0.0 if calm or rng.random() < 0.5 else rng.uniform(0.0, c.max_late_rate),
            latency=latency,
            tick_latency=tick_latency,
            start_at=0.0 if rng.random() < 0.5 else round(rng.uniform(0.0, 1.0), 2),
            host=earlier[rng.randrange(index)].host if index and rng.random() < 0.2 else index,
        )

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    def now(self) -> float:
        import trio

        return trio.current_time()

    async def sleep(self, seconds: float) -> None:
        import trio

        await trio.sleep(seconds)

    def event(self, text: str) -> None:
        self.history.events.append((self.history.tick(), self.now(), text))

    async def run(self) -> None:
        import trio

        history = self.history
        config = self.config
        if self._rng.random() < config.long_history_rate:
            low = max(1, config.list_page // 2)
            await self._prehistory(self._rng.randint(low, max(low, config.long_history)))
        with trio.move_on_after(self.config.deadline) as deadline:
            async with trio.open_nursery() as late_writes:
                self._nursery = late_writes
                async with trio.open_nursery() as actors:
                    for plan in self.plans:
                        actors.start_soon(self._writer, plan)
                    for plan, process in self.collectors:
                        actors.start_soon(self._collector, plan, process)
        history.hung = deadline.cancelled_caught
        history.end_time = self.now()
        await self._read_final_store()
        counts = history.counts
        counts["seeds"] += 1
        counts["writers"] += len(self.plans)
        counts["collectors"] += len(self.collectors)
        counts["colocated"] += sum(plan.host != plan.index for plan in self.plans)
        counts["manifests"] += len(history.first_seen)
        counts["versions_deleted"] += len(history.deletions)
        counts["recreations"] += len(history.recreations)
        counts["entries_trimmed"] += len(history.wal_deletions)
        for process in self.processes:
            counts["lost"] += process.store.counts["lost"]
            counts["errors"] += process.store.counts["error"]
            counts["late"] += process.wire.late
        for call in history.calls:
            if call.result in ("exists", "own") and call.key.startswith(_PREFIX):
                counts["conflicts" if call.result == "exists" else "own_writes_found"] += 1
        for op in history.ops:
            counts[f"{op.kind}:{op.outcome}"] += 1
            if op.detail == "max_conflicts":
                counts["claim:max_conflicts"] += 1

    async def _read_final_store(self) -> None:
        """Record the final store: the manifest folder, the boundary, the log, and what
        ``read_wal`` yields from the newest manifest's replay point."""
        history = self.history
        async with listing(self.store, _PREFIX) as metas:
            async for meta in metas:
                result = await self.store.get(meta.key)
                history.final[meta.key] = (result.body, result.etag)
        with contextlib.suppress(NotFoundError):
            history.final_boundary = (await self.store.get(_BOUNDARY_KEY)).body
        async with listing(self.store, _WAL_PREFIX) as metas:
            async for meta in metas:
                history.final_wal[meta.key] = (await self.store.get(meta.key)).body
        ids = [i for i in map(_manifest_id, history.final) if i is not None]
        if not ids:
            return
        try:
            replay_after = decode(history.final[_key(max(ids))][0]).replay_after
        except ManifestError:
            return  # check 1 reports it
        try:
            async for entry in read_wal(self.store, ROOT, after=replay_after):
                history.final_log.append((entry.id, entry.epoch, entry.data))
        except (WalError, ManifestError) as exc:
            history.final_log_error = f"{type(exc).__name__}: {exc}"

    async def _prehistory(self, length: int) -> None:
        """Start from ``length`` manifests of earlier claims, so that cold readers must search
        past one listing page (by galloping ``head`` probes) under faults."""
        history = self.history
        manifest = Manifest()
        for manifest_id in range(1, length + 1):
            role = "writer" if self._rng.random() < 0.8 else "compactor"
            claim = RoleClaim(role, manifest.epoch(role) + 1, claim_id=f"old{manifest_id}")
            manifest = manifest.with_claim(claim)
            body = encode(manifest)
            result = await self.store.put(_key(manifest_id), body, mode="create")
            seq = history.tick()
            history.first_seen[manifest_id] = history.current[manifest_id] = (body, result.etag)
            history.landings.append((seq, -1, manifest_id))
        history.counts["long_histories"] += 1
        self.event(f"a history of {length} manifests")

    def _new_process(self, plan: _WriterPlan, rng: random.Random) -> _Process:
        process = _Process(self, f"p{plan.index}.{len(self.processes)}", rng, plan)
        self.processes.append(process)
        return process

    async def _writer(self, plan: _WriterPlan) -> None:
        rng = random.Random(f"slate-epoch-sim/{self.seed}/writer/{plan.index}")
        await self._lives(
            f"w{plan.index}",
            plan,
            rng,
            self.hosts[plan.host],
            lambda life: self._live(plan, life),
            lambda: self._new_process(plan, rng),
        )

    async def _collector(self, plan: _WriterPlan, process: _Process) -> None:
        rng = random.Random(f"slate-epoch-sim/{self.seed}/collector/{plan.index}")
        await self._lives(f"gc{plan.index}", plan, rng, process, self._collect, lambda: process)

    async def _lives(
        self,
        name: str,
        plan: _WriterPlan,
        rng: random.Random,
        process: _Process,
        live: Callable[[_Life], Awaitable[None]],
        new_process: Callable[[], _Process],
    ) -> None:
        """Run ``live`` in incarnations: each may crash, and a crashed one may restart, in the
        same process (warm cache) or in a new one."""
        import trio

        await trio.sleep(plan.start_at)
        for incarnation in range(1, self.config.max_restarts + 2):
            life = _Life(f"{name}.{incarnation}", process, rng)
            crash_after = rng.expovariate(1.0) if rng.random() < self.config.crash_rate else None
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    if crash_after is not None:
                        nursery.start_soon(self._crash, life, scope, crash_after)
                    await live(life)
                    nursery.cancel_scope.cancel()  # lived to the end: no crash
            if not life.crashed or rng.random() >= self.config.restart_rate:
                return
            await trio.sleep(rng.uniform(0.0, 2.0))
            fresh = rng.random() < 0.5
            if fresh:
                process = new_process()
            self.event(f"restart {name} in {'new' if fresh else 'same'} {process.name}")
            self.history.counts["restarts"] += 1

    async def _crash(self, life: _Life, scope: trio.CancelScope, after: float) -> None:
        await self.sleep(after)
        life.crashed = True
        self.history.counts["crashes"] += 1
        self.event(f"crash {life.actor}")
        scope.cancel()

    async def _live(self, plan: _WriterPlan, life: _Life) -> None:
        rng = life.rng
        for _ in range(3):  # a claim, and up to two more after being fenced
            handle = await self._claim(plan, life)
            if handle is None:
                return
            life.acknowledged = life.marked = 0  # log ids of this handle's own appends
            log: WalWriter | None = None
            outcome = "ok"
            if plan.role == "writer" and rng.random() < self.config.wal_rate:
                log, outcome = await self._fence(life, handle)
            steps = rng.randint(0, self.config.max_updates) if outcome in _NOT_FENCED else 0
            for _ in range(steps):
                # The application thinks; now and then it stalls (a long pause: the classic
                # zombie, which wakes up after a newer holder took over).
                stall = rng.random() < 0.05
                await self.sleep(round(rng.uniform(0.5, 3.0) if stall else rng.uniform(0, 0.2), 2))
                outcome = await self._step(life, handle, log)
                if outcome not in _NOT_FENCED:
                    break
            if outcome != "FencedError" or rng.random() < 0.5:
                return

    async def _step(self, life: _Life, handle: EpochHandle, log: WalWriter | None) -> str:
        """One thing a holder does: an update or a refresh, or with a log, mostly appends, and
        now and then a mark of its last acknowledged append as replayed, or a trim."""
        rng = life.rng
        if log is not None:
            draw = rng.random()
            if draw < 0.2 and life.acknowledged > life.marked:
                return await self._mark(life, handle)
            if draw < 0.3:
                return await self._trim(life, handle, log)
            if draw < 0.8:
                return await self._append(life, handle, log)
        if rng.random() < 0.15:
            return await self._refresh(life, handle)
        return await self._update(life, handle)

    async def _op(
        self,
        life: _Life,
        record: OpRecord,
        call: Callable[[], Awaitable[T]],
    ) -> T | None:
        import trio

        history = self.history
        record.index = len(history.ops)
        history.ops.append(record)
        token = _CURRENT_OP.set(record)
        result: T | None = None
        try:
            result = await call()
            record.outcome = "ok"
        except trio.Cancelled:
            record.outcome = "crashed" if life.crashed else "cancelled"
            raise
        except ClaimTimeoutError as exc:
            record.outcome = type(exc).__name__
            record.detail = "max_conflicts" if "max_conflicts=" in str(exc) else "timeout"
        except (FencedError, OperationTimeoutError) as exc:
            record.outcome = type(exc).__name__
        except Exception as exc:  # a violation: the checker reports it
            record.outcome = type(exc).__name__
            record.detail = str(exc)
        finally:
            _CURRENT_OP.reset(token)
            record.end_seq = history.tick()
            record.end_time = self.now()
        return result

    def _record(
        self, life: _Life, kind: str, role: str, timeout: float, handle: EpochHandle | None = None
    ) -> OpRecord:
        record = OpRecord(
            index=-1,
            actor=life.actor,
            kind=kind,
            role=role,
            timeout=timeout,
            start_seq=self.history.tick(),
            start_time=self.now(),
        )
        if handle is not None:
            record.epoch, record.claim_id = handle.epoch, handle.claim_id
        return record

    @staticmethod
    def _backoff(rng: random.Random) -> Backoff:
        jitter = random.Random(rng.getrandbits(64))
        return Backoff(
            initial=rng.choice((0.001, 0.01)),
            maximum=rng.choice((0.1, 1.0)),
            jitter=lambda value: jitter.uniform(0.0, value),
        )

    async def _claim(self, plan: _WriterPlan, life: _Life) -> EpochHandle | None:
        rng = life.rng
        timeout = rng.choice((0.3, 1.0, 5.0, 30.0))
        max_conflicts = None if rng.random() < 0.8 else rng.randint(0, 4)
        backoff = self._backoff(rng)
        record = self._record(life, "claim", plan.role, timeout)
        handle = await self._op(
            life,
            record,
            lambda: claim_epoch(
                life.process.store,
                ROOT,
                role=plan.role,
                timeout=timeout,
                max_conflicts=max_conflicts,
                backoff=backoff,
                owner=life.actor,
            ),
        )
        if handle is not None:
            record.epoch, record.claim_id = handle.epoch, handle.claim_id
            record.manifest_id = handle.manifest_id
        return handle

    async def _update(self, life: _Life, handle: EpochHandle) -> str:
        life.updates += 1
        token = f"{life.actor}/{life.updates};".encode()
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "update", handle.role, timeout, handle)
        record.token = token

        def append(manifest: Manifest) -> Manifest:
            return msgspec.structs.replace(manifest, state=manifest.state + token)

        written = await self._op(life, record, lambda: handle.update(append, timeout=timeout))
        if written is not None:
            record.manifest_id, record.write_id = handle.manifest_id, written.write_id
        return record.outcome

    async def _refresh(self, life: _Life, handle: EpochHandle) -> str:
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "refresh", handle.role, timeout, handle)
        await self._op(life, record, lambda: handle.refresh(timeout=timeout))
        return record.outcome

    async def _fence(self, life: _Life, handle: EpochHandle) -> tuple[WalWriter | None, str]:
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "fence", handle.role, timeout, handle)
        log = await self._op(life, record, lambda: handle.fence_wal(timeout=timeout))
        if log is not None:
            record.entry_id = log.fence_id
        return log, record.outcome

    async def _append(self, life: _Life, handle: EpochHandle, log: WalWriter) -> str:
        life.appends += 1
        payload = f"{life.actor}/a{life.appends}".encode()
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "append", handle.role, timeout, handle)
        record.token = payload
        entry_id = await self._op(life, record, lambda: log.append(payload, timeout=timeout))
        if entry_id is not None:
            record.entry_id = life.acknowledged = entry_id
        return record.outcome

    async def _mark(self, life: _Life, handle: EpochHandle) -> str:
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "mark", handle.role, timeout, handle)
        # Each id is marked once at most (whatever the outcome), so the checker can tell
        # which operation moved the replay point there.
        record.entry_id = life.marked = target = life.acknowledged
        written = await self._op(
            life, record, lambda: handle.mark_replayed(target, timeout=timeout)
        )
        if written is not None:
            record.manifest_id, record.write_id = handle.manifest_id, written.write_id
        return record.outcome

    async def _trim(self, life: _Life, handle: EpochHandle, log: WalWriter) -> str:
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "trim", handle.role, timeout, handle)
        deleted = await self._op(life, record, lambda: log.trim(timeout=timeout))
        if deleted is not None:
            record.count = deleted
        return record.outcome

    async def _collect(self, life: _Life) -> None:
        """A collector's life: now and then, ``collect_garbage`` with a random ``keep``."""
        rng = life.rng
        for _ in range(rng.randint(1, self.config.max_collections)):
            await self.sleep(round(rng.uniform(0.0, 1.0), 2))
            keep = rng.randint(1, self.config.max_keep)
            timeout = rng.choice((0.3, 1.0, 5.0))
            backoff = self._backoff(rng)
            record = self._record(life, "gc", "gc", timeout)
            record.keep = keep

            def collect(
                keep: int = keep, timeout: float = timeout, backoff: Backoff = backoff
            ) -> Awaitable[GarbageReport]:
                store = life.process.store
                return collect_garbage(store, ROOT, keep=keep, timeout=timeout, backoff=backoff)

            report = await self._op(life, record, collect)
            if report is not None:
                record.manifest_id, record.count = report.boundary, len(report.deleted)


# -- running a seed -----------------------------------------------------------------------------


@contextlib.contextmanager
def _deterministic_trio(seed: int) -> Iterator[None]:
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
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", allowed)  # noqa: B010
        rng.setstate(state)


@contextlib.contextmanager
def _list_page(size: int) -> Iterator[None]:
    """Run the cold search with listing pages of ``size`` keys (see ``SimulationConfig``)."""
    if not isinstance(getattr(_manifest, "_LIST_PAGE", None), int):
        raise RuntimeError("slate_epoch._manifest._LIST_PAGE is gone: update the simulation")
    original = _manifest._LIST_PAGE
    setattr(_manifest, "_LIST_PAGE", size)  # noqa: B010 - it is Final
    try:
        yield
    finally:
        setattr(_manifest, "_LIST_PAGE", original)  # noqa: B010


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

    world = _World(seed, config)
    with _deterministic_trio(seed), _list_page(config.list_page):
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


# -- command line -------------------------------------------------------------------------------
# -- command line -------------------------------------------------------------------------------

_SUMMARY: Final = (
    ("seeds", "seeds"),
    ("writers", "writers"),
    ("colocated", "writers sharing a process (and its cache)"),
    ("collectors", "collectors"),
    ("manifests", "manifests written"),
    ("long_histories", "seeds starting from a long history"),
    ("lost", "lost responses"),
    ("errors", "errors"),
    ("late", "late deliveries"),
    ("crashes", "crashes"),
    ("restarts", "restarts"),
    ("conflicts", "conflicts (a rival's write at the id)"),
    ("own_writes_found", "own writes found after a lost response"),
    ("uncontended_lost_claims", "uncontended claims with a lost response (check 5)"),
    ("claim:ok", "claims succeeded"),
    ("claim:ClaimTimeoutError", "claims timed out or past max_conflicts"),
    ("claim:max_conflicts", "... of which past max_conflicts"),
    ("claim:crashed", "claims crashed"),
    ("update:ok", "updates acknowledged"),
    ("update:FencedError", "updates fenced"),
    ("update:OperationTimeoutError", "updates timed out"),
    ("update:crashed", "updates crashed"),
    ("ambiguous_fenced_updates", "... fenced after landing (the documented corner)"),
    ("fence:ok", "fences written"),
    ("fence:FencedError", "fences fenced"),
    ("append:ok", "appends acknowledged"),
    ("append:FencedError", "appends fenced"),
    ("append:OperationTimeoutError", "appends timed out"),
    ("append:crashed", "appends crashed"),
    ("mark:ok", "replay points marked"),
    ("trim:ok", "trims"),
    ("entries_trimmed", "log objects trimmed"),
    ("gc:ok", "collections run"),
    ("gc:OperationTimeoutError", "collections timed out"),
    ("gc:crashed", "collections crashed"),
    ("versions_deleted", "versions deleted"),
    ("recreations", "deleted ids written again by stale writers"),
)


_SHOWN: Final = 20  # failing seeds described in full; the rest are counted by kind


def summary(totals: Counter[str]) -> list[str]:
    """The fault and outcome counts of a run of seeds, as lines of text."""
    return [f"{label:>52}: {totals[key]:,}" for key, label in _SUMMARY]


def _first_seeds(reports: Iterable[SimulationReport]) -> dict[str, int]:
    """Per kind of violation, the lowest seed that shows it."""
    first: dict[str, int] = {}
    for report in reports:
        for violation in report.violations:
            first[violation.kind] = min(first.get(violation.kind, report.seed), report.seed)
    return first


def _run_chunk(
    args: tuple[list[int], SimulationConfig],
) -> tuple[Counter[str], list[str], dict[str, int]]:
    seeds, config = args
    totals, failures = run_seeds(seeds, config)
    return totals, [report.describe() for report in failures], _first_seeds(failures)


def soak(
    seeds: range, config: SimulationConfig = DEFAULT_CONFIG, *, workers: int = 2, chunk: int = 50
) -> tuple[Counter[str], list[str], dict[str, int]]:
    """Run ``seeds`` on ``workers`` processes with a progress bar (``rich`` if installed): the
    summed counts, the failing seeds described, and per kind of violation its lowest seed."""
    import multiprocessing

    chunks = [(list(seeds[i : i + chunk]), config) for i in range(0, len(seeds), chunk)]
    totals: Counter[str] = Counter()
    failures: list[str] = []
    first: dict[str, int] = {}
    with _progress(len(seeds)) as advance:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers) as pool:
            for chunk_totals, chunk_failures, chunk_first in pool.imap_unordered(
                _run_chunk, chunks
            ):
                totals.update(chunk_totals)
                failures.extend(chunk_failures)
                for kind, seed in chunk_first.items():
                    first[kind] = min(first.get(kind, seed), seed)
                advance(chunk_totals["seeds"], len(failures))
    return totals, failures, first


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[int, int], None]]:
    try:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
    except ImportError:  # pragma: no cover - rich is in the dev extra
        done = 0

        def plain(seeds: int, failed: int) -> None:
            nonlocal done
            done += seeds
            print(f"\r{done}/{total} seeds, {failed} failed", end="", file=sys.stderr)

        yield plain
        print(file=sys.stderr)
        return
    columns = (
        TextColumn("[bold]simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("seeds, {task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("soak", total=total, failed=0)

        def advance(seeds: int, failed: int) -> None:
            progress.update(task, advance=seeds, failed=failed)

        yield advance


def _config_from(settings: Sequence[str]) -> SimulationConfig:
    types = {
        f.name: type(getattr(DEFAULT_CONFIG, f.name)) for f in dataclasses.fields(DEFAULT_CONFIG)
    }
    changes: dict[str, Any] = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        if name not in types:
            raise SystemExit(f"unknown setting {name!r}; known: {', '.join(types)}")
        changes[name] = types[name](value)
    return SimulationConfig(**changes)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m slate_epoch.testing {replay,run,soak}``: see ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m slate_epoch.testing",
        description="The slate-epoch deterministic simulation: replay one seed, or run many.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="run one seed and print its history")
    replay.add_argument("--seed", type=int, required=True)
    replay.add_argument("--quiet", action="store_true", help="no history, only the verdict")
    replay.add_argument("--fingerprint", action="store_true", help="print the history digest")
    many = commands.add_parser("run", help="run a range of seeds in this process")
    many.add_argument("--seeds", type=int, default=1000, help="how many seeds")
    many.add_argument("--start", type=int, default=0, help="the first seed")
    bulk = commands.add_parser("soak", help="run many seeds on several processes")
    bulk.add_argument("--seeds", type=int, default=100_000, help="how many seeds")
    bulk.add_argument("--start", type=int, default=0, help="the first seed")
    bulk.add_argument("--workers", type=int, default=2, help="processes")
    for command in (replay, many, bulk):
        command.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="change a SimulationConfig field (replay commands name them)",
        )
    args = parser.parse_args(argv)
    config = _config_from(args.set)

    if args.command == "replay":
        report = simulate(args.seed, config)
        if not args.quiet:
            print("\n".join(report.history.trace()))
            print()
        if args.fingerprint:
            print(f"fingerprint {report.history.fingerprint()}")
        print("\n".join(summary(report.counts)))
        print(report.describe() if not report.ok else f"seed {args.seed}: ok")
        return 0 if report.ok else 1

    started = time.perf_counter()
    seeds = range(args.start, args.start + args.seeds)
    if args.command == "run":
        totals, reports = run_seeds(seeds, config)
        failures = [report.describe() for report in reports]
        first = _first_seeds(reports)
    else:
        totals, failures, first = soak(seeds, config, workers=args.workers)
    elapsed = time.perf_counter() - started
    for failure in failures[:_SHOWN]:
        print(failure)
    if len(failures) > _SHOWN:
        print(f"... and {len(failures) - _SHOWN:,} more failing seeds")
    print("\n".join(summary(totals)))
    print(f"{'violations':>52}: {len(failures):,} seed(s)")
    for key, seeds_with in totals.most_common():
        if key.startswith("violation "):
            kind = key.removeprefix("violation ")
            print(f"{seeds_with:>12,} seeds: {kind} (first: seed {first[kind]})")
    print(f"{'wall time':>52}: {elapsed:.1f} s ({totals['seeds'] / elapsed:,.0f} seeds/s)")
    return 1 if failures else 0
