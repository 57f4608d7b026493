"""The one check a backend whose client runs on asyncio only makes before any work.

anyio code runs on asyncio or trio; a client built on aiohttp (aiobotocore, the Azure SDK's aio
client) runs on asyncio alone, and on trio fails deep inside with an error that names neither.
Such a backend calls ``require_asyncio`` first, so the caller reads what is wrong and what to do.
"""

from __future__ import annotations

__all__ = ["current_async_library", "require_asyncio"]


def current_async_library() -> str:
    """``"asyncio"``, ``"trio"``, or ``"no async library"`` outside of one."""
    try:
        import sniffio
    except ImportError:  # pragma: no cover - trio depends on sniffio, so this is asyncio
        return "asyncio"
    try:
        return str(sniffio.current_async_library())
    except sniffio.AsyncLibraryNotFoundError:
        return "no async library"


def require_asyncio(message: str) -> None:
    """Raise ``RuntimeError(message)`` unless running under asyncio; ``{library}`` in
    ``message`` is replaced by what runs instead."""
    library = current_async_library()
    if library != "asyncio":
        raise RuntimeError(message.format(library=library))
