"""open_store: the URL's scheme picks the backend; bad URLs are refused before any I/O."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slate_epoch import ObjectStore, _open, claim_epoch, open_store, register_backend
from slate_epoch._open import available_schemes
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
        ("ftp://host/x", "unsupported URL scheme 'ftp'.*file://, .*memory://, s3://"),
        ("/just/a/path", "unsupported URL scheme \\(none\\)"),
        ("file://relative/path", "no host, no relative path"),
        ("file:///", "absolute folder other than '/'"),
        ("file:///tmp/x?durable=0", "unknown option.*durable; it takes none"),
        ("file:///tmp/x#part", "no fragment"),
        ("file://user@localhost/tmp/x", "carries credentials"),
        ("memory://somewhere", "memory:// takes no location"),
        ("memory://?x=1", "unknown option"),
    ],
)
def test_bad_urls_are_value_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_memory_url_takes_no_options() -> None:
    with pytest.raises(ValueError, match="no location or options"):
        open_store("memory://", durable=False)


def test_url_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        open_store(b"memory://")  # type: ignore[arg-type]


# -- the registry ------------------------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[None]:
    """Whatever a test registers is gone afterwards."""
    saved = dict(_open._registry)
    yield
    _open._registry.clear()
    _open._registry.update(saved)


def _factory(url: str, **options: object) -> ObjectStore:
    return MemoryStore()


async def test_a_registered_scheme_opens_its_store(registry: None) -> None:
    made: list[tuple[str, dict[str, object]]] = []

    def factory(url: str, **options: object) -> ObjectStore:
        made.append((url, options))
        return MemoryStore()

    register_backend("mine", factory)
    async with open_store("mine://somewhere/x?a=1", flavour="x") as store:
        assert (await claim_epoch(store, "r")).epoch == 1
    assert made == [("mine://somewhere/x?a=1", {"flavour": "x"})]
    assert "mine" in available_schemes()


def test_a_taken_scheme_is_refused_unless_replaced(registry: None) -> None:
    register_backend("mine", _factory)
    with pytest.raises(ValueError, match="taken"):
        register_backend("mine", _factory)
    with pytest.raises(ValueError, match="taken"):
        register_backend("s3", _factory)  # built-ins are in the same registry
    register_backend("s3", _factory, replace=True)
    assert isinstance(open_store("s3://anything"), MemoryStore)


@pytest.mark.parametrize("scheme", ["", "Mine", "1x", "a b", "x:", "é"])
def test_bad_schemes_are_refused(registry: None, scheme: str) -> None:
    with pytest.raises(ValueError, match="a scheme is"):
        register_backend(scheme, _factory)


def test_an_unknown_scheme_names_every_available_one_and_never_the_url() -> None:
    with pytest.raises(ValueError, match="unsupported URL scheme 'nope'") as caught:
        open_store("nope://bucket/x?secret_token=hunter2")
    message = str(caught.value)
    for scheme in ("az://", "azure://", "file://", "gcs://", "gs://", "memory://", "s3://"):
        assert scheme in message
    assert "hunter2" not in message
    assert "bucket" not in message


def test_a_built_in_backend_without_its_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if not installed: the package and every submodule an earlier test imported (a loaded
    # submodule imports from sys.modules whatever its parent's entry says).
    for name in [n for n in sys.modules if n.split(".", 1)[0] == "aiobotocore"] + ["aiobotocore"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "slate_epoch.backends.s3", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'slate-epoch\[s3\]'"):
        open_store("s3://bucket")
