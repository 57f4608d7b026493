"""Shared fixtures: every behaviour test runs on every backend, under asyncio and trio.

S3 runs against a moto server, Azure against Azurite and GCS against fake-gcs-server, each
started once by the session when a test first needs it (slate_epoch.testing.servers), on
127.0.0.1. S3 and GCS run on both loops (their httpx clients do); Azure runs under asyncio only
(the Azure SDK's aio client needs it): its (azure, trio) combinations are deselected, and
test_azure_store.py checks that it refuses trio with a clear error. STORAGE_EMULATOR_HOST points
at the GCS server for the whole session, so nothing ever reaches Google, and
AZURE_STORAGE_CONNECTION_STRING at Azurite, so nothing reaches Azure.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from slate_epoch import ObjectStore
from slate_epoch.backends.memory import MemoryStore
from slate_epoch.testing.servers import (
    TEST_ENVIRONMENT,
    UNSET_ENVIRONMENT,
    AzuriteServer,
    FakeGcsServer,
    MotoServer,
    create_bucket,
    create_container,
    create_gcs_bucket,
)
from tests.interpose import Interposer

# Checks shared by several test files: their failed asserts explained as in a test module.
pytest.register_assert_rewrite("tests.prefixes")

BACKENDS = ["memory", "local", "s3", "azure", "gcs"]
# Backends whose client runs on asyncio only: their (backend, trio) tests are deselected.
ASYNCIO_ONLY = frozenset({"azure"})


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (and report as deselected) the tests that would run an asyncio-only backend
    on trio."""
    on_trio = [item for item in items if _asyncio_only_on_trio(item)]
    if on_trio:
        config.hook.pytest_deselected(items=on_trio)
        items[:] = [item for item in items if not _asyncio_only_on_trio(item)]


def _asyncio_only_on_trio(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    return bool(params.get("store") in ASYNCIO_ONLY and params.get("anyio_backend") == "trio")


@pytest.fixture(scope="session")
def aws_test_environment() -> Iterator[None]:
    """Dummy AWS credentials and region for the AWS credential chain; no real AWS, no ~/.aws."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TEST_ENVIRONMENT.items():
            patch.setenv(name, value)
        for name in UNSET_ENVIRONMENT:
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def s3_endpoint(
    aws_test_environment: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The endpoint URL of a moto S3 server, one subprocess for the whole session."""
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server.endpoint_url


# Google's credential lookup, kept on this machine: no metadata-server probe, no gcloud config.
GCS_TEST_ENVIRONMENT = {"NO_GCE_CHECK": "true", "GCE_METADATA_HOST": "127.0.0.1:9"}
GCS_UNSET_ENVIRONMENT = ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a fake-gcs-server, one subprocess for the whole session, named by
    STORAGE_EMULATOR_HOST for the session (the store then sends no credentials)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in GCS_UNSET_ENVIRONMENT:
            patch.delenv(name, raising=False)
        for name, value in GCS_TEST_ENVIRONMENT.items():
            patch.setenv(name, value)
        patch.setenv("CLOUDSDK_CONFIG", os.fspath(tmp_path_factory.mktemp("gcloud-config")))
        with FakeGcsServer(tmp_path_factory.mktemp("fake-gcs")) as server:
            patch.setenv("STORAGE_EMULATOR_HOST", server.endpoint_url)
            yield server.endpoint_url


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """An Azurite blob server, one subprocess for the whole session."""
    with AzuriteServer(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture(scope="session")
def azure_connection_string(azurite: AzuriteServer) -> Iterator[str]:
    """The session's Azurite as ``AZURE_STORAGE_CONNECTION_STRING`` (how AzureBlobStore finds
    its account), for the rest of the session; nothing that could reach real Azure."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
        patch.delenv("AZURE_STORAGE_ACCOUNT", raising=False)  # used only without the above
        yield azurite.connection_string


# Opens another store object over the same storage (a new, unopened one each call).
Reopen = Callable[[], ObjectStore]


async def _make_store(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[ObjectStore, Reopen]:
    """A fresh store of backend ``name`` (a new bucket or container), and how to open another
    store object over the same storage, as another process would."""
    if name == "memory":
        memory = MemoryStore()
        return memory, lambda: Interposer(memory)  # one dict: another object over it
    if name == "local":
        from slate_epoch.backends.local import LocalStore

        folder = tmp_path / "store"
        return LocalStore(folder), lambda: LocalStore(folder)
    if name == "s3":
        from slate_epoch.backends.s3 import S3Store

        endpoint_url = request.getfixturevalue("s3_endpoint")
        bucket = await create_bucket(endpoint_url)
        return S3Store(bucket, endpoint_url=endpoint_url), lambda: S3Store(
            bucket, endpoint_url=endpoint_url
        )
    if name == "azure":
        from slate_epoch.backends.azure import AzureBlobStore

        connection_string = request.getfixturevalue("azure_connection_string")
        container = await create_container(connection_string)
        return AzureBlobStore(container), lambda: AzureBlobStore(container)
    if name == "gcs":
        from slate_epoch.backends.gcs import GCSStore

        endpoint_url = request.getfixturevalue("gcs_endpoint")
        bucket = await create_gcs_bucket(endpoint_url)  # STORAGE_EMULATOR_HOST: the server
        return GCSStore(bucket), lambda: GCSStore(bucket)
    raise AssertionError(f"unknown backend {name}")


_REOPEN = pytest.StashKey[Reopen]()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """A fresh, empty store of each backend (S3, GCS: a new bucket; Azure: a new container);
    closed after the test."""
    made, reopen = await _make_store(str(request.param), tmp_path, request)
    request.node.stash[_REOPEN] = reopen
    async with made as opened:
        yield opened


@pytest.fixture
async def other_processes(
    store: ObjectStore, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[], Awaitable[ObjectStore]]]:
    """``await other_processes()``: another store object over the ``store`` fixture's storage,
    open (its own client and connections, its own manifest cache), as another process has;
    all closed after the test."""
    reopen = request.node.stash[_REOPEN]
    async with AsyncExitStack() as stack:

        async def open_another() -> ObjectStore:
            return await stack.enter_async_context(reopen())

        yield open_another
