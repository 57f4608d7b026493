"""The behaviour every ObjectStore must have, checked on every backend under asyncio and trio.

Nothing here knows which backend runs: etags are opaque strings (only compared for equality),
and no key is both an object and the folder of another (a local store cannot hold both). An
etag is not promised to change when identical bytes are written again (S3's does not), so
every rewrite here writes different bytes.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest

from slate_epoch import (
    AlreadyExistsError,
    InvalidKeyError,
    NotFoundError,
    ObjectMeta,
    ObjectStore,
    PreconditionError,
    PutMode,
    UpdateVersion,
)
from slate_epoch._store import listing
from tests.listings import list_keys

pytestmark = pytest.mark.anyio

INVALID_KEYS = ["", "/a", "a/", "a//b", "a/./b", "a/../b", ".", "..", "a\\b", "a\x00b"]

# Keys whose order is easy to get wrong: "-" < "." < "/" < "0" in byte order, so a folder "a/c"
# sorts between the objects "a/c.x" and "a/c0"; and non-ASCII keys sort by code point (that is,
# by UTF-8 bytes, as S3 lists them), where U+E000 comes before U+1F600 (not so in UTF-16).
NESTED_KEYS = [
    "a-c",
    "a.b",
    "a/b",
    "a/b-",
    "a/c-",
    "a/c.x",
    "a/c/d",
    "a/c/d0/e",
    "a/c0",
    "a/z",
    "a/\u00fc",
    "a/\ue000",
    "a/\U0001f600",
    "a0",
    "ab",
    "b",
    "z/y/x",
]


async def put_all(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        await store.put(key, key.encode(), mode="create")


async def list_all(store: ObjectStore, prefix: str = "", **kwargs: str) -> list[ObjectMeta]:
    return [meta async for meta in store.list(prefix, **kwargs)]


async def snapshot(store: ObjectStore) -> dict[str, tuple[bytes, str]]:
    """Every object's body and etag: to check that a failed operation changed nothing."""
    found: dict[str, tuple[bytes, str]] = {}
    for meta in await list_all(store):
        got = await store.get(meta.key)
        found[meta.key] = (got.body, got.etag)
    return found


# -- put, get, head ------------------------------------------------------------------------


async def test_put_then_get_returns_the_body(store: ObjectStore) -> None:
    await store.put("dir/key", b"hello")
    got = await store.get("dir/key")
    assert got.body == b"hello"


async def test_put_get_head_and_list_agree_on_the_etag_and_size(store: ObjectStore) -> None:
    put = await store.put("dir/key", b"hello")
    got = await store.get("dir/key")
    head = await store.head("dir/key")
    assert put.etag == got.etag == head.etag
    assert head == ObjectMeta(key="dir/key", size=5, etag=put.etag)
    assert await list_all(store, "dir/") == [head]


async def test_every_byte_value_and_a_large_body_round_trip(store: ObjectStore) -> None:
    body = bytes(range(256)) * 16 + os.urandom(1 << 20)
    await store.put("big", body)
    assert (await store.get("big")).body == body
    assert (await store.head("big")).size == len(body)


async def test_an_empty_body_is_an_object_of_size_zero(store: ObjectStore) -> None:
    put = await store.put("empty", b"", mode="create")
    got = await store.get("empty")
    assert (got.body, got.etag) == (b"", put.etag)
    assert await store.head("empty") == ObjectMeta(key="empty", size=0, etag=put.etag)
    assert await list_all(store) == [ObjectMeta(key="empty", size=0, etag=put.etag)]


async def test_get_of_a_missing_key_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFoundError):
        await store.get("missing")


async def test_head_of_a_missing_key_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFoundError):
        await store.head("missing/key")


async def test_a_key_is_not_found_through_its_longer_or_shorter_neighbours(
    store: ObjectStore,
) -> None:
    await store.put("a/b", b"x")
    for key in ("a", "a/b/c", "a/bc"):
        with pytest.raises(NotFoundError):
            await store.get(key)
        with pytest.raises(NotFoundError):
            await store.head(key)


# -- put modes -----------------------------------------------------------------------------


async def test_create_of_a_new_key_writes_it(store: ObjectStore) -> None:
    put = await store.put("k", b"v", mode="create")
    got = await store.get("k")
    assert (got.body, got.etag) == (b"v", put.etag)


async def test_create_of_an_existing_key_raises_and_keeps_the_first_body(
    store: ObjectStore,
) -> None:
    first = await store.put("k", b"first", mode="create")
    for body in (b"second", b"first", b""):  # the body, even the same one, changes nothing
        with pytest.raises(AlreadyExistsError):
            await store.put("k", body, mode="create")
    got = await store.get("k")
    assert (got.body, got.etag) == (b"first", first.etag)


async def test_create_after_an_overwrite_still_finds_the_key_taken(store: ObjectStore) -> None:
    await store.put("k", b"one")  # made by an overwrite
    with pytest.raises(AlreadyExistsError):
        await store.put("k", b"two", mode="create")
    assert (await store.get("k")).body == b"one"
    await store.put("c", b"one", mode="create")
    await store.put("c", b"two")  # made by a create, then overwritten
    with pytest.raises(AlreadyExistsError):
        await store.put("c", b"three", mode="create")
    assert (await store.get("c")).body == b"two"


async def test_overwrite_creates_a_missing_key(store: ObjectStore) -> None:
    put = await store.put("k", b"v", mode="overwrite")
    assert (await store.get("k")).etag == put.etag


async def test_overwrite_replaces_the_body_and_changes_the_etag(store: ObjectStore) -> None:
    first = await store.put("k", b"one")
    second = await store.put("k", b"two")
    assert second.etag != first.etag
    got = await store.get("k")
    assert (got.body, got.etag) == (b"two", second.etag)


async def test_update_with_the_current_etag_replaces_and_changes_the_etag(
    store: ObjectStore,
) -> None:
    first = await store.put("k", b"one", mode="create")
    second = await store.put("k", b"two", mode=UpdateVersion(first.etag))
    assert second.etag != first.etag
    got = await store.get("k")
    assert (got.body, got.etag) == (b"two", second.etag)
    third = await store.put("k", b"three", mode=UpdateVersion(second.etag))
    assert len({first.etag, second.etag, third.etag}) == 3
    assert (await store.get("k")).body == b"three"


async def test_update_with_a_stale_etag_raises_and_changes_nothing(store: ObjectStore) -> None:
    first = await store.put("k", b"one")
    second = await store.put("k", b"two")  # made stale by an overwrite
    current = await store.put("k", b"three", mode=UpdateVersion(second.etag))  # by an update
    before = await snapshot(store)
    for stale in (first, second):
        with pytest.raises(PreconditionError):
            await store.put("k", b"four", mode=UpdateVersion(stale.etag))
    assert await snapshot(store) == before
    assert before["k"] == (b"three", current.etag)


async def test_update_of_a_missing_key_raises_and_creates_nothing(store: ObjectStore) -> None:
    gone = await store.put("k", b"one")
    await store.delete("k")
    with pytest.raises(PreconditionError):
        await store.put("k", b"two", mode=UpdateVersion(gone.etag))
    # a key that never existed, with an etag of the store's own form or a made-up one
    for etag in (gone.etag, "no-such-etag"):
        with pytest.raises(PreconditionError):
            await store.put("never", b"two", mode=UpdateVersion(etag))
    for key in ("k", "never"):
        with pytest.raises(NotFoundError):
            await store.get(key)
    assert await list_all(store) == []


async def test_update_with_an_unknown_etag_raises_and_changes_nothing(
    store: ObjectStore,
) -> None:
    await store.put("k", b"one")
    before = await snapshot(store)
    with pytest.raises(PreconditionError):
        await store.put("k", b"two", mode=UpdateVersion("no-such-etag"))
    assert await snapshot(store) == before


async def test_unknown_put_mode_is_refused_and_writes_nothing(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="mode"):
        await store.put("k", b"v", mode="append")  # type: ignore[arg-type]
    assert await list_all(store) == []


@pytest.mark.parametrize("body", [4, "text", None, [1, 2], 3.0])
async def test_a_body_that_is_not_bytes_like_is_refused_and_writes_nothing(
    store: ObjectStore, body: object
) -> None:
    for mode in ("overwrite", "create"):
        with pytest.raises(TypeError, match="bytes-like"):
            await store.put("k", body, mode=mode)  # type: ignore[arg-type]
    assert await list_all(store) == []


async def test_bytearray_and_memoryview_bodies_are_stored_as_their_bytes(
    store: ObjectStore,
) -> None:
    buffer = bytearray(b"one")
    await store.put("a", buffer)
    buffer[:] = b"xxx"  # the store took a snapshot
    await store.put("b", memoryview(b"two"))
    assert (await store.get("a")).body == b"one"
    assert (await store.get("b")).body == b"two"


# -- delete --------------------------------------------------------------------------------


async def test_delete_removes_the_object(store: ObjectStore) -> None:
    await store.put("dir/k", b"v")
    await store.delete("dir/k")
    with pytest.raises(NotFoundError):
        await store.get("dir/k")
    with pytest.raises(NotFoundError):
        await store.head("dir/k")
    assert await list_all(store) == []


async def test_delete_of_a_missing_key_is_fine(store: ObjectStore) -> None:
    await store.delete("missing")
    await store.delete("missing/deeper/key")


async def test_delete_leaves_other_keys_alone(store: ObjectStore) -> None:
    await put_all(store, ["a/b", "a/c", "ab"])
    await store.delete("a/b")
    assert await list_keys(store) == ["a/c", "ab"]


async def test_a_deleted_key_can_be_created_again(store: ObjectStore) -> None:
    first = await store.put("dir/k", b"one", mode="create")
    await store.delete("dir/k")
    second = await store.put("dir/k", b"two", mode="create")
    got = await store.get("dir/k")
    assert (got.body, got.etag) == (b"two", second.etag)
    with pytest.raises(PreconditionError):
        await store.put("dir/k", b"three", mode=UpdateVersion(first.etag))


async def test_after_deleting_a_longer_key_a_shorter_one_can_be_written(
    store: ObjectStore,
) -> None:
    await store.put("a/b/c", b"deep")
    await store.delete("a/b/c")
    await store.put("a", b"short", mode="create")
    assert await list_keys(store) == ["a"]
    assert (await store.get("a")).body == b"short"


# -- list ----------------------------------------------------------------------------------


async def test_list_of_an_empty_store_yields_nothing(store: ObjectStore) -> None:
    assert await list_all(store) == []


async def test_list_yields_keys_in_ascending_order_across_folders(store: ObjectStore) -> None:
    await put_all(store, NESTED_KEYS[::-1])
    assert await list_keys(store) == sorted(NESTED_KEYS)


async def test_list_with_an_empty_prefix_lists_everything(store: ObjectStore) -> None:
    await put_all(store, NESTED_KEYS)
    metas = await list_all(store, "")
    assert [meta.key for meta in metas] == sorted(NESTED_KEYS)
    for meta in metas:
        assert meta == await store.head(meta.key)
        assert meta.size == len(meta.key.encode())


async def test_list_with_a_folder_prefix(store: ObjectStore) -> None:
    await put_all(store, NESTED_KEYS)
    assert await list_keys(store, "a/c/") == ["a/c/d", "a/c/d0/e"]
    assert await list_keys(store, "a/") == sorted(k for k in NESTED_KEYS if k.startswith("a/"))


async def test_list_prefix_need_not_end_at_a_folder(store: ObjectStore) -> None:
    keys = [
        "manifest/0001.x",
        "manifest/0002.x",
        "manifest/0010.x",
        "manifest/1000.x",
        "manifests/x",
        "manifest0",
    ]
    await put_all(store, keys)
    assert await list_keys(store, "manifest/000") == ["manifest/0001.x", "manifest/0002.x"]
    assert await list_keys(store, "manifest/001") == ["manifest/0010.x"]
    assert await list_keys(store, "manifest") == sorted(keys)
    assert await list_keys(store, "manifests") == ["manifests/x"]
    assert await list_keys(store, "manifest/0001.x") == ["manifest/0001.x"]


async def test_list_of_every_prefix_matches_a_filter_of_the_keys(store: ObjectStore) -> None:
    await put_all(store, NESTED_KEYS)
    prefixes = {key[:i] for key in NESTED_KEYS for i in range(len(key) + 1)}
    for prefix in sorted(prefixes):
        expected = sorted(k for k in NESTED_KEYS if k.startswith(prefix))
        assert await list_keys(store, prefix) == expected, prefix


async def test_list_of_a_missing_prefix_yields_nothing(store: ObjectStore) -> None:
    await put_all(store, ["a/b", "c"])
    assert await list_keys(store, "missing/") == []
    assert await list_keys(store, "a/b/") == []
    assert await list_keys(store, "c/") == []
    assert await list_keys(store, "d") == []


async def test_list_yields_only_keys_after_start_after(store: ObjectStore) -> None:
    await put_all(store, NESTED_KEYS)
    everything = sorted(NESTED_KEYS)
    candidates = [*everything, "", "a", "a/", "a/c", "a/c/", "a/c/d0", "a/d", "zz", "\U0010ffff"]
    for after in candidates:
        expected = [k for k in everything if k > after]
        assert await list_keys(store, start_after=after) == expected, after


async def test_list_combines_prefix_and_start_after(store: ObjectStore) -> None:
    await put_all(store, NESTED_KEYS)
    assert await list_keys(store, "a/", start_after="a/c.x") == [
        k for k in sorted(NESTED_KEYS) if k.startswith("a/") and k > "a/c.x"
    ]
    # start_after before the prefix: no effect; after everything under it: nothing
    assert await list_keys(store, "a/c/", start_after="a") == ["a/c/d", "a/c/d0/e"]
    assert await list_keys(store, "a/c/", start_after="a/c0") == []


async def test_list_reflects_overwrites_and_deletes(store: ObjectStore) -> None:
    await put_all(store, ["k1", "k2", "k3"])
    await store.delete("k2")
    put = await store.put("k3", b"longer body")
    assert await list_all(store) == [
        await store.head("k1"),
        ObjectMeta(key="k3", size=len(b"longer body"), etag=put.etag),
    ]


async def test_list_can_be_stopped_early(store: ObjectStore) -> None:
    keys = [f"many/{i:04d}" for i in range(30)]
    await put_all(store, keys)
    got = []
    async with listing(store, "many/") as metas:
        async for meta in metas:
            got.append(meta.key)
            if len(got) == 3:
                break
    assert got == keys[:3]
    # the store is unaffected by the abandoned listing
    async with listing(store, "many/", start_after=got[-1]) as metas:
        assert (await anext(metas)).key == keys[3]
    assert await list_keys(store, "many/") == keys


async def test_list_pages_through_many_keys(store: ObjectStore) -> None:
    # more keys than one page (S3: 1000) or batch, over many folders
    keys = [f"p/{i // 40:02d}/{i % 40:02d}" for i in range(1200)]
    async with anyio.create_task_group() as group:
        for chunk in range(0, len(keys), 100):
            group.start_soon(put_all, store, keys[chunk : chunk + 100])
    assert await list_keys(store, "p/") == keys
    assert await list_keys(store, "p/", start_after=keys[1099]) == keys[1100:]


# -- invalid keys --------------------------------------------------------------------------


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_invalid_keys_are_refused_before_any_change(store: ObjectStore, key: str) -> None:
    keep = await store.put("keep", b"kept")
    with pytest.raises(InvalidKeyError):
        await store.get(key)
    with pytest.raises(InvalidKeyError):
        await store.head(key)
    modes: list[PutMode] = ["create", "overwrite", UpdateVersion(keep.etag)]
    for mode in modes:
        with pytest.raises(InvalidKeyError):
            await store.put(key, b"bad", mode=mode)
    with pytest.raises(InvalidKeyError):
        await store.delete(key)
    assert await snapshot(store) == {"keep": (b"kept", keep.etag)}


@pytest.mark.parametrize("prefix", ["/", "/a", "a//", "a/./", "a/../b", "a\\b", "a\x00"])
async def test_invalid_list_prefixes_are_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        await list_all(store, prefix)


async def test_invalid_key_error_is_a_value_error(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="key"):
        await store.put("a//b", b"x")


# -- concurrency ---------------------------------------------------------------------------


async def test_concurrent_creates_of_one_key_have_exactly_one_winner(store: ObjectStore) -> None:
    winners: list[tuple[bytes, str]] = []
    losers: list[int] = []

    async def create(i: int) -> None:
        body = f"writer {i}".encode()
        try:
            put = await store.put("contested", body, mode="create")
        except AlreadyExistsError:
            losers.append(i)
        else:
            winners.append((body, put.etag))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(create, i)
    assert len(winners) == 1
    assert len(losers) == 19
    got = await store.get("contested")
    assert (got.body, got.etag) == winners[0]


async def test_concurrent_creates_from_separate_store_objects_have_one_winner_every_round(
    store: ObjectStore, other_processes: Callable[[], Awaitable[ObjectStore]]
) -> None:
    """Sixteen store objects (each its own client and connections, as sixteen processes have)
    create one key at once, three rounds over, the key deleted between rounds."""
    stores = [await other_processes() for _ in range(16)]
    winners: list[tuple[bytes, str]] = []
    losers: list[int] = []

    async def create(i: int) -> None:
        body = f"writer {i}".encode()
        try:
            put = await stores[i].put("contested", body, mode="create")
        except AlreadyExistsError:
            losers.append(i)
        else:
            winners.append((body, put.etag))

    for round_ in range(3):
        winners.clear()
        losers.clear()
        await store.delete("contested")
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for i in range(16):
                    group.start_soon(create, i)
        assert (len(winners), len(losers)) == (1, 15), f"round {round_}"
        got = await store.get("contested")
        assert (got.body, got.etag) == winners[0]


async def test_concurrent_read_modify_write_loses_no_increment(store: ObjectStore) -> None:
    await store.put("counter", b"0", mode="create")

    async def increment() -> None:
        while True:
            got = await store.get("counter")
            body = str(int(got.body) + 1).encode()
            try:
                await store.put("counter", body, mode=UpdateVersion(got.etag))
            except PreconditionError:
                await anyio.lowlevel.checkpoint()  # another task won this round: read again
            else:
                return

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(increment)
    assert (await store.get("counter")).body == b"20"


async def test_concurrent_creates_of_different_keys_in_one_folder_all_land(
    store: ObjectStore,
) -> None:
    keys = [f"shared/new/folder/{i:02d}" for i in range(20)]
    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for key in keys:
                group.start_soon(put_all, store, [key])
    assert await list_keys(store, "shared/") == keys


# -- lifecycle -----------------------------------------------------------------------------


async def test_aclose_can_be_called_twice(store: ObjectStore) -> None:
    await store.aclose()
    await store.aclose()


async def test_a_store_is_an_object_store(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
