"""A Google Cloud Storage store on the JSON API, over httpx, with google-auth for credentials.

The store owns one ``httpx.AsyncClient``, created on ``__aenter__`` and closed by ``aclose``. It
speaks the JSON API directly (a thin client, not a wrapper of a GCS library) because the protocol
rests on details that no Python GCS client lets us control all at once:

- every write is a **multipart upload** with ``ifGenerationMatch``: some servers (fake-gcs-server)
  ignore that precondition on ``uploadType=media`` uploads, and a create that is not enforced
  would let two claimers both win;
- a read returns the body and its generation from **one** response (``X-Goog-Generation``), so
  the etag always belongs to the bytes returned;
- listings are paged by hand (``pageToken``), one page per step of the consumer;
- every wait is bounded (connect/read timeouts per attempt, a bounded number of attempts).

httpx runs on asyncio and on trio (through anyio), so this store runs on both.

Credentials are Google's Application Default Credentials (google-auth: ``GOOGLE_APPLICATION_
CREDENTIALS``, ``gcloud auth application-default login``, the metadata server), never a URL or an
argument in a URL. When ``STORAGE_EMULATOR_HOST`` is set, the store talks to that host and sends
no credentials, as Google's own clients do.

Every native error is translated in one place, ``GCSStore._map_errors``, by HTTP status (never by
message text) and chained with ``raise ... from exc``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import os
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal, Self, TypeAlias
from urllib.parse import quote, urlsplit

import anyio
import anyio.to_thread
import backoff
import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport
import httpx

from slate_epoch._errors import (
    AccessDeniedError,
    AlreadyExistsError,
    BucketNotFoundError,
    InvalidKeyError,
    NotFoundError,
    PreconditionError,
    StoreError,
    StoreUnreachableError,
    TransientStoreError,
    UnsupportedStoreError,
)
from slate_epoch._store import (
    MAX_KEY_BYTES,
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
from slate_epoch._url import merge_options, named_location, parse_store_url

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_ENDPOINT",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_READ_TIMEOUT",
    "GCSStore",
]

# The operations, as named in error messages; "create" and "update" are conditional puts.
_Op: TypeAlias = Literal["get", "head", "put", "create", "update", "list", "delete"]

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_PAGE_SIZE = 1000  # the most GCS returns in one listing page

EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
# Objects only: read, create, replace, delete, list. (An OAuth scope caps what a token may do;
# IAM decides what the principal may do. Both must allow an operation.)
_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)

# What GCS's retry strategy names as retryable: timeouts, throttling and server errors.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Between two attempts: full jitter over 250 ms, 500 ms, 1 s, ... capped at 8 s.
_BACKOFF_FACTOR = 0.25
_BACKOFF_MAX = 8.0
# Closing the client only releases local sockets; bounded all the same.
_CLOSE_TIMEOUT = 10.0

_NOT_OPEN = (
    "GCSStore is not open: use `async with GCSStore(...) as store:` (or `async with "
    "open_store(url) as store:`) and call its methods inside that block"
)
_CREDENTIALS_FROM = (
    "Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth "
    "application-default login`, the metadata server)"
)


# --- arguments and URLs ---------------------------------------------------------------------------

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")


def _validate_bucket(bucket: str) -> str:
    """GCS's bucket naming rules, checked before any I/O."""
    if not isinstance(bucket, str):
        raise TypeError(f"bucket must be a str, not {type(bucket).__name__}")
    rules = (
        "3 to 63 characters (222 with dots, 63 between two dots), lowercase letters, digits, "
        "'-', '_' and '.', starting and ending with a letter or digit, not an IP address, not "
        "starting with 'goog' nor containing 'google'"
    )
    parts = bucket.split(".")
    if (
        not _BUCKET_RE.fullmatch(bucket)
        or not 3 <= len(bucket) <= (222 if len(parts) > 1 else 63)
        or any(not part or len(part) > 63 for part in parts)
        or bucket.startswith("goog")
        or "google" in bucket
    ):
        raise ValueError(f"invalid GCS bucket name {bucket!r}: {rules}")
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return bucket
    raise ValueError(f"invalid GCS bucket name {bucket!r}: it looks like an IP address")


def _validate_endpoint(endpoint_url: str, name: str = "endpoint_url") -> str:
    if not isinstance(endpoint_url, str):
        raise TypeError(f"{name} must be a str, not {type(endpoint_url).__name__}")
    parts = urlsplit(endpoint_url)
    if "@" in parts.netloc:
        raise ValueError(f"{name} must not carry credentials; they come from {_CREDENTIALS_FROM}")
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path.strip("/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(
            f"{name} must look like https://host[:port] (no path, no query), got {endpoint_url!r}"
        )
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"{name} has an invalid port: {endpoint_url!r}") from None
    return f"{parts.scheme}://{parts.netloc}"


def _emulator_endpoint() -> str | None:
    """``STORAGE_EMULATOR_HOST`` as an endpoint URL (``host:port`` alone means plain HTTP, as
    Google's clients read it), or None when it is unset or empty."""
    value = os.environ.get(EMULATOR_VARIABLE, "").strip()
    if not value:
        return None
    if "://" not in value:
        value = f"http://{value}"
    return _validate_endpoint(value, EMULATOR_VARIABLE)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
    return float(value)


def _int_between(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(raw)


_flag.__name__ = "true or false"  # parse_store_url names the expected kind by it

_URL_OPTIONS: dict[str, Any] = {
    "endpoint_url": str,
    "anonymous": _flag,
    "connect_timeout": float,
    "read_timeout": float,
    "max_attempts": int,
    "page_size": int,
}


def _validate_gcs_name(name: str) -> str:
    """What GCS refuses beyond ``validate_key``'s rules: CR or LF anywhere, a name longer than
    1024 bytes once the prefix is added, and ACME challenge names."""
    if "\r" in name or "\n" in name:
        raise InvalidKeyError(f"GCS object names cannot contain CR or LF: {name!r}")
    if len(name.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"the object name (prefix included) is over {MAX_KEY_BYTES} bytes in UTF-8"
        )
    if name.startswith(".well-known/acme-challenge/"):
        raise InvalidKeyError(f"GCS reserves names under .well-known/acme-challenge/: {name!r}")
    return name


def _generation(value: object, what: str) -> str:
    """A generation as the server sent it (a decimal string, or a number in some emulators)."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isdigit() or not text.isascii():
        raise StoreError(f"{what}: the server sent no usable generation ({value!r})")
    return text


def _size(value: object, what: str) -> int:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isdigit() or not text.isascii():
        raise StoreError(f"{what}: the server sent no usable size ({value!r})")
    return int(text)


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise StoreError(f"{what}: the server's answer is not a JSON object")
    return data


def _error_reason(response: httpx.Response) -> str:
    """GCS's error reason (``conditionNotMet``, ``notFound``, ...), for messages only: mapping is
    by status. Empty when the body is empty or not GCS's JSON error form."""
    try:
        error = response.json().get("error", {})
        reason = error.get("errors", [{}])[0].get("reason") or error.get("status") or ""
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return reason if isinstance(reason, str) and reason.isprintable() else ""


def _in_chain(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


# --- credentials ----------------------------------------------------------------------------------


class _AuthResponse(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class _AuthTransport(google.auth.transport.Request):
    """google-auth's own requests (token refresh, metadata server) over a synchronous httpx
    client: google-auth's credential code is synchronous, so it runs in a worker thread, and this
    keeps its waits under the store's timeouts."""

    def __init__(self, timeout: httpx.Timeout) -> None:
        self._timeout = timeout
        self._client = httpx.Client(timeout=timeout)

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _AuthResponse:
        limit = self._timeout
        if timeout is not None and self._timeout.read is not None:
            limit = httpx.Timeout(min(timeout, self._timeout.read), connect=self._timeout.connect)
        try:
            response = self._client.request(
                method, url, content=body, headers=headers, timeout=limit
            )
        except httpx.HTTPError as exc:
            raise google.auth.exceptions.TransportError(f"{type(exc).__name__}: {exc}") from exc
        return _AuthResponse(response)

    def close(self) -> None:
        self._client.close()


class _TokenTimeout(TransientStoreError):
    """No access token within the deadline; mapped with the operation's name."""


# --- the store ------------------------------------------------------------------------------------


class GCSStore(StoreBase):
    """Objects in one Google Cloud Storage bucket, optionally under a key prefix.

    ``prefix`` (``"a/b"``) is joined to every key with ``/`` and stripped from listed keys.
    ``connect_timeout`` and ``read_timeout`` bound each attempt (``read_timeout`` also bounds
    sending a body and waiting for a pooled connection); ``max_attempts`` (the first included)
    bounds the store's own retries of 408, 429, 5xx, timeouts and dropped connections, with
    full-jitter exponential backoff. ``page_size`` is the number of objects per listing page.

    ``endpoint_url`` defaults to ``STORAGE_EMULATOR_HOST`` when that is set (and then no
    credentials are sent), else to ``https://storage.googleapis.com``. ``anonymous=True`` sends
    no credentials to any endpoint (public buckets, emulators named by ``endpoint_url``).
    ``credentials`` is a ``google.auth.credentials.Credentials`` to use instead of Application
    Default Credentials (say, impersonated ones); it is never taken from a URL.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        anonymous: bool = False,
        credentials: google.auth.credentials.Credentials | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        self._bucket = _validate_bucket(bucket)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        self._prefix = _validate_gcs_name(validate_prefix(prefix).removesuffix("/"))
        if not isinstance(anonymous, bool):
            raise TypeError(f"anonymous must be a bool, not {type(anonymous).__name__}")
        if credentials is not None:
            if not isinstance(credentials, google.auth.credentials.Credentials):
                raise TypeError(
                    "credentials must be a google.auth.credentials.Credentials, not "
                    f"{type(credentials).__name__}"
                )
            if anonymous:
                raise ValueError("credentials and anonymous=True exclude each other")
        emulator = _emulator_endpoint() if endpoint_url is None else None
        if endpoint_url is not None:
            self._endpoint = _validate_endpoint(endpoint_url)
        else:
            self._endpoint = emulator or DEFAULT_ENDPOINT
        # An emulator named by STORAGE_EMULATOR_HOST gets no credentials, as with Google's clients.
        self._anonymous = anonymous or (emulator is not None and credentials is None)
        self._credentials = credentials
        self._connect_timeout = _positive("connect_timeout", connect_timeout)
        self._read_timeout = _positive("read_timeout", read_timeout)
        self._max_attempts = _int_between("max_attempts", max_attempts, 1, 100)
        self._page_size = _int_between("page_size", page_size, 1, DEFAULT_PAGE_SIZE)
        self._timeout = httpx.Timeout(
            connect=self._connect_timeout,
            read=self._read_timeout,
            write=self._read_timeout,
            pool=self._read_timeout,
        )
        # Getting a token: google-auth tries its endpoints itself (a few times at most); this
        # bounds the whole wait.
        self._auth_timeout = self._max_attempts * (self._connect_timeout + self._read_timeout)
        bucket_path = quote(self._bucket, safe="")
        self._bucket_url = f"{self._endpoint}/storage/v1/b/{bucket_path}"
        self._upload_url = f"{self._endpoint}/upload/storage/v1/b/{bucket_path}/o"
        self._stack: AsyncExitStack | None = None
        self._client: httpx.AsyncClient | None = None
        self._auth_transport: _AuthTransport | None = None
        self._auth_lock = anyio.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> GCSStore:
        """``gs://bucket[/prefix][?endpoint_url=...&read_timeout=...]`` (or ``gcs://``);
        ``options`` are keyword arguments of ``GCSStore`` not given in the URL. A URL carrying
        credentials is refused, and never repeated in the error."""
        parsed = parse_store_url(url, options=_URL_OPTIONS, credentials_from=_CREDENTIALS_FROM)
        if parsed.scheme not in ("gs", "gcs"):
            raise ValueError("not a gs:// or gcs:// URL")
        bucket = named_location(
            parsed,
            "bucket",
            no_port="give the server as ?endpoint_url=http://host:port "
            "(or set STORAGE_EMULATOR_HOST)",
        )
        return cls(bucket, parsed.path, **merge_options(parsed, options))

    def __repr__(self) -> str:
        where = "" if self._endpoint == DEFAULT_ENDPOINT else f", endpoint_url={self._endpoint!r}"
        return f"GCSStore({self._bucket!r}, {self._prefix!r}{where})"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def endpoint_url(self) -> str:
        return self._endpoint

    @property
    def anonymous(self) -> bool:
        """Whether requests go out without credentials."""
        return self._anonymous

    @property
    def client(self) -> httpx.AsyncClient:
        """The httpx client, while the store is open: for event hooks
        (``client.event_hooks["request"].append(hook)``) and diagnostics. The store owns it; do
        not close it."""
        if self._client is None:
            raise RuntimeError(_NOT_OPEN)
        return self._client

    # --- lifecycle ---

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("GCSStore is already open")
        stack = self._stack = AsyncExitStack()  # taken at once: a second enter fails fast
        try:
            client = await stack.enter_async_context(
                httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
            )
        except BaseException:  # including cancellation: release what was opened, then re-raise
            self._stack = None
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stack.aclose()
            raise
        if self._stack is not stack:  # aclose() ran while the client was being created
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stack.aclose()
            raise RuntimeError("GCSStore was closed while it was being opened")
        self._client = client
        return self

    async def aclose(self) -> None:
        """Close the client; idempotent, and done even if the caller is being cancelled."""
        stack, self._stack, self._client = self._stack, None, None
        transport, self._auth_transport = self._auth_transport, None
        if transport is not None:
            transport.close()  # closes idle sockets only; a token request in flight fails
        if stack is not None:
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stack.aclose()

    # --- operations ---

    async def get(self, key: str) -> GetResult:
        name = self._full_key(key)
        self._require_client()
        async with self._map_errors("get", key):
            response = await self._send("get", "GET", self._object_url(name), {"alt": "media"})
            generation = response.headers.get("x-goog-generation")
            if generation is None:
                # A server that does not say which generation it sent (some emulators): ask for
                # the metadata, then read exactly that generation, so the etag returned is
                # always the one of the bytes returned.
                meta = await self._send("get", "GET", self._object_url(name))
                generation = _json_object(meta, f"GCS get {key!r}").get("generation")
                generation = _generation(generation, f"GCS get {key!r}")
                response = await self._send(
                    "get",
                    "GET",
                    self._object_url(name),
                    {"alt": "media", "generation": generation},
                )
        return GetResult(body=response.content, etag=_generation(generation, f"GCS get {key!r}"))

    async def head(self, key: str) -> ObjectMeta:
        name = self._full_key(key)
        self._require_client()
        what = f"GCS head {key!r}"
        async with self._map_errors("head", key):
            response = await self._send("head", "GET", self._object_url(name))
        meta = _json_object(response, what)
        return ObjectMeta(
            key=key,
            size=_size(meta.get("size"), what),
            etag=_generation(meta.get("generation"), what),
        )

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        name = self._full_key(key)
        body = as_body(body)
        op: _Op
        params = {"uploadType": "multipart"}
        if mode == "create":
            op, params["ifGenerationMatch"] = "create", "0"  # 0: only if no live object exists
        elif isinstance(mode, UpdateVersion):
            etag = mode.etag
            if not isinstance(etag, str):
                raise TypeError(f"UpdateVersion.etag must be a str, not {type(etag).__name__}")
            if not (etag.isascii() and etag.isdigit() and etag.lstrip("0")):
                # No object has that generation (GCS's are positive integers): the version
                # asked for is not there, so the update can't apply. Nothing is sent.
                raise PreconditionError(key)
            op, params["ifGenerationMatch"] = "update", etag
        elif mode == "overwrite":
            op = "put"
        else:
            raise ValueError(f"unknown put mode {mode!r}")
        self._require_client()
        content, content_type = _multipart(name, body)
        what = f"GCS {op} {key!r}"
        async with self._map_errors(op, key):
            response = await self._send(
                op,
                "POST",
                self._upload_url,
                params,
                content=content,
                headers={"Content-Type": content_type},
            )
        return PutResult(etag=_generation(_json_object(response, what).get("generation"), what))

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncGenerator[ObjectMeta, None]:
        validate_prefix(prefix)
        if start_after is not None and not isinstance(start_after, str):
            raise TypeError(f"start_after must be a str or None, not {type(start_after).__name__}")
        self._require_client()
        full_prefix = self._join(prefix)
        params = {
            "prefix": full_prefix,
            "maxResults": str(self._page_size),
            "projection": "noAcl",
            "fields": "items(name,size,generation),nextPageToken",
        }
        after = None
        if start_after is not None:
            after = self._join(start_after)
            # startOffset is inclusive: the equal key is skipped below, as is anything at or
            # before it from a server that ignores startOffset.
            params["startOffset"] = after
        strip = f"{self._prefix}/" if self._prefix else ""
        what = f"GCS list {prefix!r}"
        while True:  # one page per round, fetched only when the consumer wants more
            self._require_client()  # still open?
            async with self._map_errors("list", prefix):
                response = await self._send("list", "GET", f"{self._bucket_url}/o", params)
            page = _json_object(response, what)
            items = page.get("items", [])
            if not isinstance(items, list):
                raise StoreError(f"{what}: the server's listing has no list of items")
            for item in items:
                name = item.get("name") if isinstance(item, dict) else None
                if not isinstance(name, str):
                    raise StoreError(f"{what}: a listed object has no name")
                # Keys compare as str (by code point), which is GCS's order (UTF-8 bytes).
                if not name.startswith(full_prefix) or (after is not None and name <= after):
                    continue
                yield ObjectMeta(
                    key=name.removeprefix(strip),
                    size=_size(item.get("size"), what),
                    etag=_generation(item.get("generation"), what),
                )
            token = page.get("nextPageToken")
            if not token or not isinstance(token, str):
                return
            params["pageToken"] = token

    async def delete(self, key: str) -> None:
        name = self._full_key(key)
        self._require_client()
        async with self._map_errors("delete", key):
            await self._send("delete", "DELETE", self._object_url(name))

    # --- HTTP ---

    async def _send(
        self,
        op: _Op,
        method: str,
        url: str,
        params: Mapping[str, str] | None = None,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request, retried on 408, 429, 5xx and transport errors up to ``max_attempts``
        times; a final error status is raised as ``httpx.HTTPStatusError``."""
        waits = backoff.expo(factor=_BACKOFF_FACTOR, max_value=_BACKOFF_MAX)
        next(waits)  # backoff's generators yield once before the first wait
        attempt = 1
        while True:
            client = self._require_client()
            request_headers = dict(headers or {})
            await self._authorize(request_headers)
            try:
                # The whole body is read here: a body cut short is a transport error, retried.
                response = await client.request(
                    method, url, params=params, content=content, headers=request_headers
                )
            except httpx.TransportError:
                if attempt >= self._max_attempts:
                    raise
            else:
                if response.is_success:
                    return response
                if response.status_code not in _RETRY_STATUSES or attempt >= self._max_attempts:
                    response.raise_for_status()
                    return response  # pragma: no cover - raise_for_status raised
            attempt += 1
            await anyio.sleep(backoff.full_jitter(next(waits)))

    async def _authorize(self, headers: dict[str, str]) -> None:
        """Add the access token (refreshed first if needed) to ``headers``."""
        if self._anonymous:
            return
        credentials = self._credentials
        if credentials is None or not _fresh(credentials):
            async with self._auth_lock:  # one refresh for all the requests waiting on it
                credentials = None
                # A thread can't be cancelled: past the deadline it is left to finish on its
                # own (its requests are bounded by the same timeouts) and we stop waiting.
                with anyio.move_on_after(self._auth_timeout):
                    credentials = await anyio.to_thread.run_sync(
                        self._refresh_credentials, abandon_on_cancel=True
                    )
                if credentials is None:
                    raise _TokenTimeout(f"no access token within {self._auth_timeout:g} s")
        credentials.apply(headers)

    def _refresh_credentials(self) -> google.auth.credentials.Credentials:
        """In a worker thread: find the Application Default Credentials (once), and refresh the
        token unless it is fresh."""
        transport = self._auth_transport
        if transport is None:
            transport = self._auth_transport = _AuthTransport(self._timeout)
        credentials = self._credentials
        if credentials is None:
            credentials, _project = google.auth.default(scopes=_SCOPES, request=transport)
            self._credentials = credentials
        if not _fresh(credentials):
            credentials.refresh(transport)
        return credentials

    @asynccontextmanager
    async def _map_errors(self, op: _Op, key: str) -> AsyncIterator[None]:
        """Translate every native error of one operation; the only place that does."""
        what = f"GCS {op} {key!r}"
        try:
            yield
        except httpx.HTTPStatusError as exc:
            error = await self._status_error(op, key, exc.response)
            if error is not None:
                raise error from exc
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # refused, DNS, connect timeout, TLS handshake: the request was never sent
            raise StoreUnreachableError(
                f"{what}: cannot reach {self._endpoint} after {self._max_attempts} attempt(s): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        except httpx.TransportError as exc:
            # read timeout, connection reset, a body cut short: the request may have arrived
            raise TransientStoreError(
                f"{what}: outcome unknown after {self._max_attempts} attempt(s): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        except httpx.HTTPError as exc:  # a body that won't decode, an invalid URL
            raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc
        except _TokenTimeout as exc:
            raise TransientStoreError(f"{what}: {exc}") from exc
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise AccessDeniedError(
                f"{what}: no usable Application Default Credentials: {exc}"
            ) from exc
        except google.auth.exceptions.GoogleAuthError as exc:
            # Getting a token failed: unreachable token endpoint or metadata server, a token
            # endpoint that is down (retryable), or one that refuses (revoked, disabled, wrong).
            if _in_chain(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                raise StoreUnreachableError(
                    f"{what}: cannot reach the credentials' token endpoint: {exc}"
                ) from exc
            if exc.retryable or _in_chain(exc, (httpx.TransportError,)):
                raise TransientStoreError(f"{what}: getting an access token failed: {exc}") from exc
            raise AccessDeniedError(f"{what}: the credentials were refused: {exc}") from exc

    async def _status_error(self, op: _Op, key: str, response: httpx.Response) -> StoreError | None:
        """The store error for a final error status; ``None`` means "not an error" (a delete of
        a missing object)."""
        status = response.status_code
        reason = _error_reason(response)
        what = f"GCS {op} {key!r}: HTTP {status}{f' {reason}' if reason else ''}"
        if status == 412:
            if op == "create":
                return AlreadyExistsError(key)
            if op == "update":
                return PreconditionError(key)
            return StoreError(f"{what}: a precondition failed that this store never sets")
        if status == 404:
            # A missing bucket and a missing object answer alike (on some servers, byte for
            # byte): ask about the bucket, on this error path only.
            exists = await self._bucket_exists()
            if exists is False:
                return BucketNotFoundError(f"{what}: the bucket {self._bucket!r} does not exist")
            if op in ("get", "head"):
                return NotFoundError(key)
            if op == "update":  # ifGenerationMatch on a missing object, on some servers
                return PreconditionError(key)
            if op == "delete":
                return None
            if exists is None:  # uploads and listings name no object: the bucket is the 404
                return BucketNotFoundError(f"{what}: the bucket {self._bucket!r} was not found")
            return UnsupportedStoreError(
                f"{what}: the bucket exists but the server does not serve this JSON API request"
            )
        if status in (401, 403):
            return AccessDeniedError(f"{what}: credentials missing, wrong or not allowed")
        if status == 501:
            feature = {
                "create": "conditional create (ifGenerationMatch=0)",
                "update": "conditional update (ifGenerationMatch)",
            }.get(op, "this request")
            return UnsupportedStoreError(
                f"{what}: the server does not implement {feature}; slate-epoch needs a store "
                "that enforces conditional writes"
            )
        if status in _RETRY_STATUSES or status >= 500:
            return TransientStoreError(
                f"{what}: outcome unknown, after {self._max_attempts} attempt(s)"
            )
        return StoreError(what)

    async def _bucket_exists(self) -> bool | None:
        """Whether the bucket exists: True, False, or None when the server won't say (no
        ``storage.buckets.get`` permission, an error). One attempt, bounded by the timeouts."""
        client = self._client
        if client is None:
            return None
        headers: dict[str, str] = {}
        try:
            await self._authorize(headers)
            response = await client.get(
                self._bucket_url, params={"fields": "name"}, headers=headers
            )
        except (httpx.HTTPError, google.auth.exceptions.GoogleAuthError, StoreError):
            return None
        if response.is_success:
            return True
        if response.status_code == 404:
            return False
        return None

    # --- helpers ---

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(_NOT_OPEN)
        return self._client

    def _join(self, key_or_prefix: str) -> str:
        return f"{self._prefix}/{key_or_prefix}" if self._prefix else key_or_prefix

    def _full_key(self, key: str) -> str:
        return _validate_gcs_name(self._join(validate_key(key)))

    def _object_url(self, name: str) -> str:
        return f"{self._bucket_url}/o/{quote(name, safe='')}"


def _fresh(credentials: google.auth.credentials.Credentials) -> bool:
    return bool(credentials.token_state == google.auth.credentials.TokenState.FRESH)


def _multipart(name: str, body: bytes) -> tuple[bytes, str]:
    """A ``multipart/related`` upload body: the object's metadata (its name, and an MD5 that GCS
    checks, so bytes damaged on the way are refused) then its bytes; and its content type."""
    md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
    metadata = json.dumps(
        {"name": name, "contentType": "application/octet-stream", "md5Hash": md5}
    ).encode()
    while True:
        boundary = f"slate-epoch-{secrets.token_hex(16)}"
        if boundary.encode() not in body:  # a body may contain anything, even our boundary
            break
    delimiter = f"--{boundary}\r\n".encode()
    content = b"".join(
        [
            delimiter,
            b"Content-Type: application/json; charset=UTF-8\r\n\r\n",
            metadata,
            b"\r\n",
            delimiter,
            b"Content-Type: application/octet-stream\r\n\r\n",
            body,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return content, f"multipart/related; boundary={boundary}"
