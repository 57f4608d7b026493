"""open_store: the URL's scheme picks the backend; bad URLs are refused before any I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from slate_epoch import ObjectStore, claim_epoch, open_store
from slate_epoch.backends.local import LocalStore
from slate_epoch.backends.memory import MemoryStore

pytestmark = pytest.mark.anyio


async def test_memory_url_gives_a_fresh_store_each_time() -> None:
    async with open_store("memory://") as first, open_store("memory://") as second:
        assert isinstance(first, MemoryStore)
        assert isinstance(first, ObjectStore)
        await claim_epoch(first)
        assert (await claim_epoch(second)).epoch == 1  # nothing shared between the two


async def test_file_url_roots_a_local_store_and_creates_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "folder with space"
    async with open_store(f"file://{folder}".replace(" ", "%20")) as store:
        assert isinstance(store, LocalStore)
        await claim_epoch(store, "app")
    assert (folder / "app" / "manifest" / f"{1:020d}.manifest").is_file()


async def test_file_url_passes_options_to_the_local_store(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}", durable=False)
    assert isinstance(store, LocalStore)
    assert store.durable is False
    assert open_store(f"file://localhost{tmp_path}").root == tmp_path  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "unsupported URL scheme 'ftp'.*file://, memory://, s3://"),
        ("/just/a/path", "unsupported URL scheme ''"),
        ("file://relative/path", "no host, no relative path"),
        ("file:///", "absolute folder other than '/'"),
        ("file:///tmp/x?durable=0", "no query"),
        ("memory://somewhere", "memory:// takes no location"),
        ("memory://?x=1", "memory:// takes no location"),
    ],
)
def test_bad_urls_are_value_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_memory_url_takes_no_options() -> None:
    with pytest.raises(ValueError, match="no options"):
        open_store("memory://", durable=False)


def test_url_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        open_store(b"memory://")  # type: ignore[arg-type]
