"""An S3 store on aiobotocore: AWS S3 or any S3-compatible server with conditional writes.

The store owns one aiobotocore client, created on ``__aenter__`` and closed by ``aclose``.
Credentials come from the standard AWS chain (environment, shared config and credentials files,
profiles, container and instance roles) and never from a URL or an argument.

What the server must support: ``If-None-Match: *`` on PUT (create-if-absent) and ``If-Match`` on
PUT (replace-if-version). AWS S3 has both since 2024; so do most S3-compatible servers.

It runs on asyncio and on trio: the client sends its requests through aiobotocore's httpx
transport (the ``httpx2`` package) on both, so that there is one code path and one set of native
errors. The stores of a process share what is costly to build (``_s3_shared``): a second store
opens in a few milliseconds.

Every native error is translated in one place, ``_map_errors``, by S3 error code and HTTP
status (never by message text) and chained with ``raise ... from exc``.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from collections.abc import AsyncGenerator, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any, Literal, Self, TypeAlias, get_args
from urllib.parse import urlsplit

import anyio
import backoff
import httpx2
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    CredentialRetrievalError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from slate_epoch._errors import (
    AccessDeniedError,
    AlreadyExistsError,
    BucketNotFoundError,
    NotFoundError,
    PreconditionError,
    StoreError,
    StoreUnreachableError,
    TransientStoreError,
    UnsupportedStoreError,
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
from slate_epoch._url import merge_options, named_location, parse_store_url

from . import _s3_shared

__all__ = ["S3Store"]

AddressingStyle: TypeAlias = Literal["auto", "path", "virtual"]

# The operations, as named in error messages; "create" and "update" are conditional puts.
_Op: TypeAlias = Literal["open", "get", "head", "put", "create", "update", "list", "delete"]

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_CONFLICT_ATTEMPTS = 5
# Between two attempts after a 409 ConditionalRequestConflict: full jitter over 50 ms, 100 ms, ...
# capped at 1 s.
_CONFLICT_BACKOFF_FACTOR = 0.05
_CONFLICT_BACKOFF_MAX = 1.0
# Closing the client only releases local sockets; bounded all the same.
_CLOSE_TIMEOUT = 10.0

_NOT_OPEN = (
    "S3Store is not open: use `async with S3Store(...) as store:` (or `async with "
    "open_store(url) as store:`) and call its methods inside that block"
)

# --- error mapping: by code and HTTP status, never by message text ------------------------------

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})
# A conditional write that met another one in flight: it did not happen; retry it.
_CONFLICT_CODES = frozenset({"ConditionalRequestConflict", "OperationAborted"})
_ACCESS_CODES = frozenset(
    {
        "403",
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)
# The server does not implement what the request asked for (a conditional header, most often):
# permanent, and the protocol cannot run on such a store.
_UNSUPPORTED_CODES = frozenset({"NotImplemented"})
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "RequestLimitExceeded",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
    }
)


class _ConditionalConflict(TransientStoreError):
    """409 ConditionalRequestConflict: retried by ``S3Store.put`` itself, never seen outside."""


def _client_error(op: _Op, key: str, exc: Any) -> StoreError | None:
    """The store error for a botocore ``ClientError``; ``None`` means "not an error" (a delete
    of a missing key)."""
    response = exc.response if isinstance(getattr(exc, "response", None), dict) else {}
    error = response.get("Error") or {}
    code = str(error.get("Code") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    status = status if isinstance(status, int) else 0
    what = f"S3 {op} {key!r}: {code or 'no error code'} (HTTP {status})"

    if code == "NoSuchBucket":
        return BucketNotFoundError(f"{what}: the bucket does not exist")
    if code in _PRECONDITION_CODES or status == 412:
        if op == "create":
            return AlreadyExistsError(key)
        if op == "update":
            return PreconditionError(key)
    elif code in _CONFLICT_CODES:
        if op in ("put", "create", "update"):  # it did not happen: S3Store.put retries it
            return _ConditionalConflict(f"{what}: a concurrent conditional write was in flight")
        return TransientStoreError(f"{what}: a concurrent operation was in flight")
    elif code in _NOT_FOUND_CODES or status == 404:
        # HEAD answers have no body: a missing bucket looks like a missing key there.
        if op in ("get", "head"):
            return NotFoundError(key)
        if op == "update":  # If-Match on a missing key
            return PreconditionError(key)
        if op == "delete":
            return None
    elif code in _ACCESS_CODES or status == 403:
        hint = " (without s3:ListBucket, S3 answers 403 for a missing key)" if op == "head" else ""
        return AccessDeniedError(f"{what}: credentials missing, wrong or not allowed{hint}")
    elif code in _UNSUPPORTED_CODES or status == 501:
        feature = {
            "create": "conditional create (If-None-Match: *)",
            "update": "conditional update (If-Match)",
        }.get(op, "this request")
        return UnsupportedStoreError(
            f"{what}: the server does not implement {feature}; slate-epoch needs a store that "
            "enforces conditional writes"
        )
    elif code in _TRANSIENT_CODES or status == 429 or status >= 500:
        return TransientStoreError(f"{what}: outcome unknown, after the client's retries")
    return StoreError(what)


@contextmanager
def _map_errors(op: _Op, key: str, endpoint: str) -> Iterator[None]:
    """Translate every native error of one S3 call; the only place that does."""
    try:
        yield
    except ClientError as exc:
        error = _client_error(op, key, exc)
        if error is not None:
            raise error from exc
    except BotoConnectionError as exc:
        if _never_connected(exc):  # refused, DNS, connect timeout, proxy, TLS handshake
            raise StoreUnreachableError(
                f"S3 {op} {key!r}: cannot reach {endpoint} after the client's retries: {exc}"
            ) from exc
        # Connected, then the request broke off (botocore words a write timeout as a "connect
        # timeout"; the httpx error says which): the request may have arrived.
        raise TransientStoreError(
            f"S3 {op} {key!r}: connected, then {type(_cause(exc)).__name__}: outcome unknown: {exc}"
        ) from exc
    except (ResponseStreamingError, IncompleteReadError) as exc:
        # The response body broke off, or ended short of its Content-Length: the request
        # arrived; its outcome is unknown.
        raise TransientStoreError(
            f"S3 {op} {key!r}: the response broke off: {type(exc).__name__}: {exc}"
        ) from exc
    except (HTTPClientError, ChecksumError, FlexibleChecksumError) as exc:
        # read timeout, connection closed or reset mid-request: outcome unknown
        raise TransientStoreError(f"S3 {op} {key!r}: {type(exc).__name__}: {exc}") from exc
    except httpx2.HTTPError as exc:
        # Raised by httpx itself where aiobotocore wraps nothing: reading the body of an error
        # answer to a streaming operation (GetObject) happens outside its wrapped send. Only a
        # response can be cut short there: the request arrived; its outcome is unknown.
        raise TransientStoreError(
            f"S3 {op} {key!r}: the response broke off: {type(exc).__name__}: {exc}"
        ) from exc
    except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
        raise AccessDeniedError(
            f"S3 {op} {key!r}: no usable credentials in the AWS credential chain: {exc}"
        ) from exc
    except BotoCoreError as exc:
        raise StoreError(f"S3 {op} {key!r}: {type(exc).__name__}: {exc}") from exc


def _never_connected(exc: BaseException) -> bool:
    """Whether a botocore connection error happened before any request went out. aiobotocore's
    httpx transport reports a refused or unresolvable endpoint as ``EndpointConnectionError``
    and every httpx timeout but the read timeout as ``ConnectTimeoutError``: the httpx error it
    wraps tells a connect timeout from a write timeout (connected: the request may have arrived).
    """
    cause = _cause(exc)
    # refused, DNS, connect timeout, or a proxy that would not open the tunnel
    never = httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.ProxyError | socket.gaierror
    if isinstance(cause, never):
        return True
    # any other httpx error (a write timeout): a connection existed; no httpx error at all:
    # botocore's ProxyConnectionError and SSLError, before the request
    return not isinstance(cause, httpx2.TransportError)


def _cause(exc: BaseException) -> object:
    """The transport's error that a botocore connection error wraps (``None`` if none)."""
    return getattr(exc, "kwargs", {}).get("error")


def _etag(value: object) -> str:
    """ETags in one form everywhere: without the quotes S3 puts around them."""
    if not isinstance(value, str) or not value.strip('"'):
        raise StoreError(f"the S3 server sent no usable ETag ({value!r})")
    return value.strip('"')


# --- arguments and URLs ---------------------------------------------------------------------------

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_URL_OPTIONS: dict[str, type] = {
    "endpoint_url": str,
    "region": str,
    "addressing_style": str,
    "connect_timeout": float,
    "read_timeout": float,
    "max_attempts": int,
    "conflict_attempts": int,
}


def _validate_bucket(bucket: str) -> str:
    """S3's naming rules for general-purpose buckets, checked before any I/O."""
    if not isinstance(bucket, str):
        raise TypeError(f"bucket must be a str, not {type(bucket).__name__}")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket or ".-" in bucket or "-." in bucket:
        raise ValueError(
            f"invalid S3 bucket name {bucket!r}: 3 to 63 characters, lowercase letters, digits, "
            "'.' and '-', starting and ending with a letter or digit"
        )
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return bucket
    raise ValueError(f"invalid S3 bucket name {bucket!r}: it looks like an IP address")


def _validate_endpoint(endpoint_url: str | None) -> str | None:
    if endpoint_url is None:
        return None
    if not isinstance(endpoint_url, str):
        raise TypeError(f"endpoint_url must be a str, not {type(endpoint_url).__name__}")
    parts = urlsplit(endpoint_url)
    if "@" in parts.netloc:
        raise ValueError(
            "endpoint_url must not carry credentials; they come from the AWS credential chain"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(
            f"endpoint_url must look like https://host[:port] (no query), got {endpoint_url!r}"
        )
    return endpoint_url


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
    return float(value)


def _at_least_one(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


# --- the store ------------------------------------------------------------------------------------


class S3Store(StoreBase):
    """Objects in one S3 bucket, optionally under a key prefix.

    ``prefix`` (``"a/b"``) is joined to every key with ``/`` and stripped from listed keys.
    ``connect_timeout`` and ``read_timeout`` bound each attempt; ``max_attempts`` (the first
    included) bounds the client's own retries of throttling, 5xx and network errors (botocore's
    "standard" mode, exponential backoff with jitter); a
    409 ``ConditionalRequestConflict`` is retried here, ``conflict_attempts`` times at most, with
    full-jitter backoff. ``region`` and ``endpoint_url`` default to the AWS configuration chain.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: AddressingStyle = "auto",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        conflict_attempts: int = DEFAULT_CONFLICT_ATTEMPTS,
    ) -> None:
        self._bucket = _validate_bucket(bucket)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        self._prefix = validate_prefix(prefix).removesuffix("/")
        self._endpoint_url = _validate_endpoint(endpoint_url)
        if region is not None and (not isinstance(region, str) or not region):
            raise ValueError(f"region must be a non-empty str or None, got {region!r}")
        self._region = region
        if addressing_style not in get_args(AddressingStyle):
            raise ValueError(
                f"addressing_style must be one of {get_args(AddressingStyle)}, "
                f"got {addressing_style!r}"
            )
        self._addressing_style = addressing_style
        self._connect_timeout = _positive("connect_timeout", connect_timeout)
        self._read_timeout = _positive("read_timeout", read_timeout)
        self._max_attempts = _at_least_one("max_attempts", max_attempts)
        self._conflict_attempts = _at_least_one("conflict_attempts", conflict_attempts)
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._session: Any = None  # the shared session the client came from (for the tests)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3Store:
        """``s3://bucket[/prefix][?endpoint_url=...&region=...]``; ``options`` are keyword
        arguments of ``S3Store`` not given in the URL. A URL carrying credentials is refused."""
        parsed = parse_store_url(
            url,
            options=_URL_OPTIONS,
            credentials_from="the AWS credential chain: environment, config files, profiles, roles",
        )
        if parsed.scheme != "s3":
            raise ValueError("not an s3:// URL")
        bucket = named_location(
            parsed, "bucket", no_port="give the server as ?endpoint_url=http://host:port"
        )
        return cls(bucket, parsed.path, **merge_options(parsed, options))

    def __repr__(self) -> str:
        where = f", endpoint_url={self._endpoint_url!r}" if self._endpoint_url else ""
        return f"S3Store({self._bucket!r}, {self._prefix!r}{where})"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def client(self) -> Any:
        """The aiobotocore S3 client, while the store is open: for event hooks
        (``client.meta.events.register("before-send.s3.*", hook)``) and diagnostics. The store
        owns it; do not close it."""
        if self._client is None:
            raise RuntimeError(_NOT_OPEN)
        return self._client

    # --- lifecycle ---

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("S3Store is already open")
        config = AioConfig(
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            # botocore's "max_attempts" counts retries only; "total_max_attempts" counts all
            retries={"total_max_attempts": self._max_attempts, "mode": "standard"},
            s3={"addressing_style": self._addressing_style},
            # botocore's JSON models load in a thread, not the loop (once per process: the
            # loader is shared)
            warm_up_loader_caches=True,
            http_session_cls=_s3_shared.Transport,
            connector_args={
                # httpx's defaults are 5 s for both; aiohttp had neither. A peer that stops
                # reading our body is bounded like one that stops answering. Waiting for one of
                # the pool's connections is bounded by the requests ahead, each bounded by the
                # timeouts and attempts above (and by every caller's deadline): no pool timeout,
                # which would fail a busy store's requests that never went out.
                "write_timeout": self._read_timeout,
                "pool_timeout": None,
            },
        )
        stack = self._stack = AsyncExitStack()  # taken at once: a second enter fails fast
        try:
            with _map_errors("open", self._bucket, self._where):
                session = _s3_shared.session()
                client = await stack.enter_async_context(
                    session.create_client(
                        "s3",
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=config,
                    )
                )
        except BaseException:  # including cancellation: release what was opened, then re-raise
            self._stack = None
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stack.aclose()
            raise
        if self._stack is not stack:  # aclose() ran while the client was being created
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stack.aclose()
            raise RuntimeError("S3Store was closed while it was being opened")
        self._client, self._session = client, session
        return self

    async def aclose(self) -> None:
        """Close the client; idempotent, and done even if the caller is being cancelled."""
        stack, self._stack, self._client, self._session = self._stack, None, None, None
        if stack is not None:
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stack.aclose()

    # --- operations ---

    async def get(self, key: str) -> GetResult:
        full_key = self._full_key(key)
        client = self._require_client()
        with _map_errors("get", key, self._where):
            response = await client.get_object(Bucket=self._bucket, Key=full_key)
            async with response["Body"] as stream:
                body = await stream.read()
        return GetResult(body=bytes(body), etag=_etag(response.get("ETag")))

    async def head(self, key: str) -> ObjectMeta:
        full_key = self._full_key(key)
        client = self._require_client()
        with _map_errors("head", key, self._where):
            response = await client.head_object(Bucket=self._bucket, Key=full_key)
        return ObjectMeta(
            key=key, size=int(response["ContentLength"]), etag=_etag(response.get("ETag"))
        )

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        full_key = self._full_key(key)
        body = as_body(body)
        op: _Op
        conditions: dict[str, str] = {}
        if mode == "create":
            op, conditions["IfNoneMatch"] = "create", "*"
        elif isinstance(mode, UpdateVersion):
            etag = mode.etag.strip('"') if isinstance(mode.etag, str) else ""
            if not etag:
                raise ValueError(f"UpdateVersion needs a non-empty etag, got {mode.etag!r}")
            op, conditions["IfMatch"] = "update", etag  # unquoted: every server accepts that
        elif mode == "overwrite":
            op = "put"
        else:
            raise ValueError(f"unknown put mode {mode!r}")
        client = self._require_client()
        waits = backoff.expo(factor=_CONFLICT_BACKOFF_FACTOR, max_value=_CONFLICT_BACKOFF_MAX)
        next(waits)  # backoff's generators yield once before the first wait
        attempt = 1
        while True:
            try:
                with _map_errors(op, key, self._where):
                    response = await client.put_object(
                        Bucket=self._bucket, Key=full_key, Body=body, **conditions
                    )
            except _ConditionalConflict as exc:
                if attempt >= self._conflict_attempts:
                    raise TransientStoreError(
                        f"S3 {op} {key!r}: 409 ConditionalRequestConflict "
                        f"{attempt} times in a row; outcome unknown"
                    ) from exc
                attempt += 1
                await anyio.sleep(backoff.full_jitter(next(waits)))
                continue
            return PutResult(etag=_etag(response.get("ETag")))

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncGenerator[ObjectMeta, None]:
        validate_prefix(prefix)
        if start_after is not None and not isinstance(start_after, str):
            raise TypeError(f"start_after must be a str or None, not {type(start_after).__name__}")
        self._require_client()
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Prefix": self._join(prefix),
            "MaxKeys": 1000,
        }
        if start_after is not None:
            params["StartAfter"] = self._join(start_after)
        strip = f"{self._prefix}/" if self._prefix else ""
        while True:  # one page per round, fetched only when the consumer wants more
            client = self._require_client()  # still open?
            with _map_errors("list", prefix, self._where):
                page = await client.list_objects_v2(**params)
            for item in page.get("Contents", ()):
                yield ObjectMeta(
                    key=item["Key"].removeprefix(strip),
                    size=int(item["Size"]),
                    etag=_etag(item.get("ETag")),
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token

    async def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        client = self._require_client()
        with _map_errors("delete", key, self._where):
            await client.delete_object(Bucket=self._bucket, Key=full_key)

    # --- helpers ---

    @property
    def _where(self) -> str:
        return self._endpoint_url or "the AWS S3 endpoint"

    def _require_client(self) -> Any:
        if self._client is None:
            raise RuntimeError(_NOT_OPEN)
        return self._client

    def _join(self, key_or_prefix: str) -> str:
        return f"{self._prefix}/{key_or_prefix}" if self._prefix else key_or_prefix

    def _full_key(self, key: str) -> str:
        return self._join(validate_key(key))
