"""Shared fixtures: every behaviour test runs on every backend, under asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slate_epoch import ObjectStore
from slate_epoch.backends.memory import MemoryStore

BACKENDS = ["memory", "local"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _make_store(name: str, tmp_path: Path) -> ObjectStore:
    if name == "memory":
        return MemoryStore()
    if name == "local":
        from slate_epoch.backends.local import LocalStore

        return LocalStore(tmp_path / "store")
    raise AssertionError(f"unknown backend {name}")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """A fresh, empty store of each backend; closed after the test."""
    async with await _make_store(str(request.param), tmp_path) as opened:
        yield opened
