"""The leading process (``Holder``): its handle, its lease, and the task that renews the lease
and stops the body when a newer claim exists or the lease ran out; and the checked ``Settings``
of one ``lead``. How holding works: ``_lead``'s docstring."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import anyio
import msgspec

from ._claim import EpochHandle
from ._errors import (
    FencedError,
    LeaseLostError,
    NotFoundError,
    OperationTimeoutError,
    SlateEpochError,
    TransientStoreError,
)
from ._lease import Lease, LeaseSlot, lease_key
from ._manifest import ManifestStore, default_owner, new_id, now_ms
from ._observe import fields, lead_ended, lead_taken_over, retrying, store_for
from ._retry import Backoff

__all__ = ["DEFAULT_LEASE", "MARGIN", "Holder", "Settings", "make_settings"]

DEFAULT_LEASE: Final = 10.0
# The holder cancels its body this fraction of the lease before a standby may take over.
MARGIN: Final = 0.1


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
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


def make_settings(
    root: str,
    role: str,
    lease: float,
    renew_every: float | None,
    poll_every: float | None,
    timeout: float | None,
    owner: str | None,
    backoff: Backoff,
) -> Settings:
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
    return Settings(
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


class Holder:
    """The leading process: its handle, its lease (``slot.landed``), and the task that renews
    it."""

    def __init__(
        self, handle: EpochHandle, slot: LeaseSlot, sent: float, settings: Settings
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
