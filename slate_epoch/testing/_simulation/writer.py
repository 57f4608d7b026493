"""A writer's life: claim a role, then write as its holder until fenced, crashed or done.

A holder updates the manifest (appending a unique token to its state, now and then through a
mutate that rebuilds the manifest from scratch), refreshes, and, for the writer role, fences
the log, appends unique payloads, marks its last acknowledged append replayed and trims. Like a
real service it sometimes runs several of these at once on one handle, calls ``fence_wal``
again, tries what must be refused (a wrongly typed field, moving the replay point, a payload
that is not bytes), and keeps using a handle after it was fenced.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Final

import msgspec

from ..._claim import EpochHandle, claim_epoch
from ..._manifest import Manifest
from ..._wal import WalWriter
from .config import FENCED, MISUSE, ROOT, SAME
from .stage import Life, Stage, WriterPlan

__all__ = ["Writer"]

_NOT_FENCED: Final = {"ok", "OperationTimeoutError"}


def _misused(kind: str, token: bytes, manifest: Manifest) -> Manifest:
    """A mutate that ``update`` must refuse (``kind``), carrying ``token`` in its state."""
    state = manifest.state + token
    if kind == "str state":
        not_bytes: Any = state.decode()
        return msgspec.structs.replace(manifest, state=not_bytes)
    if kind == "moved replay point":  # forward by hand, or below zero
        moved = manifest.replay_after + 1 if manifest.replay_after else -1
        return msgspec.structs.replace(manifest, state=state, replay_after=moved)
    # a rebuild that forgets the replay point (refused once there is one; below zero before)
    return Manifest(
        roles=manifest.roles, state=state, replay_after=0 if manifest.replay_after else -1
    )


class Writer:
    """The writer (or compactor) of one life."""

    def __init__(self, world: Stage, plan: WriterPlan, life: Life) -> None:
        self.world = world
        self.config = world.config
        self.plan = plan
        self.life = life
        self.rng = life.rng
        self.logs: list[WalWriter] = []  # what fence_wal returned (one writer, if it is right)

    async def live(self) -> None:
        rng = self.rng
        for _ in range(3):  # a claim, and up to two more after being fenced
            uses_the_log = self.plan.role == "writer" and rng.random() < self.config.wal_rate
            # half of them fence as part of the claim (claim_epoch(fence_wal=True))
            handle = await self.claim(fence_wal=uses_the_log and rng.random() < 0.5)
            if handle is None:
                return
            self.life.acknowledged = self.life.marked = 0  # ids of this handle's own appends
            log: WalWriter | None = None
            self.logs = []
            outcome = "ok"
            if uses_the_log:
                log, outcome = await self.fence(handle)
            most = self.config.max_updates
            if log is not None and rng.random() < self.config.long_session_rate:
                most = self.config.long_session
            rounds = rng.randint(0, most) if outcome in _NOT_FENCED else 0
            for _ in range(rounds):
                # The application thinks; now and then it stalls (a long pause: the classic
                # zombie, which wakes up after a newer holder took over).
                stall = rng.random() < 0.05
                await self.world.sleep(
                    round(rng.uniform(0.5, 3.0) if stall else rng.uniform(0, 0.2), 2)
                )
                outcome = await self.round(handle, log)
                if outcome not in _NOT_FENCED:
                    break
            if outcome in FENCED and rng.random() < self.config.zombie_rate:
                # The service has not noticed: it goes on using the fenced handle once more.
                # The handle knows, and must write nothing at all.
                await self.step(handle, log)
            if outcome not in FENCED or rng.random() < 0.5:
                return

    async def round(self, handle: EpochHandle, log: WalWriter | None) -> str:
        """One step, or (``parallel_rate``) two or three at once on the same handle."""
        rng = self.rng
        if log is not None and rng.random() < self.config.refence_rate:
            return (await self.fence(handle))[1]  # a second fence_wal on one handle
        if rng.random() >= self.config.parallel_rate:
            return await self.step(handle, log)
        import trio

        outcomes: list[str] = []

        async def step() -> None:
            outcomes.append(await self.step(handle, log))

        async with trio.open_nursery() as nursery:
            for _ in range(rng.randint(2, 3)):
                nursery.start_soon(step)
        fenced = [o for o in outcomes if o not in _NOT_FENCED]
        return fenced[0] if fenced else "ok"

    async def step(self, handle: EpochHandle, log: WalWriter | None) -> str:
        """One thing a holder does: an update or a refresh, or with a log, mostly appends, and
        now and then a mark of its last acknowledged append as replayed, or a trim; now and
        then a misuse."""
        rng = self.rng
        if rng.random() < self.config.misuse_rate:
            return await self.misuse(handle, log)
        if log is not None:
            draw = rng.random()
            floor = max(self.life.marked, handle.manifest.replay_after)
            if draw < 0.25 and self.life.acknowledged > floor:
                outcome = await self.mark(handle, floor)
                if outcome == "ok" and rng.random() < 0.5:  # a checkpoint, then its trim
                    outcome = await self.trim(handle, log)
                return outcome
            if draw < 0.4:
                return await self.trim(handle, log)
            if draw < 0.8:
                return await self.append(handle, log)
        if rng.random() < 0.15:
            return await self.refresh(handle)
        return await self.update(handle)

    async def claim(self, *, fence_wal: bool = False) -> EpochHandle | None:
        rng, life, plan = self.rng, self.life, self.plan
        timeout = rng.choice((0.3, 1.0, 5.0, 30.0))
        max_conflicts = None if rng.random() < 0.8 else rng.randint(0, 4)
        backoff = self.world.backoff(rng)
        record = self.world.record(life, "claim", plan.role, timeout)
        handle = await self.world.op(
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
                cache=life.process.cache,
                fence_wal=fence_wal,
            ),
        )
        if handle is not None:
            record.epoch, record.claim_id = handle.epoch, handle.claim_id
            record.manifest_id = handle.manifest_id
        return handle

    async def update(self, handle: EpochHandle) -> str:
        life = self.life
        life.updates += 1
        token = f"{life.actor}/{life.updates};".encode()
        timeout = self.rng.choice((0.3, 1.0, 5.0))
        record = self.world.record(life, "update", handle.role, timeout, handle)
        record.token = token
        rebuild = self.rng.random() < self.config.rebuild_rate

        def append(manifest: Manifest) -> Manifest:
            if rebuild:  # from scratch, as services do: every field it keeps, it names
                return Manifest(
                    roles=manifest.roles,
                    state=manifest.state + token,
                    replay_after=manifest.replay_after,
                )
            return msgspec.structs.replace(manifest, state=manifest.state + token)

        written = await self.world.op(life, record, lambda: handle.update(append, timeout=timeout))
        if written is not None:
            record.manifest_id, record.write_id = handle.manifest_id, written.write_id
        return record.outcome

    async def misuse(self, handle: EpochHandle, log: WalWriter | None) -> str:
        """What a service gets wrong, which must be refused with nothing written: a state that
        is not bytes, a replay point moved by hand (or below zero), a rebuild that drops the
        replay point, a payload that is not bytes. The holder then goes on as before."""
        life = self.life
        life.misuses += 1
        token = MISUSE + f"{life.actor}/{life.misuses};".encode()
        timeout = self.rng.choice((0.3, 1.0, 5.0))
        record = self.world.record(life, "misuse", handle.role, timeout, handle)
        record.token = token
        kinds = ["str state", "moved replay point", "dropped replay point"]
        if log is not None:
            kinds.append("int payload")
        kind = record.detail = self.rng.choice(kinds)
        if kind == "int payload":
            assert log is not None
            not_bytes: Any = 1 + life.misuses % 7  # bytes(n) would make n zero bytes
            await self.world.op(life, record, lambda: log.append(not_bytes, timeout=timeout))
        else:
            mutate = partial(_misused, kind, token)
            await self.world.op(life, record, lambda: handle.update(mutate, timeout=timeout))
        return record.outcome if record.outcome in FENCED else "ok"

    async def refresh(self, handle: EpochHandle) -> str:
        timeout = self.rng.choice((0.3, 1.0, 5.0))
        record = self.world.record(self.life, "refresh", handle.role, timeout, handle)
        await self.world.op(self.life, record, lambda: handle.refresh(timeout=timeout))
        return record.outcome

    async def fence(self, handle: EpochHandle) -> tuple[WalWriter | None, str]:
        timeout = self.rng.choice((0.3, 1.0, 5.0))
        record = self.world.record(self.life, "fence", handle.role, timeout, handle)
        log = await self.world.op(self.life, record, lambda: handle.fence_wal(timeout=timeout))
        if log is not None:
            record.entry_id = log.fence_id
            if all(log is not known for known in self.logs):
                self.logs.append(log)
        return log, record.outcome

    async def append(self, handle: EpochHandle, log: WalWriter) -> str:
        life = self.life
        life.appends += 1
        payload = f"{life.actor}/a{life.appends}".encode()
        if self.rng.random() < self.config.same_payload_rate:
            payload = SAME + life.actor.encode()  # the same bytes again, as "incr" would be
        log = self.rng.choice(self.logs) if self.logs else log
        timeout = self.rng.choice((0.3, 1.0, 5.0))
        record = self.world.record(life, "append", handle.role, timeout, handle)
        record.token = payload
        entry_id = await self.world.op(life, record, lambda: log.append(payload, timeout=timeout))
        if entry_id is not None:
            record.entry_id = entry_id
            life.acknowledged = max(life.acknowledged, entry_id)
        return record.outcome

    async def mark(self, handle: EpochHandle, floor: int) -> str:
        life = self.life
        timeout = self.rng.choice((0.3, 1.0, 5.0))
        record = self.world.record(life, "mark", handle.role, timeout, handle)
        # A checkpoint somewhere behind the tip of what it appended. Each id is marked once at
        # most (whatever the outcome), so the checker can tell which operation moved the replay
        # point there.
        target = self.rng.randint(floor + 1, life.acknowledged)
        record.entry_id = life.marked = target
        written = await self.world.op(
            life, record, lambda: handle.mark_replayed(target, timeout=timeout)
        )
        if written is not None:
            record.manifest_id, record.write_id = handle.manifest_id, written.write_id
        return record.outcome

    async def trim(self, handle: EpochHandle, log: WalWriter) -> str:
        timeout = self.rng.choice((0.3, 1.0, 5.0))
        record = self.world.record(self.life, "trim", handle.role, timeout, handle)
        deleted = await self.world.op(self.life, record, lambda: log.trim(timeout=timeout))
        if deleted is not None:
            record.count = deleted
        return record.outcome
