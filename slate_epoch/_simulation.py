"""A deterministic simulation of the claim protocol under faults, and a checker of its history.

One *seed* is one run: between 2 and 16 writers share one ``MemoryStore``; each writer is a
simulated process that claims a role (``"writer"``, sometimes ``"compactor"``) and then appends
unique tokens to the manifest's ``state`` with ``EpochHandle.update``. Every process talks to the
store through its own ``FaultyStore`` (lost responses and errors up to 30%, random latency) and,
below it, a *wire* that records every call in the history and may deliver a create late (the
caller times out at once; the request lands, or fails, after a delay, even if the caller has
crashed meanwhile). Writers crash at random moments (their task is cancelled mid-operation) and
may restart, in the same process (warm manifest cache) or in a new one. The cold search for the
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
import contextlib
import contextvars
import dataclasses
import hashlib
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

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
    TransientStoreError,
)
from ._manifest import Manifest, RoleClaim, decode, encode
from ._retry import Backoff
from ._store import GetResult, ObjectMeta, PutMode, PutResult, listing
from .backends.memory import MemoryStore
from .testing import FaultyStore

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


# The operation the current task is performing: store calls and faults are charged to it.
_CURRENT_OP: contextvars.ContextVar[OpRecord | None] = contextvars.ContextVar(
    "slate_epoch_simulation_op", default=None
)


def _current_op() -> int:
    record = _CURRENT_OP.get()
    return -1 if record is None else record.index


def _manifest_id(key: str) -> int | None:
    """The manifest id a key names, or None for any other key."""
    if key.startswith(_PREFIX) and key.endswith(_SUFFIX):
        name = key[len(_PREFIX) : -len(_SUFFIX)]
        if len(name) == 20 and name.isdigit():
            return int(name)
    return None


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
    max_updates: int = 5  # per claim: 0..this updates (or refreshes)
    compactor_rate: float = 0.25  # chance that a writer claims "compactor" instead of "writer"
    crash_rate: float = 0.3  # chance that a life of a writer ends in a crash
    restart_rate: float = 0.7  # chance that a crashed writer starts again
    max_restarts: int = 3
    # A scale model of the cold search: the library lists one page of 1,000 keys, then gallops;
    # the simulation runs it with pages this small, so that short histories cross a page.
    list_page: int = 16
    long_history_rate: float = 0.1  # chance that the store starts with a history of ...
    long_history: int = 200  # ... between half a page and this many manifests
    deadline: float = 3600.0  # simulated seconds: a seed still running then has hung

    def __post_init__(self) -> None:
        if not 1 <= self.min_writers <= self.max_writers:
            raise ValueError("need 1 <= min_writers <= max_writers")
        if not 0.0 <= self.max_fault_rate <= 0.5:
            raise ValueError("max_fault_rate must be within [0, 0.5]")

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
    """One call of ``claim_epoch``, ``EpochHandle.update`` or ``EpochHandle.refresh``.

    ``start_seq``/``end_seq`` place it among the store calls (``History.calls``). ``outcome`` is
    ``"ok"``, the exception's class name, ``"crashed"`` (cancelled by a simulated crash) or
    ``"cancelled"`` (cancelled by anything else: the seed's deadline). ``epoch`` and
    ``claim_id`` are the handle's (for a claim: the handle it returned); ``manifest_id`` is the
    handle's after the operation (the newest version it has seen, which may lie above the one
    it wrote); ``write_id`` is the write id of the manifest ``update`` returned.
    """

    index: int
    actor: str
    kind: str  # "claim" | "update" | "refresh"
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
    lost: int = 0  # faults injected during the operation, by kind
    errors: int = 0
    late: int = 0


@dataclass(slots=True)
class Call:
    """One call that reached the shared store through a wire. ``op`` is the index of the
    operation that issued it (-1: none). ``result`` is ``ok``, ``missing`` (NotFoundError),
    ``landed`` (a create that wrote), ``own`` (a create that found these same bytes already
    there), ``exists`` (a create that found other bytes), or ``late`` (a create whose caller
    was told "timed out" and whose request is still in flight)."""

    seq: int
    time: float
    op: int
    kind: str  # get head create overwrite list delete
    key: str
    result: str
    body: bytes | None = None


@dataclass
class History:
    """Everything a seed did, in order, and the final store."""

    seed: int
    config: SimulationConfig
    writers: int = 0
    ops: list[OpRecord] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    events: list[tuple[int, float, str]] = field(default_factory=list)  # crash, restart, ...
    # manifest id -> (bytes, etag) the first time anyone saw it (its create landing, or a read)
    first_seen: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    # later observations that differed from the first: (manifest id, seq, what differed)
    changed: list[tuple[int, int, str]] = field(default_factory=list)
    # creates that wrote: (seq, op, manifest id)
    landings: list[tuple[int, int, int]] = field(default_factory=list)
    final: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    hung: bool = False
    end_time: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    _seq: int = 0

    def tick(self) -> int:
        self._seq += 1
        return self._seq

    def observe(self, manifest_id: int, body: bytes | None, etag: str, seq: int) -> None:
        first = self.first_seen.get(manifest_id)
        if first is None:
            if body is not None:
                self.first_seen[manifest_id] = (body, etag)
            return
        if body is not None and body != first[0]:
            self.changed.append((manifest_id, seq, "bytes"))
        elif etag != first[1]:
            self.changed.append((manifest_id, seq, f"etag {first[1]} -> {etag}"))

    def trace(self) -> list[str]:
        """The history as text, one line per operation boundary, store call and event, in
        order. Random claim and write ids are renamed ``#1``, ``#2``... in order of first
        appearance, and wall-clock fields dropped, so two runs of one seed trace identically."""
        names: dict[str, str] = {}

        def name(random_id: str) -> str:
            return names.setdefault(random_id, f"#{len(names) + 1}")

        def show(body: bytes) -> str:
            try:
                m = decode(body)
            except ManifestError as exc:
                return f"<undecodable: {exc}>"
            roles = " ".join(f"{c.role}={c.epoch}{name(c.claim_id)}" for c in m.roles)
            return f"[{roles}] state={_tokens(m.state)} write={name(m.write_id)}"

        rows: list[tuple[int, str]] = []
        for op in self.ops:
            what = f"{op.kind} {op.role}"
            if op.kind != "claim":
                what += f"@{op.epoch}{name(op.claim_id)}"
            if op.token:
                what += f" +{op.token.decode()}"
            rows.append((op.start_seq, f"{op.start_time:.9f} op{op.index} {op.actor} {what}"))
            result = op.outcome + (f" ({op.detail})" if op.detail else "")
            if op.kind == "claim" and op.outcome == "ok":
                result += f" epoch={op.epoch}{name(op.claim_id)} newest={op.manifest_id}"
            elif op.kind == "update" and op.outcome == "ok":
                result += f" write={name(op.write_id)} newest={op.manifest_id}"
            faults = f" lost={op.lost} errors={op.errors} late={op.late}"
            rows.append((op.end_seq, f"{op.end_time:.9f} op{op.index} end {result}{faults}"))
        for call in self.calls:
            text = f"{call.time:.9f} op{call.op} {call.kind} {call.key} {call.result}"
            if call.body is not None and call.result in ("landed", "late"):
                text += " " + show(call.body)
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


_EXPECTED_OUTCOMES: Final = {
    "claim": {"ok", "ClaimTimeoutError", "crashed"},
    "update": {"ok", "FencedError", "OperationTimeoutError", "crashed"},
    "refresh": {"ok", "FencedError", "OperationTimeoutError", "crashed"},
}
_SLACK: Final = 1e-6  # simulated seconds of float rounding allowed on a deadline


def check_history(history: History) -> list[Violation]:
    """Check a finished seed's history and final store against the protocol's invariants.

    1. **Versions.** The final store's manifest ids are contiguous from 1, every object under
       the manifest folder is an intact manifest, and no id's bytes (or etag) ever changed: the
       bytes and etag recorded the first time anyone saw an id (its create landing, or a read)
       equal every later read and the final object.
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
       raised ``FencedError`` left no trace.
    4. **Termination.** Every claim ended in success, ``ClaimTimeoutError`` or a crash (updates
       and refreshes: success, ``FencedError``, ``OperationTimeoutError`` or a crash); nothing
       ended in any other error; each operation ended within its own timeout; and the seed
       finished before its deadline (``SimulationConfig.deadline`` simulated seconds), so
       nothing hung.
    5. **No burned epochs.** A successful claim is *uncontended* when no create issued by any
       other operation landed between the claim's start and its end (in the order of recorded
       store calls; a late create of the claimant's own earlier, abandoned operation counts as
       another operation's). An uncontended claim must have landed exactly one manifest, at
       the id after the newest one that existed when it started, with the role's epoch there
       plus one, and returned that epoch: lost responses, errors and late deliveries cost it
       no extra epoch. (The issue
       asks this of claims "whose only trouble was a lost response, with no rival writing in
       between"; this checks it of every uncontended claim, whatever faults it met, and counts
       those that met a lost response or a late delivery as ``uncontended_lost_claims``.)
    """
    violations: list[Violation] = []

    def fail(check: int, message: str) -> None:
        violations.append(Violation(check, message))

    # -- 1. versions
    manifests: dict[int, Manifest] = {}
    for key, (body, _) in sorted(history.final.items()):
        manifest_id = _manifest_id(key)
        if manifest_id is None:
            fail(1, f"foreign object {key!r} in the manifest folder")
            continue
        try:
            manifests[manifest_id] = decode(body, key)
        except ManifestError as exc:
            fail(1, f"manifest {manifest_id} is not intact: {exc}")
    ids = sorted(manifests)
    if ids != list(range(1, len(ids) + 1)):
        fail(1, f"manifest ids are not contiguous from 1: {_ranges(ids)}")
    for manifest_id, seq, what in history.changed:
        fail(1, f"manifest {manifest_id} changed after it was first seen ({what}, call {seq})")
    for manifest_id, (body, etag) in history.first_seen.items():
        final = history.final.get(_key(manifest_id))
        if final is None:
            fail(1, f"manifest {manifest_id} was seen but is gone from the final store")
        elif final != (body, etag):
            fail(1, f"manifest {manifest_id}'s final object differs from the first one seen")

    # -- 2. epochs
    roles = sorted({claim.role for m in manifests.values() for claim in m.roles})
    first_at_epoch: dict[tuple[str, int], int] = {}
    for role in roles:
        previous_epoch, previous_claim = 0, ""
        for manifest_id in ids:
            claim = manifests[manifest_id].claim(role)
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
                if manifests[manifest_id].write_id != claim_id:
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
        stored = manifests.get(op.manifest_id)
        claim = None if stored is None else stored.claim(op.role)
        first = first_at_epoch.get((op.role, op.epoch))
        if claim is None or (claim.epoch, claim.claim_id) != (op.epoch, op.claim_id):
            fail(
                2,
                f"op{op.index} ({op.actor}) returned role {op.role!r} epoch {op.epoch} at "
                f"manifest {op.manifest_id}, which does not carry that claim",
            )
        elif first is None or first > op.manifest_id:
            fail(2, f"op{op.index} returned manifest {op.manifest_id}, below its claim's ({first})")

    # -- 3. writes
    landed_at: dict[bytes, int] = {}
    previous: list[bytes] = []
    for manifest_id in ids:
        tokens = _tokens(manifests[manifest_id].state)
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
    id_of_write = {m.write_id: manifest_id for manifest_id, m in manifests.items()}
    for op in history.ops:
        if op.kind != "update":
            continue
        token = op.token.rstrip(b";")
        where = landed_at.get(token)
        written = id_of_write.get(op.write_id)
        if op.outcome == "ok" and (where is None or where != written or where > op.manifest_id):
            fail(
                3,
                f"op{op.index} ({op.actor}): update {token.decode()} acknowledged (its write "
                f"at manifest {written}, the handle at {op.manifest_id}) but found at {where}",
            )
        if op.outcome == "FencedError" and where is not None:
            fail(
                3,
                f"op{op.index} ({op.actor}): update {token.decode()} raised FencedError "
                f"but landed at manifest {where}",
            )
        if where is None:
            continue
        claim = manifests[where].claim(op.role)
        if claim is None or (claim.epoch, claim.claim_id) != (op.epoch, op.claim_id):
            held = "nobody" if claim is None else f"epoch {claim.epoch}"
            fail(
                3,
                f"op{op.index} ({op.actor}): update {token.decode()} by the handle at "
                f"role {op.role!r} epoch {op.epoch} landed at manifest {where}, held by "
                f"{held}: a fenced write landed",
            )
        newer = [
            first
            for (role, epoch), first in first_at_epoch.items()
            if role == op.role and epoch > op.epoch
        ]
        if newer and where > min(newer):
            fail(
                3,
                f"op{op.index} ({op.actor}): update {token.decode()} of epoch {op.epoch} "
                f"landed at manifest {where}, after the newer claim at {min(newer)}",
            )

    # -- 4. termination
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

    # -- 5. no burned epochs
    landings = history.landings  # in seq order
    for op in history.ops:
        if op.kind != "claim" or op.outcome != "ok":
            continue
        before = [mid for seq, _, mid in landings if seq < op.start_seq]
        during = [(o, mid) for seq, o, mid in landings if op.start_seq < seq < op.end_seq]
        if any(o != op.index for o, _ in during):
            continue  # contended
        if op.lost or op.late:
            history.counts["uncontended_lost_claims"] += 1
        newest = max(before, default=0)
        base = manifests.get(newest) if newest else Manifest()
        expected_epoch = (0 if base is None else base.epoch(op.role)) + 1
        own = [mid for _, mid in during]
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
    return violations


def _key(manifest_id: int) -> str:
    return f"{_PREFIX}{manifest_id:020d}{_SUFFIX}"


def _ranges(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids[:20]) + (" ..." if len(ids) > 20 else "")


# -- the simulated world ------------------------------------------------------------------------


class _Wire:
    """The network between one simulated process and the shared store. Records each call in
    the history; with probability ``late_rate`` a create times out at once while its request
    stays in flight and lands (or finds the id taken) after a delay, whatever became of the
    caller. With ``tick_latency`` each call first sleeps a whole number of ticks. Lost responses
    and errors are the ``FaultyStore`` above's business."""

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

    async def put(self, key: str, body: bytes, *, mode: PutMode = "overwrite") -> PutResult:
        await self._travel()
        if mode == "create" and self.late_rate and self.rng.random() < self.late_rate:
            self.late += 1
            record = _CURRENT_OP.get()
            if record is not None:
                record.late += 1
            delay = self.rng.uniform(0.0, 1.0)
            op = _current_op()
            self._call("create", key, "late", body)
            self.world.nursery.start_soon(self._deliver_late, key, bytes(body), op, delay)
            raise TransientStoreError(f"simulated timeout on create {key!r} (still in flight)")
        return await self._put(key, body, mode, _current_op())

    async def _deliver_late(self, key: str, body: bytes, op: int, delay: float) -> None:
        await self.world.sleep(delay)
        with contextlib.suppress(AlreadyExistsError):
            await self._put(key, body, "create", op)

    async def _put(self, key: str, body: bytes, mode: PutMode, op: int) -> PutResult:
        history = self.world.history
        kind = "create" if mode == "create" else "overwrite"
        manifest_id = _manifest_id(key)
        try:
            result = await self.world.store.put(key, body, mode=mode)
        except AlreadyExistsError:
            first = history.first_seen.get(manifest_id) if manifest_id is not None else None
            own = first is not None and first[0] == body
            history.calls.append(
                Call(history.tick(), self.world.now(), op, kind, key, "own" if own else "exists")
            )
            raise
        seq = history.tick()
        history.calls.append(Call(seq, self.world.now(), op, kind, key, "landed", body))
        if manifest_id is not None:
            history.observe(manifest_id, body, result.etag, seq)
            history.landings.append((seq, op, manifest_id))
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
        self._call("delete", key, "ok")
        await self.world.store.delete(key)

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
    """One incarnation of a writer, from its start to its end or crash."""

    actor: str
    process: _Process
    rng: random.Random
    crashed: bool = False
    updates: int = 0


@dataclass(frozen=True)
class _WriterPlan:
    index: int
    role: str
    lost_rate: float
    error_rate: float
    late_rate: float
    latency: tuple[float, float] | None  # FaultyStore's: a uniform draw
    tick_latency: tuple[float, int] | None  # the wire's: (tick, n): a whole number of ticks <= n
    start_at: float
    host: int  # the writer whose process this one starts in (itself, or an earlier one)


class _World:
    """One seed's run: the shared store, the writers, the history."""

    def __init__(self, seed: int, config: SimulationConfig) -> None:
        self.seed = seed
        self.config = config
        self.store = MemoryStore()
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
                async with trio.open_nursery() as writers:
                    for plan in self.plans:
                        writers.start_soon(self._writer, plan)
        history.hung = deadline.cancelled_caught
        history.end_time = self.now()
        async with listing(self.store, _PREFIX) as metas:
            async for meta in metas:
                result = await self.store.get(meta.key)
                history.final[meta.key] = (result.body, result.etag)
        counts = history.counts
        counts["seeds"] += 1
        counts["writers"] += len(self.plans)
        counts["colocated"] += sum(plan.host != plan.index for plan in self.plans)
        counts["manifests"] += len(history.final)
        for process in self.processes:
            counts["lost"] += process.store.counts["lost"]
            counts["errors"] += process.store.counts["error"]
            counts["late"] += process.wire.late
        for call in history.calls:
            if call.result in ("exists", "own"):
                counts["conflicts" if call.result == "exists" else "own_writes_found"] += 1
        for op in history.ops:
            counts[f"{op.kind}:{op.outcome}"] += 1
            if op.detail == "max_conflicts":
                counts["claim:max_conflicts"] += 1

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
            history.first_seen[manifest_id] = (body, result.etag)
            history.landings.append((seq, -1, manifest_id))
        history.counts["long_histories"] += 1
        self.event(f"a history of {length} manifests")

    def _new_process(self, plan: _WriterPlan, rng: random.Random) -> _Process:
        process = _Process(self, f"p{plan.index}.{len(self.processes)}", rng, plan)
        self.processes.append(process)
        return process

    async def _writer(self, plan: _WriterPlan) -> None:
        import trio

        rng = random.Random(f"slate-epoch-sim/{self.seed}/writer/{plan.index}")
        await trio.sleep(plan.start_at)
        process = self.hosts[plan.host]
        for incarnation in range(1, self.config.max_restarts + 2):
            life = _Life(f"w{plan.index}.{incarnation}", process, rng)
            crash_after = rng.expovariate(1.0) if rng.random() < self.config.crash_rate else None
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    if crash_after is not None:
                        nursery.start_soon(self._crash, life, scope, crash_after)
                    await self._live(plan, life)
                    nursery.cancel_scope.cancel()  # lived to the end: no crash
            if not life.crashed or rng.random() >= self.config.restart_rate:
                return
            await trio.sleep(rng.uniform(0.0, 2.0))
            fresh = rng.random() < 0.5
            if fresh:
                process = self._new_process(plan, rng)
            self.event(f"restart w{plan.index} in {'new' if fresh else 'same'} {process.name}")
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
            fenced = False
            for _ in range(rng.randint(0, self.config.max_updates)):
                await self.sleep(round(rng.uniform(0.0, 0.2), 2))  # the application thinks
                if rng.random() < 0.15:
                    outcome = await self._refresh(life, handle)
                else:
                    outcome = await self._update(life, handle)
                fenced = outcome == "FencedError"
                if fenced or outcome not in _EXPECTED_OUTCOMES["update"]:
                    break
            if not fenced or rng.random() < 0.5:
                return

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

    def _record(self, life: _Life, kind: str, role: str, timeout: float) -> OpRecord:
        return OpRecord(
            index=-1,
            actor=life.actor,
            kind=kind,
            role=role,
            timeout=timeout,
            start_seq=self.history.tick(),
            start_time=self.now(),
        )

    async def _claim(self, plan: _WriterPlan, life: _Life) -> EpochHandle | None:
        rng = life.rng
        timeout = rng.choice((0.3, 1.0, 5.0, 30.0))
        max_conflicts = None if rng.random() < 0.8 else rng.randint(0, 4)
        jitter = random.Random(rng.getrandbits(64))
        backoff = Backoff(
            initial=rng.choice((0.001, 0.01)),
            maximum=rng.choice((0.1, 1.0)),
            jitter=lambda value: jitter.uniform(0.0, value),
        )
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
        record = self._record(life, "update", handle.role, timeout)
        record.epoch, record.claim_id, record.token = handle.epoch, handle.claim_id, token

        def append(manifest: Manifest) -> Manifest:
            return msgspec.structs.replace(manifest, state=manifest.state + token)

        written = await self._op(life, record, lambda: handle.update(append, timeout=timeout))
        if written is not None:
            record.manifest_id, record.write_id = handle.manifest_id, written.write_id
        return record.outcome

    async def _refresh(self, life: _Life, handle: EpochHandle) -> str:
        timeout = life.rng.choice((0.3, 1.0, 5.0))
        record = self._record(life, "refresh", handle.role, timeout)
        record.epoch, record.claim_id = handle.epoch, handle.claim_id
        await self._op(life, record, lambda: handle.refresh(timeout=timeout))
        return record.outcome


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
    try:
        yield
    finally:
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

_SUMMARY: Final = (
    ("seeds", "seeds"),
    ("writers", "writers"),
    ("colocated", "writers sharing a process (and its cache)"),
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
)


_SHOWN: Final = 20  # failing seeds described in full; the rest are counted by kind


def summary(totals: Counter[str]) -> list[str]:
    """The fault and outcome counts of a run of seeds, as lines of text."""
    return [f"{label:>52}: {totals[key]:,}" for key, label in _SUMMARY]


def _run_chunk(args: tuple[list[int], SimulationConfig]) -> tuple[Counter[str], list[str]]:
    seeds, config = args
    totals, failures = run_seeds(seeds, config)
    return totals, [report.describe() for report in failures]


def soak(
    seeds: range, config: SimulationConfig = DEFAULT_CONFIG, *, workers: int = 2, chunk: int = 50
) -> tuple[Counter[str], list[str]]:
    """Run ``seeds`` on ``workers`` processes with a progress bar (``rich`` if installed)."""
    import multiprocessing

    chunks = [(list(seeds[i : i + chunk]), config) for i in range(0, len(seeds), chunk)]
    totals: Counter[str] = Counter()
    failures: list[str] = []
    with _progress(len(seeds)) as advance:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers) as pool:
            for chunk_totals, chunk_failures in pool.imap_unordered(_run_chunk, chunks):
                totals.update(chunk_totals)
                failures.extend(chunk_failures)
                advance(chunk_totals["seeds"], len(failures))
    return totals, failures


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
    else:
        totals, failures = soak(seeds, config, workers=args.workers)
    elapsed = time.perf_counter() - started
    for failure in failures[:_SHOWN]:
        print(failure)
    if len(failures) > _SHOWN:
        print(f"... and {len(failures) - _SHOWN:,} more failing seeds")
    print("\n".join(summary(totals)))
    print(f"{'violations':>52}: {len(failures):,} seed(s)")
    for key, seeds_with in totals.most_common():
        if key.startswith("violation "):
            print(f"{seeds_with:>12,} seeds: {key.removeprefix('violation ')}")
    print(f"{'wall time':>52}: {elapsed:.1f} s ({totals['seeds'] / elapsed:,.0f} seeds/s)")
    return 1 if failures else 0
