"""``check_store`` and ``slate-epoch check``: every real backend passes; stores that accept
conditional writes without enforcing them are refused with ``UnsupportedStoreError`` naming the
first check that failed; other errors propagate as they are; the probes are always removed.

The stores that must be refused: ``ForwardingStore`` wrappers that drop what the protocol needs
(the put mode, the etag condition, ``start_after``), and gcp-storage-emulator, a real GCS server
that ignores generation preconditions, reached through the ``gs://`` backend (in-process and
through the command line).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import pytest

from slate_epoch import (
    STORE_CHECKS,
    AccessDeniedError,
    AlreadyExistsError,
    Body,
    ObjectMeta,
    ObjectStore,
    OperationTimeoutError,
    PutMode,
    PutResult,
    UnsupportedStoreError,
    UpdateVersion,
    check_store,
    open_store,
)
from slate_epoch.backends.memory import MemoryStore
from slate_epoch.cli import EXIT_CODES, EXIT_UNSUPPORTED_STORE
from slate_epoch.testing import FaultyStore, ForwardingStore, Request
from slate_epoch.testing.servers import GcpStorageEmulator, create_gcs_bucket
from tests.listings import list_keys

pytestmark = pytest.mark.anyio

T = TypeVar("T")
PROBES = "slate-epoch-check/"


async def test_every_backend_passes_and_keeps_nothing(store: ObjectStore) -> None:
    report = await check_store(store)
    assert report.passed == tuple(STORE_CHECKS)
    assert report.prefix.startswith(PROBES)
    assert report.leftovers == ()
    assert await list_keys(store) == []  # the probes are gone, and nothing else was written


# -- stores that must be refused ---------------------------------------------------------------


class Overwriting(ForwardingStore):
    """Turns every put into an overwrite: the put mode is dropped on the way."""

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        return await self.inner.put(key, body, mode="overwrite")


class IgnoringEtags(ForwardingStore):
    """Enforces create-if-absent, but writes an update whatever etag it names."""

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        if isinstance(mode, UpdateVersion):
            mode = "overwrite"
        return await self.inner.put(key, body, mode=mode)


class RefusingEveryUpdate(ForwardingStore):
    """Compares etags with something else: every update is refused."""

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        if isinstance(mode, UpdateVersion):
            mode = UpdateVersion("not-" + mode.etag)
        return await self.inner.put(key, body, mode=mode)


class ListingFromTheStart(ForwardingStore):
    """Ignores start_after, as some emulators do (and no client filters it here)."""

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectMeta]:
        async for meta in self.inner.list(prefix):
            yield meta


class RacyCreates(ForwardingStore):
    """Checks and then writes, with a yield in between: creates sent at once all win."""

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        if mode == "create":
            exists = True
            try:
                await self.inner.head(key)
            except Exception:
                exists = False
            await anyio.sleep(0.01)
            if exists:
                raise AlreadyExistsError(key)
            mode = "overwrite"
        return await self.inner.put(key, body, mode=mode)


@pytest.mark.parametrize(
    ("broken", "check"),
    [
        (Overwriting, "create-if-absent"),
        (RacyCreates, "one-winner"),
        (IgnoringEtags, "stale-etag"),
        (RefusingEveryUpdate, "current-etag"),
        (ListingFromTheStart, "list-start-after"),
    ],
)
async def test_a_store_that_does_not_enforce_a_promise_is_refused(
    store: ObjectStore, broken: Callable[[ObjectStore], ObjectStore], check: str
) -> None:
    with pytest.raises(UnsupportedStoreError) as caught:
        await check_store(broken(store))
    assert caught.value.check == check
    assert str(caught.value).startswith(f"check {check!r} failed: ")
    assert await list_keys(store) == []  # cleaned up, even though the check failed


# -- other errors ------------------------------------------------------------------------------


class Denying(ForwardingStore):
    """Refuses every put, as a store without write permission does."""

    async def forward(self, request: Request, perform: Callable[[], Awaitable[T]]) -> T:
        if request.op == "put":
            raise AccessDeniedError("403: not allowed to write")
        return await perform()


async def test_other_errors_propagate_as_themselves() -> None:
    with pytest.raises(AccessDeniedError):
        await check_store(Denying(MemoryStore()))


@pytest.mark.parametrize("seed", range(4))
async def test_transient_errors_are_retried_on_fresh_keys(seed: int) -> None:
    """Lost responses and errors on a third of the requests: a check whose outcome is unknown
    runs again on fresh keys, so it still proves what it should; the probes still go."""
    memory = MemoryStore()
    faulty = FaultyStore(memory, seed=seed, lost_response_rate=0.15, error_rate=0.15)
    report = await check_store(faulty, timeout=30)
    assert report.passed == tuple(STORE_CHECKS)
    assert faulty.counts["lost"] + faulty.counts["error"] > 0
    assert await list_keys(memory) == []


async def test_a_store_that_keeps_failing_times_out() -> None:
    faulty = FaultyStore(MemoryStore(), seed=1, error_rate=1.0, ops={"put"})
    with pytest.raises(OperationTimeoutError, match="store check timed out"):
        await check_store(faulty, timeout=0.2)


class Stalling(ForwardingStore):
    """Lets ``creates`` creates through, then stalls every create until cancelled."""

    def __init__(self, inner: ObjectStore, creates: int) -> None:
        super().__init__(inner)
        self.creates = creates
        self.stalled = anyio.Event()

    async def forward(self, request: Request, perform: Callable[[], Awaitable[T]]) -> T:
        if request.kind == "create":
            self.creates -= 1
            if self.creates < 0:
                self.stalled.set()
                await anyio.sleep_forever()
        return await perform()


async def test_a_cancelled_check_still_removes_its_probes() -> None:
    memory = MemoryStore()
    stalling = Stalling(memory, creates=3)
    async with anyio.create_task_group() as group:
        group.start_soon(check_store, stalling)
        await stalling.stalled.wait()
        assert await list_keys(memory, PROBES)  # probes stand while the check runs
        group.cancel_scope.cancel()
    assert await list_keys(memory) == []


async def test_the_probes_never_touch_what_the_root_holds(store: ObjectStore) -> None:
    """Under any root, even one named like the probes' folder, the check leaves the root's
    objects alone and removes only its own."""
    from slate_epoch import claim_epoch

    await claim_epoch(store, "slate-epoch-check")
    await claim_epoch(store)
    before = await list_keys(store)
    await check_store(store)
    assert await list_keys(store) == before


# -- gcp-storage-emulator: a real server that ignores preconditions ----------------------------


@pytest.fixture(scope="module")
def emulator_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with GcpStorageEmulator(tmp_path_factory.mktemp("gcp-storage-emulator")) as server:
        yield server.endpoint_url


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_gcp_storage_emulator_is_refused(emulator_endpoint: str) -> None:
    """It answers every request, ignoring ifGenerationMatch: the first check fails, with
    UnsupportedStoreError, not another error."""
    bucket = await create_gcs_bucket(emulator_endpoint)
    url = f"gs://{bucket}/prod?endpoint_url={emulator_endpoint}&anonymous=true"
    with anyio.fail_after(60):
        async with open_store(url) as store:
            with pytest.raises(UnsupportedStoreError) as caught:
                await check_store(store)
            assert caught.value.check == "create-if-absent"
            assert await list_keys(store) == []


def test_the_command_line_exits_7_with_one_line_on_gcp_storage_emulator(
    emulator_endpoint: str,
) -> None:
    bucket = anyio.run(create_gcs_bucket, emulator_endpoint, backend="asyncio")
    url = f"gs://{bucket}?endpoint_url={emulator_endpoint}&anonymous=true"
    result = _cli("check", url)
    assert result.returncode == EXIT_UNSUPPORTED_STORE == 7, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "slate-epoch: error: UnsupportedStoreError: check 'create-if-absent' failed: a second "
        "create of one key succeeded"
    )
    assert "7" in _cli("--help").stdout.split("exit codes:")[1]
    assert "UnsupportedStoreError" in EXIT_CODES[7]


def test_the_command_line_prints_each_check_on_a_local_folder(tmp_path: Any) -> None:
    folder = tmp_path / "new-store"
    result = _cli("check", f"file://{folder}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [["ok", name] for name in STORE_CHECKS]
    assert lines[-1].startswith("the store enforces what slate-epoch needs (5 checks")
    # no object left (the local store keeps its own lock files under .slate-epoch)
    assert [p for p in folder.rglob("*") if p.is_file() and ".slate-epoch" not in p.parts] == []
    as_json = _cli("check", f"file://{folder}", "--json")
    assert '"ok": true' in as_json.stdout


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("slate-epoch", path=os.path.dirname(sys.executable))
    assert executable is not None
    environment = {
        **os.environ,
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": "127.0.0.1:9",
    }
    environment.pop("STORAGE_EMULATOR_HOST", None)
    return subprocess.run(
        [executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        cwd=tempfile.gettempdir(),
        check=False,
    )
