"""A folder of numbered objects: ``{folder}{id:020d}{suffix}``, ids contiguous from 1.

Manifest versions and log entries are both such sequences: each id is written once with
create-if-absent, and ids above the retention boundary have no gaps. So the newest id can be
found with O(log n) probes (double until a miss, then bisect), and so can the first free one,
without ever listing a long history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from ._errors import NotFoundError
from ._layout import Numbered
from ._retry import gather
from ._store import ObjectStore, listing

__all__ = ["ObjectSequence"]

_PROBES: Final = 4  # HEAD requests a search sends at once


class ObjectSequence:
    """The numbered objects ``names`` names on ``store``.

    ``seen(id)`` is called for ids a probe or a listing finds to exist - every probed one, and
    the highest of a listing (a cache keeps the highest, to resume a search that failed
    halfway).
    """

    def __init__(
        self,
        store: ObjectStore,
        names: Numbered,
        *,
        seen: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.names = names
        self._seen = seen

    def key(self, object_id: int) -> str:
        return self.names.key(object_id)

    async def exists(self, object_id: int) -> bool:
        try:
            await self.store.head(self.key(object_id))
        except NotFoundError:
            return False
        if self._seen is not None:
            self._seen(object_id)
        return True

    async def newest_from(self, low: int) -> int:
        """Given that ``low`` exists, the newest id: double until a miss, then bisect.
        ~2·log2(n/low) HEAD requests, one at a time: a long history is rare (retention keeps
        it short), and probes sent at once cost more than they save on an in-process store."""
        high = low * 2
        while await self.exists(high):
            low, high = high, high * 2
        return await self._bisect(low, high)

    async def first_free(self, after: int) -> int:
        """The first free id above ``after`` (which exists, or is a floor), searched in rounds of
        ``_PROBES`` HEAD requests sent at once: doubling steps until a miss, then a search of
        the last gap. A log's writer appends after its fence, so the gap is usually short: one
        or two round trips. (Ids only ever appear in order, but probes sent at once may see a
        later id before an earlier one appears: the answer is the first gap seen, and a caller
        that then finds that id taken simply looks on.)"""
        low, step = after, 1  # low exists (or is the floor)
        high: int | None = None  # high is free
        while high is None:
            ids = [low + step * 2**i for i in range(_PROBES)]
            seen = await self._probe(ids)
            missing = [i for i, there in zip(ids, seen, strict=True) if not there]
            if missing:
                high = missing[0]
                low = max(
                    [low, *(i for i, there in zip(ids, seen, strict=True) if there and i < high)]
                )
            else:
                low, step = ids[-1], step * 2**_PROBES
        while high - low > 1:
            gap = high - low - 1
            ids = (
                [low + 1 + (gap * k) // _PROBES for k in range(_PROBES)]
                if gap > _PROBES
                else list(range(low + 1, high))
            )
            ids = sorted(set(ids))
            seen = await self._probe(ids)
            for object_id, there in zip(ids, seen, strict=True):
                if there:
                    low = max(low, object_id)
                else:
                    high = min(high, object_id)
                    break
        return high

    async def _probe(self, ids: Sequence[int]) -> list[bool]:
        """Whether each id exists, all asked at once (a failed probe fails the search with its
        own error)."""
        found: list[bool] = [False] * len(ids)

        def probe(index: int, object_id: int) -> Callable[[], Awaitable[None]]:
            async def exists() -> None:
                found[index] = await self.exists(object_id)

            return exists

        await gather(*(probe(index, object_id) for index, object_id in enumerate(ids)))
        return found

    async def _bisect(self, low: int, high: int) -> int:
        """The newest id, knowing that ``low`` exists (or is the floor) and ``high`` does not."""
        while high - low > 1:
            mid = (low + high) // 2
            if await self.exists(mid):
                low = mid
            else:
                high = mid
        return low

    async def newest_cold(self, page: int) -> int:
        """With nothing known: list one page. A short history ends within it (its last id is
        the newest); a longer one gives a lower bound to gallop from. 0: no object at all."""
        keys: list[str] = []
        async with listing(self.store, self.names.folder) as metas:
            async for meta in metas:
                keys.append(meta.key)
                if len(keys) >= page:
                    break
        # Ids are fixed-width, so key order is id order: the last key that names an id holds
        # the highest (anything after it is a foreign object). Only that one is parsed.
        highest = next((i for i in map(self.names.id_of, reversed(keys)) if i is not None), 0)
        if highest and self._seen is not None:
            self._seen(highest)
        if len(keys) >= page and highest:
            return await self.newest_from(highest)
        return highest

    async def ids_above(self, after: int, most: int) -> tuple[int, ...] | None:
        """The stored ids above ``after``, ascending, from one listing that starts there (no
        earlier key is read); None if there are more than ``most``."""
        ids: list[int] = []
        start_after = self.key(after) if after >= 1 else None
        async with listing(self.store, self.names.folder, start_after=start_after) as metas:
            async for meta in metas:
                object_id = self.names.id_of(meta.key)
                if object_id is None or object_id <= after:
                    continue
                if len(ids) == most:
                    return None
                ids.append(object_id)
        return tuple(ids)

    async def ids_up_to(self, last: int) -> list[int]:
        """The stored ids at or below ``last``, ascending (one listing, stopped past it)."""
        ids: list[int] = []
        async with listing(self.store, self.names.folder) as metas:
            async for meta in metas:
                object_id = self.names.id_of(meta.key)
                if object_id is None:
                    continue
                if object_id > last:
                    break
                ids.append(object_id)
        return ids
