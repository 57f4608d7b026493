"""The checker: a finished seed's history against the protocol's invariants."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ..._boundary import decode_boundary
from ..._errors import ManifestError
from ..._manifest import Manifest, decode
from .checker_lead import check_lead
from .checker_log import Fail, check_log, check_unknown
from .checker_use import check_use
from .config import BOUNDARY_KEY, MANIFESTS, UNKNOWN
from .history import History, OpRecord, state_tokens

__all__ = ["Violation", "check_history", "show_ids"]


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
    # "interrupted": a leader's update, cancelled by lead (fenced or cut off) or a stop
    "update": _WRITES | {UNKNOWN, "interrupted"},
    "refresh": _WRITES,
    "fence": _WRITES | {UNKNOWN},
    "append": _WRITES | {UNKNOWN},
    "mark": _WRITES | {UNKNOWN},
    "trim": _WRITES,
    "gc": {"ok", "OperationTimeoutError", "crashed"},
    "misuse": {"TypeError", "ValueError", "FencedError", "OperationTimeoutError", "crashed"},
    "read": {"ok", "WalTrimmedError", "TransientStoreError", "crashed"},
    "version": {"ok", "NotFoundError", "TransientStoreError", "crashed"},
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
       raised a plain ``FencedError`` left no trace. Only ``WriteOutcomeUnknownError`` (a
       ``FencedError``) may leave one - the corner where a newer claim of the role landed on top
       and retention passed the version the update wrote before it could look - and it is raised
       only there: by a handle a newer claim had fenced, after retention ran, in an operation
       that met a fault or whose create landed at an id the boundary reached before it ended
       (counted;
       ``landed_unknown:update`` those whose write had landed). The same for ``mark_replayed``:
       an acknowledged one wrote the version its write id names, with the replay point at the
       id it marked; a fenced one never moved the replay point.
    4. **Termination.** Every claim ended in success, ``ClaimTimeoutError`` or a crash (the
       handle's and the log's operations: success, ``FencedError``, ``OperationTimeoutError`` or
       a crash, and a leader's update also ``interrupted``: its body cancelled by ``lead``;
       collections: success, ``OperationTimeoutError`` or a crash); nothing ended in any other
       error; each operation ended within its own timeout; and the seed finished
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
       an append that raised a plain ``FencedError`` never landed above the replay point of its
       moment (below it, where nobody replays, a fenced writer's recreation of a trimmed id is
       garbage for the next trim). ``WriteOutcomeUnknownError`` may have left it there (its
       first send landed, a newer writer replayed and trimmed it, its resend found it gone),
       and is raised only by a fenced writer, after a trim, in an append that met a fault.
       ``read_wal`` from the final replay point succeeds and never yields a lower epoch after a
       higher one. No two acknowledged appends share a log id.
    7. **Use.** Readers running beside writers, trims and collections: ``read_wal`` yields only
       entries first written at their ids, in order, never a lower epoch after a higher, and
       one that ends without an error missed no acknowledged append that stood when it began;
       ``ManifestStore.read(id)`` returns the history's version or nothing. A misuse (a wrongly
       typed field, a replay point moved by hand or dropped by a rebuild, a payload that is not
       bytes) is refused and leaves no trace. A handle that knows it is fenced writes nothing.
       Foreign objects in the root's folders are never changed or deleted.
    8. **Leading: holders in turn** (``checker_lead``). Every life of a leader ended in one of
       ``lead``'s outcomes (released, the body's error, ``FencedError`` or ``LeaseLostError``
       after entering, ``ClaimTimeoutError`` at its timeout, or killed or stopped from
       outside). Every leader that entered holds a claim of its own - the version that first
       set its epoch carries its claim id, made by it - and no two entered at one epoch.
       Ordered by the manifest each landed at, the leaders' acknowledged updates never go back
       to an older epoch, nor to another holder of the same epoch, and each landed where its own
       claim is the role's newest (no newer claim, a leader's or a plain one, before it): no two
       holders' acknowledged writes interleave against the epochs. (Exactly-once is check 3's,
       for every update, the leaders' included.)
    9. **Leading: succession** (``checker_lead``). A released or stopped holder is succeeded:
       while a version of the role's lease stands, a waiting standby swaps in its ``claiming``
       lease within ``poll_every`` of a release, and within ``max(lease, the holder's lease) +
       poll_every`` of any other version that stops changing (a crashed, paused or cut-off
       holder), plus what its own requests can have taken; a standby that won the swap enters
       within its requests and one backoff per conflict. Checked wherever the bound is honest:
       the standby met no fault, pause or stop from a lease before until the bound, and no
       claim of the role that no lease speaks for (a plain one) came after the newest that one
       speaks for (``_check_succession`` has the details).
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
    check_log(history, lineage, ids, fail)
    check_use(history, lineage, fail)
    check_lead(history, lineage, ids, first_at_epoch, fail)
    return violations


def _check_versions(history: History, fail: Fail) -> dict[int, Manifest]:
    """Check 1; returns the lineage: id -> the history's version."""
    boundary = 0
    if history.final_boundary is not None:
        try:
            boundary = decode_boundary(history.final_boundary, BOUNDARY_KEY)
        except ManifestError as exc:
            fail(1, f"the retention boundary is not intact: {exc}")
    stored: list[int] = []
    for key, (body, etag) in sorted(history.final.items()):
        manifest_id = MANIFESTS.id_of(key)
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
            f"{newest}: {show_ids(above)}",
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
            lineage[manifest_id] = decode(first[0], MANIFESTS.key(manifest_id))
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
        tokens = state_tokens(lineage[manifest_id].state)
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

    seq_of = {manifest_id: seq for seq, _, manifest_id in history.landings}
    retention_moves = [seq for seq, _ in history.boundary_moves]
    landed_by: dict[int, list[tuple[int, int]]] = {}  # op index -> (seq, manifest id) landed
    for seq, index, manifest_id in [*history.landings, *history.recreations]:
        landed_by.setdefault(index, []).append((seq, manifest_id))

    def overtaken(op: OpRecord) -> bool:
        """One of ``op``'s creates landed at an id the boundary reached before ``op`` ended
        (before the create: a recreation; after it: its version, passed)."""
        return any(
            seq < op.end_seq and value >= manifest_id
            for _, manifest_id in landed_by.get(op.index, ())
            for seq, value in history.boundary_moves
        )

    for op in history.ops:
        if op.outcome == UNKNOWN and op.kind in ("update", "mark", "fence"):
            check_unknown(
                op,
                newer_claim(op),
                seq_of,
                retention_moves,
                "retention",
                3,
                fail,
                overtaken=overtaken(op),
            )

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
        if op.outcome == "FencedError" and where is not None:
            fail(
                3,
                f"op{op.index} ({op.actor}): {what} raised FencedError but landed at manifest "
                f"{where}",
            )
        elif op.outcome == UNKNOWN and where is not None:
            history.counts[f"landed_unknown:{op.kind}"] += 1
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


def show_ids(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids[:20]) + (" ..." if len(ids) > 20 else "")
