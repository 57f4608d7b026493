"""The fenced write-ahead log, on every backend, under asyncio and trio."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.lowlevel
import msgspec
import pytest

from slate_epoch import (
    EpochHandle,
    FencedError,
    Manifest,
    ObjectStore,
    UnsupportedFormatError,
    WalCorruptError,
    WalEntry,
    WalTrimmedError,
    WalWriter,
    WriteOutcomeUnknownError,
    claim_epoch,
    read_wal,
)
from slate_epoch._boundary import advance_boundary
from slate_epoch._wal import encode_entry
from slate_epoch.testing import FaultyStore, ForwardingStore, Request
from tests.interpose import Interposer

pytestmark = pytest.mark.anyio

T = TypeVar("T")


def wal_key(entry_id: int, root: str = "") -> str:
    return f"{root}/wal/{entry_id:020d}.wal" if root else f"wal/{entry_id:020d}.wal"


async def entries(store: ObjectStore, root: str = "", after: int = 0) -> list[WalEntry]:
    return [entry async for entry in read_wal(store, root, after=after)]


async def wal_ids(store: ObjectStore) -> list[int]:
    return [int(meta.key[4:24]) async for meta in store.list("wal/")]


async def open_writer(store: ObjectStore) -> tuple[EpochHandle, WalWriter]:
    handle = await claim_epoch(Interposer(store))  # its own "process"
    return handle, await handle.fence_wal()


async def test_a_new_writer_fences_the_old_ones_appends(store: ObjectStore) -> None:
    _, w1 = await open_writer(store)
    acknowledged = [await w1.append(f"w1-{i}".encode()) for i in range(3)]
    assert acknowledged == [2, 3, 4]  # 1 is w1's own fence
    _, w2 = await open_writer(store)
    assert w2.fence_id == 5
    with pytest.raises(FencedError):
        await w1.append(b"zombie")
    with pytest.raises(FencedError):  # and stays fenced
        await w1.append(b"zombie")
    await w2.append(b"w2-0")
    seen = await entries(store)
    assert [(e.id, e.epoch, e.data) for e in seen] == [
        (2, 1, b"w1-0"),
        (3, 1, b"w1-1"),
        (4, 1, b"w1-2"),
        (6, 2, b"w2-0"),
    ]
    assert await wal_ids(store) == [1, 2, 3, 4, 5, 6]


async def test_an_append_in_flight_during_the_fence_fails_cleanly(store: ObjectStore) -> None:
    view = Interposer(store)
    h1 = await claim_epoch(view)
    w1 = await h1.fence_wal()
    await w1.append(b"before")

    async def rival_fences() -> None:
        await open_writer(store)

    # W2 claims and fences at the very id W1's append is about to create.
    view.on_create("wal/", before=rival_fences)
    with pytest.raises(FencedError):
        await w1.append(b"in flight")
    assert [e.data for e in await entries(store)] == [b"before"]


async def test_an_append_that_lands_before_the_fence_is_replayed(store: ObjectStore) -> None:
    view = Interposer(store)
    h1 = await claim_epoch(view)
    w1 = await h1.fence_wal()
    fenced: list[WalWriter] = []

    async def rival_fences() -> None:
        fenced.append((await open_writer(store))[1])

    # W1's append lands; before its response arrives, W2 claims and fences the next id.
    view.on_create("wal/", after=rival_fences)
    assert await w1.append(b"landed") == 2
    assert fenced[0].fence_id == 3
    assert [(e.id, e.data) for e in await entries(store)] == [(2, b"landed")]
    with pytest.raises(FencedError):
        await w1.append(b"late")


async def test_a_slot_taken_just_before_the_fence_moves_it_up(store: ObjectStore) -> None:
    _, w1 = await open_writer(store)
    await w1.append(b"a")
    view = Interposer(store)
    h2 = await claim_epoch(view)

    async def old_writer_appends() -> None:
        await w1.append(b"b")  # takes id 3, which W2's fence was about to take

    view.on_create("wal/", before=old_writer_appends)
    w2 = await h2.fence_wal()
    assert w2.fence_id == 4
    assert await wal_ids(store) == [1, 2, 3, 4]
    with pytest.raises(FencedError):
        await w1.append(b"c")
    assert [e.data for e in await entries(store)] == [b"a", b"b"]


async def test_concurrent_openers_leave_one_writer_and_no_gaps(store: ObjectStore) -> None:
    writers: list[WalWriter] = []
    fenced_early = 0

    async def opener() -> None:
        nonlocal fenced_early
        try:
            writers.append((await open_writer(store))[1])
        except FencedError:
            fenced_early += 1

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(opener)
    survivors = []
    for writer in writers:
        try:
            await writer.append(f"from {writer.epoch}".encode())
        except FencedError:
            continue
        survivors.append(writer)
    assert len(survivors) == 1
    assert survivors[0].epoch == 8
    assert fenced_early + len(writers) == 8
    ids = await wal_ids(store)
    assert ids == list(range(1, len(ids) + 1))


async def test_a_lost_append_response_is_acknowledged_once(store: ObjectStore) -> None:
    faulty = FaultyStore(store, seed=0)
    handle = await claim_epoch(faulty)
    wal = await handle.fence_wal()
    faulty.script("lost", op="create", prefix="wal/")
    assert await wal.append(b"once") == 2
    assert await wal.append(b"next") == 3
    assert [(e.id, e.data) for e in await entries(store)] == [(2, b"once"), (3, b"next")]
    assert faulty.counts["lost"] == 1


async def test_a_cancelled_append_that_landed_is_stepped_over(store: ObjectStore) -> None:
    view = Interposer(store)
    handle = await claim_epoch(view)
    wal = await handle.fence_wal()
    with anyio.CancelScope() as scope:

        async def cancel_after_landing() -> None:
            scope.cancel()
            await anyio.lowlevel.checkpoint()

        view.on_create("wal/", after=cancel_after_landing)
        await wal.append(b"cancelled")
    assert scope.cancelled_caught
    assert await wal.append(b"after") == 3  # id 2 holds the cancelled append: stepped over
    assert [(e.id, e.data) for e in await entries(store)] == [(2, b"cancelled"), (3, b"after")]


async def test_corrupt_entries_stop_the_reader(store: ObjectStore) -> None:
    _, wal = await open_writer(store)
    await wal.append(b"good")
    await store.put(wal_key(3), b"SLEW\x00\x00\x00\x00 damaged entry bytes", mode="create")
    await store.put(wal_key(4), encode_entry(1, b"after the damage"), mode="create")
    seen: list[WalEntry] = []

    async def read_all() -> None:
        async for entry in read_wal(store):
            seen.append(entry)

    with pytest.raises(WalCorruptError) as excinfo:
        await read_all()
    assert [e.data for e in seen] == [b"good"]
    assert excinfo.value.key == wal_key(3)
    assert (await store.get(wal_key(3))).body.endswith(b"damaged entry bytes")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"short", WalCorruptError),
        (b"JSON{" + bytes(20), WalCorruptError),
        (encode_entry(1, b"payload")[:-1], WalCorruptError),
        (encode_entry(1, b"x").replace(b"\x00\x01", b"\x00\x09", 1), WalCorruptError),
    ],
)
async def test_damaged_entries_are_named(
    store: ObjectStore, raw: bytes, error: type[Exception]
) -> None:
    await store.put(wal_key(1), raw, mode="create")
    with pytest.raises(error):
        await entries(store)


async def test_an_entry_from_a_newer_format_is_unsupported(store: ObjectStore) -> None:
    import struct
    import zlib

    tail = struct.pack(">HQ", 99, 1) + b"future"
    raw = b"SLEW" + zlib.crc32(tail).to_bytes(4, "big") + tail
    await store.put(wal_key(1), raw, mode="create")
    with pytest.raises(UnsupportedFormatError):
        await entries(store)


async def test_replay_point_trim_and_a_new_writer_after_the_trim(store: ObjectStore) -> None:
    handle, wal = await open_writer(store)
    for i in range(5):
        await wal.append(f"e{i}".encode())  # ids 2..6
    with pytest.raises(ValueError, match="past the last appended id"):
        await handle.mark_replayed(7)
    manifest = await handle.mark_replayed(4)
    assert manifest.replay_after == 4
    with pytest.raises(ValueError, match="never moves back"):
        await handle.mark_replayed(3)
    assert await wal.trim() == 4  # ids 1..4: the fence and e0..e2
    assert await wal_ids(store) == [5, 6]
    with pytest.raises(WalTrimmedError) as excinfo:
        await entries(store)
    assert excinfo.value.first_kept == 5
    assert [e.data for e in await entries(store, after=4)] == [b"e3", b"e4"]

    _, w2 = await open_writer(store)  # a new writer after the trim
    assert w2.fence_id == 7
    with pytest.raises(FencedError):
        await wal.append(b"zombie")
    await w2.append(b"new")
    assert [e.data for e in await entries(store, after=4)] == [b"e3", b"e4", b"new"]


async def test_roles_are_independent_of_the_log(store: ObjectStore) -> None:
    writer, wal = await open_writer(store)
    compactor = await claim_epoch(store, role="compactor")
    with pytest.raises(ValueError, match="only the writer role"):
        await compactor.fence_wal()
    with pytest.raises(ValueError, match="only the writer role"):
        await compactor.mark_replayed(0)
    await claim_epoch(Interposer(store), role="compactor")  # a newer compactor: not a writer
    assert await wal.append(b"still the writer") == 2
    await writer.refresh()


async def test_an_empty_log_reads_as_nothing(store: ObjectStore) -> None:
    assert await entries(store) == []
    assert await entries(store, "some/root", after=10) == []
    with pytest.raises(ValueError, match="after"):
        await entries(store, after=-1)


async def test_a_zombie_cannot_append_into_a_trimmed_range(store: ObjectStore) -> None:
    """Found by the simulation: the old writer's next id was the new writer's fence; the new
    writer replays, trims (the fence too), and the old writer's append would recreate that id
    below the replay point, where no one replays it. The trim boundary makes it a conflict."""
    _, w1 = await open_writer(store)
    await w1.append(b"w1")  # id 2
    h2, w2 = await open_writer(store)  # fence at 3: w1's next id
    replayed = await w2.append(b"w2")  # id 4
    await h2.mark_replayed(replayed)
    assert await w2.trim() == 4  # ids 1..4, the fence included
    with pytest.raises(FencedError):
        await w1.append(b"zombie")  # lands at 3, at or below the boundary: not an append
    assert await w2.append(b"w2 again") == 5
    assert [e.data for e in await entries(store, after=replayed)] == [b"w2 again"]
    await w2.trim()  # the zombie's object at 3 is garbage below the boundary
    assert await wal_ids(store) == [5]


# -- holes two reviews found (issue 10) --------------------------------------------------------


async def test_a_handle_has_one_log_writer(store: ObjectStore) -> None:
    """A second fence_wal returns the same writer: two writers of one handle would not fence
    each other, and identical appends of both would be acknowledged at one id."""
    handle = await claim_epoch(store)
    first = await handle.fence_wal()
    async with anyio.create_task_group() as tg:  # concurrent calls too
        for _ in range(3):
            tg.start_soon(handle.fence_wal)
    assert await handle.fence_wal() is first
    ids = [await first.append(b"incr"), await (await handle.fence_wal()).append(b"incr")]
    assert ids == [2, 3]
    assert [(e.id, e.data) for e in await entries(store)] == [(2, b"incr"), (3, b"incr")]
    assert await wal_ids(store) == [1, 2, 3]  # one fence


@pytest.mark.parametrize("payload", [3, "text", None, [1]])
async def test_a_payload_that_is_not_bytes_like_is_refused(
    store: ObjectStore, payload: object
) -> None:
    _, wal = await open_writer(store)
    with pytest.raises(TypeError, match="bytes-like"):
        await wal.append(payload)  # type: ignore[arg-type]
    assert await entries(store) == []
    assert await wal.append(bytearray(b"ok")) == 2


async def test_a_handle_that_knows_it_is_fenced_writes_nothing_to_the_log(
    store: ObjectStore,
) -> None:
    old, wal = await open_writer(store)
    await wal.append(b"a")
    await claim_epoch(Interposer(store))
    with pytest.raises(FencedError):
        await old.refresh()
    before = await wal_ids(store)
    with pytest.raises(FencedError):
        await wal.append(b"b")
    with pytest.raises(FencedError):
        await old.fence_wal()
    assert await wal_ids(store) == before


async def test_the_replay_point_never_moves_back_so_the_next_fence_fences(
    store: ObjectStore,
) -> None:
    h1, w1 = await open_writer(store)
    ids = [await w1.append(b"e%d" % i) for i in range(5)]  # 2..6
    await h1.mark_replayed(ids[2])
    await w1.trim()
    with pytest.raises(ValueError, match="replay point"):
        await h1.update(lambda m: Manifest(roles=m.roles, state=b"snapshot"))
    _, w2 = await open_writer(store)
    assert w2.fence_id == 7  # above everything w1 appended
    with pytest.raises(FencedError):
        await w1.append(b"after the new writer fenced")
    assert [e.data for e in await entries(store, after=ids[2])] == [b"e3", b"e4"]


async def test_a_fence_never_goes_at_or_below_the_trim_boundary(store: ObjectStore) -> None:
    """Whatever the manifest's replay point says (here: an older version of the manifest put
    back by hand), the fence goes above the trim boundary, where ids are never missing."""
    h1, w1 = await open_writer(store)
    for i in range(4):
        await w1.append(b"e%d" % i)  # 2..5
    await h1.mark_replayed(4)
    await w1.trim()  # boundary 4; ids 5 stays
    await advance_boundary(store, "wal-boundary", 5)  # as if a trim to 5 had run too
    await store.delete(wal_key(5))
    h2 = await claim_epoch(Interposer(store))
    w2 = await h2.fence_wal()
    assert w2.fence_id == 6


async def test_a_reader_overtaken_by_a_trim_is_told_never_a_silent_end(
    store: ObjectStore,
) -> None:
    handle, wal = await open_writer(store)
    for i in range(10):
        await wal.append(b"e%d" % i)  # 2..11
    seen: list[int] = []

    async def read_while_the_writer_trims() -> None:
        async for entry in read_wal(store, after=0):
            seen.append(entry.id)
            if entry.id == 3:  # meanwhile the writer absorbs up to 8 and trims
                await handle.mark_replayed(8)
                await wal.trim()

    with pytest.raises(WalTrimmedError) as caught:
        await read_while_the_writer_trims()
    assert seen == [2, 3]
    assert (caught.value.after, caught.value.first_kept) == (3, 9)
    assert [e.id for e in await entries(store, after=8)] == [9, 10, 11]


async def test_a_stale_recreation_below_the_boundary_is_never_read(store: ObjectStore) -> None:
    handle, wal = await open_writer(store)
    for i in range(4):
        await wal.append(b"e%d" % i)  # 2..5
    await handle.mark_replayed(4)
    await wal.trim()
    # a stale writer's create recreated id 2 (and its clean-up never ran)
    await store.put(wal_key(2), encode_entry(1, b"zombie"), mode="create")
    with pytest.raises(WalTrimmedError) as caught:
        await entries(store, after=1)
    assert caught.value.first_kept == 5
    assert [e.data for e in await entries(store, after=4)] == [b"e3"]


async def test_a_zombie_append_removes_what_it_recreated(store: ObjectStore) -> None:
    _, w1 = await open_writer(store)
    await w1.append(b"w1")  # id 2
    h2, w2 = await open_writer(store)  # fence at 3: w1's next id
    await h2.mark_replayed(await w2.append(b"w2"))  # 4
    await w2.trim()  # 1..4
    with pytest.raises(FencedError):
        await w1.append(b"zombie")  # recreates 3, below the boundary
    assert await wal_ids(store) == []  # taken away at once


@pytest.mark.parametrize(
    "name",
    ["0000000000000000000\u00b2.wal", "\u0669" * 20 + ".wal", "0000000000000000000x.wal"],
)
async def test_foreign_objects_in_the_log_folder_are_ignored(store: ObjectStore, name: str) -> None:
    _, wal = await open_writer(store)
    await wal.append(b"a")
    await store.put(f"wal/{name}", b"not ours")
    h2, w2 = await open_writer(store)
    assert w2.fence_id == 3
    assert [e.data for e in await entries(store)] == [b"a"]
    await h2.mark_replayed(3)
    assert await w2.trim() == 3
    assert [m.key async for m in store.list("wal/")] == [f"wal/{name}"]


async def test_a_stale_fence_with_entries_above_it_is_not_taken_for_ours(
    store: ObjectStore,
) -> None:
    """Found by the simulation (seed 321) when the fence was first tried where the last writer
    fenced: a stale fencer's fence stood at the next id, the current writer had stepped over it
    and appended above it, and the new writer took that fence for its own - below the old
    writer's entries, so the old writer's later appends went on being acknowledged."""
    _, w1 = await open_writer(store)
    assert w1.fence_id == 1  # recorded in the manifest: the next writer looks from there
    await store.put(wal_key(2), b"", mode="create")  # an older fencer's late fence
    assert await w1.append(b"above the stale fence") == 3  # stepped over, still the holder
    _, w2 = await open_writer(store)
    assert w2.fence_id == 4  # the first id free after its claim
    with pytest.raises(FencedError):
        await w1.append(b"after the new writer's fence")
    assert [e.data for e in await entries(store)] == [b"above the stale fence"]


class Recording(ForwardingStore):
    """Another process's view of the store, recording each request as ``op key-folder``."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.requests: list[str] = []

    async def forward(self, request: Request, perform: Callable[[], Awaitable[T]]) -> T:
        folder = request.key.rsplit("/", 1)[0] if "/" in request.key else request.key
        self.requests.append(f"{request.kind} {folder}")
        return await perform()


async def test_an_open_claims_and_fences_in_five_round_trips(store: ObjectStore) -> None:
    """``claim_epoch(fence_wal=True)`` on an empty root: the claim's create, then its boundary
    check beside the fence's first step (the fence, the trim boundary, a listing of the log),
    then the check that no newer claim landed before the fence stood."""
    process = Recording(store)
    handle = await claim_epoch(process, fence_wal=True)
    requests = process.requests
    assert requests[:2] == ["list manifest", "create manifest"]
    assert sorted(requests[2:6]) == [
        "create wal",
        "get manifest-boundary",
        "get wal-boundary",
        "list wal",
    ]
    assert sorted(requests[6:]) == ["get manifest-boundary", "head manifest"]
    log = await handle.fence_wal()  # the writer the claim made: no request
    assert log.fence_id == 1
    assert len(process.requests) == 8


async def test_fence_wal_after_a_claim_costs_two_round_trips(store: ObjectStore) -> None:
    process = Recording(store)
    handle = await claim_epoch(process)
    process.requests.clear()
    log = await handle.fence_wal()
    assert log.fence_id == 1
    assert sorted(process.requests[:3]) == ["create wal", "get wal-boundary", "list wal"]
    assert sorted(process.requests[3:]) == ["get manifest-boundary", "head manifest"]


async def test_the_fence_goes_where_the_listing_says_when_the_next_id_is_taken(
    store: ObjectStore,
) -> None:
    """Eight writers each claimed, fenced and appended once, and wrote nothing to the manifest
    after (so none recorded where it fenced): the ninth tries the id after the replay point,
    finds it taken, and fences where the listing it made beside that try says: no search."""
    for _ in range(8):
        handle = await claim_epoch(Interposer(store), fence_wal=True)
        await (await handle.fence_wal()).append(b"work")
    process = Recording(store)
    handle = await claim_epoch(process, fence_wal=True)
    assert (await handle.fence_wal()).fence_id == 17  # eight fences and eight entries below
    fence_requests = process.requests[4:]  # after list, get, create, (boundary ...)
    assert "head wal" not in fence_requests
    assert fence_requests.count("create wal") == 2  # the try, and the fence
    assert sorted(process.requests[-2:]) == ["get manifest-boundary", "head manifest"]


async def test_a_writer_records_where_it_fenced_with_its_first_manifest_write(
    store: ObjectStore,
) -> None:
    handle = await claim_epoch(store, fence_wal=True)
    log = await handle.fence_wal()
    for _ in range(3):
        await log.append(b"e")
    assert handle.manifest.log_fence == 0  # the fence alone writes no manifest version
    written = await handle.update(lambda m: msgspec.structs.replace(m, state=b"checkpoint"))
    assert written.log_fence == log.fence_id == 1
    # a mutate can't move it: the library keeps it
    again = await handle.update(lambda m: msgspec.structs.replace(m, log_fence=99))
    assert again.log_fence == 1
    nxt = await claim_epoch(Interposer(store), fence_wal=True)
    assert (await nxt.fence_wal()).fence_id == 5  # above the first writer's three entries


# -- the honest outcome: WriteOutcomeUnknownError ----------------------------------------------


async def take_over_replay_and_trim(store: ObjectStore) -> None:
    """A newer writer claims, fences the log, replays all of it and trims it."""
    newer = await claim_epoch(Interposer(store))
    log = await newer.fence_wal()
    await newer.mark_replayed(log.fence_id - 1)
    await log.trim()


async def test_an_append_whose_resend_recreates_a_trimmed_id_is_reported_unknown(
    store: ObjectStore,
) -> None:
    """The log's twin of the corner: an append lands at 2 and its response is lost; a newer
    writer fences the log at 3, replays 2 (the append is in its state now) and trims 1-2; the
    resend recreates 2 below the trim boundary. The append may have landed, and nothing left can
    tell: WriteOutcomeUnknownError, not a plain FencedError."""
    view = Interposer(store)
    writer = await claim_epoch(view)
    log = await writer.fence_wal()  # 1

    async def meanwhile() -> None:
        await take_over_replay_and_trim(store)

    view.on_create("wal/", after=meanwhile, lose_response=True)
    with pytest.raises(WriteOutcomeUnknownError) as caught:
        await log.append(b"A")
    assert isinstance(caught.value, FencedError)
    assert caught.value.write == "append at log id 2"
    assert await wal_ids(store) == [3]  # the recreation was taken away; the newer fence stands
    with pytest.raises(FencedError) as later:
        await log.append(b"B")
    assert type(later.value) is FencedError


class TrimBeforeReading(ForwardingStore):
    """Runs ``hook`` once, right before the first read of a log object: between a resend that
    found its id taken and the read of what took it."""

    def __init__(self, inner: ObjectStore, hook: Callable[[], Awaitable[object]]) -> None:
        super().__init__(inner)
        self.hook: Callable[[], Awaitable[object]] | None = hook

    async def forward(self, request: Request, perform: Callable[[], Awaitable[T]]) -> T:
        if request.op == "get" and request.key.startswith("wal/") and self.hook is not None:
            hook, self.hook = self.hook, None
            await hook()
        return await perform()

    async def aclose(self) -> None:
        """The inner store is the test's."""


async def test_an_append_whose_taken_id_was_trimmed_before_it_looked_is_reported_unknown(
    store: ObjectStore,
) -> None:
    """The other way the log's corner shows: the resend finds the id taken (its own first send)
    and, before it can read what is there, a newer writer replays and trims it."""
    losing = Interposer(store)
    looking = TrimBeforeReading(losing, lambda: take_over_replay_and_trim(store))
    writer = await claim_epoch(looking)
    log = await writer.fence_wal()  # 1
    losing.on_create("wal/", lose_response=True)
    with pytest.raises(WriteOutcomeUnknownError) as caught:
        await log.append(b"A")  # lands at 2; the resend finds 2 taken; 2 is trimmed; gone
    assert caught.value.write == "append at log id 2"


async def test_a_fenced_append_without_an_unknown_send_is_plainly_fenced(
    store: ObjectStore,
) -> None:
    """A newer writer took over and trimmed before the append's one send: the send recreates a
    trimmed id and is told so at once - nothing of it landed, and a plain FencedError says so."""
    _, w1 = await open_writer(store)
    await w1.append(b"w1")  # 2
    h2, w2 = await open_writer(store)  # fence at 3
    await h2.mark_replayed(await w2.append(b"w2"))  # 4
    await w2.trim()
    with pytest.raises(FencedError) as caught:
        await w1.append(b"zombie")  # recreates 3 below the boundary
    assert type(caught.value) is FencedError
