"""Check 7: how services really use the library (see ``check_history``).

Readers: what ``read_wal`` yields, and what ``ManifestStore.read`` returns, while writers append,
trim and collect. Misuse: what ``update`` and ``append`` must refuse is refused, and leaves no
trace. Zombies: a handle that already knows it is fenced writes nothing. Foreign objects: never
read as ours, changed or deleted.
"""

from __future__ import annotations

from collections import defaultdict

from ..._manifest import Manifest
from ..._wal import encode_entry
from .checker_log import Fail
from .config import FENCED, MISUSE
from .history import History

__all__ = ["check_use"]


def check_use(history: History, lineage: dict[int, Manifest], fail: Fail) -> None:
    _check_readers(history, fail)
    _check_version_reads(history, lineage, fail)
    _check_misuse(history, lineage, fail)
    _check_zombies(history, fail)
    _check_foreign(history, fail)


def _check_readers(history: History, fail: Fail) -> None:
    """Every entry a reader yields is the one first written at its id (never a stale writer's
    recreation of a trimmed id), in id order, never a lower epoch after a higher; and a reader
    that ends without an error has missed nothing: every acknowledged append above its start
    that stood when it began is among what it yielded (a trim that overtakes a reader is
    ``WalTrimmedError``, never a silent end)."""
    first_at: dict[int, tuple[int, bytes]] = {}  # log id -> (seq, bytes) of its first landing
    for seq, _, entry_id, body in history.wal_landings:
        first_at.setdefault(entry_id, (seq, body))
    deleted_at: defaultdict[int, list[int]] = defaultdict(list)
    for seq, _, entry_id, _ in history.wal_deletions:
        deleted_at[entry_id].append(seq)
    acknowledged = [
        (op.entry_id, op) for op in history.ops if op.kind == "append" and op.outcome == "ok"
    ]
    for op in history.ops:
        if op.kind != "read" or op.outcome not in ("ok", "WalTrimmedError"):
            continue
        after, last_id, last_epoch = op.entry_id, op.entry_id, 0
        for entry_id, epoch, data in op.entries:
            where = f"op{op.index} ({op.actor}): read_wal from {after} yielded log id {entry_id}"
            if entry_id <= last_id:
                fail(7, f"{where} after {last_id}")
            if epoch < last_epoch:
                fail(7, f"{where} of epoch {epoch} after epoch {last_epoch}")
            first = first_at.get(entry_id)
            if first is None or first[0] > op.end_seq or first[1] != encode_entry(epoch, data):
                fail(7, f"{where}, which is not the entry first written there")
            last_id, last_epoch = entry_id, max(last_epoch, epoch)
        if op.outcome != "ok":
            continue
        yielded = {entry_id for entry_id, _, _ in op.entries}
        for entry_id, append in acknowledged:
            landed = first_at.get(entry_id, (op.end_seq, b""))[0]
            if (
                entry_id > after
                and append.end_seq < op.start_seq
                and landed < op.start_seq
                and not any(s < op.start_seq for s in deleted_at[entry_id])
                and entry_id not in yielded
            ):
                fail(
                    7,
                    f"op{op.index} ({op.actor}): read_wal from {after} ended without an error "
                    f"but never yielded the acknowledged append at {entry_id} "
                    f"(op{append.index}), which stood when it began",
                )


def _check_version_reads(history: History, lineage: dict[int, Manifest], fail: Fail) -> None:
    """``ManifestStore.read(id)`` returns the history's version at that id, or nothing: never
    a stale writer's recreation of a collected id."""
    for op in history.ops:
        if op.kind != "version" or op.outcome != "ok" or not op.entry_id:
            continue
        version = lineage.get(op.entry_id)
        if version is None or version.write_id != op.write_id:
            fail(
                7,
                f"op{op.index} ({op.actor}): ManifestStore.read({op.entry_id}) returned a "
                "manifest that is not the history's version there",
            )


def _check_misuse(history: History, lineage: dict[int, Manifest], fail: Fail) -> None:
    """What ``update`` and ``append`` refuse leaves no trace: no misuse token in any version's
    state, and no log object from a misuse append (the termination check holds that every
    misuse ended in ``TypeError``/``ValueError``, or in ``FencedError`` first)."""
    for manifest_id, manifest in lineage.items():
        if MISUSE in manifest.state:
            fail(7, f"manifest {manifest_id} holds a refused update's change")
    for op in history.ops:
        if op.kind != "misuse":
            continue
        wrote = [c for c in history.calls if c.op == op.index and c.result in ("landed", "late")]
        if wrote:
            fail(
                7,
                f"op{op.index} ({op.actor}): a refused {op.detail} wrote {wrote[0].key} "
                f"(call {wrote[0].seq})",
            )


def _check_zombies(history: History, fail: Fail) -> None:
    """Once an operation of a handle has raised ``FencedError`` (or ``WriteOutcomeUnknownError``),
    every later operation of that handle writes nothing at all (it raises ``FencedError`` at
    once)."""
    fenced_at: dict[tuple[str, int, str], int] = {}
    for op in history.ops:
        if op.outcome in FENCED and op.claim_id:
            handle = (op.role, op.epoch, op.claim_id)
            fenced_at[handle] = min(fenced_at.get(handle, op.end_seq), op.end_seq)
    later = {
        op.index: op
        for op in history.ops
        if op.claim_id
        and op.kind != "claim"
        and op.start_seq > fenced_at.get((op.role, op.epoch, op.claim_id), op.start_seq)
    }
    for call in history.calls:
        if call.op in later and call.result in ("landed", "late"):
            op = later[call.op]
            fail(
                7,
                f"op{op.index} ({op.actor}): {op.kind} by a handle that already knew it was "
                f"fenced wrote {call.key} (call {call.seq})",
            )


def _check_foreign(history: History, fail: Fail) -> None:
    """Foreign objects in the root's folders are never changed or deleted."""
    for key, body in history.foreign.items():
        if history.final_foreign.get(key) != body:
            fail(7, f"the foreign object {key!r} was changed or deleted")
    for call in history.calls:
        if call.key in history.foreign and call.kind in ("create", "overwrite", "update", "delete"):
            fail(7, f"op{call.op} wrote or deleted the foreign object {call.key!r}")
