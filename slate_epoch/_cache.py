"""What a process remembers about the manifests it has seen, and who owns that memory.

Per root, a ``ManifestCache`` keeps the newest version seen (its id and contents) and the
highest id a search has seen exist. Both stay true forever: a version, once written, never
changes, so the cached contents are right; only "is it still the newest?" goes stale, and the
next create-if-absent answers that (a conflict means: look further). That is why a warm claim
needs no read at all, and why a search that failed halfway can resume where it was.

The owner: by default, each store object has its own cache (held weakly: it goes with the
store). A store object stands for one process's view of the storage: two store objects on the
same bucket behave as two processes would, whatever they share underneath. To give a piece of
code a view of its own without a new store object, pass ``cache=ManifestCache()`` where it is
taken (``claim_epoch``, ``ManifestStore``, ``collect_garbage``).

``list_page`` is how many keys a cold search lists before it switches to probing (1,000: one
page of S3's ``ListObjectsV2``); a scale model (the simulation) makes it small.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._manifest import Manifest

__all__ = ["DEFAULT_LIST_PAGE", "ManifestCache", "cache_of"]

DEFAULT_LIST_PAGE: Final = 1000


class ManifestCache:
    """The newest manifest seen, and the highest id seen to exist, per root."""

    def __init__(self, *, list_page: int = DEFAULT_LIST_PAGE) -> None:
        if isinstance(list_page, bool) or not isinstance(list_page, int) or list_page < 1:
            raise ValueError(f"list_page must be an int >= 1, got {list_page!r}")
        self.list_page = list_page
        self._newest: dict[str, tuple[int, Manifest]] = {}
        self._seen: dict[str, int] = {}

    def newest(self, root: str) -> tuple[int, Manifest] | None:
        """The newest version seen under ``root`` (it may no longer be the newest)."""
        return self._newest.get(root)

    def remember(self, root: str, manifest_id: int, manifest: Manifest) -> None:
        known = self._newest.get(root)
        if known is None or known[0] < manifest_id:
            self._newest[root] = (manifest_id, manifest)

    def seen_to_exist(self, root: str) -> int:
        """The highest id a search found to exist under ``root`` (0: none)."""
        return self._seen.get(root, 0)

    def saw(self, root: str, manifest_id: int) -> None:
        if manifest_id > self._seen.get(root, 0):
            self._seen[root] = manifest_id


_by_store: weakref.WeakKeyDictionary[object, ManifestCache] = weakref.WeakKeyDictionary()


def cache_of(store: object) -> ManifestCache:
    """The cache of ``store``'s process view (made on first use)."""
    try:
        return _by_store.setdefault(store, ManifestCache())
    except TypeError:  # a store that can't be weakly referenced: nothing is remembered
        return ManifestCache()
