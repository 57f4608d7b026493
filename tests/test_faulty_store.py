"""FaultyStore on its own: seeded faults replay, scripts take precedence, ops= narrows, counts
tally, a lost response happens and an error does not."""

from __future__ import annotations

import anyio
import pytest

from slate_epoch import NotFoundError, ObjectStore, TransientStoreError
from slate_epoch.backends.memory import MemoryStore
from slate_epoch.testing import FaultyStore

pytestmark = pytest.mark.anyio


async def _outcomes(store: ObjectStore, calls: int = 60) -> list[str]:
    """Run a fixed sequence of operations; what happened to each."""
    outcomes: list[str] = []
    for i in range(calls):
        try:
            match i % 4:
                case 0:
                    await store.put(f"k/{i}", b"x", mode="create")
                case 1:
                    await store.get(f"k/{i - 1}")
                case 2:
                    await store.head(f"k/{i - 2}")
                case _:
                    _ = [meta async for meta in store.list("k/")]
        except TransientStoreError as exc:
            outcomes.append("lost" if "lost" in str(exc) else "error")
        except NotFoundError:
            outcomes.append("missing")
        else:
            outcomes.append("ok")
    return outcomes


async def test_the_same_seed_injects_the_same_faults_in_the_same_order() -> None:
    def faulty(seed: int) -> FaultyStore:
        return FaultyStore(MemoryStore(), seed=seed, lost_response_rate=0.2, error_rate=0.2)

    first, again, other = faulty(7), faulty(7), faulty(8)
    outcomes = await _outcomes(first)
    assert {"ok", "lost", "error"} <= set(outcomes)
    assert await _outcomes(again) == outcomes
    assert first.counts == again.counts
    assert await _outcomes(other) != outcomes


async def test_the_same_seed_draws_the_same_latencies(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(anyio, "sleep", sleep)

    async def latencies(seed: int) -> list[float]:
        slept.clear()
        store = FaultyStore(MemoryStore(), seed=seed, latency=(0.01, 0.02), error_rate=0.3)
        await _outcomes(store, calls=20)
        return list(slept)

    first = await latencies(3)
    assert len(first) == 20
    assert all(0.01 <= s <= 0.02 for s in first)
    assert await latencies(3) == first
    assert await latencies(4) != first


async def test_fixed_latency_is_slept_before_each_operation() -> None:
    store = FaultyStore(MemoryStore(), seed=0, latency=0.02)
    start = anyio.current_time()
    await store.put("k", b"x")
    await store.get("k")
    assert anyio.current_time() - start >= 0.04


async def test_a_lost_response_is_performed_then_raised() -> None:
    inner = MemoryStore()
    store = FaultyStore(inner, seed=0, lost_response_rate=1.0)
    with pytest.raises(TransientStoreError, match="lost response"):
        await store.put("a", b"1", mode="create")
    assert (await inner.get("a")).body == b"1"
    with pytest.raises(TransientStoreError):
        await store.delete("a")
    with pytest.raises(NotFoundError):
        await inner.get("a")
    await inner.put("b", b"2")
    with pytest.raises(TransientStoreError):
        await store.get("b")
    with pytest.raises(TransientStoreError):
        _ = [meta async for meta in store.list("")]
    assert store.counts["lost"] == 4


async def test_an_error_is_raised_before_performing() -> None:
    inner = MemoryStore()
    store = FaultyStore(inner, seed=0, error_rate=1.0)
    with pytest.raises(TransientStoreError, match="injected error"):
        await store.put("a", b"1", mode="create")
    with pytest.raises(NotFoundError):
        await inner.get("a")
    await inner.put("b", b"2")
    with pytest.raises(TransientStoreError):
        await store.delete("b")
    assert (await inner.get("b")).body == b"2"
    assert store.counts["error"] == 2
    assert store.counts["lost"] == 0


async def test_counts_tally_calls_by_operation_and_faults() -> None:
    store = FaultyStore(MemoryStore(), seed=0)
    store.script("lost", op="put")
    store.script("error", op="get")
    with pytest.raises(TransientStoreError):
        await store.put("a", b"1")
    with pytest.raises(TransientStoreError):
        await store.get("a")
    await store.get("a")
    await store.head("a")
    _ = [meta async for meta in store.list("")]
    await store.delete("a")
    assert store.counts == {
        "put": 1,
        "get": 2,
        "head": 1,
        "list": 1,
        "delete": 1,
        "lost": 1,
        "error": 1,
    }


async def test_ops_narrows_random_faults() -> None:
    store = FaultyStore(MemoryStore(), seed=0, error_rate=1.0, ops={"put"})
    with pytest.raises(TransientStoreError):
        await store.put("a", b"1")
    with pytest.raises(NotFoundError):  # not a fault: get goes through
        await store.get("a")
    _ = [meta async for meta in store.list("")]
    await store.delete("a")
    assert store.counts["error"] == 1


async def test_scripted_faults_come_first_and_in_order() -> None:
    inner = MemoryStore()
    # random faults on every call, yet the scripted ones are taken first, in the order queued
    store = FaultyStore(inner, seed=0, error_rate=1.0)
    store.script("lost", op="create", prefix="m/", times=2)
    store.script("lost", op="put")
    with pytest.raises(TransientStoreError, match="lost"):
        await store.put("x", b"1")  # not a create under m/: the second script entry
    for key in ("m/1", "m/2"):
        with pytest.raises(TransientStoreError, match="lost"):
            await store.put(key, b"1", mode="create")
    with pytest.raises(TransientStoreError, match="injected error"):  # script used up
        await store.put("m/3", b"1", mode="create")
    assert [meta.key async for meta in inner.list("")] == ["m/1", "m/2", "x"]
    assert (store.counts["lost"], store.counts["error"]) == (3, 1)


async def test_scripts_ignore_ops_and_match_put_modes_and_prefixes() -> None:
    inner = MemoryStore()
    store = FaultyStore(inner, seed=0, ops=())  # no random faults at all
    store.script("error", op="create", prefix="m/")
    await store.put("m/a", b"1")  # an overwrite: not matched
    await store.put("n/a", b"1", mode="create")  # another prefix: not matched
    with pytest.raises(TransientStoreError):
        await store.put("m/b", b"1", mode="create")
    await store.put("m/b", b"1", mode="create")  # used up
    store.script("lost", op="get")
    with pytest.raises(TransientStoreError):
        await store.get("m/b")
    assert (await store.get("m/b")).body == b"1"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lost_response_rate": -0.1}, "lost_response_rate"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"lost_response_rate": 0.6, "error_rate": 0.6}, "must not exceed 1"),
        ({"ops": ["get", "rename"]}, "unknown operations"),
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FaultyStore(MemoryStore(), seed=0, **kwargs)  # type: ignore[arg-type]


def test_nonsense_scripts_are_refused() -> None:
    store = FaultyStore(MemoryStore(), seed=0)
    with pytest.raises(ValueError, match="action"):
        store.script("slow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown op"):
        store.script("lost", op="rename")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        store.script("lost", times=0)


async def test_on_fault_hears_every_injected_fault() -> None:
    heard: list[tuple[str, str, str]] = []
    store = FaultyStore(
        MemoryStore(),
        seed=0,
        on_fault=lambda action, op, key: heard.append((action, op, key)),
    )
    store.script("lost", op="create")
    store.script("error", op="get")
    with pytest.raises(TransientStoreError):
        await store.put("a", b"1", mode="create")
    with pytest.raises(TransientStoreError):
        await store.get("a")
    await store.get("a")
    assert heard == [("lost", "put", "a"), ("error", "get", "a")]
