"""``open_store(url)`` and the registry of backends behind it: a URL's scheme picks the backend.

Three kinds of backends share one registry, looked up by scheme:

- the built-in ones (``memory``, ``file``, ``s3``, ``az``/``azure``, ``gs``/``gcs``), imported only
  when a URL asks for them, so a missing extra costs nothing until it is needed;
- those registered in code with ``register_backend(scheme, factory)``;
- those of installed packages, declared in the entry-point group ``slate_epoch.backends``
  (name: the scheme, value: ``"module:factory"``), loaded the first time ``open_store`` meets a
  scheme it does not know yet.

A factory is called as ``factory(url, **options)`` and returns an ``ObjectStore``, not yet
entered: the caller opens it with ``async with``.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Final, TypeAlias

from ._store import ObjectStore
from ._url import split_scheme

__all__ = ["ENTRY_POINT_GROUP", "BackendFactory", "open_store", "register_backend"]

ENTRY_POINT_GROUP: Final = "slate_epoch.backends"

BackendFactory: TypeAlias = Callable[..., ObjectStore]

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


@dataclass(frozen=True)
class _Lazy:
    """A backend imported on first use: a built-in one, or an installed package's."""

    load: Callable[[], BackendFactory]


def _built_in(module: str, attribute: str, extra: str | None) -> _Lazy:
    """``module:attribute``, whose missing dependencies ``extra`` installs."""

    def load() -> BackendFactory:
        try:
            target: Any = importlib.import_module(module)
        except ImportError as exc:
            missing = exc.name or ""
            if extra is None or missing.startswith("slate_epoch"):
                raise
            raise ImportError(
                f"the {module.rsplit('.', 1)[-1]} backend needs {missing!r}, which is not "
                f"installed: pip install 'slate-epoch[{extra}]'",
                name=missing,
            ) from exc
        for part in attribute.split("."):
            target = getattr(target, part)
        factory: BackendFactory = target
        return factory

    return _Lazy(load)


_BUILT_IN: Final[dict[str, _Lazy]] = {
    "memory": _built_in("slate_epoch.backends.memory", "MemoryStore.from_url", None),
    "file": _built_in("slate_epoch.backends.local", "LocalStore.from_url", None),
    "s3": _built_in("slate_epoch.backends.s3", "S3Store.from_url", "s3"),
    "az": _built_in("slate_epoch.backends.azure", "AzureBlobStore.from_url", "azure"),
    "azure": _built_in("slate_epoch.backends.azure", "AzureBlobStore.from_url", "azure"),
    "gs": _built_in("slate_epoch.backends.gcs", "GCSStore.from_url", "gcs"),
    "gcs": _built_in("slate_epoch.backends.gcs", "GCSStore.from_url", "gcs"),
}

_lock = threading.Lock()
_registry: dict[str, _Lazy | BackendFactory] = dict(_BUILT_IN)
_entry_points_loaded = False


def register_backend(scheme: str, factory: BackendFactory, *, replace: bool = False) -> None:
    """Make ``open_store`` answer URLs of ``scheme`` with ``factory(url, **options)``.

    ``scheme`` is lowercase letters, digits, ``+``, ``-`` and ``.``, starting with a letter. A
    scheme already taken (built-in or registered) is a ``ValueError`` unless ``replace=True``.
    """
    if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
        raise ValueError(
            f"a scheme is lowercase letters, digits, '+', '-' and '.', starting with a letter; "
            f"got {scheme!r}"
        )
    if not callable(factory):
        raise TypeError(f"factory must be callable, not {type(factory).__name__}")
    with _lock:
        if scheme in _registry and not replace:
            raise ValueError(
                f"scheme {scheme!r} is taken; register_backend(..., replace=True) replaces it"
            )
        _registry[scheme] = factory


def available_schemes() -> list[str]:
    """Every scheme ``open_store`` answers, entry points included."""
    _load_entry_points()
    with _lock:
        return sorted(_registry)


def open_store(url: str, **options: Any) -> ObjectStore:
    """Return the store a URL names, ready for ``async with``.

    - ``memory://``: a fresh, empty ``MemoryStore``;
    - ``file:///abs/dir``: a ``LocalStore`` rooted at that folder (created if missing);
      ``options`` go to ``LocalStore`` (e.g. ``durable=False``);
    - ``s3://bucket/prefix?endpoint_url=...&region=...``: an ``S3Store`` (extra ``s3``);
    - ``az://container/prefix`` (or ``azure://``): an ``AzureBlobStore`` (extra ``azure``);
    - ``gs://bucket/prefix`` (or ``gcs://``): a ``GCSStore`` (extra ``gcs``);
    - any scheme given to ``register_backend`` or declared by an installed package.

    Raises ``ValueError`` for an unknown scheme (naming the available ones, never the URL, which
    may hold a secret) or a malformed URL, and ``ImportError`` naming the extra to install when a
    built-in backend's dependencies are missing.
    """
    scheme = split_scheme(url)
    factory = _factory(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in available_schemes())
        shown = f"{scheme!r}" if _SCHEME.fullmatch(scheme) else "(none)"
        raise ValueError(f"unsupported URL scheme {shown}; available: {known}")
    return factory(url, **options)


def _factory(scheme: str) -> BackendFactory | None:
    with _lock:
        entry = _registry.get(scheme)
    if entry is None:
        _load_entry_points()
        with _lock:
            entry = _registry.get(scheme)
    if isinstance(entry, _Lazy):
        return entry.load()
    return entry


def _load_entry_points() -> None:
    """Add the installed packages' backends, once; a scheme already taken keeps its backend."""
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        for point in entry_points(group=ENTRY_POINT_GROUP):
            if _SCHEME.fullmatch(point.name) and point.name not in _registry:
                _registry[point.name] = _Lazy(point.load)
