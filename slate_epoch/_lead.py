"""``lead``: hold a role for as long as a body runs; standbys wait and take over when it stops.

Built on the claim and the handle: the claim protocol and its guarantees do not change. Safety
(an old holder's writes never land after a newer claim) comes from fencing, as always; the lease
only decides *when* a standby claims, and stops an old holder's body so it wastes no work.

**The lease object** (``_lease``): one per role, ``{root}/lease/{role}``, outside the manifest,
so renewals add no manifest version. Every write is a compare-and-swap on its etag.

**Holding.** Every ``renew_every`` the holder sends two requests at once:

(a) the lease rewritten by update-by-etag (``renewals + 1``): what standbys watch change. A
    conflict means another process took the lease: lost (or fenced, if its claim landed).
(b) a HEAD of the manifest id after the newest the handle knows: absent means no newer version
    (so no newer claim); present, and the handle refreshes (``FencedError`` if a newer claim).

**Cut-off.** The holder measures from the moment it *sent* its last renewal that landed, on its
own monotonic clock, and cancels the body at ``lease - margin`` with ``margin = lease / 10``. A
standby measures ``lease`` (at least) from the moment it *saw* that renewal, which is later. So
the body stops first as long as the two clocks' rates differ by less than the margin allows
(``margin / (lease - margin)``, 11 %; real clocks differ by 0.01 %): the rest of the margin is the
body's time to reach a checkpoint. Nothing compares clocks across processes.

**Waiting.** A standby reads the lease at most ``poll_every`` apart (and the role's claim in
the newest manifest when the lease says it may have changed), and notes, by its own clock, when
what it sees last changed. It takes over:

- at once if the role was never claimed, or its lease is released;
- after ``max(lease, the holder's advertised lease)`` without change while a lease speaks for
  the current claim (or a standby is claiming);
- after ``lease`` from first seeing the claim when no lease speaks for it (a holder from a
  plain ``claim_epoch``, which never renews, or a lease left by an older epoch).

**Arbitration.** Before claiming, a standby swaps the lease object for a ``claiming`` lease,
conditional on the exact version it watched: of several standbys exactly one wins; the others
see the lease change and keep waiting, and burn no epoch. The winner claims, then swaps in the
lease of its claim. A winner that dies in between leaves a lease that never changes: the others
take over after ``lease``.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import anyio
import msgspec

from ._claim import EpochHandle, claim_epoch
from ._errors import (
    ClaimTimeoutError,
    FencedError,
    LeaseLostError,
    NotFoundError,
    OperationTimeoutError,
    SlateEpochError,
    TransientStoreError,
)
from ._lease import Lease, LeaseSlot, lease_key
from ._manifest import Manifest, ManifestStore, RoleClaim, default_owner, new_id, now_ms
from ._observe import fields, lead_ended, lead_taken_over, retrying, span, store_for
from ._retry import DEFAULT_BACKOFF, DEFAULT_TIMEOUT, Backoff
from ._store import ObjectStore

__all__ = ["DEFAULT_LEASE", "MARGIN", "lead"]

DEFAULT_LEASE: Final = 10.0
# The holder cancels its body this fraction of the lease before a standby may take over.
MARGIN: Final = 0.1


@asynccontextmanager
async def lead(
    store: ObjectStore,
    root: str = "",
    *,
    role: str = "writer",
    lease: float = DEFAULT_LEASE,
    renew_every: float | None = None,
    poll_every: float | None = None,
    timeout: float | None = None,
    owner: str | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> AsyncIterator[EpochHandle]:
    """Lead ``role`` under ``root`` for as long as the ``async with`` body runs::

        async with lead(store, "tenant-7", role="writer", lease=10.0) as handle:
            await serve(handle)

    Entering waits until the role is free (never claimed, released, or its holder stopped
    renewing for ``lease`` seconds), looking at most ``poll_every`` apart (default ``lease / 3``),
    then claims it: ``ClaimTimeoutError`` after ``timeout`` seconds (None: wait as long as it
    takes).
    While the body runs, the lease is renewed every ``renew_every`` (default ``lease / 3``).

    The body is cancelled, and the ``async with`` raises:

    - ``FencedError`` when a newer claim of the role exists (within one ``renew_every`` plus one
      request);
    - ``LeaseLostError`` when renewals kept failing until ``lease - lease / 10`` had passed since
      the last one that landed (by this process's clock), or another process took the lease.

    On leaving (a clean exit, or an exception from the body, which propagates unchanged) the
    lease is released, so a standby takes over within one ``poll_every``. ``owner`` (default
    ``host:pid``) is recorded in the claim and the lease, for operators.
    """
    settings = _settings(root, role, lease, renew_every, poll_every, timeout, owner, backoff)
    holder = await _acquire(store, settings)
    holder.log_taken_over()
    body_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as tasks:
            with anyio.CancelScope() as body:
                tasks.start_soon(holder.keep, body)
                try:
                    yield holder.handle
                except (Exception, KeyboardInterrupt, SystemExit) as exc:
                    # Kept out of the task group, which would wrap it in an ExceptionGroup: the
                    # body's exception propagates unchanged. (Cancellation passes through.)
                    body_error = exc
            tasks.cancel_scope.cancel()
    finally:
        await holder.release()
        holder.log_ended(body_error)
    ended = holder.ended
    if ended is not None and (body_error is None or body.cancel_called):
        # The body was stopped for this reason (whatever it raised while being cancelled is
        # kept as the context).
        if body_error is not None:
            ended.__context__ = body_error
        raise ended
    if body_error is not None:
        raise body_error


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    root: str
    role: str
    lease: float
    renew_every: float
    poll_every: float
    timeout: float | None
    owner: str
    backoff: Backoff

    @property
    def margin(self) -> float:
        return self.lease * MARGIN


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _settings(
    root: str,
    role: str,
    lease: float,
    renew_every: float | None,
    poll_every: float | None,
    timeout: float | None,
    owner: str | None,
    backoff: Backoff,
) -> _Settings:
    """Checked before any I/O: a bad value is a ``ValueError`` or ``TypeError`` naming it."""
    lease_key(root, role)  # the role, and the root (InvalidKeyError)
    lease = _seconds("lease", lease)
    margin = lease * MARGIN
    renew = lease / 3 if renew_every is None else _seconds("renew_every", renew_every)
    if renew >= lease - margin:
        raise ValueError(
            f"renew_every ({renew:g} s) must be below lease - lease/10 ({lease - margin:g} s), "
            "or the lease would run out between two renewals"
        )
    poll = lease / 3 if poll_every is None else _seconds("poll_every", poll_every)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
        if not (timeout >= 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
    if owner is not None and not isinstance(owner, str):
        raise TypeError(f"owner must be a str or None, not {type(owner).__name__}")
    if not isinstance(backoff, Backoff):
        raise TypeError(f"backoff must be a Backoff, not {type(backoff).__name__}")
    return _Settings(
        root=root.strip("/"),
        role=role,
        lease=lease,
        renew_every=renew,
        poll_every=poll,
        timeout=None if timeout is None else float(timeout),
        owner=default_owner() if owner is None else owner,
        backoff=backoff,
    )


# -- holding -----------------------------------------------------------------------------------


class _Holder:
    """The leading process: its handle, its lease (``slot.landed``), and the task that renews
    it."""

    def __init__(
        self, handle: EpochHandle, slot: LeaseSlot, sent: float, settings: _Settings
    ) -> None:
        assert slot.landed is not None  # the lease of the claim, just written
        self.handle = handle
        self.slot = slot
        self.renewed_sent = sent  # when the last write that landed was sent (monotonic)
        self.settings = settings
        self.manifests = ManifestStore(handle.store, handle.root)
        self.ended: Exception | None = None  # why the body was stopped
        self.last_error: BaseException | None = None
        self.taken_over_because = ""  # how the role came free (for the log)
        self.released = False

    def log_taken_over(self) -> None:
        handle = self.handle
        lead_taken_over(
            handle.role,
            handle.epoch,
            handle.root,
            handle.manifest_id,
            self.settings.owner,
            self.taken_over_because,
        )

    def log_ended(self, body_error: BaseException | None) -> None:
        handle = self.handle
        lead_ended(
            handle.role,
            handle.epoch,
            handle.root,
            handle.manifest_id,
            self.settings.owner,
            ended=self.ended,
            released=self.released,
            body_error=body_error,
        )

    @property
    def _landed(self) -> tuple[Lease, str]:
        assert self.slot.landed is not None
        return self.slot.landed

    def _cutoff(self) -> float:
        return self.renewed_sent + self.settings.lease - self.settings.margin

    async def keep(self, body: anyio.CancelScope) -> None:
        """Renew until the lease is lost; then cancel the body. Never raises into the task
        group (the reason is kept in ``ended``); cancelled when the body ends first."""
        try:
            self.ended = await self._renew_until_lost()
        except Exception as exc:  # e.g. a corrupt lease object, access denied: stop, report it
            self.ended = exc
        body.cancel()

    async def _renew_until_lost(self) -> Exception:
        settings = self.settings
        next_round = self.renewed_sent + settings.renew_every
        while True:  # one renewal per pass, each under the cut-off: ends with the lease
            await anyio.sleep_until(min(next_round, self._cutoff()))
            started = anyio.current_time()
            if started >= self._cutoff():  # e.g. the process was paused past it
                return self._cut_off()
            # Rounds start renew_every apart (not after one another), so a newer claim is seen
            # within one renew_every plus one request.
            next_round = started + settings.renew_every
            outcome: Exception | None = None
            with anyio.CancelScope(deadline=self._cutoff()) as scope:
                outcome = await self._renew()
            if scope.cancelled_caught:
                return self._cut_off()
            if outcome is not None:
                return outcome

    def _cut_off(self) -> LeaseLostError:
        settings = self.settings
        reason = (
            f"no renewal landed for {settings.lease - settings.margin:g} s by this process's "
            "clock; the body was cut off before a standby may take over"
        )
        last_error = self.last_error or self.slot.last_error
        if last_error is not None:
            reason += f" (last error: {type(last_error).__name__}: {last_error})"
        return LeaseLostError(self.handle.role, self.handle.epoch, reason)

    async def _renew(self) -> Exception | None:
        """One renewal: (a) the lease rewritten and (b) a look for a newer manifest, sent at
        once. None: renewed, still the holder; else why not."""
        current, current_etag = self._landed
        new = msgspec.structs.replace(
            current, renewals=current.renewals + 1, renewed_at_ms=now_ms(), write_id=new_id()
        )
        sent = anyio.current_time()
        etag: str | None = None
        errors: list[Exception] = []

        async def write() -> None:
            nonlocal etag
            try:
                etag = await self.slot.swap(new, current_etag)
            except Exception as exc:  # non-transient (the swap retries the rest)
                errors.append(exc)
                tasks.cancel_scope.cancel()

        async def check() -> None:
            try:
                if await self._newer_version():
                    await self.handle.refresh()  # FencedError if the newer version is a claim
            except Exception as exc:
                errors.append(exc)
                tasks.cancel_scope.cancel()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(write)
            tasks.start_soon(check)
        if etag is not None:
            self.renewed_sent = sent
        fenced = [exc for exc in errors if isinstance(exc, FencedError)]
        if fenced or errors:
            return (fenced or errors)[0]
        if etag is None:
            if self._landed[0].write_id != current.write_id:
                return None  # an earlier write of ours was there: renewed, as far as it goes
            return await self._taken_over()
        return None

    async def _newer_version(self) -> bool:
        """Whether the manifest after the newest this handle knows exists (one HEAD)."""
        key = self.manifests.key(self.handle.manifest_id + 1)
        waits = self.settings.backoff.waits()
        store = store_for(self.handle.store)
        transient = 0
        while True:  # bounded by the round's deadline (the cut-off)
            try:
                await store.head(key)
            except NotFoundError:
                return False
            except TransientStoreError as exc:
                self.last_error = exc
                transient += 1
                facts = fields(self.handle.role, self.handle.epoch, self.handle.root)
                retrying("lease renewal's look for a newer manifest", transient, exc, facts)
                await anyio.sleep(next(waits))
                continue
            return True

    async def _taken_over(self) -> Exception:
        """Another process's lease is stored instead of ours: a standby decided this holder
        had stopped. Fenced if its claim has landed already; else the lease is lost."""
        try:
            await self.handle.refresh(timeout=self.settings.renew_every)
        except FencedError as exc:
            return exc
        except (TransientStoreError, OperationTimeoutError) as exc:
            self.last_error = exc
        seen = self.slot.seen
        by = f" by {seen.owner!r}" if seen is not None and seen.owner else ""
        return LeaseLostError(
            self.handle.role, self.handle.epoch, f"another process took the lease over{by}"
        )

    async def release(self) -> None:
        """Mark the lease released, so a standby takes over at its next poll. Bounded by the
        lease (past it, standbys take over anyway) and shielded (it runs while the caller is
        being cancelled). A release that fails changes nothing but the takeover time."""
        if isinstance(self.ended, LeaseLostError):
            return  # the lease ran out, or is another process's: nothing of ours to release
        with anyio.move_on_after(self.settings.lease, shield=True):
            # A renewal cancelled in flight may have landed after all: the swap then finds it
            # (the slot's ``unknown``) and the release is written again on top of it, once.
            for _ in range(2):
                current, etag = self._landed
                released = msgspec.structs.replace(
                    current, released=True, renewed_at_ms=now_ms(), write_id=new_id()
                )
                try:
                    if await self.slot.swap(released, etag) is not None:
                        self.released = True
                        return
                except SlateEpochError:
                    return  # e.g. a corrupt lease object: the next lead reports it
                if self._landed[1] == etag:
                    return  # another process's lease is there: not ours to release


# -- waiting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    claim: RoleClaim | None  # the role's claim in the newest manifest
    lease: Lease | None
    etag: str | None  # the lease's


_UNSEEN: Final = object()


class _Standby:
    """A process waiting to lead: what it saw, and since when by its own clock.

    It reads the lease every poll (one GET) but the newest manifest only when the lease says a
    claim may have changed (a new lease, released, claiming, or speaking for a claim it does not
    know), and once more, with the retention boundary checked, before it takes over. Reading
    the newest manifest while a busy leader writes costs several requests (a forward search),
    the lease one: a standby of a renewing leader costs one GET per poll.
    """

    def __init__(self, store: ObjectStore, settings: _Settings) -> None:
        self.store = store
        self.settings = settings
        self.slot = LeaseSlot(store, settings.root, settings.role, settings.backoff)
        self.manifests = ManifestStore(store, settings.root)
        self.known_id = 0
        self.claim: RoleClaim | None = None  # the role's claim in the newest manifest read
        self.claim_read_at_etag: object = _UNSEEN  # the lease's etag when it was read
        self.claim_key: object = _UNSEEN
        self.claim_seen_at = 0.0
        self.state_key: object = _UNSEEN
        self.changed_at = 0.0
        self.attempts = 0
        self.last_error: BaseException | None = None

    async def attempt(self) -> _Holder | float:
        """Look, and take over if it is time: the holder, or when to look again."""
        # Each wait is drawn from [3/4, 1] of poll_every. With fixed waits, polls and renewals
        # of the same period stay in one phase: a holder that became leader right after this
        # standby looked renews right after each of its looks, and every takeover would cost the
        # worst case, a whole poll more. (Also spreads several standbys' looks apart.)
        poll = self.settings.poll_every * random.uniform(0.75, 1.0)
        view = await self._observe(verify=False)
        now = anyio.current_time()
        if view is None:
            return now + poll
        at = self._takeover_at(view, now)
        if at > now:
            return min(now + poll, at)
        # Time to take over. Look once more, reading the newest manifest with the retention
        # boundary checked, so that no claim (even one whose version retention deleted) hides.
        view = await self._observe(verify=True)
        now = anyio.current_time()
        if view is None:
            return now + poll
        at = self._takeover_at(view, now)
        if at > now:
            return min(now + poll, at)
        holder = await self._take_over(view)
        if holder is not None:
            holder.taken_over_because = _why_free(view)
        # Lost the race for the lease (or the claim): the winner's lease is there now, and we
        # wait on it like on any other.
        return holder if holder is not None else anyio.current_time() + poll

    async def _observe(self, *, verify: bool) -> _View | None:
        """The lease and the role's claim (the newest manifest when ``verify`` or when the lease
        says the claim may have changed); None if the store did not answer in time."""
        self.attempts += 1
        with anyio.move_on_after(self.settings.lease):  # a view older than a lease is no use
            try:
                stored = await self.slot.read()
                lease, etag = (None, None) if stored is None else stored
                if verify or self._claim_may_have_changed(lease, etag):
                    latest = await self.manifests.observed().read_latest(
                        known=self.known_id, verify_boundary=verify
                    )
                    if not verify and _behind(lease, latest, self.settings.role):
                        # The lease speaks for a newer claim than the newest manifest found:
                        # that one is stale (retention deleted the versions after what this
                        # process saw last, and the look without the boundary took the gap for
                        # the end). Taken as it is, it would make a released role look held,
                        # and restart the wait when the truth came out: look again, with the
                        # boundary checked.
                        latest = await self.manifests.observed().read_latest(
                            known=self.known_id, verify_boundary=True
                        )
                    if latest is not None:
                        self.known_id = latest[0]
                    self.claim = None if latest is None else latest[1].claim(self.settings.role)
                    self.claim_read_at_etag = etag
            except TransientStoreError as exc:
                self.last_error = exc
                return None
            return _View(self.claim, lease, etag)
        self.last_error = TimeoutError(f"no answer from the store within {self.settings.lease} s")
        return None

    def _claim_may_have_changed(self, lease: Lease | None, etag: str | None) -> bool:
        if self.claim_read_at_etag is _UNSEEN:
            return True  # never read
        if etag == self.claim_read_at_etag:
            return False  # the lease is as it was when we read the claim
        claim = self.claim
        return (
            lease is None
            or claim is None
            or lease.released  # for the claim we know, or a newer one?
            or not lease.speaks_for(claim.epoch, claim.claim_id)  # claiming, or a new claim
        )

    def _takeover_at(self, view: _View, now: float) -> float:
        """When this standby may take over (by its own clock), given what it sees now."""
        claim, lease = view.claim, view.lease
        claim_key = None if claim is None else (claim.epoch, claim.claim_id)
        if claim_key != self.claim_key:
            self.claim_key, self.claim_seen_at = claim_key, now
        state_key = (claim_key, view.etag)
        if state_key != self.state_key:
            self.state_key, self.changed_at = state_key, now
        own = self.settings.lease
        if claim is None:
            if lease is None or lease.released:
                return -math.inf  # never claimed: claim now
            return self.changed_at + max(own, lease.lease)  # a standby is claiming it
        if lease is not None and lease.speaks_for(claim.epoch, claim.claim_id):
            if lease.released:
                return -math.inf
            return self.changed_at + max(own, lease.lease)  # renewing, as long as it changes
        if lease is not None and (lease.claiming or lease.epoch > claim.epoch):
            # A standby won the lease and is claiming, or the claim we read is older than the
            # lease: wait as on a renewing lease (a claim that lands resets the clock).
            return self.changed_at + max(own, lease.lease)
        # No lease speaks for this claim: its holder never renews (a plain claim_epoch), or a
        # fenced holder's lease is left behind. Counted from first seeing the claim, so that an
        # old lease still being rewritten can't hold the role forever.
        return self.claim_seen_at + own

    async def _take_over(self, view: _View) -> _Holder | None:
        """Win the lease by compare-and-swap on the version watched, claim, then write the lease
        of the claim. None: another process won, or the store did not answer in time."""
        settings = self.settings
        claiming = Lease(
            role=settings.role,
            owner=settings.owner,
            claiming=True,
            lease=settings.lease,
            renewed_at_ms=now_ms(),
            write_id=new_id(),
        )
        won: str | None = None
        with anyio.move_on_after(settings.lease):
            won = await self.slot.swap(claiming, view.etag)
        if won is None:
            self.last_error = self.slot.last_error
            return None
        try:
            handle = await claim_epoch(
                self.store,
                settings.root,
                role=settings.role,
                timeout=DEFAULT_TIMEOUT,
                backoff=settings.backoff,
                owner=settings.owner,
            )
        except ClaimTimeoutError as exc:
            # Our claiming lease stops changing: others take over after a lease. So may we.
            self.last_error = exc
            return None
        current = Lease(
            role=settings.role,
            epoch=handle.epoch,
            claim_id=handle.claim_id,
            owner=settings.owner,
            lease=settings.lease,
            renewed_at_ms=now_ms(),
            write_id=new_id(),
        )
        sent = anyio.current_time()
        etag: str | None = None
        with anyio.move_on_after(settings.lease):
            etag = await self.slot.swap(current, won)
        if etag is None:
            # Another standby took the lease while we claimed (our claim took longer than a
            # lease): its claim fences ours, or ours fences it and it releases; either way we
            # wait again, and nothing of ours was written but the claim.
            self.last_error = self.slot.last_error
            return None
        return _Holder(handle, self.slot, sent, settings)


def _behind(lease: Lease | None, latest: tuple[int, Manifest] | None, role: str) -> bool:
    """Whether ``latest`` is older than ``lease`` says the role's claim is: a lease speaks for a
    claim only once that claim has landed, and the lease is read first."""
    if lease is None or lease.claiming or lease.epoch == 0:
        return False
    claim = None if latest is None else latest[1].claim(role)
    return claim is None or claim.epoch < lease.epoch


def _why_free(view: _View) -> str:
    """How the role came free for a standby that saw ``view`` (for the log)."""
    claim, lease = view.claim, view.lease
    if claim is None:
        return "never claimed" if lease is None or not lease.claiming else "a claim stalled"
    if lease is not None and lease.speaks_for(claim.epoch, claim.claim_id):
        return "released by its holder" if lease.released else "its holder stopped renewing"
    if lease is not None and (lease.claiming or lease.epoch > claim.epoch):
        return "a standby's claim stalled"
    return "no lease speaks for its holder (claimed without lead)"


async def _acquire(store: ObjectStore, settings: _Settings) -> _Holder:
    """Wait as a standby until the role is free, and claim it: in the span ``slate_epoch.lead``
    (the acquisition only: a span that lasted as long as the leadership would be exported only
    when it ends, and would parent every span of the body)."""
    standby = _Standby(store, settings)
    with span("lead", settings.role, settings.root) as scope:
        with anyio.move_on_after(settings.timeout):
            while True:  # ends when it leads, or at the timeout (None: waits as long as it takes)
                outcome = await standby.attempt()
                if isinstance(outcome, _Holder):
                    scope.set("epoch", outcome.handle.epoch)
                    scope.set("manifest_id", outcome.handle.manifest_id)
                    return outcome
                await anyio.sleep_until(outcome)
        raise ClaimTimeoutError(
            f"lead of role {settings.role!r} timed out after {settings.timeout} s: the holder "
            "neither released the role nor stopped renewing",
            attempts=standby.attempts,
            last_error=standby.last_error,
        )
