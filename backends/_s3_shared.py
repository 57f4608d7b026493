"""What the S3 stores of one process share: aiobotocore sessions, botocore's models, TLS contexts;
and the transport they all use.

Opening a store used to build a new ``AioSession`` (~5 ms), load botocore's S3 models into it
(~80 ms, in a worker thread) and build a TLS context with the CA bundle (~15 ms, in a worker
thread), every time. Here:

- botocore's data loader (the parsed JSON models) is one per process and data path: plain data,
  safe to share between sessions, threads and event loops;
- TLS contexts are built once per process for each ``verify`` / client certificate setting
  (``Transport``); an ``SSLContext`` may serve any number of connections, in any thread;
- an ``AioSession`` is one per event loop, and replaced when the ``AWS_*`` environment changes.
  A session holds more than models: it caches the profile, the config files and the credentials
  it resolved, and its credential providers (container, instance metadata) keep an HTTP client and
  anyio locks that belong to the event loop that first used them. Per loop, none of that ever
  crosses loops or threads; per environment, a store opened after ``AWS_PROFILE`` or the keys
  changed sees the new values, as it did with a session of its own.

Each store still creates, owns and closes its client: only the session is shared.

After ``fork()`` the child drops the sessions (and the lock, which another thread may have held
at the fork): a session there may hold the parent's sockets. Models and TLS contexts hold none,
and are kept.
"""

from __future__ import annotations

import hashlib
import io
import os
import ssl
import threading
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from aiobotocore.config import AioConfig
from aiobotocore.httpxsession import HttpxSession
from aiobotocore.session import AioSession
from anyio.lowlevel import current_token

__all__ = ["Transport", "session"]

_TLSKey = tuple[object, object, object]


class Transport(HttpxSession):  # type: ignore[misc]  # aiobotocore ships no types
    """aiobotocore's httpx transport (it runs on asyncio and trio), with what it puts on the wire
    made plain and each TLS context built once per process."""

    async def send(self, request: Any) -> Any:
        """Send one request (an ``AWSPreparedRequest``: signed, about to go out) with:

        - Its body as bytes, in one piece. botocore hands a put's body over as a ``BytesIO``,
          and aiobotocore's httpx transport streams a file-like body line by line, yielding to
          the event loop after each line: a 1 MiB binary body went out in ~4,000 writes, in
          ~300 ms instead of ~10 ms. What Content-Length counts is the rest from the current
          position. Each attempt gets a new prepared request over botocore's own ``BytesIO``,
          which this only reads: retries resend the same bytes.
        - No ``Expect: 100-continue``: botocore asks for it on every PutObject, so that a client
          waits for the server's "100 Continue" before it sends the body (aiohttp waits: two
          round trips per write; httpx sends at once and the server's "100 Continue" is for
          nothing). Our bodies are small manifests and segments: it buys nothing.
        - ``Accept-Encoding: identity``, as aiobotocore's aiohttp transport sends and botocore
          expects (S3 bodies are the bytes as stored); left alone, httpx asks for gzip, and a
          compressing proxy would hand a GetObject back compressed.

        botocore signs neither header.
        """
        body = request.body
        if isinstance(body, io.BytesIO):
            start = body.tell()
            request.body = body.getvalue() if start == 0 else body.getvalue()[start:]
        request.headers.pop("Expect", None)  # a botocore HeadersDict: case-insensitive keys
        request.headers["Accept-Encoding"] = "identity"
        return await super().send(request)

    def _build_ssl_context(self) -> ssl.SSLContext:
        """aiobotocore builds the context (loading the CA bundle: ~15 ms) in a worker thread when
        a client opens; this keeps that, and reuses what an earlier client built with the same
        ``verify`` value and client certificate. aiobotocore calls it only for those settings:
        a context given in ``connector_args`` bypasses it."""
        key: _TLSKey = (self._verify, self._cert_file, self._key_file)
        return _shared.tls_context(key, super()._build_ssl_context)


class _Shared:
    def __init__(self) -> None:
        self.reset()
        self.loaders: dict[object, Any] = {}
        self.tls: dict[_TLSKey, ssl.SSLContext] = {}

    def reset(self) -> None:
        """A new lock and no sessions: at start, and in a child process after ``fork()``."""
        self.lock = threading.Lock()
        self.sessions: WeakKeyDictionary[object, tuple[bytes, Any]] = WeakKeyDictionary()

    def tls_context(self, key: _TLSKey, build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        with self.lock:
            found = self.tls.get(key)
        if found is not None:
            return found
        built = build()  # outside the lock: it reads files; two first builds may race, one wins
        with self.lock:
            return self.tls.setdefault(key, built)


_shared = _Shared()
os.register_at_fork(after_in_child=_shared.reset)


def session() -> Any:
    """This event loop's ``AioSession`` for the current ``AWS_*`` environment (created on first
    use). Call it from inside the event loop."""
    loop = current_token().native_token
    environment = _aws_environment()
    with _shared.lock:
        found = _shared.sessions.get(loop)
    if found is not None and found[0] == environment:
        return found[1]
    # Only this loop's thread reads or writes this loop's entry, and nothing below awaits:
    # no other task can create a second session for it meanwhile.
    created = _new_session()
    with _shared.lock:
        _shared.sessions[loop] = (environment, created)
    return created


def _new_session() -> Any:
    created = AioSession()
    # The credential providers pick their async primitives (asyncio's or anyio's) from the
    # session's default config: anyio's, so that they run on trio too.
    created.set_default_client_config(AioConfig(http_session_cls=Transport))
    data_path = created.get_config_variable("data_path")
    with _shared.lock:
        loader = _shared.loaders.get(data_path)
    if loader is None:
        loader = created.get_component("data_loader")
        with _shared.lock:
            loader = _shared.loaders.setdefault(data_path, loader)
    created.register_component("data_loader", loader)
    return created


def _aws_environment() -> bytes:
    """A digest of the ``AWS_*`` variables (all that botocore reads from the environment): a
    digest rather than the values, so that no copy of a secret key is kept here."""
    digest = hashlib.blake2b(digest_size=16)
    for name, value in sorted(os.environ.items()):
        if name.startswith("AWS_"):
            digest.update(f"{name}={value}\0".encode(errors="surrogateescape"))
    return digest.digest()
