"""The key prefix of the cloud stores (S3, Azure, GCS), checked the same way on each: the path of
``s3://bucket/tenant/a`` is joined to every key and stripped from every listed one, so stores on
neighbouring prefixes never see each other's objects. (Memory and local stores have no prefix.)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from slate_epoch import NotFoundError, ObjectStore
from tests.listings import list_keys


async def check_the_prefix_is_prepended_and_stripped(at: Callable[[str], ObjectStore]) -> None:
    """``at(prefix)``: an unopened store on one bucket or container, under ``prefix``."""
    async with at("tenant/a") as a, at("tenant/ab/") as ab, at("") as whole:
        await a.put("x/1", b"a")
        await ab.put("x/1", b"ab")
        await a.put("x/2", b"a", mode="create")  # no clash with ab's keys
        assert await list_keys(whole) == ["tenant/a/x/1", "tenant/a/x/2", "tenant/ab/x/1"]
        assert await list_keys(a) == ["x/1", "x/2"]
        assert await list_keys(a, "x/", start_after="x/1") == ["x/2"]
        assert await list_keys(ab, "x") == ["x/1"]
        assert await list_keys(ab, start_after="x/1") == []
        assert (await ab.get("x/1")).body == b"ab"
        assert (await whole.head("tenant/a/x/2")).size == 1
        with pytest.raises(NotFoundError):
            await a.get("b/x/1")  # "a" + "b/x/1" is not "ab/x/1"
        await ab.delete("x/1")
        assert (await a.get("x/1")).body == b"a"
