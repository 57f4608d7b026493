"""Shared fixtures: every behaviour test runs on every backend, under asyncio and trio.

S3 runs against a moto server that the session starts (slate_epoch.testing.servers), on both
loops like the other backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from slate_epoch import ObjectStore
from slate_epoch.backends.memory import MemoryStore
from slate_epoch.testing.servers import (
    TEST_ENVIRONMENT,
    UNSET_ENVIRONMENT,
    MotoServer,
    create_bucket,
)

BACKENDS = ["memory", "local", "s3"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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


async def _make_store(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> ObjectStore:
    if name == "memory":
        return MemoryStore()
    if name == "local":
        from slate_epoch.backends.local import LocalStore

        return LocalStore(tmp_path / "store")
    if name == "s3":
        from slate_epoch.backends.s3 import S3Store

        endpoint_url = request.getfixturevalue("s3_endpoint")
        return S3Store(await create_bucket(endpoint_url), endpoint_url=endpoint_url)
    raise AssertionError(f"unknown backend {name}")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """A fresh, empty store of each backend (S3: a new bucket); closed after the test."""
    async with await _make_store(str(request.param), tmp_path, request) as opened:
        yield opened
