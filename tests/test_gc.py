"""Retention: old versions go, the newest stay, and every rule holds for stale processes.

A "stale process" is a second store object over the same data (``Interposer``): it has its own
cache of the newest id, which falls behind the boundary while others write and collect.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import msgspec
import pytest

from slate_epoch import (
    Backoff,
    EpochHandle,
    FencedError,
    Manifest,
    ManifestStore,
    NotFoundError,
    ObjectStore,
    claim_epoch,
    collect_garbage,
)
from slate_epoch.testing import FaultyStore
from tests.interpose import Interposer
from tests.listings import manifest_ids

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.001, maximum=0.01)


def append(token: str) -> Callable[[Manifest], Manifest]:
    def mutate(manifest: Manifest) -> Manifest:
        return msgspec.structs.replace(manifest, state=manifest.state + token.encode() + b";")

    return mutate


def tokens(manifest: Manifest) -> list[str]:
    return [t for t in manifest.state.decode().split(";") if t]


async def snapshot(store: ObjectStore) -> dict[str, bytes]:
    return {meta.key: (await store.get(meta.key)).body async for meta in store.list("")}


async def test_collection_keeps_the_newest_versions_and_claims_go_on(store: ObjectStore) -> None:
    for _ in range(10):
        await claim_epoch(store)
    report = await collect_garbage(store, keep=3)
    assert (report.latest_id, report.boundary, report.deleted) == (10, 7, tuple(range(1, 8)))
    assert await manifest_ids(store) == [8, 9, 10]
    assert await ManifestStore(store).read_boundary() == 7

    warm = await claim_epoch(store)
    cold = await claim_epoch(Interposer(store))  # a new process: finds the newest without 1..7
    assert (warm.epoch, warm.manifest_id, cold.epoch, cold.manifest_id) == (11, 11, 12, 12)
    with pytest.raises(FencedError):
        await warm.refresh()


async def test_the_newest_version_is_never_deleted(store: ObjectStore) -> None:
    await claim_epoch(store)
    assert (await collect_garbage(store, keep=1)).deleted == ()
    for _ in range(4):
        await claim_epoch(store)
    assert (await collect_garbage(store, keep=1)).deleted == (1, 2, 3, 4)
    assert await manifest_ids(store) == [5]
    assert (await claim_epoch(Interposer(store))).epoch == 6


async def test_a_dry_run_changes_nothing(store: ObjectStore) -> None:
    for _ in range(6):
        await claim_epoch(store, "app")
    before = await snapshot(store)
    report = await collect_garbage(store, "app", keep=2, dry_run=True)
    assert report == type(report)(latest_id=6, boundary=4, deleted=(1, 2, 3, 4), dry_run=True)
    assert await snapshot(store) == before  # not even a boundary object


async def test_an_empty_root_has_nothing_to_collect(store: ObjectStore) -> None:
    report = await collect_garbage(store, "nothing", keep=1)
    assert (report.latest_id, report.boundary, report.deleted) == (0, 0, ())


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
async def test_keep_must_be_a_positive_int(store: ObjectStore, keep: int) -> None:
    await claim_epoch(store)
    before = await snapshot(store)
    with pytest.raises(ValueError, match="keep"):
        await collect_garbage(store, keep=keep)
    assert await snapshot(store) == before


async def test_a_stale_process_claims_above_the_newest(store: ObjectStore) -> None:
    stale = Interposer(store)
    await claim_epoch(stale)  # the stale process saw manifest 1, and nothing since
    for _ in range(20):
        await claim_epoch(store)
    await collect_garbage(store, keep=2)
    assert await manifest_ids(store) == [20, 21]

    # Its first try recreates the deleted id 2; the boundary check makes that a conflict, and
    # the recreated object is taken away at once.
    handle = await claim_epoch(stale, backoff=FAST)
    assert (handle.epoch, handle.manifest_id) == (22, 22)
    assert await manifest_ids(store) == [20, 21, 22]


async def test_a_recreation_left_behind_is_never_read_and_the_next_collection_deletes_it(
    store: ObjectStore,
) -> None:
    faulty = FaultyStore(store, seed=0)
    await claim_epoch(faulty)  # this process saw manifest 1, and nothing since
    for _ in range(20):
        await claim_epoch(store)
    await collect_garbage(store, keep=2)
    faulty.script("error", op="delete")  # its clean-up of the recreated id 2 fails
    handle = await claim_epoch(faulty, backoff=FAST)
    assert (handle.epoch, handle.manifest_id) == (22, 22)
    assert 2 in await manifest_ids(store)  # left behind: garbage, below the boundary
    with pytest.raises(NotFoundError, match="retention boundary"):
        await ManifestStore(store).read(2)  # never taken for a version
    report = await collect_garbage(store, keep=2)
    assert 2 in report.deleted
    assert await manifest_ids(store) == [21, 22]


async def test_a_stale_handle_still_sees_the_newer_epoch(store: ObjectStore) -> None:
    stale = await claim_epoch(Interposer(store))
    newer = await claim_epoch(store)
    for i in range(8):
        await newer.update(append(f"n{i}"))
    await collect_garbage(store, keep=2)
    with pytest.raises(FencedError):
        await stale.refresh()
    with pytest.raises(FencedError):
        await stale.update(append("zombie"))
    final = await newer.refresh()
    assert tokens(final) == [f"n{i}" for i in range(8)]
    assert await manifest_ids(store) == [9, 10]


async def test_a_stale_holder_writes_once_on_top_after_collection(store: ObjectStore) -> None:
    writer = await claim_epoch(Interposer(store))
    compactor = await claim_epoch(store, role="compactor")
    for i in range(8):
        await compactor.update(append(f"c{i}"))
    await collect_garbage(store, keep=2)
    # The writer still holds its role: its update recreates a deleted id first, learns that
    # was a conflict, and lands once on top of the newest.
    result = await writer.update(append("w"), timeout=10)
    assert tokens(result) == [f"c{i}" for i in range(8)] + ["w"]
    assert writer.manifest_id == 11
    assert tokens(await compactor.refresh()) == tokens(result)


async def test_lost_update_response_whose_version_was_collected_is_applied_once(
    store: ObjectStore,
) -> None:
    view = Interposer(store)
    writer = await claim_epoch(view)
    compactor = await claim_epoch(Interposer(store), role="compactor")
    await writer.refresh()  # the writer knows manifest 2: its update goes to 3

    async def others_write_and_collect() -> None:
        for i in range(4):
            await compactor.update(append(f"c{i}"))
        await collect_garbage(store, keep=2)

    # The writer's update lands at 3; before its response arrives (it never does), the
    # compactor writes 4..7 on top and retention deletes 1..5, the writer's version among them.
    view.on_create("manifest/", after=others_write_and_collect, lose_response=True)
    result = await writer.update(append("once"))
    assert tokens(result) == ["once"]
    # its resend recreated the deleted id 3: garbage below the boundary (not a second landing),
    # taken away at once
    assert await manifest_ids(store) == [6, 7]
    newest = await writer.refresh()
    assert tokens(newest).count("once") == 1
    assert tokens(newest) == ["once", "c0", "c1", "c2", "c3"]


async def test_a_lost_response_on_a_recreated_id_is_not_a_landed_write(
    store: ObjectStore,
) -> None:
    view = Interposer(store)
    writer = await claim_epoch(view)  # stale: it will only know manifest 1
    compactor = await claim_epoch(Interposer(store), role="compactor")
    for i in range(6):
        await compactor.update(append(f"c{i}"))
    await collect_garbage(store, keep=2)
    assert await manifest_ids(store) == [7, 8]

    # The writer's create recreates the deleted id 2, and that response is lost: the retry then
    # finds its own bytes at 2. They are in nobody's history, so the update goes on, and lands
    # once at 9.
    view.on_create("manifest/", lose_response=True)
    result = await writer.update(append("w"), timeout=10)
    assert tokens(result) == [f"c{i}" for i in range(6)] + ["w"]
    assert writer.manifest_id == 9
    assert await manifest_ids(store) == [7, 8, 9]  # the recreation of 2 was taken away
    assert tokens(await compactor.refresh()).count("w") == 1


async def test_collection_runs_safely_beside_claims_and_updates(store: ObjectStore) -> None:
    acknowledged: list[str] = []
    epochs: list[int] = []
    collections = 0

    async def writer(name: str, rounds: int, role: str) -> None:
        for round_ in range(rounds):
            handle: EpochHandle = await claim_epoch(Interposer(store), role=role, backoff=FAST)
            if role == "writer":
                epochs.append(handle.epoch)
            for i in range(3):
                token = f"{name}.{round_}.{i}"
                try:
                    await handle.update(append(token))
                except FencedError:
                    break
                acknowledged.append(token)

    async def collector(done: anyio.Event) -> None:
        nonlocal collections
        while not done.is_set():
            await collect_garbage(Interposer(store), keep=2)
            collections += 1
            await anyio.sleep(0.001)

    done = anyio.Event()
    async with anyio.create_task_group() as outer:
        outer.start_soon(collector, done)
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(writer, f"w{n}", 3, "writer")
            tg.start_soon(writer, "c", 3, "compactor")
        done.set()
    assert collections > 0
    # Distinct. (Not necessarily without gaps: a claim that lands, is fenced by a rival's claim
    # and collected before it can read the boundary back is told "conflict" and claims again.
    # That it never costs an epoch when uncontended is the simulation's check 5.)
    assert len(set(epochs)) == len(epochs)
    await collect_garbage(store, keep=1)
    latest = await ManifestStore(Interposer(store)).read_latest()
    assert latest is not None
    final = tokens(latest[1])
    for token in acknowledged:
        assert final.count(token) == 1, token
    ids = await manifest_ids(store)
    assert ids == [latest[0]]
