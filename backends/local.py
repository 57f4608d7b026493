"""A store on a local folder: one file per object, safe across threads and OS processes.

Guarantees (on a local POSIX filesystem: Linux or macOS, e.g. ext4, xfs, btrfs, tmpfs, APFS):

- **Atomic create across processes.** ``mode="create"`` writes a temp file and hard-links it to
  the key (``link(2)`` fails if the name exists), so of any number of racing creators, in any
  number of processes, exactly one wins; the others get ``AlreadyExistsError``.
- **Compare-and-swap across processes.** ``UpdateVersion``, ``"overwrite"`` and ``delete`` run
  under an exclusive ``flock(2)`` on a per-key lock file (keys are striped over a fixed set of
  lock files), so reading the current etag and replacing the object is one atomic step. Waiting
  for a lock is bounded by ``lock_timeout`` (then ``TransientStoreError``) and can be cancelled.
- **Atomic replace.** A reader sees the old object or the new one, never a mix: objects are
  written to a temp file and renamed (or linked) into place; an object file is never modified.
- **Durability** (``durable=True``, the default): before a put returns, the object's data and the
  directory entries leading to it (every folder on its path up to the store's root) are fsynced,
  so a completed put survives a power loss. ``durable=False`` skips every fsync: much faster,
  crash-unsafe.
- **Etags never repeat for a key** across rewrites, even with identical bytes (see ``_stamp``),
  as long as the system clock does not jump backwards across a delete and re-create.

Not guaranteed / not supported:

- Windows (no ``fcntl``); network filesystems (NFS, SMB, some FUSE) unless they implement
  ``flock`` and ``link`` atomically across clients - most do not; filesystems whose timestamps are
  coarser than a second (FAT).
- A key and a key below it (``a`` and ``a/b``) cannot both exist, unlike in S3: the second put
  raises ``StoreError``. Keys that the filesystem considers equal (case or Unicode normalisation
  on macOS) name the same object.
- Everything under ``<root>/.slate-epoch/`` (temp files, lock files) belongs to the store: keys
  cannot name it, listings never show it, and nobody else may change it.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import os
import secrets
import stat
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio.from_thread
import anyio.to_thread

from slate_epoch._errors import (
    AccessDeniedError,
    AlreadyExistsError,
    InvalidKeyError,
    NotFoundError,
    PreconditionError,
    StoreError,
    TransientStoreError,
)
from slate_epoch._store import (
    Body,
    GetResult,
    ObjectMeta,
    PutMode,
    PutResult,
    StoreBase,
    UpdateVersion,
    as_body,
    validate_key,
    validate_prefix,
)
from slate_epoch._url import parse_store_url

__all__ = ["LocalStore"]

RESERVED_DIR = ".slate-epoch"
_LOCK_STRIPES = 64
_LIST_FIRST_BATCH = 100  # a caller that stops after a few keys pays for few stats
_LIST_BATCH = 1000
_PLACE_ATTEMPTS = 16  # folders removed by a concurrent delete while we create into them
# A temp file lives for the milliseconds between its write and its link or rename; one this old
# was left by a process that crashed (or has been stopped for an hour: its put then fails with
# TransientStoreError when it resumes, and nothing is lost). Swept when a store opens.
_STALE_TEMP_SECONDS = 3600.0
_SWEEP_MOST = 10_000  # temp files looked at per open, so that opening stays bounded
_FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None)  # macOS: fsync alone is no barrier
# errnos that mean "the outcome is unknown / try again" rather than "this cannot work"
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EIO", "EAGAIN", "EINTR", "ETIMEDOUT", "EBUSY", "ESTALE", "ENOLCK")
    if hasattr(errno, name)
)


def _is_reserved(component: str) -> bool:
    # casefold: on a case-insensitive filesystem (macOS) ".SLATE-EPOCH" is the same folder
    return component.casefold() == RESERVED_DIR


def _utf8_ok(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_key(key: str) -> str:
    validate_key(key)
    if _is_reserved(key.split("/", 1)[0]):
        raise InvalidKeyError(f"key {key!r}: {RESERVED_DIR!r} is reserved by the local store")
    return key


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _translate(exc: OSError, what: str) -> StoreError:
    """An ``OSError`` that no caller handled, as a store error (the caller chains it)."""
    reason = f"{what}: {exc.strerror or exc} (errno {exc.errno})"
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientStoreError(reason)
    if isinstance(exc, PermissionError):
        return AccessDeniedError(reason)
    return StoreError(reason)


def _fsync_fd(fd: int) -> None:
    if _FULLFSYNC is not None:
        try:
            fcntl.fcntl(fd, _FULLFSYNC)
        except OSError:
            pass  # not supported by this filesystem: plain fsync is the best there is
        else:
            return
    os.fsync(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # removed meanwhile (a concurrent delete): nothing left to make durable
    try:
        _fsync_fd(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, body: bytes) -> None:
    view = memoryview(body)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytes:
    # Object files are never modified in place (a new version is a new inode renamed over the
    # old one), so the size from fstat on this fd is the size of what this fd reads.
    parts: list[bytes] = []
    while size > 0:
        chunk = os.read(fd, size)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


class LocalStore(StoreBase):
    """Objects as files under ``root``: key ``a/b/c`` is the file ``root/a/b/c``.

    ``root`` is created (with its parents) if missing. ``durable=False`` skips every fsync.
    ``lock_timeout`` bounds the wait for a per-key lock (overwrite, update, delete), in seconds.
    Every operation runs its system calls in one hop to a worker thread, so the event loop
    (asyncio or trio) never blocks on the disk.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        durable: bool = True,
        lock_timeout: float = 30.0,
    ) -> None:
        if lock_timeout < 0:
            raise ValueError(f"lock_timeout must be >= 0, not {lock_timeout!r}")
        self._root = os.path.abspath(os.fspath(root))
        self._durable = durable
        self._lock_timeout = float(lock_timeout)
        self._tmp_dir = os.path.join(self._root, RESERVED_DIR, "tmp")
        self._lock_dir = os.path.join(self._root, RESERVED_DIR, "locks")
        try:
            created = self._makedirs(self._root)
            created += self._makedirs(self._tmp_dir)
            created += self._makedirs(self._lock_dir)
            if durable:
                for parent in dict.fromkeys(os.path.dirname(d) for d in created):
                    _fsync_dir(parent)
            self._sweep_stale_temp_files()
        except OSError as exc:
            raise _translate(exc, f"cannot set up the store folder {self._root!r}") from exc

    @classmethod
    def from_url(cls, url: str, **options: Any) -> LocalStore:
        """``file:///absolute/folder`` (or ``file://localhost/...``); ``options`` are keyword
        arguments of ``LocalStore`` (e.g. ``durable=False``). The URL takes no query."""
        parsed = parse_store_url(url)
        if parsed.scheme != "file":
            raise ValueError("not a file:// URL")
        if parsed.location not in ("", "localhost"):
            raise ValueError(
                "file URL must be file:///absolute/path (no host, no relative path), "
                f"got host {parsed.location!r}"
            )
        if not parsed.path:
            raise ValueError("file URL must name an absolute folder other than '/'")
        return cls("/" + parsed.path, **options)

    @property
    def root(self) -> Path:
        return Path(self._root)

    @property
    def durable(self) -> bool:
        return self._durable

    def __repr__(self) -> str:
        return f"LocalStore({self._root!r}, durable={self._durable!r})"

    # -- the protocol ---------------------------------------------------------------------

    async def get(self, key: str) -> GetResult:
        _check_key(key)
        return await anyio.to_thread.run_sync(self._get_sync, key)

    async def head(self, key: str) -> ObjectMeta:
        _check_key(key)
        return await anyio.to_thread.run_sync(self._head_sync, key)

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        _check_key(key)
        if not (mode in ("create", "overwrite") or isinstance(mode, UpdateVersion)):
            raise ValueError(f"unknown put mode {mode!r}")
        body = as_body(body)
        etag = await anyio.to_thread.run_sync(self._put_sync, key, body, mode)
        return PutResult(etag=etag)

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectMeta]:
        validate_prefix(prefix)
        walk = _Walk(self._root, prefix, start_after)
        limit = _LIST_FIRST_BATCH
        while not walk.done:
            batch = await anyio.to_thread.run_sync(walk.next_batch, limit)
            for meta in batch:
                yield meta
            limit = _LIST_BATCH

    async def delete(self, key: str) -> None:
        _check_key(key)
        await anyio.to_thread.run_sync(self._delete_sync, key)

    # -- blocking parts: each runs whole in one worker thread -----------------------------

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}"

    def _get_sync(self, key: str) -> GetResult:
        try:
            try:
                fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFoundError(key) from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise NotFoundError(key)  # a folder holding longer keys, not an object
                body = _read_exactly(fd, st.st_size)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _translate(exc, f"cannot read {key!r}") from exc
        return GetResult(body=body, etag=_etag(st))

    def _head_sync(self, key: str) -> ObjectMeta:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(key) from None
        except OSError as exc:
            raise _translate(exc, f"cannot stat {key!r}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise NotFoundError(key)
        return ObjectMeta(key=key, size=st.st_size, etag=_etag(st))

    def _put_sync(self, key: str, body: bytes, mode: PutMode) -> str:
        path = self._path(key)
        try:
            if mode == "create":
                # No lock: link(2) is the atomic create-if-absent, across processes.
                tmp, etag = self._write_temp(body, floor_ns=None)
                try:
                    self._place(tmp, path, key, link=True)
                finally:
                    self._discard(tmp)
                return etag
            with self._locked(key):
                floor_ns = None
                try:
                    st: os.stat_result | None = os.stat(path)
                except (FileNotFoundError, NotADirectoryError):
                    st = None
                if st is not None and not stat.S_ISREG(st.st_mode):
                    st = None  # a folder: no object (placing one there fails below)
                if isinstance(mode, UpdateVersion) and (st is None or _etag(st) != mode.etag):
                    raise PreconditionError(key)
                if st is not None:
                    floor_ns = st.st_mtime_ns
                tmp, etag = self._write_temp(body, floor_ns=floor_ns)
                try:
                    self._place(tmp, path, key, link=False)
                finally:
                    self._discard(tmp)
                return etag
        except OSError as exc:
            raise _translate(exc, f"cannot write {key!r}") from exc

    def _delete_sync(self, key: str) -> None:
        path = self._path(key)
        try:
            with self._locked(key):
                try:
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    return  # no object there (a folder is not one): nothing to delete
                except PermissionError:
                    if os.path.isdir(path):  # macOS says EPERM for unlink(folder)
                        return
                    raise
                # Remove the folders this left empty (S3 has none, and a later put of "a" must
                # not trip over an empty "a/"). rmdir fails on a non-empty folder, so a racing
                # put into it either lands first (we stop) or re-creates the folder (it retries).
                changed = os.path.dirname(path)
                while changed != self._root:
                    try:
                        os.rmdir(changed)
                    except OSError:
                        break
                    changed = os.path.dirname(changed)
                if self._durable:
                    _fsync_dir(changed)
        except OSError as exc:
            raise _translate(exc, f"cannot delete {key!r}") from exc

    # -- helpers (sync) --------------------------------------------------------------------

    def _write_temp(self, body: bytes, *, floor_ns: int | None) -> tuple[str, str]:
        """Write ``body`` to a new temp file in the reserved folder; return its path and etag."""
        tmp = os.path.join(self._tmp_dir, f"{os.getpid()}-{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            raise StoreError(
                f"the store folder {self._root!r} lost its {RESERVED_DIR}/tmp folder "
                "(was the store deleted?)"
            ) from None
        try:
            try:
                _write_all(fd, body)
                st = self._stamp(fd, floor_ns)
                if self._durable:
                    _fsync_fd(fd)
            finally:
                os.close(fd)
        except BaseException:
            self._discard(tmp)
            raise
        return tmp, _etag(st)

    @staticmethod
    def _stamp(fd: int, floor_ns: int | None) -> os.stat_result:
        """Set the file's mtime explicitly so that its etag is new for its key.

        The etag is ``inode-mtime-size`` and comes from ``stat`` alone. Inode numbers are reused
        as soon as an old version is unlinked, and the kernel's own mtime comes from a coarse
        clock (a tick of several ms), so a rewrite of the same size could get exactly the etag of
        an older version: an ``UpdateVersion`` holding that old etag would then wrongly succeed
        (ABA). So every write sets the mtime itself, from ``time.time_ns()``, and a write under the
        key's lock that replaces an existing object (``floor_ns`` is that object's mtime) uses at
        least ``floor_ns + 1``: along a key's versions the mtime strictly increases, so no etag
        ever comes back. Filesystems that truncate timestamps get a bigger step until the stored
        mtime really is past the floor. (A create after a delete has no floor: it relies on the
        clock not jumping back.) ``link`` and ``rename`` keep the inode and mtime, so the temp
        file's etag is the object's etag.
        """
        if floor_ns is None:
            t = time.time_ns()
            os.utime(fd, ns=(t, t))
            return os.fstat(fd)
        for step in (1, 1_000, 1_000_000, 1_000_000_000, 2_000_000_000):
            t = max(time.time_ns(), floor_ns + step)
            os.utime(fd, ns=(t, t))
            st = os.fstat(fd)
            if st.st_mtime_ns > floor_ns:
                return st
        raise StoreError("the filesystem keeps timestamps too coarse for unique etags")

    def _place(self, tmp: str, path: str, key: str, *, link: bool) -> None:
        """Link (create-if-absent) or rename (replace) ``tmp`` to ``path``, creating folders."""
        for _ in range(_PLACE_ATTEMPTS):
            try:
                if link:
                    os.link(tmp, path)
                else:
                    os.replace(tmp, path)
                break
            except FileNotFoundError:
                pass  # a folder on the way is missing: create it below, then retry
            except FileExistsError:  # only link() says this
                if os.path.isdir(path):
                    raise self._folder_collision(key) from None
                raise AlreadyExistsError(key) from None
            except IsADirectoryError:
                raise self._folder_collision(key) from None
            except NotADirectoryError:
                raise self._object_collision(key) from None
            # FileNotFoundError: removed again by a concurrent delete's cleanup: go round
            with suppress(FileNotFoundError):
                self._make_parents(key)
        else:
            raise TransientStoreError(
                f"cannot write {key!r}: its folders kept disappearing under concurrent deletes"
            )
        if self._durable:
            # The new entry in its folder, then the entry of every folder on its path, up to the
            # store's root: not only those this call created. A racing creator may have made a
            # folder and lost the create before it could fsync it, and nobody else would. (A
            # clean folder's fsync costs tens of microseconds.)
            directory = os.path.dirname(path)
            while True:
                _fsync_dir(directory)
                if directory == self._root or len(directory) <= len(self._root):
                    break
                directory = os.path.dirname(directory)

    def _make_parents(self, key: str) -> builtins.list[str]:
        """Create the folders above ``key`` (top-down); return those this call created."""
        created: builtins.list[str] = []
        path = self._root
        parts = key.split("/")[:-1]
        for part in parts:
            path = f"{path}/{part}"
            try:
                os.mkdir(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise self._object_collision(key) from None
            else:
                created.append(path)
        return created

    @staticmethod
    def _makedirs(path: str) -> builtins.list[str]:
        """``os.makedirs(path, exist_ok=True)`` that returns the folders it created."""
        missing: builtins.list[str] = []
        while not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        created: builtins.list[str] = []
        for directory in reversed(missing):
            try:
                os.mkdir(directory)
            except FileExistsError:
                if not os.path.isdir(directory):
                    raise
            else:
                created.append(directory)
        return created

    def _folder_collision(self, key: str) -> StoreError:
        return StoreError(
            f"cannot write {key!r}: {self._path(key)!r} is a folder holding longer keys "
            f"(a local store cannot hold both {key!r} and keys under {key + '/'!r})"
        )

    def _object_collision(self, key: str) -> StoreError:
        return StoreError(
            f"cannot write {key!r}: a shorter key on its path is an object, so no folder can "
            "be made there (a local store cannot hold both 'a' and 'a/b')"
        )

    def _sweep_stale_temp_files(self) -> None:
        """Delete temp files that crashed processes left behind, never a fresh one (another
        process may be writing it right now)."""
        cutoff_ns = time.time_ns() - int(_STALE_TEMP_SECONDS * 1e9)
        with os.scandir(self._tmp_dir) as entries:
            for seen, entry in enumerate(entries):
                if seen >= _SWEEP_MOST:
                    break
                try:
                    if entry.name.endswith(".tmp") and entry.stat().st_mtime_ns < cutoff_ns:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    pass  # linked and discarded by its writer, or swept by another opener

    @staticmethod
    def _discard(tmp: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(tmp)

    def _lock_path(self, key: str) -> str:
        """The lock file of ``key``'s stripe: a stable hash, the same in every process."""
        stripe = zlib.crc32(key.encode("utf-8")) % _LOCK_STRIPES
        return os.path.join(self._lock_dir, f"{stripe:02d}.lock")

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Hold the exclusive lock of ``key``'s stripe, across threads and processes.

        flock locks belong to an open file description, so every call opens the lock file
        anew: two threads of one process exclude each other as two processes do.
        """
        lock_path = self._lock_path(key)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            raise StoreError(
                f"the store folder {self._root!r} lost its {RESERVED_DIR}/locks folder "
                "(was the store deleted?)"
            ) from None
        try:
            deadline = time.monotonic() + self._lock_timeout
            delay = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransientStoreError(
                        f"timed out after {self._lock_timeout}s waiting for the lock of {key!r}"
                        f" ({lock_path})"
                    )
                anyio.from_thread.check_cancelled()  # the waiting task may be cancelled
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.02)
            yield
        finally:
            os.close(fd)  # releases the lock


class _Walk:
    """A lazy, resumable walk of the keys under a prefix, in ascending key order.

    Depth first, each folder's entries sorted by name with a folder sorting as ``name + "/"``:
    that is exactly the order of the full keys (Python's str order, which is S3's UTF-8 byte
    order). Only folders that can hold matching keys are entered. ``next_batch`` is called
    from worker threads, one call at a time.
    """

    def __init__(self, root: str, prefix: str, start_after: str | None) -> None:
        self._prefix = prefix
        self._start_after = start_after
        dir_key = prefix.rpartition("/")[0]
        self._stack: list[tuple[str, str, Iterator[tuple[str, str, bool]]]] = []
        self._start: tuple[str, str] | None = None
        if not (dir_key and _is_reserved(dir_key.split("/", 1)[0])):
            self._start = (f"{root}/{dir_key}", f"{dir_key}/") if dir_key else (root, "")
        self.done = self._start is None

    def _key_matches(self, key: str) -> bool:
        return key.startswith(self._prefix) and (
            self._start_after is None or key > self._start_after
        )

    def _folder_may_match(self, base: str) -> bool:
        # base is the folder's key followed by "/"; every key in it starts with base
        if not (base.startswith(self._prefix) or self._prefix.startswith(base)):
            return False
        after = self._start_after
        # skip when every key under base sorts at or before start_after
        return after is None or after < base or after.startswith(base)

    def _scan(self, path: str, base: str) -> Iterator[tuple[str, str, bool]] | None:
        entries: list[tuple[str, str, bool]] = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    name = entry.name
                    if "\\" in name or not _utf8_ok(name) or (not base and _is_reserved(name)):
                        continue  # no key can name it
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if is_dir:
                        if self._folder_may_match(f"{base}{name}/"):
                            entries.append((f"{name}/", name, True))
                    elif self._key_matches(base + name):
                        entries.append((name, name, False))
        except (FileNotFoundError, NotADirectoryError):
            return None  # the prefix's folder does not exist, or was just removed
        entries.sort()
        return iter(entries)

    def next_batch(self, limit: int) -> list[ObjectMeta]:
        try:
            return self._next_batch(limit)
        except OSError as exc:
            raise _translate(exc, f"cannot list {self._prefix!r}") from exc

    def _next_batch(self, limit: int) -> list[ObjectMeta]:
        out: list[ObjectMeta] = []
        if self._start is not None:
            path, base = self._start
            self._start = None
            entries = self._scan(path, base)
            if entries is not None:
                self._stack.append((path, base, entries))
        budget = limit * 4  # also bound the work per hop when few entries match
        while self._stack and len(out) < limit and budget > 0:
            budget -= 1
            path, base, entries = self._stack[-1]
            item = next(entries, None)
            if item is None:
                self._stack.pop()
                continue
            _, name, is_dir = item
            child = f"{path}/{name}"
            if is_dir:
                sub = self._scan(child, f"{base}{name}/")
                if sub is not None:
                    self._stack.append((child, f"{base}{name}/", sub))
                continue
            try:
                st = os.stat(child, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue  # deleted since the folder was read: skip, as a paged store would
            if stat.S_ISREG(st.st_mode):
                out.append(ObjectMeta(key=base + name, size=st.st_size, etag=_etag(st)))
        self.done = not self._stack and self._start is None
        return out
