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

The holder is ``_holding.Holder``, the standby ``_standby.Standby``; this module joins them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ._claim import EpochHandle
from ._holding import DEFAULT_LEASE, MARGIN, make_settings
from ._retry import DEFAULT_BACKOFF, Backoff
from ._standby import acquire
from ._store import ObjectStore

__all__ = ["DEFAULT_LEASE", "MARGIN", "lead"]


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
    settings = make_settings(root, role, lease, renew_every, poll_every, timeout, owner, backoff)
    holder = await acquire(store, settings)
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
