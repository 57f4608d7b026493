"""The object-store protocol: the only thing the core knows about storage.

A store offers five operations on opaque byte objects under ``/``-separated keys. The core uses
nothing else, so any object with these methods works, whatever it talks to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Literal, Protocol, Self, TypeAlias, runtime_checkable

import msgspec

from ._errors import InvalidKeyError

__all__ = [
    "Body",
    "GetResult",
    "ObjectMeta",
    "ObjectStore",
    "PutMode",
    "PutResult",
    "StoreBase",
    "UpdateVersion",
    "as_body",
    "listing",
    "validate_key",
    "validate_prefix",
]


class UpdateVersion(msgspec.Struct, frozen=True):
    """Put mode: replace the object only if its current etag is ``etag``."""

    etag: str


PutMode: TypeAlias = Literal["create", "overwrite"] | UpdateVersion
# What a put takes: any bytes-like object (stores keep a snapshot of it as ``bytes``).
Body: TypeAlias = bytes | bytearray | memoryview


class GetResult(msgspec.Struct, frozen=True):
    body: bytes
    etag: str


class PutResult(msgspec.Struct, frozen=True):
    etag: str


class ObjectMeta(msgspec.Struct, frozen=True):
    key: str
    size: int
    etag: str


@runtime_checkable
class ObjectStore(Protocol):
    """What slate-epoch needs from storage.

    ``put`` modes: ``"overwrite"`` always writes; ``"create"`` raises ``AlreadyExistsError`` if
    the key exists; ``UpdateVersion(etag)`` raises ``PreconditionError`` if the stored etag
    differs or the key is missing. Each put is atomic: readers see the old object or the new one.
    Errors are the ``StoreError`` subclasses; ``TransientStoreError`` means the outcome is unknown.

    Portable code (the core is) relies on nothing more. In particular, a store may refuse to hold
    both ``a`` and ``a/b`` (a folder can't be a file), and rewriting identical bytes may keep the
    same etag (S3's etag is a content hash) or not (memory, local).
    """

    async def get(self, key: str) -> GetResult: ...

    async def head(self, key: str) -> ObjectMeta: ...

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult: ...

    def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        """Keys under ``prefix`` in ascending order, only those after ``start_after``.
        A caller may stop early; a paged store then fetches no further page."""
        ...

    async def delete(self, key: str) -> None: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class StoreBase:
    """What every store shares: ``async with store:`` opens it, ``aclose()`` closes it.

    A store that holds nothing to release (memory, local) uses both as they are; one that owns a
    client opens it in ``__aenter__`` and releases it in ``aclose`` (idempotent, and done even
    while the caller is being cancelled).
    """

    async def aclose(self) -> None:
        """Release what the store holds; nothing, here."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def as_body(body: object) -> bytes:
    """``body`` as ``bytes``, if it is bytes-like (``bytes``, ``bytearray``, ``memoryview``);
    anything else is a ``TypeError`` (``bytes(3)`` would silently make three zero bytes)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)  # a snapshot: the caller may reuse its buffer while we write
    raise TypeError(
        f"an object's body must be bytes-like (bytes, bytearray, memoryview), "
        f"not {type(body).__name__}"
    )


_FORBIDDEN_CHARS = ("\\", "\x00")
MAX_KEY_BYTES = 1024  # S3's limit, so a key valid on one backend is valid on all


def validate_key(key: str) -> str:
    """Return ``key`` if every store can hold it, else raise ``InvalidKeyError``.

    A key is a relative path of non-empty components joined by ``/``; ``.`` and ``..`` are
    refused (a local store would resolve them outside its root), as are backslashes and NUL.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError("key is empty")
    if key.startswith("/"):
        raise InvalidKeyError(f"key {key!r} starts with '/': keys are relative")
    for char in _FORBIDDEN_CHARS:
        if char in key:
            raise InvalidKeyError(f"key {key!r} contains {char!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKeyError(f"key {key!r} has an empty, '.' or '..' component")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKeyError(f"key {key!r} is not valid Unicode (a lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key is {size} bytes in UTF-8; the most any store takes is 1024")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key, or a key followed by ``/``."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


@asynccontextmanager
async def listing(
    store: ObjectStore, prefix: str, *, start_after: str | None = None
) -> AsyncIterator[AsyncIterator[ObjectMeta]]:
    """``store.list(...)``, closed on exit even when the caller stops early, so a paged store
    drops its connection at once (the protocol only promises an ``AsyncIterator``; generators
    also have ``aclose``)."""
    iterator = store.list(prefix, start_after=start_after)
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
