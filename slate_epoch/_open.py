"""``open_store(url)``: a URL's scheme picks the backend, imported only when asked for."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from ._store import ObjectStore

__all__ = ["SUPPORTED_SCHEMES", "open_store"]

SUPPORTED_SCHEMES = ("file", "memory", "s3")


def open_store(url: str, **options: Any) -> ObjectStore:
    """Return the store a URL names, ready for ``async with``.

    - ``memory://``: a fresh, empty ``MemoryStore``;
    - ``file:///abs/dir``: a ``LocalStore`` rooted at that folder (created if missing);
      ``options`` go to ``LocalStore`` (e.g. ``durable=False``);
    - ``s3://bucket/prefix?endpoint_url=...&region=...``: an ``S3Store``.

    Raises ``ValueError`` for an unknown scheme or a malformed URL.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query or parts.fragment:
            raise ValueError(f"memory:// takes no location or options: {url!r}")
        from slate_epoch.backends.memory import MemoryStore

        if options:
            raise ValueError(f"memory:// takes no options, got {sorted(options)}")
        return MemoryStore()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"file URL must be file:///absolute/path (no host, no relative path): {url!r}"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"file URL takes no query or fragment: {url!r}")
        path = unquote(parts.path)
        if not path.startswith("/") or path == "/":
            raise ValueError(f"file URL must name an absolute folder other than '/': {url!r}")
        from slate_epoch.backends.local import LocalStore

        return LocalStore(path, **options)
    if scheme == "s3":
        from slate_epoch.backends.s3 import S3Store

        return S3Store.from_url(url, **options)
    raise ValueError(
        f"unsupported URL scheme {parts.scheme!r} in {url!r}; "
        f"supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}"
    )
