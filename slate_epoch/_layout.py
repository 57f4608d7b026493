"""Where everything lives on the store, under a root: the one place that names keys.

::

    {root}/manifest/{id:020d}.manifest    the manifest versions (ids from 1, contiguous)
    {root}/manifest-boundary              retention's boundary for them
    {root}/wal/{id:020d}.wal              the write-ahead log (entries and fences)
    {root}/wal-boundary                   the log's trim boundary
    {root}/lease/{role, encoded}          a role's lease, when held through lead()

    slate-epoch-check/{token}/...         ``check_store``'s probe objects, removed again

Ids are 20 ASCII digits; any other name in those folders is a foreign object, never read,
counted or deleted. The check's probes live under a fresh random token of 32 hex digits: even
under a root named ``slate-epoch-check``, no manifest, log or lease key has that form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._store import validate_key

__all__ = [
    "CHECK_FOLDER",
    "Numbered",
    "check_probes",
    "check_root",
    "encode_role",
    "lease_key",
    "log_boundary_key",
    "log_entries",
    "manifest_boundary_key",
    "manifest_versions",
    "numbered_id",
]

CHECK_FOLDER: Final = "slate-epoch-check"
_DIGITS: Final = frozenset("0123456789")
# Characters kept as they are in an encoded role: lower-case letters, digits, and the unreserved
# punctuation of RFC 3986 but "." (so "." and ".." can never come out).
_SAFE_IN_ROLE: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_~")
_WIDTH: Final = 20


def check_root(root: str) -> str:
    """``root`` without surrounding ``/``; ``InvalidKeyError`` if no key can start with it."""
    root = root.strip("/")
    if root:
        validate_key(root)
    return root


def numbered_id(name: str, suffix: str) -> int | None:
    """The id in a numbered object's name (20 ASCII digits, then ``suffix``); None for any
    other name. (``str.isdigit`` would accept any Unicode digit, and ``int`` parse some.)"""
    digits = name[:_WIDTH]
    if len(name) != _WIDTH + len(suffix) or not name.endswith(suffix) or set(digits) - _DIGITS:
        return None
    return int(digits)


@dataclass(frozen=True)
class Numbered:
    """The names of a folder of numbered objects: ``{folder}{id:020d}{suffix}``."""

    folder: str  # ends with "/"
    suffix: str

    def key(self, object_id: int) -> str:
        if object_id < 1:
            raise ValueError(f"ids start at 1, got {object_id}")
        return f"{self.folder}{object_id:0{_WIDTH}d}{self.suffix}"

    def id_of(self, key: str) -> int | None:
        """The id ``key`` names in this folder; None for anything else."""
        if not key.startswith(self.folder):
            return None
        return numbered_id(key[len(self.folder) :], self.suffix)


def _under(root: str, name: str) -> str:
    root = check_root(root)
    return f"{root}/{name}" if root else name


def manifest_versions(root: str) -> Numbered:
    return Numbered(_under(root, "manifest") + "/", ".manifest")


def manifest_boundary_key(root: str) -> str:
    return _under(root, "manifest-boundary")


def log_entries(root: str) -> Numbered:
    return Numbered(_under(root, "wal") + "/", ".wal")


def log_boundary_key(root: str) -> str:
    return _under(root, "wal-boundary")


def encode_role(role: str) -> str:
    """``role`` as one key component, whatever it holds: every character but ``a-z 0-9 - _ ~``
    becomes ``%XX`` per UTF-8 byte, so ``/``, ``.``, ``..`` and a leading ``.`` never reach the
    store, and upper case is encoded too, so that two roles differing only in case stay two
    objects on a case-insensitive filesystem (a local store on macOS)."""
    return "".join(
        char if char in _SAFE_IN_ROLE else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in role
    )


def lease_key(root: str, role: str) -> str:
    """Where the lease of ``role`` under ``root`` lives. ``InvalidKeyError`` if no store could
    hold it (a bad root, or a role so long the key passes 1024 bytes)."""
    if not isinstance(role, str) or not role or not role.isprintable():
        raise ValueError(f"role must be a non-empty printable str, got {role!r}")
    return validate_key(_under(root, f"lease/{encode_role(role)}"))


def check_probes(token: str) -> str:
    """The folder (ending with ``/``) of one store check's probe objects."""
    if len(token) != 32 or set(token) - set("0123456789abcdef"):
        raise ValueError(f"a check's token is 32 lower-case hex digits, got {token!r}")
    return f"{CHECK_FOLDER}/{token}/"
