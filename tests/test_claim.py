"""The claim and the handle, on every backend, under asyncio and trio."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
import pytest

from slate_epoch import (
    Backoff,
    ClaimTimeoutError,
    EpochHandle,
    FencedError,
    InvariantViolationError,
    Manifest,
    ManifestStore,
    ManifestVersionExistsError,
    NotFoundError,
    ObjectStore,
    OperationTimeoutError,
    RoleClaim,
    SlateEpochError,
    TransientStoreError,
    WriteOutcomeUnknownError,
    claim_epoch,
    collect_garbage,
)
from slate_epoch.testing import FaultyStore
from tests.interpose import Interposer
from tests.listings import manifest_ids

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.001, maximum=0.01)


async def all_manifests(store: ObjectStore, root: str = "") -> list[Manifest]:
    manifests = ManifestStore(store, root)
    return [await manifests.read(i) for i in await manifest_ids(store, root)]


def append(data: bytes) -> Callable[[Manifest], Manifest]:
    def mutate(manifest: Manifest) -> Manifest:
        return msgspec.structs.replace(manifest, state=manifest.state + data)

    return mutate


async def test_first_claim_is_epoch_one_at_manifest_one(store: ObjectStore) -> None:
    handle = await claim_epoch(store)
    assert (handle.role, handle.epoch, handle.manifest_id) == ("writer", 1, 1)
    assert handle.manifest.epoch("writer") == 1
    assert handle.manifest.claim("writer") is not None
    assert await manifest_ids(store) == [1]


async def test_sequential_claims_count_up_by_one(store: ObjectStore) -> None:
    epochs = [(await claim_epoch(store, "svc")).epoch for _ in range(5)]
    assert epochs == [1, 2, 3, 4, 5]
    assert await manifest_ids(store, "svc") == [1, 2, 3, 4, 5]


async def test_claims_in_a_fresh_process_continue_the_history(store: ObjectStore) -> None:
    for _ in range(3):
        await claim_epoch(store)
    other_process = Interposer(store)  # another store object: nothing cached about this root
    handle = await claim_epoch(other_process)
    assert (handle.epoch, handle.manifest_id) == (4, 4)


async def test_a_newer_claim_fences_the_older_handle(store: ObjectStore) -> None:
    old = await claim_epoch(store)
    await old.update(append(b"old"))
    new = await claim_epoch(Interposer(store))
    with pytest.raises(FencedError) as excinfo:
        await old.refresh()
    assert (excinfo.value.epoch, excinfo.value.newer_epoch) == (1, 2)
    with pytest.raises(FencedError):
        await old.update(append(b"zombie"))
    with pytest.raises(FencedError):  # and it stays fenced
        await old.update(append(b"zombie"))
    manifests = await all_manifests(store)
    assert len(manifests) == 3
    assert all(b"zombie" not in m.state for m in manifests)
    assert (await new.refresh()).state == b"old"


async def test_a_fenced_handle_that_never_refreshed_cannot_write(store: ObjectStore) -> None:
    old = await claim_epoch(store)
    await claim_epoch(Interposer(store))
    with pytest.raises(FencedError):
        await old.update(append(b"zombie"))
    assert [m.state for m in await all_manifests(store)] == [b"", b""]


async def test_lost_claim_response_burns_no_extra_epoch(store: ObjectStore) -> None:
    for _ in range(2):
        await claim_epoch(store)
    faulty = FaultyStore(store, seed=0)
    faulty.script("lost", op="create", prefix="manifest/")
    handle = await claim_epoch(faulty, backoff=FAST)
    assert faulty.counts["lost"] == 1
    assert (handle.epoch, handle.manifest_id) == (3, 3)
    assert await manifest_ids(store) == [1, 2, 3]


async def test_lost_response_on_the_very_first_claim(store: ObjectStore) -> None:
    faulty = FaultyStore(store, seed=0)
    faulty.script("lost", op="create", times=3)
    handle = await claim_epoch(faulty, backoff=FAST)
    assert (handle.epoch, handle.manifest_id) == (1, 1)
    assert await manifest_ids(store) == [1]


async def test_errors_before_the_write_are_retried(store: ObjectStore) -> None:
    faulty = FaultyStore(store, seed=0)
    faulty.script("error", op="create", times=2)
    faulty.script("error", op="list")
    handle = await claim_epoch(faulty, backoff=FAST)
    assert handle.epoch == 1
    assert faulty.counts["error"] == 3


async def test_lost_update_response_is_applied_exactly_once(store: ObjectStore) -> None:
    handle = await claim_epoch(store)
    faulty = FaultyStore(store, seed=0)
    handle_over_faults = await claim_epoch(faulty)
    assert handle_over_faults.epoch == 2
    faulty.script("lost", op="create")
    result = await handle_over_faults.update(append(b"x"))
    assert result.state == b"x"
    assert [m.state for m in await all_manifests(store)] == [b"", b"", b"x"]
    with pytest.raises(FencedError):
        await handle.refresh()


async def test_lost_update_response_with_another_role_writing_on_top(store: ObjectStore) -> None:
    view = Interposer(store)
    writer = await claim_epoch(view)
    rival_process = Interposer(store)

    async def compactor_claims() -> None:
        await claim_epoch(rival_process, role="compactor")

    # The writer's update lands at 2, the compactor claims at 3, then the writer's response is lost.
    view.on_create("manifest/", after=compactor_claims, lose_response=True)
    result = await writer.update(append(b"once"))
    assert result.state == b"once"
    manifests = await all_manifests(store)
    assert [m.state for m in manifests] == [b"", b"once", b"once"]
    assert manifests[2].epoch("compactor") == 1
    # the writer still holds its role, and its next update lands on top of the compactor's claim
    after = await writer.update(append(b"+"))
    assert after.state == b"once+"
    assert writer.manifest_id == 4


async def test_claim_that_loses_the_race_bumps_on_top_of_the_rival(store: ObjectStore) -> None:
    await claim_epoch(store)
    view = Interposer(store)
    rivals: list[EpochHandle] = []

    async def rival_claims() -> None:
        rivals.append(await claim_epoch(Interposer(store)))

    # We read manifest 1; a rival takes 2 before our create.
    await view.get(ManifestStore(store).key(1))
    view.on_create("manifest/", before=rival_claims)
    handle = await claim_epoch(view, backoff=FAST)
    assert rivals[0].epoch == 2
    assert (handle.epoch, handle.manifest_id) == (3, 3)
    with pytest.raises(FencedError):
        await rivals[0].refresh()


@pytest.mark.timeout(600)  # ~1,000 requests a round; moto serves one at a time: ~5 s a round
@pytest.mark.parametrize("rounds", [range(0, 5), range(5, 10), range(10, 15), range(15, 20)])
async def test_32_processes_race_to_claim_20_rounds_each_with_32_distinct_epochs(
    store: ObjectStore, other_processes: Callable[[], Awaitable[ObjectStore]], rounds: range
) -> None:
    """32 processes' worth of store objects (each its own client, connections and cache) claim
    one role at once, 20 rounds over (in four blocks, so that test workers share them): every
    claim succeeds with its own epoch, the ids stay contiguous, and only the newest holder
    survives."""
    stores = [await other_processes() for _ in range(32)]
    for round_ in rounds:
        root = f"race-{round_}"
        handles: list[EpochHandle] = []

        async def claim(
            process: ObjectStore, root: str = root, handles: list[EpochHandle] = handles
        ) -> None:
            handles.append(await claim_epoch(process, root, timeout=120))

        async with anyio.create_task_group() as tg:
            for process in stores:
                tg.start_soon(claim, process)
        assert sorted(h.epoch for h in handles) == list(range(1, 33)), f"round {round_}"
        assert await manifest_ids(store, root) == list(range(1, 33)), f"round {round_}"
    survivors = []
    for handle in handles:  # the last round's
        try:
            await handle.refresh()
        except FencedError:
            continue
        survivors.append(handle.epoch)
    assert survivors == [32]


def _rival_manifest(base: Manifest, role: str, n: int) -> Manifest:
    claim = RoleClaim(role=role, epoch=base.epoch(role) + 1, claim_id=f"rival-{n}")
    return base.with_claim(claim)


class _AlwaysBeaten:
    """Before every create of ours, a rival writes that id first: constant contention."""

    def __init__(self, store: ObjectStore) -> None:
        self.view = Interposer(store)
        self.rival = ManifestStore(Interposer(store))
        self.rivals = 0
        self.view.on_create("manifest/", before=self._rival_writes, times=None)

    async def _rival_writes(self) -> None:
        latest = await self.rival.read_latest()
        manifest_id, base = latest if latest else (0, Manifest())
        self.rivals += 1
        await self.rival.write(manifest_id + 1, _rival_manifest(base, "writer", self.rivals))


async def test_constant_contention_ends_in_claim_timeout(store: ObjectStore) -> None:
    beaten = _AlwaysBeaten(store)
    start = anyio.current_time()
    with pytest.raises(ClaimTimeoutError) as excinfo:
        await claim_epoch(beaten.view, timeout=0.3, backoff=FAST)
    elapsed = anyio.current_time() - start
    assert elapsed < 0.3 + 5.0  # the deadline, plus generous slack for a loaded machine
    error = excinfo.value
    assert isinstance(error, TimeoutError)
    assert isinstance(error, SlateEpochError)
    assert error.attempts >= 1
    assert isinstance(error.last_error, ManifestVersionExistsError)


async def test_max_conflicts_bounds_the_claim(store: ObjectStore) -> None:
    beaten = _AlwaysBeaten(store)
    with pytest.raises(ClaimTimeoutError, match="max_conflicts=3"):
        await claim_epoch(beaten.view, max_conflicts=3, timeout=60, backoff=FAST)
    assert beaten.rivals == 4  # the fourth conflict is the one past the cap
    assert all(m.claim("writer").claim_id.startswith("rival-") for m in await all_manifests(store))  # type: ignore[union-attr]


async def test_recognising_our_own_landed_write_is_not_a_conflict(store: ObjectStore) -> None:
    faulty = FaultyStore(store, seed=0)
    faulty.script("lost", op="create", times=2)
    handle = await claim_epoch(faulty, max_conflicts=0, backoff=FAST)
    assert handle.epoch == 1


async def test_roles_are_independent(store: ObjectStore) -> None:
    writer = await claim_epoch(store, role="writer")
    compactor = await claim_epoch(Interposer(store), role="compactor")
    assert (writer.epoch, compactor.epoch) == (1, 1)
    await writer.update(append(b"w"))  # not fenced by the compactor's claim
    await compactor.update(append(b"c"))
    assert (await writer.refresh()).state == b"wc"
    assert (await compactor.refresh()).epoch("writer") == 1


async def test_update_rejects_a_mutate_that_changes_claims(store: ObjectStore) -> None:
    handle = await claim_epoch(store)

    def bump(manifest: Manifest) -> Manifest:
        return _rival_manifest(manifest, "writer", 0)

    with pytest.raises(ValueError, match="epoch or claim id"):
        await handle.update(bump)
    with pytest.raises(TypeError):
        await handle.update(lambda m: b"not a manifest")  # type: ignore[arg-type,return-value]
    assert await manifest_ids(store) == [1]


async def test_a_lower_stored_epoch_is_an_invariant_violation(store: ObjectStore) -> None:
    handle = await claim_epoch(store)
    await claim_epoch(store)
    handle_2 = await claim_epoch(store)
    # A foreign writer puts epoch 1 back on top: the protocol forbids it.
    await ManifestStore(store).write(4, handle.manifest)
    with pytest.raises(InvariantViolationError):
        await handle_2.refresh()
    with pytest.raises(InvariantViolationError):
        await handle_2.update(append(b"x"))
    assert await manifest_ids(store) == [1, 2, 3, 4]


async def test_the_same_epoch_claimed_twice_is_an_invariant_violation(store: ObjectStore) -> None:
    handle = await claim_epoch(store)
    twin = _rival_manifest(Manifest(), "writer", 1)
    await ManifestStore(store).write(2, twin)
    with pytest.raises(InvariantViolationError, match="claimed twice"):
        await handle.refresh()


async def test_update_times_out_when_the_store_keeps_failing(store: ObjectStore) -> None:
    faulty = FaultyStore(store, seed=0)
    handle = await claim_epoch(faulty, backoff=FAST)
    faulty.error_rate = 1.0
    with pytest.raises(OperationTimeoutError) as excinfo:
        await handle.update(append(b"x"), timeout=0.2)
    assert isinstance(excinfo.value, TimeoutError)
    assert not isinstance(excinfo.value, ClaimTimeoutError)
    assert isinstance(excinfo.value.last_error, TransientStoreError)
    assert excinfo.value.attempts > 1
    with pytest.raises(OperationTimeoutError):
        await handle.refresh(timeout=0.1)
    assert await manifest_ids(store) == [1]


async def test_claim_times_out_when_the_store_keeps_failing(store: ObjectStore) -> None:
    faulty = FaultyStore(store, seed=0, error_rate=1.0)
    with pytest.raises(ClaimTimeoutError) as excinfo:
        await claim_epoch(faulty, timeout=0.2, backoff=FAST)
    assert isinstance(excinfo.value.last_error, TransientStoreError)


@pytest.mark.parametrize("cut_after", [0.0, 0.002, 0.005, 0.01, 0.02, 0.05])
async def test_a_cancelled_claim_leaves_the_store_consistent(
    store: ObjectStore, cut_after: float
) -> None:
    await claim_epoch(store)
    slow = FaultyStore(store, seed=1, latency=(0.0, 0.01))
    with anyio.move_on_after(cut_after):
        await claim_epoch(slow, backoff=FAST)
    handle = await claim_epoch(Interposer(store))
    ids = await manifest_ids(store)
    assert ids == list(range(1, len(ids) + 1))
    assert handle.manifest_id == ids[-1]
    epochs = [m.epoch("writer") for m in await all_manifests(store)]
    assert epochs == sorted(set(epochs))  # strictly increasing
    assert handle.epoch == epochs[-1]


async def test_a_warm_claim_costs_two_requests_whatever_the_history(store: ObjectStore) -> None:
    counted = FaultyStore(store, seed=0)
    for _ in range(30):
        await claim_epoch(counted)
    counted.counts.clear()
    await claim_epoch(counted)
    # the create, then the retention-boundary check that every manifest write makes
    assert counted.counts == {"put": 1, "get": 1}


async def test_a_cold_claim_on_a_short_history_lists_once(store: ObjectStore) -> None:
    for _ in range(10):
        await claim_epoch(store)
    counted = FaultyStore(store, seed=0)
    handle = await claim_epoch(counted)
    assert handle.epoch == 11
    # list, get the newest, create, check the retention boundary
    assert counted.counts == {"list": 1, "get": 2, "put": 1}


async def test_roots_are_separate_histories(store: ObjectStore) -> None:
    a = await claim_epoch(store, "tenants/a")
    b = await claim_epoch(store, "tenants/b")
    a2 = await claim_epoch(store, "tenants/a")
    assert (a.epoch, b.epoch, a2.epoch) == (1, 1, 2)
    assert (await b.refresh()).epoch("writer") == 1
    with pytest.raises(FencedError):
        await a.refresh()


@pytest.mark.parametrize("role", ["", "bad\nrole"])
async def test_invalid_roles_are_refused(store: ObjectStore, role: str) -> None:
    with pytest.raises(ValueError, match="role"):
        await claim_epoch(store, role=role)
    assert await manifest_ids(store) == []


def test_backoff_waits_grow_to_the_maximum_and_stay_jittered() -> None:
    waits = Backoff(initial=0.01, multiplier=2, maximum=0.1, jitter=lambda v: v).waits()
    assert [next(waits) for _ in range(6)] == [0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    jittered = Backoff(initial=0.5, maximum=0.5).waits()
    samples = [next(jittered) for _ in range(200)]
    assert all(0 <= s <= 0.5 for s in samples)
    assert not math.isclose(min(samples), max(samples))


@pytest.mark.parametrize("kwargs", [{"initial": -1.0}, {"multiplier": 0.5}, {"maximum": -0.1}])
def test_backoff_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(**kwargs)


async def test_an_update_that_landed_before_a_newer_claim_is_not_reported_fenced(
    store: ObjectStore,
) -> None:
    """Found by the simulation (seed 32 was one instance): an update's create lands, a newer
    claim of the same role lands on top, then the update's response is lost. The newest
    version's lineage is the new claim's, so it can't say whether the write landed; the id it
    wrote can. The update succeeded (it is in the history), and the handle is fenced after."""
    view = Interposer(store)
    writer = await claim_epoch(view)

    async def rival_claims() -> None:
        await claim_epoch(Interposer(store))

    def once(manifest: Manifest) -> Manifest:
        return msgspec.structs.replace(manifest, state=manifest.state + b"once")

    view.on_create("manifest/", after=rival_claims, lose_response=True)
    try:
        written = await writer.update(once)
    finally:  # whatever update said, the write landed at 2, under the writer's epoch
        landed = await ManifestStore(store).read(2)
        assert (landed.state, landed.epoch("writer")) == (b"once", 1)
    assert written.write_id == landed.write_id
    with pytest.raises(FencedError):
        await writer.update(once)


# -- holes two reviews found (issue 10) --------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
async def test_concurrent_updates_on_one_handle_apply_each_change_exactly_once(
    store: ObjectStore, seed: int
) -> None:
    """Four updates in flight on one handle over 30% lost responses: each token lands once.
    (Without serialised writes, a second update could write on top of a first one whose
    response was lost, and the first would apply its change again.)"""
    faulty = FaultyStore(store, seed=seed, lost_response_rate=0.3, ops={"put", "get"})
    handle = await claim_epoch(faulty, "r", timeout=30, backoff=FAST)
    tokens = [b"<%d>" % i for i in range(4)]

    async def update(token: bytes) -> None:
        await handle.update(append(token), timeout=30)

    async with anyio.create_task_group() as tg:
        for token in tokens:
            tg.start_soon(update, token)
    state = (await ManifestStore(store, "r").read_latest() or (0, Manifest()))[1].state
    assert sorted(state.count(t) for t in tokens) == [1, 1, 1, 1]


async def test_updates_of_one_handle_run_one_at_a_time_in_the_order_called(
    store: ObjectStore,
) -> None:
    view = Interposer(store)
    handle = await claim_epoch(view)
    order: list[str] = []
    first_in_flight = anyio.Event()
    let_it_finish = anyio.Event()

    async def stall_the_first() -> None:
        first_in_flight.set()
        await let_it_finish.wait()

    view.on_create("manifest/", before=stall_the_first, lose_response=True)

    async def update(token: bytes) -> None:
        await handle.update(append(token))
        order.append(token.decode())

    async with anyio.create_task_group() as tg:
        tg.start_soon(update, b"A")
        await first_in_flight.wait()
        tg.start_soon(update, b"B")
        await anyio.wait_all_tasks_blocked()
        assert view.creates == 2  # B waits for A: it has written nothing yet
        let_it_finish.set()
    assert order == ["A", "B"]
    assert (await handle.refresh()).state == b"AB"


async def test_a_queued_update_counts_its_wait_against_its_timeout(store: ObjectStore) -> None:
    view = Interposer(store)
    handle = await claim_epoch(view)
    release = anyio.Event()
    view.on_create("manifest/", before=release.wait)
    async with anyio.create_task_group() as tg:
        tg.start_soon(handle.update, append(b"slow"))
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(OperationTimeoutError):
            await handle.update(append(b"queued"), timeout=0.05)
        release.set()
    assert (await handle.refresh()).state == b"slow"


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda m: msgspec.structs.replace(m, state="text"), TypeError, "state"),
        (lambda m: msgspec.structs.replace(m, state=None), TypeError, "state"),
        (lambda m: msgspec.structs.replace(m, state=42), TypeError, "state"),
        (lambda m: msgspec.structs.replace(m, replay_after="7"), ValueError, "replay point"),
        (lambda m: msgspec.structs.replace(m, replay_after=3), ValueError, "replay point"),
        (lambda m: Manifest(roles=m.roles, state=b"rebuilt"), ValueError, "replay point"),
    ],
)
async def test_a_mutate_that_breaks_the_manifest_writes_nothing(
    store: ObjectStore, mutate: Callable[[Manifest], Manifest], error: type, message: str
) -> None:
    """Wrongly typed fields would write a manifest no other process can decode; a rebuilt one
    would move the replay point back. Either is refused before any write."""
    handle = await claim_epoch(store)
    log = await handle.fence_wal()  # the fence at 1, then entries 2 and 3
    await log.append(b"e2")
    await log.append(b"e3")
    await handle.mark_replayed(2)
    before = await manifest_ids(store)
    with pytest.raises(error, match=message):
        await handle.update(mutate)
    assert await manifest_ids(store) == before
    fresh = Interposer(store)  # another process reads the root as it was
    latest = await ManifestStore(fresh).read_latest()
    assert latest is not None
    assert latest[1].replay_after == 2
    assert (await handle.update(append(b"ok"))).state == b"ok"  # the handle is still usable


@pytest.mark.parametrize("owner", [1234, b"host", ["h"]])
async def test_an_owner_that_is_not_a_str_is_refused_before_any_write(
    store: ObjectStore, owner: object
) -> None:
    with pytest.raises(TypeError, match="owner"):
        await claim_epoch(store, owner=owner)  # type: ignore[arg-type]
    assert await manifest_ids(store) == []


async def test_the_ambiguous_corner_is_told_apart_when_a_later_version_still_can(
    store: ObjectStore,
) -> None:
    """An update lands at X and its response is lost; another role writes X+1 on top (carrying
    the update's write id on), a newer claim of the role lands at X+2, and retention deletes X.
    X+1 still tells that the update landed: it is acknowledged, not reported fenced."""
    view = Interposer(store)
    writer = await claim_epoch(view)  # 1

    async def meanwhile() -> None:
        await claim_epoch(Interposer(store), role="compactor")  # 3, carries the writer's write
        await claim_epoch(Interposer(store))  # 4: a newer writer
        await collect_garbage(store, keep=2)  # deletes 1 and 2, where the update landed

    view.on_create("manifest/", after=meanwhile, lose_response=True)
    written = await writer.update(append(b"U"))  # lands at 2
    assert written.state == b"U"
    latest = await ManifestStore(store).read_latest()
    assert latest is not None
    assert latest[0] == 4
    assert latest[1].state == b"U"
    with pytest.raises(FencedError):
        await writer.update(append(b"again"))


# -- the honest outcome: WriteOutcomeUnknownError ----------------------------------------------


async def test_an_update_whose_version_retention_took_is_reported_unknown(
    store: ObjectStore,
) -> None:
    """The corner: an update lands at 2 and its response is lost; a newer claim of the role
    lands at 3 (on top of it) and retention deletes 1 and 2 before the update looks. Nothing
    left can tell whether it landed: WriteOutcomeUnknownError (a FencedError), never a plain
    FencedError - which promises that nothing of the call landed, and here it did."""
    view = Interposer(store)
    writer = await claim_epoch(view)  # 1

    async def meanwhile() -> None:
        await claim_epoch(Interposer(store))  # 3: a newer writer, on top of the update
        await collect_garbage(Interposer(store), keep=1)  # deletes 1 and 2

    view.on_create("manifest/", after=meanwhile, lose_response=True)
    with pytest.raises(WriteOutcomeUnknownError) as caught:
        await writer.update(append(b"U"))  # lands at 2; its resend recreates 2 (discarded)
    assert isinstance(caught.value, FencedError)
    assert (caught.value.role, caught.value.epoch, caught.value.newer_epoch) == ("writer", 1, 2)
    assert caught.value.write == "update"
    assert "unknown" in str(caught.value)
    latest = await ManifestStore(Interposer(store)).read_latest()
    assert latest is not None
    assert (latest[0], latest[1].state) == (3, b"U")  # it had landed: a plain fence would lie
    with pytest.raises(FencedError) as later:  # later calls wrote nothing: plain
        await writer.update(append(b"again"))
    assert type(later.value) is FencedError


async def test_a_fenced_update_whose_one_send_found_the_id_taken_is_plainly_fenced(
    store: ObjectStore,
) -> None:
    """A newer claim and retention ran, but the update's only send found its id taken: nothing
    of it landed, and a plain FencedError says so."""
    view = Interposer(store)
    writer = await claim_epoch(view)  # 1

    async def meanwhile() -> None:
        await claim_epoch(Interposer(store))  # 2: a newer writer takes the id first
        await claim_epoch(Interposer(store), role="compactor")  # 3
        await collect_garbage(Interposer(store), keep=2)  # boundary 1: 2 stays

    view.on_create("manifest/", before=meanwhile)
    with pytest.raises(FencedError) as caught:
        await writer.update(append(b"U"))  # 2 is taken: answered, nothing written
    assert type(caught.value) is FencedError
    latest = await ManifestStore(Interposer(store)).read_latest()
    assert latest is not None
    assert (latest[0], latest[1].state) == (3, b"")


async def test_an_update_that_landed_and_was_passed_by_retention_is_reported_unknown(
    store: ObjectStore,
) -> None:
    """Found by the soak (seed 9275): the update's one send lands at 2 and is answered, but
    before its boundary check reads, a newer claim lands on top (3) and retention passes 2
    (keep=1: boundary 2, deleting 1 and 2). The check finds 2 at or below the boundary, where a
    stale writer's recreation would look the same, and nothing left tells: the update landed
    (3 holds its state), so a plain FencedError would lie. WriteOutcomeUnknownError."""
    view = Interposer(store)
    writer = await claim_epoch(view)  # 1

    async def meanwhile() -> None:
        await claim_epoch(Interposer(store))  # 3: a newer writer, on top of the update
        await collect_garbage(Interposer(store), keep=1)  # boundary 2: deletes 1 and 2

    view.on_create("manifest/", after=meanwhile)  # answered: no lost response
    with pytest.raises(WriteOutcomeUnknownError) as caught:
        await writer.update(append(b"U"))
    assert (caught.value.role, caught.value.epoch, caught.value.newer_epoch) == ("writer", 1, 2)
    latest = await ManifestStore(Interposer(store)).read_latest()
    assert latest is not None
    assert (latest[0], latest[1].state) == (3, b"U")  # it had landed


async def test_a_one_send_recreation_below_the_boundary_is_never_acknowledged(
    store: ObjectStore,
) -> None:
    """The update's only send recreates an id retention had already deleted (a newer writer at
    2, a compactor at 3, retention to 2). The store then looks exactly as when its version had
    landed and been passed (above), so the handle can't say which: it is fenced
    (WriteOutcomeUnknownError, a FencedError), its recreation is taken away, and nothing of it
    is in the history."""
    view = Interposer(store)
    writer = await claim_epoch(view)  # 1

    async def meanwhile() -> None:
        await claim_epoch(Interposer(store))  # 2: a newer writer takes the id first
        await claim_epoch(Interposer(store), role="compactor")  # 3
        await collect_garbage(Interposer(store), keep=1)  # deletes 1 and 2

    view.on_create("manifest/", before=meanwhile)
    with pytest.raises(WriteOutcomeUnknownError):
        await writer.update(append(b"U"))  # recreates 2 below the boundary: garbage
    latest = await ManifestStore(Interposer(store)).read_latest()
    assert latest is not None
    assert (latest[0], latest[1].state) == (3, b"")
    with pytest.raises(NotFoundError):  # the recreation was taken away
        await store.head("manifest/00000000000000000002.manifest")
