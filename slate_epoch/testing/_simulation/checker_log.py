"""Check 6: the write-ahead log's invariants (see ``check_history``)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable

from ..._errors import ManifestError, WalError
from ..._manifest import Manifest
from ..._wal import decode_entry, encode_entry
from .config import LOG, SAME, UNKNOWN
from .history import History, OpRecord

__all__ = ["Fail", "check_log", "check_unknown"]

# How a check reports a violation: ``fail(check number, message)``.
Fail = Callable[[int, str], None]


def check_unknown(
    op: OpRecord,
    newer: int | None,
    seq_of: dict[int, int],
    moves: list[int],
    what: str,
    check: int,
    fail: Fail,
    *,
    overtaken: bool = False,
) -> None:
    """``op`` raised ``WriteOutcomeUnknownError``, which only the corner may: a handle that a
    newer claim had fenced (the manifest ``newer``, landed before the operation ended), after
    ``what`` ran (a boundary moved before it ended; ``moves`` are those moves' seqs), in an
    operation that met a fault (a send whose outcome it could not know) or whose create landed
    at an id the boundary reached before the operation ended (``overtaken``: its check then
    finds the id at or below the boundary, where its own version that retention passed and a
    recreation of a deleted id look the same)."""
    fenced = newer is not None and seq_of.get(newer, 0) < op.end_seq
    ran = any(seq < op.end_seq for seq in moves)
    faulted = op.lost + op.errors + op.late > 0
    if not (fenced and ran and (faulted or overtaken)):
        fail(
            check,
            f"op{op.index} ({op.actor}): {op.kind} raised WriteOutcomeUnknownError outside the "
            f"corner (fenced by a newer claim: {fenced}, {what} ran: {ran}, a fault met: "
            f"{faulted}, a create of its at or below the boundary: {overtaken})",
        )


def check_log(history: History, lineage: dict[int, Manifest], ids: list[int], fail: Fail) -> None:
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

    # Where each epoch of the writer role was first set, to tell when an appender was fenced.
    claims: list[tuple[int, int]] = []  # (epoch, manifest id), epochs ascending
    for manifest_id in ids:
        epoch = lineage[manifest_id].epoch("writer")
        if epoch and (not claims or epoch > claims[-1][0]):
            claims.append((epoch, manifest_id))

    def newer_claim(op: OpRecord) -> int | None:
        return next((manifest_id for epoch, manifest_id in claims if epoch > op.epoch), None)

    trims = [seq for seq, _ in history.wal_boundary_moves]

    # What landed where: (epoch, payload) per landing, None for a fence.
    entries: list[tuple[int, int, int, tuple[int, bytes] | None]] = []
    for seq, by, entry_id, raw in history.wal_landings:
        key = LOG.key(entry_id)
        try:
            decoded = decode_entry(raw, key, entry_id)
        except (WalError, ManifestError) as exc:
            fail(6, f"op{by} wrote a log object at {entry_id} that is not intact: {exc}")
            continue
        content = None if decoded is None else (decoded.epoch, decoded.data)
        entries.append((seq, by, entry_id, content))
    for key, raw in sorted(history.final_wal.items()):
        final_id = LOG.id_of(key)
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
        if not payload.startswith(SAME):  # a repeated payload can't be told apart
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
    acknowledged_at: defaultdict[int, list[int]] = defaultdict(list)
    for op in history.ops:
        if op.kind == "append" and op.outcome == "ok":
            acknowledged_at[op.entry_id].append(op.index)
    for entry_id, appends in sorted(acknowledged_at.items()):
        if len(appends) > 1:
            fail(
                6,
                f"appends {', '.join(f'op{i}' for i in appends)} were all acknowledged at "
                f"log id {entry_id}",
            )
    for payload, where in sorted(ids_of_payload.items()):
        if len(where) > 1:
            fail(6, f"payload {payload.decode()} landed at {len(where)} log ids: {sorted(where)}")

    deleted_at: defaultdict[int, list[int]] = defaultdict(list)
    for seq, _, entry_id, _ in history.wal_deletions:
        deleted_at[entry_id].append(seq)
    final_replay = lineage[ids[-1]].replay_after if ids else 0
    final_log = set(history.final_log)
    final_wal = {LOG.id_of(key): body for key, body in history.final_wal.items()}
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
        elif op.outcome == UNKNOWN:
            check_unknown(op, newer_claim(op), seq_of, trims, "a trim", 6, fail)
            if op.token in replayable:
                history.counts["landed_unknown:append"] += 1
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
