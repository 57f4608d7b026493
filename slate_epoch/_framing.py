"""The frame around every object slate-epoch writes: magic, checksum, format version, body.

::

    offset 0   4 bytes  magic: what kind of object (b"SLEM" manifest, b"SLEB" boundary, ...)
    offset 4   4 bytes  CRC-32 (zlib) of every byte from offset 8 on, big-endian
    offset 8   2 bytes  format version, big-endian
    offset 10  ...      the body

The header never changes across format versions, so any future reader can tell "damaged" from
"newer than me": the checksum is verified before the version is believed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Final

from ._errors import SlateEpochError, UnsupportedFormatError

__all__ = ["FORMAT_VERSION", "HEADER_SIZE", "frame", "unframe"]

FORMAT_VERSION: Final = 1
_HEADER: Final = struct.Struct(">4sIH")
HEADER_SIZE: Final = _HEADER.size

# How a caller names a damaged object: ``corrupt(key, reason)`` (ManifestCorruptError, ...).
Corrupt = Callable[[str, str], SlateEpochError]


def frame(magic: bytes, body: bytes) -> bytes:
    """``body`` in a frame of kind ``magic``, at the current format version."""
    tail = FORMAT_VERSION.to_bytes(2, "big") + body
    return magic + zlib.crc32(tail).to_bytes(4, "big") + tail


def unframe(magic: bytes, data: bytes, key: str, corrupt: Corrupt) -> memoryview:
    """The body of the framed object ``data`` stored at ``key``, after checking its magic, its
    checksum and then its format version. A damaged object raises ``corrupt(key, reason)``;
    an intact one from a newer format, ``UnsupportedFormatError``."""
    if len(data) < HEADER_SIZE:
        raise corrupt(key, f"{len(data)} bytes is shorter than the header")
    found, checksum, version = _HEADER.unpack_from(data)
    if found != magic:
        raise corrupt(key, f"bad magic {found!r}: not a slate-epoch {magic!r} object")
    if zlib.crc32(memoryview(data)[8:]) != checksum:
        raise corrupt(key, "checksum mismatch")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(key, version, FORMAT_VERSION)
    if version < 1:
        raise corrupt(key, f"format version {version} was never written")
    return memoryview(data)[HEADER_SIZE:]
