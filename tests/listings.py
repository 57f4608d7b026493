"""What several test files read back from a store: the keys under a prefix, the manifest ids of a
root."""

from __future__ import annotations

from slate_epoch import ObjectStore


async def list_keys(
    store: ObjectStore, prefix: str = "", *, start_after: str | None = None
) -> list[str]:
    """Every key under ``prefix`` (after ``start_after``), in the store's order."""
    return [meta.key async for meta in store.list(prefix, start_after=start_after)]


async def manifest_ids(store: ObjectStore, root: str = "") -> list[int]:
    """The ids of the manifests standing under ``root`` (the store's top when ``""``)."""
    prefix = f"{root}/manifest/" if root else "manifest/"
    return [int(meta.key[len(prefix) :][:20]) async for meta in store.list(prefix)]
