"""The manifest codec and ManifestStore: framing, checksums, finding the newest version."""

from __future__ import annotations

import struct
import zlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slate_epoch import (
    InvalidKeyError,
    Manifest,
    ManifestCorruptError,
    ManifestStore,
    ManifestVersionExistsError,
    NotFoundError,
    ObjectStore,
    RoleClaim,
    UnsupportedFormatError,
    claim_epoch,
    collect_garbage,
)
from slate_epoch._framing import FORMAT_VERSION
from slate_epoch._manifest import decode, encode
from slate_epoch.backends.memory import MemoryStore
from slate_epoch.testing import FaultyStore
from tests.interpose import Interposer

roles = st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.tuples(st.integers(1, 2**62), st.text(max_size=40), st.integers(0, 2**50), st.text()),
    max_size=5,
)
manifests = st.builds(
    lambda claims, state, write_id: Manifest(
        roles=tuple(
            RoleClaim(role=r, epoch=e, claim_id=c, claimed_at_ms=t, owner=o)
            for r, (e, c, t, o) in sorted(claims.items())
        ),
        state=state,
        write_id=write_id,
    ),
    roles,
    st.binary(max_size=300),
    st.text(max_size=40),
)


@given(manifests)
def test_codec_round_trips_every_manifest(manifest: Manifest) -> None:
    assert decode(encode(manifest)) == manifest


@given(manifests, st.data())
def test_any_flipped_byte_is_reported_as_corrupt(manifest: Manifest, data: st.DataObject) -> None:
    raw = bytearray(encode(manifest))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ManifestCorruptError):
        decode(bytes(raw), "k")


@given(manifests, st.data())
def test_any_truncation_is_reported_as_corrupt(manifest: Manifest, data: st.DataObject) -> None:
    raw = encode(manifest)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ManifestCorruptError):
        decode(raw[:cut], "k")


def _framed(version: int, body: bytes) -> bytes:
    tail = struct.pack(">H", version) + body
    return b"SLEM" + struct.pack(">I", zlib.crc32(tail)) + tail


def test_an_intact_manifest_from_a_newer_format_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormatError) as excinfo:
        decode(_framed(FORMAT_VERSION + 1, b"whatever a future format holds"), "m/1")
    assert excinfo.value.version == FORMAT_VERSION + 1
    assert "m/1" in str(excinfo.value)


def test_a_foreign_object_is_corrupt_and_named() -> None:
    with pytest.raises(ManifestCorruptError, match="bad magic") as excinfo:
        decode(b'{"json": "from someone else"}', "manifest/00000000000000000001.manifest")
    assert excinfo.value.key == "manifest/00000000000000000001.manifest"


def test_an_intact_frame_with_an_undecodable_body_is_corrupt() -> None:
    with pytest.raises(ManifestCorruptError, match="undecodable"):
        decode(_framed(FORMAT_VERSION, b"\xc1 not msgpack"))
    with pytest.raises(ManifestCorruptError, match="never written"):
        decode(_framed(0, msgspec.msgpack.encode(Manifest())))


def test_fields_added_later_are_ignored_by_older_readers() -> None:
    class FutureManifest(Manifest, frozen=True):
        added_in_a_later_version: int = 0

    newer = FutureManifest(state=b"s", added_in_a_later_version=7)
    body = msgspec.msgpack.encode(newer)
    assert decode(_framed(FORMAT_VERSION, body)) == Manifest(state=b"s")


def test_manifest_epoch_and_claims() -> None:
    manifest = Manifest().with_claim(RoleClaim(role="writer", epoch=3, claim_id="c"))
    manifest = manifest.with_claim(RoleClaim(role="compactor", epoch=1, claim_id="d"))
    assert (manifest.epoch("writer"), manifest.epoch("compactor"), manifest.epoch("x")) == (3, 1, 0)
    assert [c.role for c in manifest.roles] == ["compactor", "writer"]
    assert manifest.write_id == "d"


@pytest.mark.anyio
async def test_corrupt_latest_manifest_stops_the_claim_and_is_left_alone(
    store: ObjectStore,
) -> None:
    await claim_epoch(store)
    manifests = ManifestStore(store)
    key = manifests.key(2)
    garbage = b"SLEM\x00\x00\x00\x00\x00\x01 not a manifest"
    await store.put(key, garbage, mode="create")
    with pytest.raises(ManifestCorruptError) as excinfo:
        await claim_epoch(Interposer(store))
    assert excinfo.value.key == key
    assert (await store.get(key)).body == garbage
    with pytest.raises(NotFoundError):
        await store.head(manifests.key(3))


@pytest.mark.anyio
async def test_truncated_and_future_manifests_stop_a_holder(store: ObjectStore) -> None:
    handle = await claim_epoch(store)
    manifests = ManifestStore(store)
    truncated = encode(handle.manifest)[:-3]
    await store.put(manifests.key(2), truncated, mode="create")
    with pytest.raises(ManifestCorruptError):
        await handle.refresh()
    with pytest.raises(ManifestCorruptError):
        await handle.update(lambda m: m)
    assert (await store.get(manifests.key(2))).body == truncated

    other = await claim_epoch(store, "future")
    future = _framed(FORMAT_VERSION + 1, b"...")
    await store.put(ManifestStore(store, "future").key(2), future, mode="create")
    with pytest.raises(UnsupportedFormatError):
        await other.refresh()
    with pytest.raises(UnsupportedFormatError):
        await claim_epoch(Interposer(store), "future")
    assert (await store.get(ManifestStore(store, "future").key(2))).body == future


@pytest.mark.anyio
async def test_manifest_store_reads_writes_and_refuses_taken_ids(store: ObjectStore) -> None:
    manifests = ManifestStore(store, "app")
    assert await manifests.read_latest() is None
    first = Manifest(state=b"1")
    await manifests.write(1, first)
    with pytest.raises(ManifestVersionExistsError) as excinfo:
        await manifests.write(1, Manifest(state=b"other"))
    assert excinfo.value.manifest_id == 1
    assert await manifests.read(1) == first
    with pytest.raises(NotFoundError):
        await manifests.read(2)
    assert await manifests.read_latest() == (1, first)
    assert manifests.key(1) == "app/manifest/00000000000000000001.manifest"
    assert ManifestStore(store).key(12) == "manifest/00000000000000000012.manifest"


@pytest.mark.anyio
async def test_foreign_objects_in_the_manifest_folder_are_ignored(store: ObjectStore) -> None:
    await store.put("manifest/README", b"hello")
    await store.put("manifest/00000000000000000001.manifest.bak", b"x")
    handle = await claim_epoch(store)
    assert handle.manifest_id == 1
    assert (await claim_epoch(Interposer(store))).epoch == 2
    assert (await store.get("manifest/README")).body == b"hello"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "name",
    [
        "0000000000000000000\u00b2.manifest",  # a superscript two: int() refuses it
        "\u0669" * 20 + ".manifest",  # Arabic-Indic nines: int() would parse them
        "\uff10" * 20 + ".manifest",  # fullwidth zeros
    ],
)
async def test_names_of_non_ascii_digits_are_foreign_objects(store: ObjectStore, name: str) -> None:
    for _ in range(5):
        await claim_epoch(store, "r")
    await store.put(f"r/manifest/{name}", b"foreign object, not ours")
    cold = ManifestStore(Interposer(store), "r")  # a fresh process lists the folder
    latest = await cold.read_latest()
    assert latest is not None
    assert latest[0] == 5
    report = await collect_garbage(Interposer(store), "r", keep=2)
    assert report.deleted == (1, 2, 3)
    assert (await claim_epoch(Interposer(store), "r")).epoch == 6
    assert (await store.get(f"r/manifest/{name}")).body == b"foreign object, not ours"


@pytest.mark.anyio
async def test_a_version_at_or_below_the_boundary_is_never_read_as_one(
    store: ObjectStore,
) -> None:
    for _ in range(4):
        await claim_epoch(store)
    await collect_garbage(store, keep=1)  # boundary 3
    stale = msgspec.structs.replace(Manifest(), state=b"a stale writer's recreation")
    await store.put(ManifestStore(store).key(2), encode(stale), mode="create")
    with pytest.raises(NotFoundError, match="retention boundary 3"):
        await ManifestStore(store).read(2)
    assert (await ManifestStore(store).read(4)).epoch("writer") == 4


@pytest.mark.anyio
async def test_read_latest_follows_other_processes_writes(store: ObjectStore) -> None:
    manifests = ManifestStore(store)
    handle = await claim_epoch(store)
    other = ManifestStore(Interposer(store))
    for i in range(2, 12):  # more than the linear probes: forces the galloping search
        await other.write(i, msgspec.structs.replace(handle.manifest, state=str(i).encode()))
    latest_id, latest = await manifests.read_latest()  # type: ignore[misc]
    assert (latest_id, latest.state) == (11, b"11")
    assert (await handle.refresh()).state == b"11"
    assert handle.manifest_id == 11


@pytest.mark.parametrize("root", ["/", "a//b", "..", "a/./b", "a\\b"])
def test_invalid_roots_are_refused(root: str) -> None:
    if root == "/":
        assert ManifestStore(MemoryStore(), root).root == ""
        return
    with pytest.raises(InvalidKeyError):
        ManifestStore(MemoryStore(), root)


async def _history(store: MemoryStore, count: int) -> None:
    """Write ``count`` manifests straight into the store, as a long-lived service would have."""
    claim = RoleClaim(role="writer", epoch=1, claim_id="c")
    manifests = ManifestStore(store)
    for i in range(1, count + 1):
        await store.put(manifests.key(i), encode(Manifest(roles=(claim,), state=str(i).encode())))


@pytest.mark.anyio
@pytest.mark.parametrize("count", [999, 1000, 1001, 2500, 100_000])
async def test_cold_claim_costs_logarithmic_requests(count: int) -> None:
    store = MemoryStore()
    await _history(store, count)
    counted = FaultyStore(store, seed=0)
    handle = await claim_epoch(counted)
    assert handle.manifest_id == count + 1
    assert handle.epoch == 2
    assert counted.counts["list"] == 1
    assert sum(counted.counts.values()) <= 40
