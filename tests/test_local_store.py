"""LocalStore specifics: OS processes racing, the reserved folder, files on disk, collisions
between keys and folders, the lock, and etags that never repeat.

The behaviour every store shares is in test_store_contract.py (which runs LocalStore too).
"""

from __future__ import annotations

import fcntl
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest

from slate_epoch import (
    AlreadyExistsError,
    InvalidKeyError,
    NotFoundError,
    ObjectMeta,
    PreconditionError,
    PutMode,
    StoreError,
    TransientStoreError,
    UpdateVersion,
)
from slate_epoch._store import listing
from slate_epoch.backends import local as local_module
from slate_epoch.backends.local import LocalStore
from tests.listings import list_keys

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT = 90.0


# -- helpers -------------------------------------------------------------------------------


def disk(root: Path) -> dict[str, bytes | None]:
    """Everything under ``root`` except the lock files: files with their bytes, folders as None."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(".slate-epoch/locks/"):
            continue  # lock files appear on first use of a stripe, empty
        found[relative] = None if path.is_dir() else path.read_bytes()
    return found


def temp_files(root: Path) -> list[str]:
    return sorted(os.listdir(root / ".slate-epoch" / "tmp"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def held_lock() -> Iterator[list[int]]:
    """Lock files the test holds (by fd); all released at teardown."""
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def hold_lock_of(store: LocalStore, key: str, fds: list[int]) -> None:
    fd = os.open(store._lock_path(key), os.O_RDWR | os.O_CREAT)
    fds.append(fd)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


# -- OS processes --------------------------------------------------------------------------

# Each child: builds its store, says it is ready, waits for the "go" file (so that all of them
# race at once rather than one after the other as they start), runs, prints its result.
CHILD_PRELUDE = """
import os, sys, time
import anyio
from slate_epoch import AlreadyExistsError, PreconditionError, UpdateVersion
from slate_epoch.backends.local import LocalStore

ready, go, name, backend, root, durable, *args = sys.argv[1:]
store = LocalStore(root, durable=durable == "durable")
open(os.path.join(ready, name), "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("never told to go")
    time.sleep(0.001)
"""

CREATE_CHILD = (
    CHILD_PRELUDE
    + """
async def main():
    try:
        await store.put("race/key", name.encode(), mode="create")
    except AlreadyExistsError:
        print("lost")
    else:
        print("won")

anyio.run(main, backend=backend)
"""
)

COUNTER_CHILD = (
    CHILD_PRELUDE
    + """
async def main():
    written = []
    for _ in range(int(args[0])):
        while True:
            got = await store.get("counter")
            value = int(got.body) + 1
            try:
                await store.put("counter", str(value).encode(), mode=UpdateVersion(got.etag))
            except PreconditionError:
                continue
            written.append(value)
            break
    print(" ".join(map(str, written)))

anyio.run(main, backend=backend)
"""
)


def run_children(
    script: str, count: int, tmp_path: Path, root: Path, durable: bool, *args: str
) -> list[str]:
    """Run ``count`` children of ``script`` at once (half on asyncio, half on trio); return
    their outputs. Every wait is bounded; children still running at the end are killed."""
    ready = tmp_path / "ready"
    ready.mkdir()
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                str(ready),
                str(go),
                f"child-{i}",
                ("asyncio", "trio")[i % 2],
                str(root),
                "durable" if durable else "fast",
                *args,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while len(os.listdir(ready)) < count:
            for child in children:
                if child.poll() is not None:
                    _, err = child.communicate()
                    pytest.fail(f"a child ended before the race (rc {child.returncode}): {err}")
            if time.monotonic() > deadline:
                pytest.fail("the children did not get ready in time")
            time.sleep(0.01)
        go.touch()
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert child.returncode == 0, err
            outputs.append(out.strip())
        return outputs
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate(timeout=10)


def test_processes_racing_to_create_one_key_have_exactly_one_winner(
    tmp_path: Path, root: Path
) -> None:
    outputs = run_children(CREATE_CHILD, 8, tmp_path, root, True)
    assert sorted(outputs) == ["lost"] * 7 + ["won"]
    winner = f"child-{outputs.index('won')}"
    assert (root / "race" / "key").read_bytes() == winner.encode()
    assert temp_files(root) == []


def test_processes_incrementing_one_counter_lose_no_update(tmp_path: Path, root: Path) -> None:
    anyio.run(LocalStore(root).put, "counter", b"0")
    outputs = run_children(COUNTER_CHILD, 4, tmp_path, root, False, "25")
    written = [int(value) for output in outputs for value in output.split()]
    # every increment read the value before it: each of 1..100 was written exactly once
    assert sorted(written) == list(range(1, 101))
    assert (root / "counter").read_bytes() == b"100"
    assert temp_files(root) == []


async def test_two_stores_on_one_folder_in_one_process_exclude_each_other(root: Path) -> None:
    stores = [LocalStore(root, durable=False), LocalStore(root, durable=False)]
    await stores[0].put("counter", b"0")

    async def increment(store: LocalStore) -> None:
        while True:
            got = await store.get("counter")
            try:
                await store.put(
                    "counter", str(int(got.body) + 1).encode(), mode=UpdateVersion(got.etag)
                )
            except PreconditionError:
                continue
            return

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(increment, stores[i % 2])
    assert (root / "counter").read_bytes() == b"20"


# -- the reserved folder -------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        ".slate-epoch",
        ".slate-epoch/x",
        ".slate-epoch/tmp/x",
        ".slate-epoch/locks/00.lock",
        ".SLATE-EPOCH/x",  # the same folder on a case-insensitive filesystem
    ],
)
async def test_keys_cannot_name_the_reserved_folder(root: Path, key: str) -> None:
    store = LocalStore(root)
    (root / ".slate-epoch" / "locks" / "00.lock").touch()
    before = disk(root)
    modes: list[PutMode] = ["create", "overwrite", UpdateVersion("x")]
    for mode in modes:
        with pytest.raises(InvalidKeyError, match="reserved"):
            await store.put(key, b"x", mode=mode)
    with pytest.raises(InvalidKeyError):
        await store.get(key)
    with pytest.raises(InvalidKeyError):
        await store.head(key)
    with pytest.raises(InvalidKeyError):
        await store.delete(key)
    assert disk(root) == before
    assert (root / ".slate-epoch" / "locks" / "00.lock").exists()


@pytest.mark.parametrize("key", [".slate-epochs/x", ".slate-epoch-x", "x/.slate-epoch/y"])
async def test_names_near_the_reserved_one_are_ordinary_keys(root: Path, key: str) -> None:
    store = LocalStore(root)
    await store.put(key, b"v", mode="create")
    assert (await store.get(key)).body == b"v"
    assert await list_keys(store) == [key]
    await store.delete(key)
    assert await list_keys(store) == []


async def test_no_temp_file_remains_after_puts_that_succeed_or_fail(root: Path) -> None:
    store = LocalStore(root)
    first = await store.put("a/k", b"1", mode="create")
    second = await store.put("a/k", b"2", mode=UpdateVersion(first.etag))
    await store.put("a/k", b"3")
    with pytest.raises(AlreadyExistsError):
        await store.put("a/k", b"4", mode="create")
    with pytest.raises(PreconditionError):
        await store.put("a/k", b"5", mode=UpdateVersion(second.etag))
    with pytest.raises(StoreError):
        await store.put("a", b"6")  # a folder
    with pytest.raises(StoreError):
        await store.put("a/k/x", b"7", mode="create")  # below an object
    assert temp_files(root) == []
    assert await list_keys(store) == ["a/k"]
    assert (root / "a" / "k").read_bytes() == b"3"


async def test_stray_files_in_the_reserved_folder_are_never_listed(root: Path) -> None:
    store = LocalStore(root)
    await store.put("k", b"v")
    (root / ".slate-epoch" / "tmp" / "123-deadbeef.tmp").write_bytes(b"half-written")
    (root / ".slate-epoch" / "stray").write_bytes(b"?")
    (root / ".slate-epoch" / "locks" / "00.lock").touch()
    assert await list_keys(store) == ["k"]
    for prefix in (".slate", ".slate-epoch", ".slate-epoch/", ".slate-epoch/tmp/"):
        assert await list_keys(store, prefix) == [], prefix
    assert await list_keys(store, start_after=".") == ["k"]


async def test_old_temp_files_left_by_a_crash_are_swept_when_a_store_opens(root: Path) -> None:
    LocalStore(root)
    tmp = root / ".slate-epoch" / "tmp"
    stale, fresh = tmp / "123-deadbeef.tmp", tmp / "456-cafebabe.tmp"
    stale.write_bytes(b"half-written, long ago")
    fresh.write_bytes(b"being written right now by another process")
    an_hour_and_more_ago = time.time() - local_module._STALE_TEMP_SECONDS - 60
    os.utime(stale, (an_hour_and_more_ago, an_hour_and_more_ago))
    LocalStore(root)  # another process opens the folder
    assert temp_files(root) == [fresh.name]  # a fresh one may still be written: it stays


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the files and folders the store fsyncs, in order (Linux: /proc names fds)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setattr(local_module, "_FULLFSYNC", None)
    return synced


@pytest.mark.parametrize("mode", ["create", "overwrite"])
async def test_a_durable_put_fsyncs_every_folder_on_its_path_even_one_another_made(
    root: Path, fsynced: list[str], mode: str
) -> None:
    store = LocalStore(root)
    key = "r/manifest/00000000000000000001.manifest"
    # A racing creator made the folders, then lost its create (so it never fsynced them).
    (root / "r" / "manifest").mkdir(parents=True)
    fsynced.clear()
    await store.put(key, b"v", mode=mode)  # type: ignore[arg-type]
    # the object's data (written to a temp file, then linked or renamed into place), then the
    # entry of each folder on its path, deepest first, up to the store's root
    data, *folders = fsynced
    assert data.startswith(str(root / ".slate-epoch" / "tmp"))
    assert folders == [str(root / "r" / "manifest"), str(root / "r"), str(root)]


# -- files on disk -------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [True, False])
async def test_objects_are_files_at_root_slash_key(tmp_path: Path, durable: bool) -> None:
    root = tmp_path / "not" / "yet" / "there"
    async with LocalStore(root, durable=durable) as store:
        assert root.is_dir()
        assert store.root == root
        assert store.durable is durable
        first = await store.put("a/b/c", b"one", mode="create")
        assert (root / "a" / "b" / "c").read_bytes() == b"one"
        await store.put("a/b/c", b"two", mode=UpdateVersion(first.etag))
        assert (root / "a" / "b" / "c").read_bytes() == b"two"
        await store.put("a/b/c", b"three")
        assert (root / "a" / "b" / "c").read_bytes() == b"three"
        await store.put("top", b"level")
        assert (root / "top").read_bytes() == b"level"
        await store.delete("a/b/c")
        # the folders the delete emptied are gone too; the store's own folder stays
        assert sorted(os.listdir(root)) == [".slate-epoch", "top"]
    assert temp_files(root) == []


async def test_a_second_store_on_the_same_folder_sees_the_objects(root: Path) -> None:
    put = await LocalStore(root).put("k", b"v")
    got = await LocalStore(str(root), durable=False).get("k")
    assert (got.body, got.etag) == (b"v", put.etag)


async def test_files_written_by_hand_are_objects(root: Path) -> None:
    store = LocalStore(root)
    (root / "dir").mkdir()
    (root / "dir" / "made-by-hand").write_bytes(b"hand")
    got = await store.get("dir/made-by-hand")
    assert got.body == b"hand"
    assert await store.head("dir/made-by-hand") == ObjectMeta(
        key="dir/made-by-hand", size=4, etag=got.etag
    )
    await store.put("dir/made-by-hand", b"replaced", mode=UpdateVersion(got.etag))
    assert (root / "dir" / "made-by-hand").read_bytes() == b"replaced"


async def test_entries_no_key_can_name_are_not_listed(root: Path) -> None:
    store = LocalStore(root)
    await store.put("k", b"v")
    (root / "back\\slash").write_bytes(b"x")
    os.symlink(root / "k", root / "link")
    os.mkfifo(root / "fifo")
    assert await list_keys(store) == ["k"]


async def test_list_follows_key_order_over_a_large_tree(root: Path) -> None:
    # More entries than one batch, in folders whose names sort around "/": the walk must give
    # exactly sorted() of the keys, for any prefix and start_after.
    rng = random.Random(1234)
    parts = ["a", "a-", "a.", "a0", "a-b", "b", "\u00e9", "\ue000", "\U0001f600", "z.", "z"]
    keys: set[str] = set()
    while len(keys) < 2500:
        depth = rng.choice([1, 2, 2, 3, 3, 4])
        keys.add("/".join(rng.choice(parts) + str(rng.randrange(4)) for _ in range(depth)))
    # a key cannot also be a folder of another key here
    folders = {key.rsplit("/", 1)[0] for key in keys if "/" in key}
    folders |= {f.rsplit("/", i)[0] for f in folders for i in range(1, f.count("/") + 1)}
    keys -= folders
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    store = LocalStore(root)
    ordered = sorted(keys)
    assert await list_keys(store) == ordered
    for prefix in ["a", "a-", "a0/", "a0/a", "b1/\u00e9", "\ue000", "z", "zz"]:
        assert await list_keys(store, prefix) == [k for k in ordered if k.startswith(prefix)]
    for after in [*rng.sample(ordered, 10), "a0/", "a0/a", "b", "\U0001f600"]:
        assert await list_keys(store, start_after=after) == [k for k in ordered if k > after]
        assert await list_keys(store, "a", start_after=after) == [
            k for k in ordered if k.startswith("a") and k > after
        ]


async def test_a_listing_stopped_early_can_be_resumed(root: Path) -> None:
    store = LocalStore(root, durable=False)
    keys = [f"m/{i:04d}" for i in range(250)]
    for key in keys:
        await store.put(key, b"")
    seen: list[str] = []
    while True:
        async with listing(store, "m/", start_after=seen[-1] if seen else None) as metas:
            batch = await take(metas, 7)
        if not batch:
            break
        seen += batch
    assert seen == keys


async def take(metas: AsyncIterator[ObjectMeta], n: int) -> list[str]:
    """The keys of the first ``n`` entries, leaving the rest unread."""
    keys: list[str] = []
    async for meta in metas:
        keys.append(meta.key)
        if len(keys) == n:
            break
    return keys


# -- keys and folders ----------------------------------------------------------------------


async def test_a_key_where_a_folder_holds_longer_keys_cannot_be_written(root: Path) -> None:
    store = LocalStore(root)
    inner = await store.put("a/b", b"inner")
    before = disk(root)
    for mode in ("create", "overwrite"):
        with pytest.raises(StoreError, match="folder") as info:
            await store.put("a", b"x", mode=mode)
        assert type(info.value) is StoreError  # not "already exists": no object is there
    with pytest.raises(PreconditionError):
        await store.put("a", b"x", mode=UpdateVersion(inner.etag))
    with pytest.raises(NotFoundError):
        await store.get("a")
    with pytest.raises(NotFoundError):
        await store.head("a")
    await store.delete("a")  # no object there: nothing to delete
    assert disk(root) == before
    assert await list_keys(store) == ["a/b"]


async def test_a_key_below_an_object_cannot_be_written(root: Path) -> None:
    store = LocalStore(root)
    outer = await store.put("a", b"outer")
    before = disk(root)
    for key in ("a/b", "a/b/c"):
        for mode in ("create", "overwrite"):
            with pytest.raises(StoreError, match="object") as info:
                await store.put(key, b"x", mode=mode)
            assert type(info.value) is StoreError
        with pytest.raises(PreconditionError):
            await store.put(key, b"x", mode=UpdateVersion(outer.etag))
        with pytest.raises(NotFoundError):
            await store.get(key)
        with pytest.raises(NotFoundError):
            await store.head(key)
        await store.delete(key)
    assert disk(root) == before
    assert await list_keys(store) == ["a"]


async def test_an_os_error_becomes_a_store_error_and_writes_nothing(root: Path) -> None:
    store = LocalStore(root)
    too_long = "x" * 300  # longer than any filesystem's name limit
    with pytest.raises(StoreError, match="cannot write") as info:
        await store.put(too_long, b"v")
    assert isinstance(info.value.__cause__, OSError)
    assert temp_files(root) == []
    assert await list_keys(store) == []


async def test_keys_that_are_not_unicode_text_are_refused(root: Path) -> None:
    store = LocalStore(root)
    with pytest.raises(InvalidKeyError):
        await store.put("lone\udcffsurrogate", b"v")
    assert await list_keys(store) == []


# -- the lock ------------------------------------------------------------------------------


async def test_a_held_lock_times_out_as_a_transient_error(root: Path, held_lock: list[int]) -> None:
    store = LocalStore(root, lock_timeout=0.2)
    put = await store.put("k", b"v")
    hold_lock_of(store, "k", held_lock)
    modes: list[PutMode] = ["overwrite", UpdateVersion(put.etag)]
    for mode in modes:
        with pytest.raises(TransientStoreError, match="lock"):
            await store.put("k", b"w", mode=mode)
    with pytest.raises(TransientStoreError, match="lock"):
        await store.delete("k")
    got = await store.get("k")
    assert (got.body, got.etag) == (b"v", put.etag)
    # create needs no lock: link() alone decides
    with pytest.raises(AlreadyExistsError):
        await store.put("k", b"w", mode="create")
    os.close(held_lock.pop())
    await store.put("k", b"w", mode=UpdateVersion(put.etag))
    assert (await store.get("k")).body == b"w"


async def test_waiting_for_a_lock_can_be_cancelled(root: Path, held_lock: list[int]) -> None:
    store = LocalStore(root, lock_timeout=60)
    put = await store.put("k", b"v")
    hold_lock_of(store, "k", held_lock)
    with anyio.fail_after(30):  # a wait that ignored cancellation would end at 60 s
        with anyio.move_on_after(0.2) as scope:
            await store.put("k", b"w", mode=UpdateVersion(put.etag))
    assert scope.cancelled_caught
    os.close(held_lock.pop())
    assert (await store.get("k")).etag == put.etag
    await store.delete("k")
    assert await list_keys(store) == []


# -- etags ---------------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [True, False])
async def test_rewrites_of_identical_bytes_always_get_a_new_etag(root: Path, durable: bool) -> None:
    store = LocalStore(root, durable=durable)
    etags = [(await store.put("k", b"same", mode="create")).etag]
    for i in range(300):
        mode: PutMode = UpdateVersion(etags[-1]) if i % 2 else "overwrite"
        etags.append((await store.put("k", b"same", mode=mode)).etag)
    assert len(set(etags)) == len(etags)
    assert (await store.get("k")).etag == etags[-1]
    for old in etags[-50:-1]:
        with pytest.raises(PreconditionError):
            await store.put("k", b"same", mode=UpdateVersion(old))


async def test_etags_stay_new_when_the_clock_stands_still(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock that never moves (the extreme of a coarse one): only the "previous mtime + 1"
    # rule keeps the etags of same-size rewrites apart, even when an inode number comes back.
    store = LocalStore(root, durable=False)
    frozen = time.time_ns()
    fake_time = SimpleNamespace(time_ns=lambda: frozen, monotonic=time.monotonic, sleep=time.sleep)
    monkeypatch.setattr(local_module, "time", fake_time)
    etags = [(await store.put("k", b"same", mode="create")).etag]
    for i in range(200):
        mode: PutMode = UpdateVersion(etags[-1]) if i % 2 else "overwrite"
        etags.append((await store.put("k", b"same", mode=mode)).etag)
    assert len(set(etags)) == len(etags)
    mtimes = [int(etag.split("-")[1], 16) for etag in etags]
    assert mtimes == sorted(set(mtimes))  # strictly increasing along the versions
    for old in etags[:-1]:
        with pytest.raises(PreconditionError):
            await store.put("k", b"same", mode=UpdateVersion(old))


# -- lifecycle -----------------------------------------------------------------------------


async def test_repr_shows_the_root_and_aclose_is_idempotent(root: Path) -> None:
    store = LocalStore(root, durable=False)
    assert str(root) in repr(store)
    assert "durable=False" in repr(store)
    await store.aclose()
    await store.aclose()
    async with store as same:
        assert same is store
    await store.put("still", b"works")


def test_a_negative_lock_timeout_is_refused(root: Path) -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        LocalStore(root, lock_timeout=-1)
