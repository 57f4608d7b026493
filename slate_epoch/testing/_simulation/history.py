"""What a seed did: every operation, every store call, and the store's state along the way."""

from __future__ import annotations

import contextvars
import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field

from ..._boundary import decode_boundary
from ..._errors import LeaseCorruptError, ManifestError, WalError
from ..._lease import Lease, decode_lease
from ..._manifest import decode
from ..._wal import decode_entry
from .config import BOUNDARY_KEY, LEASES, LOG, LOG_BOUNDARY_KEY, SimulationConfig

__all__ = [
    "CURRENT_OP",
    "Call",
    "History",
    "HostRecord",
    "LeadRecord",
    "OpRecord",
    "current_op",
    "lease_of",
    "show_wal",
    "state_tokens",
]


@dataclass(slots=True)
class OpRecord:
    """One call of ``claim_epoch``, ``EpochHandle.update``/``refresh``/``fence_wal``/
    ``mark_replayed``, ``WalWriter.append``/``trim``, ``collect_garbage``, ``read_wal`` or
    ``ManifestStore.read``, or a misuse of the handle that must be refused.

    ``kind`` is ``claim``, ``update``, ``refresh``, ``fence``, ``append``, ``mark``, ``trim``,
    ``gc``, ``read`` (a whole ``read_wal`` from ``entry_id``: what it yielded is ``entries``),
    ``version`` (``ManifestStore.read(entry_id)``: the version's ``write_id``) or ``misuse``
    (an update or append that must raise ``TypeError``/``ValueError``; ``token`` marks it).
    ``start_seq``/``end_seq`` place it among the store calls (``History.calls``).
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
    entries: list[tuple[int, int, bytes]] = field(
        default_factory=list
    )  # a read's (id, epoch, data)


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


@dataclass(slots=True)
class LeadRecord:
    """One life of a leader: one ``lead()`` call, from its start (waiting as a standby) to its
    end. ``actor`` names the life (``L1.2``: leader 1, second life) and is the ``owner`` of its
    claim and its lease versions, so the checker can tell whose they are. ``lease``,
    ``renew_every`` and ``poll_every`` are the values ``lead`` ran with (the defaults resolved);
    ``backoff_max`` is its backoff's longest wait. ``entered_*`` is when the body started
    (``epoch``, ``claim_id``, ``manifest_id``: the handle it got), ``end`` how it ended:
    ``released`` (the body returned), ``body error`` (the body raised; ``lead`` released and
    re-raised it), ``FencedError``, ``LeaseLostError``, ``ClaimTimeoutError`` (gave up waiting),
    ``crashed`` (the process was killed: no release), ``stopped`` (cancelled from outside, as
    on SIGTERM: released), or another exception's name (a violation). ``disruption`` is what
    befell it (crash, pause, stop, outage), ``updates`` its body's update operations."""

    index: int
    actor: str
    host: str
    role: str
    lease: float
    renew_every: float
    poll_every: float
    timeout: float | None
    backoff_max: float
    start_seq: int
    start_time: float
    entered_seq: int = -1
    entered_time: float = math.nan
    epoch: int = 0
    claim_id: str = ""
    manifest_id: int = 0
    end: str = "running"
    detail: str = ""
    end_seq: int = -1
    end_time: float = math.nan
    disruption: str = ""
    updates: list[int] = field(default_factory=list)

    @property
    def entered(self) -> bool:
        return self.entered_seq >= 0


@dataclass(slots=True)
class HostRecord:
    """A leader's (or operator's) simulated process, as the succession check needs it: when
    each of its calls was answered, when a create of it found its id taken, when a fault hit one
    (a lost response, an error, a late create, an outage, a call abandoned midway), when it was
    paused (SIGSTOP to SIGCONT) and killed, and the most latency one call can take
    (``FaultyStore``'s and the wire's)."""

    name: str
    max_latency: float
    calls: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)
    conflicts: list[float] = field(default_factory=list)  # creates that found the id taken
    pauses: list[tuple[float, float]] = field(default_factory=list)
    died: float = math.inf


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
    # foreign objects put in the root's folders before the run: key -> bytes (never to be read
    # as ours, changed or deleted)
    foreign: dict[str, bytes] = field(default_factory=dict)
    # leading: the role the seed's leaders lead ("" if none), every life of a leader, and their
    # processes by name
    lead_role: str = ""
    leaders: int = 0
    leads: list[LeadRecord] = field(default_factory=list)
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    final_foreign: dict[str, bytes] = field(default_factory=dict)
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
            value = decode_boundary(body, key)
        except ManifestError:
            value = -1  # checks 1 and 6 report it as moving back
        if key == BOUNDARY_KEY:
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
            if LOG.id_of(key) is not None:
                return show_wal(body, key)
            if key.startswith(LEASES):
                lease = lease_of(key, body)
                if lease is None:
                    return "<undecodable lease>"
                what = (
                    "claiming" if lease.claiming else f"epoch={lease.epoch}{name(lease.claim_id)}"
                )
                released = " released" if lease.released else ""
                # renewed_at_ms is wall-clock time: left out, so that a seed traces the same
                return (
                    f"lease {what} renewals={lease.renewals}{released} lease={lease.lease:g} "
                    f"owner={lease.owner} write={name(lease.write_id)}"
                )
            if key in (BOUNDARY_KEY, LOG_BOUNDARY_KEY):
                try:
                    return f"boundary={decode_boundary(body, key)}"
                except ManifestError as exc:
                    return f"<undecodable: {exc}>"
            try:
                m = decode(body)
            except ManifestError as exc:
                return f"<undecodable: {exc}>"
            roles = " ".join(f"{c.role}={c.epoch}{name(c.claim_id)}" for c in m.roles)
            replay = f" replay_after={m.replay_after}" if m.replay_after else ""
            return f"[{roles}] state={state_tokens(m.state)}{replay} write={name(m.write_id)}"

        rows: list[tuple[int, str]] = []
        for op in self.ops:
            what = f"{op.kind} {op.role}"
            if op.kind == "gc":
                what = f"gc keep={op.keep}"
            elif op.kind in ("read", "version"):
                what = op.kind
            elif op.kind != "claim":
                what += f"@{op.epoch}{name(op.claim_id)}"
            if op.kind == "misuse":
                what += f" ({op.detail})"
            if op.token:
                what += f" +{op.token.decode()}"
            if op.kind == "mark":
                what += f" ->{op.entry_id}"
            rows.append((op.start_seq, f"{op.start_time:.9f} op{op.index} {op.actor} {what}"))
            detail = op.detail if op.kind != "misuse" or op.outcome == "ok" else ""
            result = op.outcome + (f" ({detail})" if detail else "")
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
                elif op.kind == "read":
                    result += f" after={op.entry_id} ids={[i for i, _, _ in op.entries]}"
                elif op.kind == "version":
                    result += f" id={op.entry_id} write={name(op.write_id)}"
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


def lease_of(key: str, body: bytes) -> Lease | None:
    """The lease a call wrote to ``key`` (None: not one)."""
    role = key[len(LEASES) :]
    try:
        return decode_lease(body, key, role) if role.isalnum() else None
    except LeaseCorruptError:
        return None


def state_tokens(state: bytes) -> list[bytes]:
    return [token for token in state.split(b";") if token]


def show_wal(body: bytes, key: str) -> str:
    try:
        entry = decode_entry(body, key, 1)
    except (WalError, ManifestError) as exc:
        return f"<undecodable: {exc}>"
    return "fence" if entry is None else f"entry epoch={entry.epoch} {entry.data.decode()}"


# The operation the current task is performing: store calls and faults are charged to it.
CURRENT_OP: contextvars.ContextVar[OpRecord | None] = contextvars.ContextVar(
    "slate_epoch_simulation_op", default=None
)


def current_op() -> int:
    record = CURRENT_OP.get()
    return -1 if record is None else record.index
