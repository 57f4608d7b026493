"""``lead``, in process, on every backend under asyncio and trio, with short leases.

Timings are asserted only as the generous bounds the contract promises (e.g. "a standby enters
within lease + one poll + one claim", plus ``SLACK`` for a busy machine); the measured times
live in docs/leading.md (``python -m examples.takeover``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

import anyio
import msgspec
import pytest

from slate_epoch import (
    Backoff,
    ClaimTimeoutError,
    EpochHandle,
    FencedError,
    GetResult,
    Lease,
    LeaseCorruptError,
    LeaseLostError,
    ManifestCorruptError,
    ManifestStore,
    ObjectMeta,
    ObjectStore,
    PutMode,
    PutResult,
    UpdateVersion,
    claim_epoch,
    collect_garbage,
    lead,
    read_lease,
)
from slate_epoch._layout import encode_role, lease_key
from slate_epoch._lease import decode_lease, encode_lease
from slate_epoch._store import Body, listing, validate_key
from slate_epoch.backends.memory import MemoryStore
from slate_epoch.testing import FaultyStore
from tests.listings import manifest_ids

pytestmark = pytest.mark.anyio

LEASE = 0.4
POLL = LEASE / 3
# The lease of a holder that a test needs to keep its role while it renews. With 0.4 s, one
# renewal slower than about a quarter second loses the lease; on 2 cores running three test
# workers beside the emulators, a GCS renewal once was (a standby took over a healthy holder).
STEADY = 1.5
FAST = Backoff(initial=0.001, maximum=0.02)
# Added to every promised bound: a 2-core machine shared with other test runs stalls at times.
SLACK = 1.5
ROOT = "svc"


class Options(TypedDict, total=False):
    lease: float
    renew_every: float
    poll_every: float
    timeout: float
    backoff: Backoff


def options(**overrides: Unpack[Options]) -> Options:
    """``lead``'s options for these tests: a short lease, a fast backoff, and ``overrides``."""
    chosen: Options = {"lease": LEASE, "backoff": FAST}
    chosen.update(overrides)
    return chosen


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Poll ``check`` every 10 ms until it holds; fail after ``within`` seconds."""
    with anyio.fail_after(within):
        while True:
            if await check():
                return
            await anyio.sleep(0.01)


async def lease_of(store: ObjectStore, role: str = "writer") -> Lease:
    found = await read_lease(store, ROOT, role=role)
    assert found is not None
    return found


class Watched:
    """Forwards to ``inner`` and records every call as ``(op, key, mode)``; ``before_put`` (if
    set) is awaited before each put is forwarded."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, str | None]] = []
        self.before_put: Callable[[str, PutMode], Awaitable[None]] | None = None

    async def get(self, key: str) -> GetResult:
        self.calls.append(("get", key, None))
        return await self.inner.get(key)

    async def head(self, key: str) -> ObjectMeta:
        self.calls.append(("head", key, None))
        return await self.inner.head(key)

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        self.calls.append(("put", key, "update" if isinstance(mode, UpdateVersion) else mode))
        if self.before_put is not None:
            await self.before_put(key, mode)
        return await self.inner.put(key, body, mode=mode)

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectMeta]:
        self.calls.append(("list", prefix, None))
        async with listing(self.inner, prefix, start_after=start_after) as metas:
            async for meta in metas:
                yield meta

    async def delete(self, key: str) -> None:
        self.calls.append(("delete", key, None))
        await self.inner.delete(key)

    async def aclose(self) -> None:
        """The inner store belongs to the fixture."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# -- entering ------------------------------------------------------------------------------------


async def test_an_empty_root_is_led_at_once(store: ObjectStore) -> None:
    with anyio.fail_after(SLACK):
        async with lead(store, ROOT, owner="first", **options()) as handle:
            assert isinstance(handle, EpochHandle)
            assert (handle.role, handle.epoch, handle.manifest_id) == ("writer", 1, 1)
            held = await lease_of(store)
            assert (held.epoch, held.claim_id, held.owner) == (1, handle.claim_id, "first")
            assert (held.released, held.claiming, held.lease) == (False, False, LEASE)
    assert (await lease_of(store)).released


async def test_a_standby_waits_while_the_holder_renews_and_enters_when_it_leaves(
    store: ObjectStore,
) -> None:
    # The holder advertises a long lease: a standby that entered by expiry would need 30 s;
    # by the release, one poll.
    holder_options = options(lease=30.0, renew_every=0.1)
    standby_options = options(poll_every=0.1)
    first_in, first_leave = anyio.Event(), anyio.Event()
    second: list[tuple[float, int]] = []
    left_at = 0.0

    async def first() -> None:
        async with lead(store, ROOT, owner="first", **holder_options):
            first_in.set()
            await first_leave.wait()

    async def standby() -> None:
        async with lead(store, ROOT, owner="second", **standby_options) as handle:
            second.append((anyio.current_time(), handle.epoch))

    with anyio.fail_after(30.0):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first)
            await first_in.wait()
            renewals = (await lease_of(store)).renewals
            tasks.start_soon(standby)
            await anyio.sleep(4 * LEASE)  # four of the standby's own leases
            assert second == []  # still waiting: the holder renews
            assert (await lease_of(store)).renewals > renewals
            left_at = anyio.current_time()
            first_leave.set()
    ((entered_at, epoch),) = second
    assert epoch == 2
    assert entered_at - left_at < 0.1 + SLACK  # one poll, not the holder's 30 s lease


async def test_a_standby_takes_over_when_the_holders_renewals_fail(store: ObjectStore) -> None:
    faulty = FaultyStore(store, seed=0)
    holder_in = anyio.Event()
    cancelled_at: list[float] = []
    raised: list[BaseException] = []
    entered: list[tuple[float, int]] = []

    async def holder() -> None:
        try:
            async with lead(faulty, ROOT, owner="holder", **options(lease=STEADY)):
                holder_in.set()
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    cancelled_at.append(anyio.current_time())
                    raise
        except Exception as exc:
            raised.append(exc)

    async def standby() -> None:
        async with lead(store, ROOT, owner="standby", **options()) as handle:
            entered.append((anyio.current_time(), handle.epoch))

    with anyio.fail_after(2 * LEASE + STEADY + POLL + 2 * SLACK):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(holder)
            await holder_in.wait()
            tasks.start_soon(standby)
            await anyio.sleep(2 * LEASE)
            assert entered == []
            faulty.script("error", times=10**9)  # the store is unreachable from here on
            off_at = anyio.current_time()
    (error,) = raised
    assert type(error) in (LeaseLostError, FencedError), repr(error)
    ((entered_at, epoch),) = entered
    assert epoch == 2
    assert cancelled_at[0] - off_at < STEADY  # cut off at lease - margin after the last renewal
    assert cancelled_at[0] < entered_at  # the body stopped before the standby took over
    assert entered_at - off_at < STEADY + POLL + SLACK


async def test_a_plain_claim_fences_the_running_body(store: ObjectStore) -> None:
    renew_every = 0.1
    entered = anyio.Event()
    outcome: list[BaseException] = []
    body_cancelled = False
    done_at = 0.0

    async def leader() -> None:
        nonlocal body_cancelled, done_at
        try:
            async with lead(store, ROOT, **options(renew_every=renew_every)):
                entered.set()
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    body_cancelled = True
                    raise
        except Exception as exc:
            outcome.append(exc)
        done_at = anyio.current_time()

    with anyio.fail_after(10.0):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(leader)
            await entered.wait()
            await anyio.sleep(2 * renew_every)
            operator = await claim_epoch(store, ROOT, owner="operator")  # slate-epoch claim
            claimed_at = anyio.current_time()
    (error,) = outcome
    assert type(error) is FencedError  # a plain exception, never an ExceptionGroup
    assert (error.epoch, error.newer_epoch) == (1, operator.epoch)
    assert body_cancelled
    assert done_at - claimed_at < renew_every + SLACK
    # The fenced holder marked its lease released; the operator's claim holds the role, and no
    # lease speaks for it.
    left = await lease_of(store)
    assert (left.epoch, left.released) == (1, True)


async def test_a_plain_claim_epoch_holder_counts_as_stopped_after_a_lease(
    store: ObjectStore,
) -> None:
    plain = await claim_epoch(store, ROOT, owner="never renews")
    started = anyio.current_time()
    with anyio.fail_after(LEASE + POLL + SLACK):
        async with lead(store, ROOT, **options()) as handle:
            waited = anyio.current_time() - started
            assert handle.epoch == plain.epoch + 1
    assert waited >= LEASE  # from first seeing the claim, by the standby's own clock


async def test_a_standby_of_a_busy_renewing_leader_reads_only_the_lease(
    store: ObjectStore,
) -> None:
    key = lease_key(ROOT, "writer")
    holder_in, holder_leave = anyio.Event(), anyio.Event()

    async def busy_holder() -> None:
        async with lead(store, ROOT, **options(lease=STEADY)) as handle:
            holder_in.set()
            with anyio.move_on_after(30.0):
                while not holder_leave.is_set():  # a new manifest version every 20 ms
                    await handle.update(lambda manifest: manifest)
                    await anyio.sleep(0.02)

    watched = Watched(store)
    with anyio.fail_after(30.0):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(busy_holder)
            await holder_in.wait()
            with anyio.move_on_after(3 * LEASE):
                async with lead(watched, ROOT, **options(poll_every=0.05)):
                    pytest.fail("entered while the holder renews")
            holder_leave.set()
    second_poll = [i for i, call in enumerate(watched.calls) if call[1] == key][1]
    later = watched.calls[second_poll:]
    # After its first look (the lease, then the newest manifest), one GET of the lease per
    # poll, whatever the leader writes.
    assert set(later) == {("get", key, None)}
    assert len(later) >= 10


async def test_a_standby_whose_last_seen_version_was_collected_still_sees_a_release() -> None:
    """Found by the simulation: a standby reads the newest manifest without the retention check
    while it waits. When retention has deleted the versions after the one it saw last, that
    look takes the gap for the end and finds the old claim, older than the lease's: a released
    role looked held, for a whole lease. It must look again, with the boundary checked."""
    shared = MemoryStore()
    key = lease_key(ROOT, "writer")
    own_lease = 20.0  # the standby's: a wait this long would fail the test
    first = await claim_epoch(shared, ROOT, owner="first")
    await shared.put(
        key,
        encode_lease(Lease("writer", 1, first.claim_id, "first", lease=own_lease, write_id="a")),
        mode="create",
    )
    looked = anyio.Event()

    class Looking(Watched):
        async def get(self, key: str) -> GetResult:
            result = await super().get(key)
            if key.endswith(".manifest"):
                looked.set()  # its first look: the lease, then the newest manifest
            return result

    standby_store = Looking(shared)  # its own store object, so its own cache
    entered: list[tuple[float, int]] = []

    async def standby() -> None:
        async with lead(
            standby_store, ROOT, owner="standby", **options(lease=own_lease, poll_every=1.0)
        ) as handle:
            entered.append((anyio.current_time(), handle.epoch))

    with anyio.fail_after(own_lease):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(standby)
            await looked.wait()
            # Before its next look (at least 0.75 s away): a second holder claims, writes,
            # retention deletes everything the standby saw, and the second holder releases.
            second = await claim_epoch(shared, ROOT, owner="second")
            for _ in range(4):
                await second.update(lambda manifest: manifest)
            await collect_garbage(shared, ROOT, keep=1)
            etag = (await shared.get(key)).etag
            released = Lease(
                "writer", 2, second.claim_id, "second", released=True, lease=1.0, write_id="b"
            )
            await shared.put(key, encode_lease(released), mode=UpdateVersion(etag))
            released_at = anyio.current_time()
    ((entered_at, epoch),) = entered
    assert epoch == 3
    assert entered_at - released_at < 1.0 + SLACK  # one poll, not the standby's 20 s lease


# -- leaving -------------------------------------------------------------------------------------


class BodyError(Exception):
    pass


async def test_the_bodys_exception_propagates_unchanged_and_the_role_is_released(
    store: ObjectStore,
) -> None:
    raised = BodyError("from the body")
    with pytest.raises(BodyError) as excinfo:
        async with lead(store, ROOT, **options()):
            raise raised
    assert excinfo.value is raised
    assert excinfo.type is BodyError  # not wrapped in an ExceptionGroup, on either loop
    assert (await lease_of(store)).released
    # Released: a standby with a long lease of its own still enters at once.
    with anyio.fail_after(SLACK):
        async with lead(store, ROOT, **options(lease=30.0)) as handle:
            assert handle.epoch == 2


async def test_an_exception_group_from_the_body_propagates_as_it_is(store: ObjectStore) -> None:
    group = ExceptionGroup("the body's own", [BodyError("a"), KeyError("b")])
    with pytest.raises(ExceptionGroup) as excinfo:
        async with lead(store, ROOT, **options()):
            raise group
    assert excinfo.value is group


async def test_cancelled_from_outside_the_lease_is_released(store: ObjectStore) -> None:
    with anyio.move_on_after(2 * LEASE) as scope:
        async with lead(store, ROOT, **options()):
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert (await lease_of(store)).released


async def test_timeout_while_the_holder_renews(store: ObjectStore) -> None:
    holder_in, holder_leave = anyio.Event(), anyio.Event()

    async def holder() -> None:
        async with lead(store, ROOT, owner="holder", **options(lease=STEADY)):
            holder_in.set()
            await holder_leave.wait()

    with anyio.fail_after(10.0):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(holder)
            await holder_in.wait()
            started = anyio.current_time()
            with pytest.raises(ClaimTimeoutError) as excinfo:
                async with lead(store, ROOT, **options(timeout=3 * LEASE)):
                    pytest.fail("entered while the holder renews")
            waited = anyio.current_time() - started
            assert await manifest_ids(store, ROOT) == [1]  # the standby claimed nothing
            holder_leave.set()
    assert excinfo.type is ClaimTimeoutError
    assert 3 * LEASE <= waited < 3 * LEASE + SLACK


# -- what a renewal costs ------------------------------------------------------------------------


async def test_an_uncontended_renewal_is_two_requests_and_no_manifest_version(
    store: ObjectStore,
) -> None:
    watched = Watched(store)
    key = lease_key(ROOT, "writer")
    with anyio.fail_after(10.0):
        async with lead(watched, ROOT, **options(renew_every=0.05)) as handle:
            start = len(watched.calls)
            next_manifest = ManifestStore(store, ROOT).key(handle.manifest_id + 1)

            def window() -> list[tuple[str, str, str | None]]:
                return watched.calls[start:]

            calls: list[tuple[str, str, str | None]] = []

            async def five_renewals_and_between_two() -> bool:
                # The last renewal landed (read on the store itself: not counted) ...
                landed = (await lease_of(store)).renewals
                calls[:] = window()  # ... and no other request since
                puts = calls.count(("put", key, "update"))
                return puts >= 5 and puts == calls.count(("head", next_manifest, None)) == landed

            await eventually(five_renewals_and_between_two)
    assert sorted(set(calls)) == [("head", next_manifest, None), ("put", key, "update")]
    assert calls.count(("put", key, "update")) == calls.count(("head", next_manifest, None))
    assert await manifest_ids(store, ROOT) == [1]  # renewals add no manifest version
    assert (await lease_of(store)).renewals >= len(calls) // 2


async def test_a_lost_renewal_response_is_recognised_as_a_landed_renewal(
    store: ObjectStore,
) -> None:
    faulty = FaultyStore(store, seed=1)
    faulty.script("lost", op="update", prefix=lease_key(ROOT, "writer"), times=3)
    with anyio.fail_after(10.0):
        async with lead(faulty, ROOT, **options(renew_every=0.05)):

            async def renewed_past_the_lost_responses() -> bool:
                return faulty.counts["lost"] == 3 and (await lease_of(store)).renewals >= 6

            await eventually(renewed_past_the_lost_responses)
    left = await lease_of(store)
    assert left.released
    assert left.renewals >= 6


# -- several standbys ----------------------------------------------------------------------------


async def test_two_standbys_race_for_one_takeover_and_exactly_one_claims(
    store: ObjectStore,
) -> None:
    key = lease_key(ROOT, "writer")
    both_at_the_gate = anyio.Event()
    arrived: list[str] = []

    def gate(name: str, standby_store: Watched) -> None:
        async def before_put(put_key: str, mode: PutMode) -> None:
            # The first lease write of each standby is its compare-and-swap for the takeover:
            # hold it until the other standby is there too, so both race with the same etag.
            if put_key == key and name not in arrived:
                arrived.append(name)
                if len(arrived) == 2:
                    both_at_the_gate.set()
                await both_at_the_gate.wait()

        standby_store.before_put = before_put

    holder_in, holder_leave = anyio.Event(), anyio.Event()
    entered: dict[str, int] = {}
    entering = {"a": anyio.Event(), "b": anyio.Event()}
    someone_entered = anyio.Event()
    leave = {"a": anyio.Event(), "b": anyio.Event()}

    async def holder() -> None:
        async with lead(store, ROOT, owner="holder", **options(lease=STEADY)):
            holder_in.set()
            await holder_leave.wait()

    async def standby(name: str) -> None:
        watched = Watched(store)
        gate(name, watched)
        async with lead(watched, ROOT, owner=name, **options(lease=STEADY)) as handle:
            entered[name] = handle.epoch
            entering[name].set()
            someone_entered.set()
            await leave[name].wait()

    with anyio.fail_after(20.0):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(holder)
            await holder_in.wait()
            tasks.start_soon(standby, "a")
            tasks.start_soon(standby, "b")
            await anyio.sleep(2 * LEASE)
            holder_leave.set()
            await someone_entered.wait()
            assert sorted(arrived) == ["a", "b"]  # both raced for the lease
            (winner,) = entered
            assert entered[winner] == 2
            await anyio.sleep(3 * LEASE)  # the winner renews; the loser keeps waiting
            assert list(entered) == [winner]
            assert await manifest_ids(store, ROOT) == [1, 2]  # the loser burned no epoch
            leave[winner].set()
            loser = "b" if winner == "a" else "a"
            await entering[loser].wait()
            assert entered[loser] == 3
            leave[loser].set()
    assert await manifest_ids(store, ROOT) == [1, 2, 3]


# -- the lease object ----------------------------------------------------------------------------


async def test_a_corrupt_lease_is_reported_naming_its_key_and_left_alone(
    store: ObjectStore,
) -> None:
    key = lease_key(ROOT, "writer")
    garbage = b"\x00 not a lease"
    await store.put(key, garbage)
    with pytest.raises(LeaseCorruptError, match=key):
        await read_lease(store, ROOT)
    with anyio.fail_after(SLACK), pytest.raises(LeaseCorruptError, match=key) as excinfo:
        async with lead(store, ROOT, **options()):
            pytest.fail("entered over a corrupt lease")
    assert isinstance(excinfo.value, ManifestCorruptError)  # the CLI's "corrupt" exit code
    assert excinfo.value.key == key
    assert (await store.get(key)).body == garbage
    assert await manifest_ids(store, ROOT) == []


async def test_a_lease_corrupted_while_leading_stops_the_body(store: ObjectStore) -> None:
    key = lease_key(ROOT, "writer")
    body_cancelled = False

    async def corrupt_it_and_wait() -> None:
        nonlocal body_cancelled
        async with lead(store, ROOT, **options(renew_every=0.05)):
            await store.put(key, b"SLEL garbage")
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                body_cancelled = True
                raise

    with anyio.fail_after(10.0), pytest.raises(LeaseCorruptError, match=key):
        await corrupt_it_and_wait()
    assert body_cancelled
    assert (await store.get(key)).body == b"SLEL garbage"


async def test_any_printable_role_gets_its_own_lease(store: ObjectStore) -> None:
    roles = ["writer", "Writer", "..", ".", "a/b", "ü ß", "%41", "A"]
    for role in roles:
        async with lead(store, ROOT, role=role, **options()) as handle:
            assert handle.role == role
    leases = [await lease_of(store, role) for role in roles]
    assert [lease.role for lease in leases] == roles
    assert all(lease.released and lease.epoch == 1 for lease in leases)


# -- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "encoded"),
    [
        ("writer", "writer"),
        ("compactor-2_x~", "compactor-2_x~"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("a/b", "a%2Fb"),
        ("Writer", "%57riter"),
        ("%", "%25"),
        ("é", "%C3%A9"),
        (" ", "%20"),
    ],
)
def test_roles_encode_to_one_key_component(role: str, encoded: str) -> None:
    assert encode_role(role) == encoded
    assert lease_key("", role) == f"lease/{encoded}"
    assert lease_key("/t/", role) == f"t/lease/{encoded}"
    validate_key(lease_key("t", role))


def test_a_lease_round_trips_and_every_field_has_a_default() -> None:
    lease = Lease(role="writer", epoch=3, claim_id="c", owner="o", renewals=7, lease=2.5)
    key = lease_key("t", "writer")
    assert decode_lease(encode_lease(lease), key, "writer") == lease
    assert Lease() == msgspec.msgpack.decode(b"\x80", type=Lease)
    with pytest.raises(LeaseCorruptError, match="role 'writer', not 'other'"):
        decode_lease(encode_lease(lease), key, "other")
    damaged = bytearray(encode_lease(lease))
    damaged[-1] ^= 1
    with pytest.raises(LeaseCorruptError, match="checksum"):
        decode_lease(bytes(damaged), key, "writer")


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        ({"lease": 0}, ValueError, "lease must be"),
        ({"lease": float("nan")}, ValueError, "lease must be"),
        ({"lease": True}, TypeError, "lease must be"),
        ({"renew_every": 0.9}, ValueError, "renew_every"),
        ({"poll_every": -1}, ValueError, "poll_every"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"role": ""}, ValueError, "role"),
        ({"root": "../up"}, ValueError, "'..'"),
        ({"owner": 3}, TypeError, "owner"),
    ],
)
async def test_bad_arguments_are_refused_before_any_io(
    overrides: dict[str, object], error: type[Exception], fragment: str
) -> None:
    watched = Watched(MemoryStore())
    arguments: dict[str, Any] = {"root": "t", "lease": 1.0, **overrides}
    with pytest.raises(error, match=fragment):
        async with lead(watched, **arguments):
            pytest.fail("entered")
    assert watched.calls == []
