"""Leading actors: services that run as the holder of a role through ``lead()``, and operators
that claim the same role with a plain ``claim_epoch``.

With ``SimulationConfig.lead_rate`` a seed runs 2 to 4 *leaders* of one role (``"leader"``, or
the writers' own ``"writer"``). Each is a simulated service in its own process (its own store
object over the shared store, with faults and latency like a writer's, and its own manifest
cache): it calls ``lead(store, ROOT, role=..., lease=L)`` with a lease of its own, waits as a
standby while another leads, and inside the body applies numbered updates (``handle.update``
with a token naming the life and the update, as writers do) at some pace; then it returns (the
lease is released), raises (released, and the error propagates), or keeps going until it is
stopped, fenced or cut off. A leader lives up to ``max_lead_lives`` times: after a crash it
restarts in a new process, after being fenced or cut off it waits again.

Events injected on the mock clock, one per life at most:

- **crash**: the process is killed. Nothing leaves it any more (its requests never reach the
  store; a create already in flight still lands), so there is no release; ``lead`` is cancelled
  and its shielded release gives up after one lease.
- **pause** (SIGSTOP, then SIGCONT after 0.3 to 3 leases): no request leaves the process and no
  answer reaches it until it resumes, and the body makes no progress. ``lead``'s own timers are
  not frozen - the simulation has one clock - so a holder's cut-off fires on time while it is
  paused: it stops (``LeaseLostError``) without sending anything, exactly as a resumed process
  does on its first look at its clock, only earlier.
- **stop**: the service is cancelled from outside (SIGTERM): ``lead`` releases the role.
- **outage**: every request of the process fails (``TransientStoreError``) for 0.5 to 2.5
  leases, so a holder's renewals fail until it is cut off (``LeaseLostError``).

*Operators* (with the ``"leader"`` role only; the writers are the operators of ``"writer"``)
claim the role with a plain ``claim_epoch`` now and then, as ``slate-epoch claim`` would, and
write an update or two: a newer claim that fences the running leader (``FencedError``), which
the standbys then wait out.

Every draw comes from RNGs derived from the seed and the leader (never from the world's own RNG,
so the writers' draws are those of a seed without leaders), and ``lead``'s standbys draw their
poll jitter from the global ``random``, which ``deterministic_trio`` seeds for the run.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..._claim import EpochHandle
from ..._errors import (
    AlreadyExistsError,
    ClaimTimeoutError,
    FencedError,
    LeaseLostError,
    TransientStoreError,
)
from ..._lead import lead
from ..._manifest import Manifest, use_cache
from ..._store import ObjectMeta, listing
from .._forwarding import ForwardingStore, Request
from .config import FENCED, ROOT
from .history import HostRecord, LeadRecord
from .stage import Life, Stage, WriterPlan, draw_latency
from .wire import Process
from .writer import Writer

if TYPE_CHECKING:
    import trio

__all__ = ["BodyError", "Leading"]

T = TypeVar("T")

# How a leader's life ends (``LeadRecord.end``) when all is well.
ENDS = ("released", "body error", "FencedError", "LeaseLostError", "ClaimTimeoutError")
# ... or when something from outside ended it.
STOPPED = ("crashed", "stopped")


class BodyError(Exception):
    """What a leader's body raises on purpose: ``lead`` must release and re-raise it."""


def max_latency(plan: WriterPlan) -> float:
    """The most latency one call of a process with ``plan`` can take (the FaultyStore's draw
    and the wire's ticks)."""
    most = plan.latency[1] if plan.latency is not None else 0.0
    if plan.tick_latency is not None:
        tick, ticks = plan.tick_latency
        most += tick * ticks
    return most


class Tap(ForwardingStore):
    """The top of a leader's process: what leaves it and what reaches it. A paused process
    sends nothing and hears nothing until it resumes, a dead one never again; during an outage
    every request fails at once. Records, for the succession check, when each call was answered
    and when one met a fault (any ``TransientStoreError``: an injected error or lost response, a
    late create, the outage) or was abandoned (cancelled midway, so its time is not accounted
    for)."""

    def __init__(self, inner: Any, host: LeadHost) -> None:
        super().__init__(inner)
        self.host = host

    async def forward(self, request: Request, perform: Callable[[], Awaitable[T]]) -> T:
        host = self.host
        await host.gate()  # nothing leaves a paused or dead process
        host.outage_check(request)
        try:
            result = await perform()
        except TransientStoreError:
            host.faulted()
            raise
        except Exception as exc:
            if isinstance(exc, AlreadyExistsError):
                host.record.conflicts.append(self.host.world.now())
            host.answered()
            await host.gate()  # ... and no answer reaches it
            raise
        except BaseException:
            host.faulted()  # abandoned: cancelled midway
            raise
        host.answered()
        await host.gate()
        return result

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectMeta]:
        # A list's latency and faults come before its first page (FaultyStore's and the wire's
        # ``forward``): answered at its first page, or at its end when there is none.
        host = self.host
        await host.gate()
        host.outage_check(Request("list", prefix, start_after=start_after))
        answered = False
        try:
            async with listing(self.inner, prefix, start_after=start_after) as metas:
                async for meta in metas:
                    if not answered:
                        answered = True
                        host.answered()
                    yield meta
        except TransientStoreError:
            host.faulted()
            raise
        except GeneratorExit:
            raise
        except BaseException:
            if not answered:
                host.faulted()
            raise
        if not answered:
            host.answered()


class LeadHost(Process):
    """A leader's (or an operator's) simulated OS process: a writer's process (faults, latency,
    late creates, its own manifest cache) that can also be paused, killed and cut off from the
    store (see ``Tap``). ``lead`` and the claims it makes find the process's cache through its
    store object."""

    def __init__(self, world: Stage, name: str, rng: random.Random, plan: WriterPlan) -> None:
        super().__init__(world, name, rng, plan)
        self.world = world
        self.record = HostRecord(name, max_latency(plan))
        world.history.hosts[name] = self.record
        self.store = Tap(self.faulty, self)
        use_cache(self.store, self.cache)
        self.paused = False
        self.dead = False
        self.outage_until = -math.inf
        self.outage_errors = 0
        self._paused_at = 0.0
        self._resumed: trio.Event | None = None

    def answered(self) -> None:
        self.record.calls.append(self.world.now())

    def faulted(self) -> None:
        self.record.faults.append(self.world.now())

    def outage_check(self, request: Request) -> None:
        if self.world.now() < self.outage_until:
            self.outage_errors += 1
            self.faulted()
            self._charge("error", request.op, request.key)
            raise TransientStoreError(f"simulated outage on {request.op} {request.key!r}")

    async def gate(self) -> None:
        """Wait while the process is paused; forever once it is dead."""
        import trio

        while self.paused or self.dead:
            if self.dead:
                await trio.sleep_forever()
            assert self._resumed is not None
            await self._resumed.wait()

    def pause(self) -> None:
        import trio

        self.paused, self._paused_at, self._resumed = True, self.world.now(), trio.Event()

    def resume(self) -> None:
        if self.paused:
            assert self._resumed is not None
            self.paused = False
            self._resumed.set()
            self.record.pauses.append((self._paused_at, self.world.now()))

    def kill(self) -> None:
        self.dead = True
        self.record.died = self.world.now()


def _plan(rng: random.Random, world: Stage, index: int, role: str) -> WriterPlan:
    """A leader's (or operator's) faults and latency, drawn as a writer's are, but calm (no
    random faults: only the events injected) with ``lead_calm_rate``."""
    c = world.config
    calm = rng.random() < c.lead_calm_rate
    latency, tick_latency = draw_latency(rng, c.max_latency)
    return WriterPlan(
        index=index,
        role=role,
        lost_rate=0.0 if calm else rng.uniform(0.0, c.max_fault_rate),
        error_rate=0.0 if calm else rng.uniform(0.0, c.max_fault_rate),
        late_rate=0.0 if calm or rng.random() < 0.5 else rng.uniform(0.0, c.max_late_rate),
        latency=latency,
        tick_latency=tick_latency,
        start_at=round(rng.uniform(0.0, 5.0), 2),
        host=index,
    )


class Leading:
    """The leaders and operators of one seed."""

    def __init__(self, world: Stage, rng: random.Random) -> None:
        c = world.config
        self.world = world
        self.role = "writer" if rng.random() < c.lead_writer_rate else "leader"
        count = rng.randint(c.min_leaders, c.max_leaders)
        self.leases = [round(rng.uniform(c.min_lease, c.max_lease), 2) for _ in range(count)]
        self.operators = [
            index
            for index in range(c.max_operators)
            if rng.random() < c.operator_rate and self.role == "leader"
        ]
        self.hosts: list[LeadHost] = []
        world.history.lead_role = self.role
        world.history.leaders = count

    def new_host(self, name: str, rng: random.Random, plan: WriterPlan) -> LeadHost:
        host = LeadHost(self.world, name, rng, plan)
        self.hosts.append(host)
        return host

    async def run(self) -> None:
        import trio

        async with trio.open_nursery() as actors:
            for index, lease in enumerate(self.leases):
                actors.start_soon(Leader(self, index, lease).run)
            for index in self.operators:
                actors.start_soon(self._operator, index)

    async def _operator(self, index: int) -> None:
        """Plain claims of the role, now and then, each followed by an update or two."""
        world = self.world
        rng = random.Random(f"slate-epoch-sim/{world.seed}/operator/{index}")
        plan = _plan(rng, world, index, self.role)
        host = self.new_host(f"o{index}", rng, plan)
        horizon = 6.0 * max(self.leases)
        for claim in range(1, rng.randint(1, 2) + 1):
            await world.sleep(round(rng.uniform(0.0, horizon), 2))
            life = Life(f"o{index}.{claim}", host, rng)
            writer = Writer(world, plan, life)
            handle = await writer.claim()
            if handle is None:
                continue
            for _ in range(rng.randint(0, 2)):
                await world.sleep(round(rng.uniform(0.0, 0.5), 2))
                if await writer.update(handle) not in ("ok", "OperationTimeoutError"):
                    break

    def count(self) -> None:
        """This seed's leading counts (``History.counts``)."""
        history = self.world.history
        counts = history.counts
        counts["lead_seeds"] += 1
        counts["leaders"] += len(self.leases)
        counts["operators"] += len(self.operators)
        for record in history.leads:
            counts["lead:lives"] += 1
            counts["lead:entered"] += record.entered
            counts[f"lead:{record.end}"] += 1
            if record.disruption:
                counts[f"lead_{record.disruption}"] += 1
            counts["lead_update:ok"] += sum(history.ops[i].outcome == "ok" for i in record.updates)
        for host in self.hosts:
            counts["lost"] += host.faulty.counts["lost"]
            counts["errors"] += host.faulty.counts["error"] + host.outage_errors
            counts["late"] += host.wire.late


class Leader:
    """One leader: a service that leads through ``lead`` for up to ``max_lead_lives`` lives."""

    def __init__(self, leading: Leading, index: int, lease: float) -> None:
        self.leading = leading
        self.world = leading.world
        self.index = index
        self.lease = lease
        self.rng = random.Random(f"slate-epoch-sim/{self.world.seed}/leader/{index}")
        self.plan = _plan(self.rng, self.world, index, leading.role)
        self.processes = 0

    def _new_host(self) -> LeadHost:
        self.processes += 1
        return self.leading.new_host(f"L{self.index}.p{self.processes}", self.rng, self.plan)

    async def run(self) -> None:
        import trio

        world, rng = self.world, self.rng
        await world.sleep(self.plan.start_at)
        host = self._new_host()
        # Process events (a pause, an outage) outlive the life they hit.
        async with trio.open_nursery() as events:
            for incarnation in range(1, world.config.max_lead_lives + 1):
                await host.gate()  # a paused process starts nothing
                life = Life(f"L{self.index}.{incarnation}", host, rng, cancelled_as="interrupted")
                end = await self.live(life, host, events)
                again = {
                    "crashed": 0.6,
                    "FencedError": 0.5,
                    "LeaseLostError": 0.5,
                    "ClaimTimeoutError": 0.3,
                }.get(end, 0.2)
                if rng.random() >= again:
                    break
                await world.sleep(round(rng.uniform(0.0, 1.0) * self.lease, 2))
                if end == "crashed":
                    host = self._new_host()
                    world.event(f"restart L{self.index} in new {host.name}")
                    world.history.counts["lead_restarts"] += 1
            events.cancel_scope.cancel()

    async def live(self, life: Life, host: LeadHost, events: trio.Nursery) -> str:
        """One life: wait, lead, end. Returns how it ended (``LeadRecord.end``)."""
        import trio

        world, rng, lease = self.world, self.rng, self.lease
        history = world.history
        # What this life will do, drawn up front.
        poll = None if rng.random() < 0.7 else round(lease * rng.choice((0.15, 0.5)), 3)
        renew = None if rng.random() < 0.7 else round(lease * rng.choice((0.2, 0.5)), 3)
        timeout = None if rng.random() < 0.6 else round(lease * rng.uniform(1.0, 8.0), 2)
        backoff = world.backoff(rng)
        ending = rng.choices(("exit", "raise", "run"), (0.45, 0.15, 0.4))[0]
        count = rng.randint(1, 6)
        pace = lease * rng.uniform(0.1, 0.4)
        runs_for = round(lease * rng.uniform(1.0, 3.0), 2)
        c = world.config
        disruptions = ("crash", "pause", "stop", "outage", "")
        rates = (c.lead_crash_rate, c.lead_pause_rate, c.lead_stop_rate, c.lead_outage_rate)
        disruption = rng.choices(disruptions, (*rates, max(0.0, 1.0 - sum(rates))))[0]
        # Most disruptions hit the holder (counted from its entry), the rest a standby or
        # whoever it has become by then (counted from the start).
        while_leading = rng.random() < 0.7
        disrupt_after = round(lease * rng.uniform(0.1, 2.0 if while_leading else 3.0), 2)
        lasting = round(lease * rng.uniform(0.3, 3.0), 2)  # a pause's or an outage's length

        record = LeadRecord(
            index=len(history.leads),
            actor=life.actor,
            host=host.name,
            role=self.leading.role,
            lease=lease,
            renew_every=lease / 3 if renew is None else renew,
            poll_every=lease / 3 if poll is None else poll,
            timeout=timeout,
            backoff_max=backoff.maximum,
            start_seq=history.tick(),
            start_time=world.now(),
        )
        history.leads.append(record)
        world.event(
            f"{life.actor} waits to lead {record.role} in {host.name} (lease {lease:g} s, "
            f"poll {record.poll_every:g} s, renew {record.renew_every:g} s, timeout {timeout})"
        )
        with trio.CancelScope() as scope:
            disrupt = partial(
                self.disrupt, life, host, record, scope, disruption, disrupt_after, lasting
            )
            if disruption and not while_leading:
                events.start_soon(disrupt)
            try:
                async with lead(
                    host.store,
                    ROOT,
                    role=record.role,
                    lease=lease,
                    renew_every=renew,
                    poll_every=poll,
                    timeout=timeout,
                    owner=life.actor,
                    backoff=backoff,
                ) as handle:
                    self.entered(record, handle)
                    if disruption and while_leading:
                        events.start_soon(disrupt)
                    if ending == "run":
                        events.start_soon(self.stop_later, life, record, scope, runs_for)
                    await self.body(life, host, record, handle, ending, count, pace)
                self.ended(record, "released")
            except BodyError:
                self.ended(record, "body error")
            except (FencedError, LeaseLostError, ClaimTimeoutError) as exc:
                name = "FencedError" if isinstance(exc, FencedError) else type(exc).__name__
                self.ended(record, name, f"{type(exc).__name__}: {exc}")
            except trio.Cancelled:
                outside = "stopped" if scope.cancel_called else "cancelled"
                self.ended(record, "crashed" if life.crashed else outside)
                raise
            except Exception as exc:  # a violation: check 8 reports it
                self.ended(record, type(exc).__name__, str(exc))
        return record.end

    def entered(self, record: LeadRecord, handle: EpochHandle) -> None:
        world = self.world
        record.entered_seq, record.entered_time = world.history.tick(), world.now()
        record.epoch, record.claim_id = handle.epoch, handle.claim_id
        record.manifest_id = handle.manifest_id
        world.event(
            f"{record.actor} leads {record.role} at epoch {handle.epoch} "
            f"(manifest {handle.manifest_id})"
        )

    def ended(self, record: LeadRecord, end: str, detail: str = "") -> None:
        if record.end != "running":
            return  # ended already (a crash is recorded as it happens)
        world = self.world
        record.end, record.detail = end, detail
        record.end_seq, record.end_time = world.history.tick(), world.now()
        world.event(f"{record.actor} ended: {end}" + (f" ({detail})" if detail else ""))

    async def body(
        self,
        life: Life,
        host: LeadHost,
        record: LeadRecord,
        handle: EpochHandle,
        ending: str,
        count: int,
        pace: float,
    ) -> None:
        """Numbered updates at ``pace``: ``count`` of them, then return or raise; or (``run``)
        until stopped from outside, fenced or cut off. A fenced update's error propagates, as a
        service's would; a timed-out one is left behind."""
        done = 0
        while ending == "run" or done < count:
            await self.world.sleep(round(pace * self.rng.uniform(0.5, 1.5), 3))
            await host.gate()  # a paused process makes no progress
            done += 1
            error = await self.update(life, record, handle)
            if error is not None:
                raise error
        if ending == "raise":
            raise BodyError(f"{life.actor}: the body failed")

    async def update(
        self, life: Life, record: LeadRecord, handle: EpochHandle
    ) -> FencedError | None:
        world = self.world
        life.updates += 1
        token = f"{life.actor}/{life.updates};".encode()
        timeout = self.rng.choice((0.3, 1.0, 5.0))
        op = world.record(life, "update", handle.role, timeout, handle)
        op.token = token
        fenced: list[FencedError] = []

        def append(manifest: Manifest) -> Manifest:
            return msgspec.structs.replace(manifest, state=manifest.state + token)

        async def call() -> Manifest:
            try:
                return await handle.update(append, timeout=timeout)
            except FencedError as exc:
                fenced.append(exc)
                raise

        written = await world.op(life, op, call)
        record.updates.append(op.index)
        if written is not None:
            op.manifest_id, op.write_id = handle.manifest_id, written.write_id
        if op.outcome in FENCED and fenced:
            return fenced[0]
        return None

    async def disrupt(
        self,
        life: Life,
        host: LeadHost,
        record: LeadRecord,
        scope: trio.CancelScope,
        kind: str,
        after: float,
        lasting: float,
    ) -> None:
        world = self.world
        await world.sleep(after)
        if record.end != "running":
            return  # the life ended first
        record.disruption = kind
        if kind == "crash":
            life.crashed = True
            host.kill()
            world.event(f"crash {life.actor}: {host.name} killed")
            self.ended(record, "crashed")
            scope.cancel()
        elif kind == "stop":
            world.event(f"stop {life.actor} (cancelled from outside)")
            scope.cancel()
        elif kind == "pause":
            host.pause()
            world.event(f"pause {host.name} for {lasting:g} s")
            try:
                await world.sleep(lasting)
            finally:
                host.resume()
                world.event(f"resume {host.name}")
        else:
            host.outage_until = world.now() + lasting
            world.event(f"outage of {host.name} for {lasting:g} s")

    async def stop_later(
        self, life: Life, record: LeadRecord, scope: trio.CancelScope, after: float
    ) -> None:
        """A body that keeps going is stopped from outside after ``after`` seconds of leading."""
        await self.world.sleep(after)
        if record.end == "running" and not scope.cancel_called:
            self.world.event(f"stop {life.actor} (cancelled from outside)")
            scope.cancel()
