"""A process waiting to lead (``Standby``): it watches the role's lease and claim, decides when
the role is free, wins the lease and claims (``acquire``). How waiting works: ``_lead``'s
docstring."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

import anyio

from ._claim import claim_epoch
from ._errors import ClaimTimeoutError, TransientStoreError
from ._holding import Holder, Settings
from ._lease import Lease, LeaseSlot
from ._manifest import Manifest, ManifestStore, RoleClaim, new_id, now_ms
from ._observe import span
from ._retry import DEFAULT_TIMEOUT
from ._store import ObjectStore

__all__ = ["Standby", "View", "acquire"]


@dataclass(frozen=True)
class View:
    claim: RoleClaim | None  # the role's claim in the newest manifest
    lease: Lease | None
    etag: str | None  # the lease's


_UNSEEN: Final = object()


class Standby:
    """A process waiting to lead: what it saw, and since when by its own clock.

    It reads the lease every poll (one GET) but the newest manifest only when the lease says a
    claim may have changed (a new lease, released, claiming, or speaking for a claim it does not
    know), and once more, with the retention boundary checked, before it takes over. Reading
    the newest manifest while a busy leader writes costs several requests (a forward search),
    the lease one: a standby of a renewing leader costs one GET per poll.
    """

    def __init__(self, store: ObjectStore, settings: Settings) -> None:
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

    async def _look(self, poll: float, *, verify: bool) -> View | float:
        """The view, if it says it is time to take over; else when to look again."""
        view = await self._observe(verify=verify)
        now = anyio.current_time()
        if view is None:
            return now + poll
        at = self._takeover_at(view, now)
        return view if at <= now else min(now + poll, at)

    async def attempt(self) -> Holder | float:
        """Look, and take over if it is time: the holder, or when to look again."""
        # Each wait is drawn from [3/4, 1] of poll_every. With fixed waits, polls and renewals
        # of the same period stay in one phase: a holder that became leader right after this
        # standby looked renews right after each of its looks, and every takeover would cost the
        # worst case, a whole poll more. (Also spreads several standbys' looks apart.)
        poll = self.settings.poll_every * random.uniform(0.75, 1.0)
        looked = await self._look(poll, verify=False)
        if isinstance(looked, View):
            # Time to take over. Look once more, reading the newest manifest with the retention
            # boundary checked, so that no claim (even one whose version retention deleted) hides.
            looked = await self._look(poll, verify=True)
        if not isinstance(looked, View):
            return looked
        view = looked
        holder = await self._take_over(view)
        if holder is not None:
            holder.taken_over_because = _why_free(view)
        # Lost the race for the lease (or the claim): the winner's lease is there now, and we
        # wait on it like on any other.
        return holder if holder is not None else anyio.current_time() + poll

    async def _observe(self, *, verify: bool) -> View | None:
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
            return View(self.claim, lease, etag)
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

    def _takeover_at(self, view: View, now: float) -> float:
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

    async def _take_over(self, view: View) -> Holder | None:
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
        return Holder(handle, self.slot, sent, settings)


def _behind(lease: Lease | None, latest: tuple[int, Manifest] | None, role: str) -> bool:
    """Whether ``latest`` is older than ``lease`` says the role's claim is: a lease speaks for a
    claim only once that claim has landed, and the lease is read first."""
    if lease is None or lease.claiming or lease.epoch == 0:
        return False
    claim = None if latest is None else latest[1].claim(role)
    return claim is None or claim.epoch < lease.epoch


def _why_free(view: View) -> str:
    """How the role came free for a standby that saw ``view`` (for the log)."""
    claim, lease = view.claim, view.lease
    if claim is None:
        return "never claimed" if lease is None or not lease.claiming else "a claim stalled"
    if lease is not None and lease.speaks_for(claim.epoch, claim.claim_id):
        return "released by its holder" if lease.released else "its holder stopped renewing"
    if lease is not None and (lease.claiming or lease.epoch > claim.epoch):
        return "a standby's claim stalled"
    return "no lease speaks for its holder (claimed without lead)"


async def acquire(store: ObjectStore, settings: Settings) -> Holder:
    """Wait as a standby until the role is free, and claim it: in the span ``slate_epoch.lead``
    (the acquisition only: a span that lasted as long as the leadership would be exported only
    when it ends, and would parent every span of the body)."""
    standby = Standby(store, settings)
    with span("lead", settings.role, settings.root) as scope:
        with anyio.move_on_after(settings.timeout):
            while True:  # ends when it leads, or at the timeout (None: waits as long as it takes)
                outcome = await standby.attempt()
                if isinstance(outcome, Holder):
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
