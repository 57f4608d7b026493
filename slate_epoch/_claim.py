"""Claiming an epoch, and writing as its holder. Read next to ``protocol.md``:

1. Read the newest manifest (or start from nothing).
2. Write the next id with the role's epoch + 1 and a fresh claim id, create-if-absent.
3. Conflict: read the newest manifest. If it still carries our claim (and our write id), our
   write landed and only its response was lost: done, no epoch burned. Otherwise a rival took
   the id: bump again on top of what we just read.
4. Outcome unknown (``TransientStoreError``): resend the identical bytes to the identical id; a
   conflict then goes through step 3.
5. Between tries, sleep a jittered exponential backoff; all of it under one deadline.

Steps 2-4 (one version written exactly once) live in ``_next_version``; this module holds the
loop around them, the handle, and the handle's side of the log.

An ``EpochHandle`` writes with the same step 2-4 loop, always at "the id after the newest one I
know". That id is free only while the manifest before it is the newest, and the handle has
checked that one carries its own epoch: so a write lands only while no newer claim exists, and
a fenced handle's write never lands.

Why step 3 looks at the newest version rather than the id we wrote: every version records, per
role, the write id of the holder's newest write, and every later version carries it on. So the
newest version tells whether our write is in the history even when other roles have written on
top, and even when retention has since deleted the id we wrote. A write that landed at a deleted
id (a stale writer recreating it) is in nobody's history, and the newest version says so too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import partial
from typing import TypeVar

import anyio
import msgspec

from ._errors import (
    ClaimTimeoutError,
    FencedError,
    InvariantViolationError,
    SlateEpochError,
    WriteOutcomeUnknownError,
)
from ._manifest import (
    Manifest,
    ManifestCache,
    ManifestStore,
    RoleClaim,
    default_owner,
    new_id,
    now_ms,
)
from ._next_version import read_newest, write_next
from ._observe import (
    CLAIM_LOG,
    NO_SPAN,
    claimed,
    conflict,
    fields,
    own_write_found,
    quiet,
    span,
    violated,
)
from ._observe import fenced as observe_fenced
from ._retry import DEFAULT_BACKOFF, DEFAULT_TIMEOUT, Backoff, Retrier, with_deadline
from ._store import ObjectStore
from ._wal import FenceAttempt, WalWriter, attempt_fence, fence_log, replay_point_mover

__all__ = ["EpochHandle", "claim_epoch"]

T = TypeVar("T")


async def claim_epoch(
    store: ObjectStore,
    root: str = "",
    *,
    role: str = "writer",
    timeout: float = DEFAULT_TIMEOUT,
    max_conflicts: int | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    owner: str | None = None,
    cache: ManifestCache | None = None,
    fence_wal: bool = False,
) -> EpochHandle:
    """Become the holder of ``role`` under ``root``: every older holder is fenced from now on.

    Returns the handle at a new epoch, one above the newest stored. Raises ``ClaimTimeoutError``
    when ``timeout`` seconds pass, or when a write meets a rival's more than ``max_conflicts``
    times. ``owner`` (default ``host:pid``) is recorded for operators. ``cache`` is what this
    process remembers of the root (default: the store object's own; see ``ManifestCache``).

    ``fence_wal=True`` (writer role) also fences the write-ahead log, as ``handle.fence_wal()``
    would (which then returns that writer), but sooner: the fence is tried as soon as the
    claim's create has landed, beside the claim's own last request. A cold claim and its fence
    cost six round trips instead of seven. Everything runs under ``timeout``. If a newer claim
    lands before the fence stands, the handle is returned fenced, as any claim's may be:
    its ``fence_wal()`` raises ``FencedError``.
    """
    _check_role(role)
    if fence_wal and role != "writer":
        raise ValueError(f"only the writer role fences the log, not {role!r}")
    if owner is not None and not isinstance(owner, str):
        raise TypeError(f"owner must be a str, not {type(owner).__name__}")
    if max_conflicts is not None and max_conflicts < 0:
        raise ValueError(f"max_conflicts must be >= 0, got {max_conflicts}")
    manifests = ManifestStore(store, root, cache=cache)
    owner = default_owner() if owner is None else owner
    retrier = Retrier(backoff, "claim", {"role": role, "root": manifests.root})
    conflicts = lost_responses = 0  # counted here, logged once at the end
    # Nobody listening is the common case, and a warm claim is ~20 us: then nothing is observed
    # (no span, no watched store, no clock read), decided by one question. The span is opened
    # and closed by hand rather than by a `with` block: even a no-op one costs a warm claim.
    unobserved = quiet(CLAIM_LOG)
    io, scope, started = manifests, NO_SPAN, 0.0
    if not unobserved:
        io = manifests.observed()  # each request logged at DEBUG and counted, if anyone listens
        scope = span("claim", role, manifests.root).open()
        started = time.perf_counter()
    try:
        with anyio.move_on_after(timeout):
            # Step 1. A process that saw this root before starts from what it saw: manifests
            # never change, and if a newer one exists (or retention deleted it) the create below
            # says so.
            latest = manifests.cached_latest() or await read_newest(
                io, retrier, verify_boundary=False
            )
            while True:
                base_id, base = latest
                # Step 2.
                claim = RoleClaim(
                    role=role,
                    epoch=base.epoch(role) + 1,
                    claim_id=new_id(),
                    claimed_at_ms=now_ms(),
                    owner=owner,
                )
                candidate = base.with_claim(claim)
                attempt: list[FenceAttempt] = []  # the fence tried beside this create
                beside = None
                if fence_wal:
                    beside = _fence_attempt(store, manifests.root, candidate, retrier, attempt)
                landed, newest = await write_next(
                    io, base_id + 1, candidate, role, retrier, beside=beside
                )
                if landed:
                    manifest_id, manifest = newest or (base_id + 1, candidate)
                    if newest is not None:
                        lost_responses += 1  # found our own write after a conflict
                    if not unobserved:
                        claimed(
                            scope,
                            role,
                            manifests.root,
                            claim.epoch,
                            manifest_id,
                            conflicts=conflicts,
                            lost_responses=lost_responses,
                            seconds=time.perf_counter() - started,
                            owner=owner,
                        )
                    handle = EpochHandle(
                        manifests, manifest_id, manifest, role, timeout=timeout, backoff=backoff
                    )
                    if fence_wal:  # the rest of the fence: under the claim's deadline
                        with suppress(FencedError):  # fenced already: the handle knows, and
                            holder = _HolderOfTheLog(handle)  # its fence_wal() will say so
                            first = attempt[0] if attempt else None
                            handle._log = await fence_log(holder, retrier, first)
                    return handle
                # Step 3: a rival took the id.
                conflicts += 1
                if max_conflicts is not None and conflicts > max_conflicts:
                    raise ClaimTimeoutError(
                        f"claim of role {role!r} met {conflicts} conflicts (max_conflicts="
                        f"{max_conflicts})",
                        attempts=retrier.attempts,
                        last_error=retrier.last_error,
                    )
                await retrier.pause()
                # Whatever landed during the pause: one probe past what step 3 read.
                latest = await read_newest(
                    io, retrier, known=newest[0] if newest else 0, verify_boundary=False
                )
        raise ClaimTimeoutError(
            f"claim of role {role!r} timed out after {timeout} s",
            attempts=retrier.attempts,
            last_error=retrier.last_error,
        )
    except BaseException as exc:
        scope.close(exc)
        raise


class EpochHandle:
    """The holder of one role at one epoch, until a newer claim fences it.

    ``manifest`` and ``manifest_id`` are the newest version this handle has seen.
    """

    def __init__(
        self,
        manifests: ManifestStore,
        manifest_id: int,
        manifest: Manifest,
        role: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        claim = manifest.claim(role)
        if claim is None:
            raise ValueError(f"manifest {manifest_id} has no claim for role {role!r}")
        self._manifests = manifests
        self._claim = claim
        self._timeout = timeout
        self._backoff = backoff
        self._fenced_by: int | None = None
        # One write of this handle at a time (update, mark_replayed, fence_wal): a write whose
        # response was lost is settled before the next one starts, so the newest version always
        # tells whether it landed. The handle's one log writer, once fence_wal made it.
        self._write_lock = anyio.Lock()
        self._log: WalWriter | None = None
        self.manifest_id = manifest_id
        self.manifest = manifest

    @property
    def role(self) -> str:
        return self._claim.role

    @property
    def epoch(self) -> int:
        return self._claim.epoch

    @property
    def claim_id(self) -> str:
        return self._claim.claim_id

    @property
    def store(self) -> ObjectStore:
        return self._manifests.store

    @property
    def root(self) -> str:
        return self._manifests.root

    def __repr__(self) -> str:
        return (
            f"EpochHandle(role={self.role!r}, epoch={self.epoch}, "
            f"manifest_id={self.manifest_id}, root={self.root!r})"
        )

    async def refresh(self, *, timeout: float | None = None) -> Manifest:
        """Read the newest manifest. ``FencedError`` if a newer epoch holds the role."""

        async def read(retrier: Retrier) -> Manifest:
            io = self._manifests.observed()
            self._accept(*await read_newest(io, retrier, known=self.manifest_id))
            return self.manifest

        return await self._operation("refresh", "refresh", timeout, read)

    async def update(
        self, mutate: Callable[[Manifest], Manifest], *, timeout: float | None = None
    ) -> Manifest:
        """Write ``mutate(newest manifest)`` as the next version, exactly once, and return it.

        On a conflict with another role's write, re-reads and applies ``mutate`` again on top;
        ``FencedError`` once a newer epoch holds this role (nothing is written). Updates of one
        handle run one at a time, in the order called (each waits for the previous one, within
        its own timeout). A mutate that changes any role's epoch or claim id, or the replay
        point (which only ``mark_replayed`` moves), is a ``ValueError``; one that returns a
        manifest of the wrong types (``state`` not bytes, ...) is a ``TypeError``: nothing is
        written either way.
        """

        async def write(retrier: Retrier) -> Manifest:
            async with self._write_lock:
                return await self._write(mutate, retrier, self._manifests.observed())

        return await self._operation("update", "update", timeout, write)

    async def _write(
        self,
        mutate: Callable[[Manifest], Manifest],
        retrier: Retrier,
        io: ManifestStore,
        *,
        keeps_the_log: bool = False,
        write: str = "update",
    ) -> Manifest:
        """``update``'s loop, through ``io`` (this handle's manifests, as the operation reaches
        them); the caller holds ``_write_lock``. Only the log's own writes (``keeps_the_log``:
        mark_replayed) may change the replay point and the log fence. ``write``
        names the write in a ``WriteOutcomeUnknownError``."""
        self._raise_if_fenced()  # a write queued behind one that found us fenced
        while True:
            base_id, base = self.manifest_id, self.manifest
            candidate = mutate(base)
            if not isinstance(candidate, Manifest):
                raise TypeError(f"mutate must return a Manifest, not {type(candidate).__name__}")
            if candidate.roles != base.roles:
                raise ValueError("mutate must not change any role's epoch or claim id")
            if not keeps_the_log:
                if candidate.replay_after != base.replay_after:
                    raise ValueError(
                        f"mutate must not change the replay point ({base.replay_after} -> "
                        f"{candidate.replay_after!r}): only mark_replayed moves it"
                    )
                if candidate.log_fence != base.log_fence:  # a hint the library keeps
                    candidate = msgspec.structs.replace(candidate, log_fence=base.log_fence)
            if self._log is not None and candidate.log_fence < self._log.fence_id:
                # Where this writer fenced, for the next writer to look from (its appends come
                # after it): recorded with the first manifest write after the fence.
                candidate = msgspec.structs.replace(candidate, log_fence=self._log.fence_id)
            candidate = candidate.with_write(self.role, new_id())
            landed, newest = await write_next(
                io, base_id + 1, candidate, self.role, retrier, base=base
            )
            if newest is not None:  # a conflict: still ours? (FencedError if not)
                try:
                    self._accept(*newest)
                except FencedError as exc:
                    if landed is None:
                        # The corner: our response was lost, a newer claim landed on top, and
                        # retention took the version that could tell. (Unfenced, None can't
                        # happen: only a newer claim replaces the role's lineage while this
                        # handle's writes are serialised.)
                        raise WriteOutcomeUnknownError(
                            self.role, self.epoch, exc.newer_epoch, write=write
                        ) from exc
                    if not landed:
                        raise
                    # Our write landed before the newer claim: it is in the history, so the
                    # update succeeded; every later call raises FencedError.
                if landed:
                    own_write_found(self.role, self.root, self.epoch, write, base_id + 1)
                else:
                    conflict(self.role, write)
            if landed:
                self._adopt(base_id + 1, candidate)
                return candidate
            await retrier.pause()  # then apply mutate again, on top of the newest

    async def fence_wal(self, *, timeout: float | None = None) -> WalWriter:
        """Fence the write-ahead log (writer role): a zero-byte object at the first free log id
        above the replay point, so every older writer's next append fails. Returns the writer
        that appends after the fence; a handle has one: a second call returns the same writer.
        ``FencedError`` if this handle is no longer the holder (nothing is written)."""
        if self.role != "writer":
            raise ValueError(f"only the writer role fences the log, not {self.role!r}")

        async def fence(retrier: Retrier) -> WalWriter:
            async with self._write_lock:
                if self._log is None:
                    self._log = await fence_log(_HolderOfTheLog(self), retrier)
                return self._log

        return await self._operation("fence_wal", "fence of the log", timeout, fence)

    async def mark_replayed(self, entry_id: int, *, timeout: float | None = None) -> Manifest:
        """Record, through a fenced ``update``, that the log is absorbed into the state up to
        ``entry_id``: entries at or below it may then be trimmed. ``ValueError`` past the last
        appended id, or below the current replay point."""
        if self.role != "writer":
            raise ValueError(f"only the writer role moves the replay point, not {self.role!r}")

        async def mark(retrier: Retrier) -> Manifest:
            async with self._write_lock:
                advance = await replay_point_mover(_HolderOfTheLog(self), entry_id, retrier)
                io = self._manifests.observed()
                return await self._write(
                    advance, retrier, io, keeps_the_log=True, write="mark_replayed"
                )

        return await self._operation("mark_replayed", "mark_replayed", timeout, mark)

    def _adopt(self, manifest_id: int, manifest: Manifest) -> None:
        """Remember a version of ours as the newest seen, unless a newer one is known."""
        if manifest_id > self.manifest_id:
            self.manifest_id, self.manifest = manifest_id, manifest

    def _accept(self, manifest_id: int, manifest: Manifest) -> None:
        """Adopt a newer manifest after checking it still names this handle's claim."""
        stored = manifest.claim(self.role)
        stored_epoch = 0 if stored is None else stored.epoch
        if stored_epoch > self.epoch:
            if self._fenced_by is None:
                observe_fenced(self.role, self.root, self.epoch, stored_epoch, manifest_id)
            self._fenced_by = stored_epoch
            raise FencedError(self.role, self.epoch, stored_epoch)
        if stored is None or stored_epoch < self.epoch:
            raise violated(
                InvariantViolationError(
                    f"manifest {manifest_id} has role {self.role!r} at epoch {stored_epoch}, "
                    f"below the held epoch {self.epoch}: epochs must never decrease"
                ),
                **fields(self.role, self.epoch, self.root, manifest_id),
            )
        if stored.claim_id != self.claim_id:
            raise violated(
                InvariantViolationError(
                    f"manifest {manifest_id}: epoch {self.epoch} of role {self.role!r} was "
                    f"claimed twice ({stored.claim_id} and {self.claim_id})"
                ),
                **fields(self.role, self.epoch, self.root, manifest_id),
            )
        self._adopt(manifest_id, manifest)

    def _raise_if_fenced(self) -> None:
        if self._fenced_by is not None:
            raise FencedError(self.role, self.epoch, self._fenced_by)

    async def _operation(
        self,
        name: str,
        what: str,
        timeout: float | None,
        operation: Callable[[Retrier], Awaitable[T]],
    ) -> T:
        """A public operation of the handle: its span ``slate_epoch.<name>``, then ``operation``
        under the deadline (``FencedError`` at once if the handle knows it is fenced)."""
        if quiet(CLAIM_LOG):  # nobody listens: not even a no-op span
            self._raise_if_fenced()
            return await self._with_deadline(what, timeout, operation)
        with span(name, self.role, self.root, self.epoch) as scope:
            self._raise_if_fenced()
            result = await self._with_deadline(what, timeout, operation)
            scope.set("manifest_id", self.manifest_id)
            return result

    async def _with_deadline(
        self, what: str, timeout: float | None, operation: Callable[[Retrier], Awaitable[T]]
    ) -> T:
        return await with_deadline(
            f"{what} of role {self.role!r} at epoch {self.epoch}",
            self._timeout if timeout is None else timeout,
            self._backoff,
            operation,
            facts={"role": self.role, "epoch": self.epoch, "root": self.root},
        )


class _HolderOfTheLog:
    """The handle as the log sees it (``LogHolder``)."""

    def __init__(self, handle: EpochHandle) -> None:
        self._handle = handle

    @property
    def store(self) -> ObjectStore:
        return self._handle.store

    @property
    def root(self) -> str:
        return self._handle.root

    @property
    def epoch(self) -> int:
        return self._handle.epoch

    @property
    def replay_after(self) -> int:
        return self._handle.manifest.replay_after

    @property
    def log_fence(self) -> int:
        return self._handle.manifest.log_fence

    async def confirm(self, retrier: Retrier) -> None:
        handle = self._handle
        following = handle.manifest_id + 1
        io = handle._manifests.observed()
        # The look first, the boundary after it: retention moves the boundary before it deletes,
        # so a boundary still below the id when read after the look means the id had never been
        # deleted when the look found it absent. (Read at once, a boundary read before a
        # collection could pair with a look after it: a newer claim missed.)
        absent = not await retrier.call(partial(io.exists, following))
        if absent and await retrier.call(io.read_boundary) < following:
            return  # nothing after the newest version the handle knows: no newer claim
        await handle.refresh()

    async def refresh(self) -> Manifest:
        return await self._handle.refresh()

    def check(self) -> None:
        self._handle._raise_if_fenced()

    async def run(
        self, what: str, timeout: float | None, operation: Callable[[Retrier], Awaitable[T]]
    ) -> T:
        return await self._handle._with_deadline(what, timeout, operation)


def _fence_attempt(
    store: ObjectStore,
    root: str,
    claim: Manifest,
    retrier: Retrier,
    into: list[FenceAttempt],
) -> Callable[[], Awaitable[None]]:
    """The first step of the log's fence, to run beside the boundary check of the claim's
    create (so only once that create has landed): its result goes ``into``. If it fails, the
    fence starts over once the claim has returned."""
    start = max(claim.replay_after, claim.log_fence)

    async def attempt() -> None:
        if into:
            # Once: a create that lands again (a resend recreating the id retention took)
            # would try the same fence, meet our own, and take it for another's.
            return
        with suppress(SlateEpochError):  # then fence_log tries again from the start
            into.append(await attempt_fence(store, root, start, retrier))

    return attempt


def _check_role(role: str) -> None:
    if not isinstance(role, str) or not role or not role.isprintable():
        raise ValueError(f"role must be a non-empty printable str, got {role!r}")
