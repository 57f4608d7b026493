"""An Azure Blob Storage store on the official SDK's aio client (``azure-storage-blob``).

The store owns one ``ContainerClient`` (and, without a connection string, the
``DefaultAzureCredential`` it authenticates with), created on ``__aenter__`` and closed by
``aclose``. Credentials never come from a URL or an argument:

- ``AZURE_STORAGE_CONNECTION_STRING``, when set, is used (an account key or a SAS token, and the
  endpoint: this is how Azurite, the emulator, is reached);
- otherwise the account's endpoint, ``account_url=https://ACCOUNT.blob.core.windows.net`` (or
  ``AZURE_STORAGE_ACCOUNT=ACCOUNT``), with ``DefaultAzureCredential`` (environment, workload
  identity, managed identity, Azure CLI, ...).

Conditional writes are native to Azure Blob Storage: ``If-None-Match: *`` for a create,
``If-Match: <etag>`` for an update.

The SDK's aio client runs on asyncio only (its transport is aiohttp): on trio every method raises
``RuntimeError`` saying so.

Every native error is translated in one place, ``_map_errors``, by HTTP status and Azure error
code (never by message text) and chained with ``raise ... from exc``.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from typing import Any, Final, Literal, Self, TypeAlias
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import anyio
import backoff
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob.aio import ContainerClient, ExponentialRetry

from slate_epoch._asyncio_only import require_asyncio
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

__all__ = ["AzureBlobStore"]

# The operations, as named in error messages; "create" and "update" are conditional puts.
_Op: TypeAlias = Literal["open", "get", "head", "put", "create", "update", "list", "delete"]

CONNECTION_STRING_ENV: Final = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT_ENV: Final = "AZURE_STORAGE_ACCOUNT"

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_MAX_ATTEMPTS = 3
MAX_PAGE_SIZE = 5000  # the most one List Blobs answer holds
# Between two attempts of the SDK's retry policy: full jitter over 0.5 s, 1 s, 2 s, ... capped at
# 8 s (the SDK's own default waits 15 s and more before the first retry).
_RETRY_BACKOFF_BASE = 0.5
_RETRY_BACKOFF_MAX = 8.0
# Closing the client only releases local sockets (and the credential's); bounded all the same.
_CLOSE_TIMEOUT = 10.0
# List Blobs learned ``startFrom`` in this service version; with an older one pinned through
# client_options the listing skips ahead on the client side only.
_START_FROM_VERSION = "2026-02-06"

_NEEDS_ASYNCIO = (
    "AzureBlobStore needs asyncio: the Azure SDK's aio client runs on asyncio only (aiohttp), "
    "and this code runs on {library}. Run it under asyncio (e.g. anyio.run(main, "
    "backend='asyncio')), or use another store."
)
_NOT_OPEN = (
    "AzureBlobStore is not open: use `async with AzureBlobStore(...) as store:` (or `async with "
    "open_store(url) as store:`) and call its methods inside that block"
)
_NO_CREDENTIALS = (
    f"no Azure account to use: set {CONNECTION_STRING_ENV} (an account key or SAS connection "
    "string), or name the account for DefaultAzureCredential with "
    f"?account_url=https://ACCOUNT.blob.core.windows.net or {ACCOUNT_ENV}=ACCOUNT"
)

# --- error mapping: by HTTP status and Azure error code, never by message text ------------------

_MISSING_CONTAINER_CODES = frozenset({"ContainerNotFound", "ContainerBeingDeleted"})
_ALREADY_EXISTS_CODES = frozenset({"BlobAlreadyExists"})
_CONDITION_CODES = frozenset({"ConditionNotMet"})
_NOT_FOUND_CODES = frozenset({"BlobNotFound", "ResourceNotFound"})
_ACCESS_CODES = frozenset(
    {
        "AccountIsDisabled",
        "AuthenticationFailed",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "AuthorizationProtocolMismatch",
        "AuthorizationResourceTypeMismatch",
        "AuthorizationServiceMismatch",
        "AuthorizationSourceIPMismatch",
        "InsufficientAccountPermissions",
        "InvalidAuthenticationInfo",
        "KeyBasedAuthenticationNotPermitted",
        "NoAuthenticationInformation",
    }
)
# Names the service refuses: the request changed nothing.
_BAD_NAME_CODES = frozenset({"InvalidResourceName", "InvalidUri"})
# The server does not implement what the request asked for (a conditional header, most often):
# permanent, and the protocol cannot run on such a store.
_UNSUPPORTED_CODES = frozenset({"NotImplemented"})
_TRANSIENT_CODES = frozenset({"InternalError", "OperationTimedOut", "ServerBusy"})


def _error_code(exc: HttpResponseError) -> str:
    """The Azure error code (``x-ms-error-code``, or the error body's ``<Code>``), as a str."""
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # the SDK gives a StorageErrorCode (a str enum) or a str
    if not code and exc.response is not None:
        code = getattr(exc.response, "headers", {}).get("x-ms-error-code")
    return str(code or "")


def _response_error(
    op: _Op, key: str, exc: HttpResponseError
) -> StoreError | InvalidKeyError | None:
    """The store error for an answer from the service; ``None`` means "not an error" (a delete
    of a missing blob)."""
    status = exc.status_code if isinstance(exc.status_code, int) else 0
    code = _error_code(exc)
    what = f"Azure {op} {key!r}: {code or 'no error code'} (HTTP {status})"

    if code in _MISSING_CONTAINER_CODES:
        return BucketNotFoundError(f"{what}: the container does not exist")
    if status == 412 and not code.startswith("Lease"):  # a lease on the blob is another matter
        if op == "create":  # If-None-Match: * (Azure says 409; some emulators 412)
            return AlreadyExistsError(key)
        if op == "update":  # If-Match: another version, or none (Azurite says 412 for none)
            return PreconditionError(key)
        if op == "get":  # a blob read in ranges changed between two of them
            return TransientStoreError(f"{what}: the blob changed while it was read")
    elif code in _ALREADY_EXISTS_CODES or (status == 409 and code in _CONDITION_CODES):
        if op == "create":
            return AlreadyExistsError(key)
    elif status == 404 or code in _NOT_FOUND_CODES:
        if op in ("get", "head"):
            return NotFoundError(key)
        if op == "update":  # If-Match on a missing blob (Azure's answer)
            return PreconditionError(key)
        if op == "delete":
            return None
    elif code in _ACCESS_CODES or status in (401, 403):
        return AccessDeniedError(f"{what}: credentials missing, wrong or not allowed")
    elif code in _BAD_NAME_CODES:
        return InvalidKeyError(f"{what}: Azure refuses this blob name; nothing was written")
    elif code in _UNSUPPORTED_CODES or status == 501:
        feature = {
            "create": "conditional create (If-None-Match: *)",
            "update": "conditional update (If-Match)",
        }.get(op, "this request")
        return UnsupportedStoreError(
            f"{what}: the server does not implement {feature}; slate-epoch needs a store that "
            "enforces conditional writes"
        )
    elif code in _TRANSIENT_CODES or status in (408, 429) or status >= 500:
        return TransientStoreError(f"{what}: outcome unknown, after the client's retries")
    return StoreError(what)


@contextmanager
def _map_errors(op: _Op, key: str, endpoint: str) -> Iterator[None]:
    """Translate every native error of one Azure call; the only place that does."""
    try:
        yield
    except HttpResponseError as exc:
        # No answer (raised by the client itself), or one that could not be read whole (a
        # DecodeError carries the response whose body broke off): not the service's verdict.
        if exc.response is None or isinstance(exc, DecodeError):
            raise _error_without_answer(op, key, endpoint, exc) from exc
        error = _response_error(op, key, exc)
        if error is not None:
            raise error from exc
    except AzureError as exc:
        raise _error_without_answer(op, key, endpoint, exc) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Raised by aiohttp itself while a response body streams in (the SDK only wraps the
        # request): a body cut short, the server hanging up mid-body, a read timeout. The request
        # arrived; its outcome is unknown.
        raise TransientStoreError(
            f"Azure {op} {key!r}: the response broke off: {_describe(exc)}"
        ) from exc


def _error_without_answer(op: _Op, key: str, endpoint: str, exc: AzureError) -> StoreError:
    """The store error for a failure that left no answer from the service."""
    inner = getattr(exc, "inner_exception", None)
    if isinstance(exc, ClientAuthenticationError):
        # No token from the credential chain, or a connection string's key that can't sign
        # (AzureSigningError). Its message names the credentials tried, never a secret.
        detail = _describe(exc, whole=True)  # the credentials tried, and why each failed
        return AccessDeniedError(f"Azure {op} {key!r}: no usable credentials: {detail}")
    if isinstance(exc, ServiceRequestError):
        # The SDK reports "connection refused" and "reset after the request went out" alike;
        # the aiohttp error it wraps tells them apart.
        if _never_connected(exc, inner):
            return StoreUnreachableError(
                f"Azure {op} {key!r}: cannot reach {endpoint} after the client's retries: "
                f"{_describe(inner or exc)}"
            )
        return TransientStoreError(
            f"Azure {op} {key!r}: connection lost: {_describe(inner or exc)}"
        )
    if isinstance(exc, ServiceResponseError | DecodeError) or isinstance(
        inner, ServiceResponseError | DecodeError | aiohttp.ClientError | TimeoutError
    ):
        # read timeout, connection closed mid-answer, a body cut short: outcome unknown
        return TransientStoreError(
            f"Azure {op} {key!r}: the response broke off: {_describe(inner or exc)}"
        )
    return StoreError(f"Azure {op} {key!r}: {_describe(exc)}")


_SAS_SIGNATURE = re.compile(r"(?i)\b(sig|signature|accountkey)=[^&;\s'\"]*")


def _describe(exc: BaseException, *, whole: bool = False) -> str:
    """``exc`` in a line for a message: its type and the first line of its text (``whole``: all
    of it, on one line), with anything that looks like a SAS signature or an account key blanked
    (aiohttp's errors quote the request's URL, which carries a SAS token's query when the
    connection string has one)."""
    lines = str(exc).strip().splitlines()
    text = " ".join(" ".join(lines).split()) if whole else (lines[0] if lines else "")
    text = _SAS_SIGNATURE.sub(r"\1=REDACTED", text)[: 600 if whole else 300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _never_connected(exc: ServiceRequestError, inner: object) -> bool:
    """Whether a request failed before any connection existed (refused, DNS, connect timeout)."""
    if isinstance(exc, ServiceRequestTimeoutError):
        return True
    return inner is None or isinstance(
        inner, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError | socket.gaierror
    )


def _etag(value: object) -> str:
    """ETags in one form everywhere: without the quotes Azure puts around them in headers."""
    if not isinstance(value, str) or not value.strip('"'):
        raise StoreError(f"the Azure service sent no usable ETag ({value!r})")
    return value.strip('"')


def _require_asyncio() -> None:
    require_asyncio(_NEEDS_ASYNCIO)


class _Retry(ExponentialRetry):
    """The SDK's retry policy, bounded at ``max_attempts`` attempts in all (the first included),
    waiting a full-jitter exponential backoff between them. It retries connection errors, read
    timeouts, 408 and 5xx answers other than 501 and 505; never a credential that gave no
    token."""

    def __init__(self, max_attempts: int) -> None:
        retries = max_attempts - 1
        super().__init__(
            retry_total=retries, retry_connect=retries, retry_read=retries, retry_status=retries
        )

    def increment(
        self,
        settings: dict[str, Any],
        request: Any,
        response: Any = None,
        error: AzureError | None = None,
    ) -> bool:
        if isinstance(error, ClientAuthenticationError):  # no token: asking again won't help
            return False
        return bool(super().increment(settings, request, response=response, error=error))

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        count = int(settings.get("count", 0))
        return float(backoff.full_jitter(min(_RETRY_BACKOFF_MAX, _RETRY_BACKOFF_BASE * 2.0**count)))


_BODY_SLICE = 256 * 1024


class _Transport(AioHttpTransport):  # type: ignore[misc]  # exported lazily: Any to mypy
    """The SDK's aiohttp transport, sending a large body in slices.

    Given a body over 1 MiB as one ``bytes``, aiohttp warns (``ResourceWarning``) that writing it
    may hold up the event loop. The same bytes as an async iterable of slices go out with the
    same ``Content-Length``, a slice at a time. The iterable is made afresh for every attempt,
    so a retry sends the whole body again."""

    def _get_request_data(self, request: Any) -> Any:
        data = super()._get_request_data(request)
        if isinstance(data, bytes | bytearray) and len(data) > _BODY_SLICE:
            return _slices(memoryview(data))
        return data


async def _slices(view: memoryview) -> AsyncIterator[bytes]:
    for start in range(0, len(view), _BODY_SLICE):
        yield bytes(view[start : start + _BODY_SLICE])


# --- listing order --------------------------------------------------------------------------------


def _first_unordered(name: str) -> int | None:
    """Where ``name`` first holds a character at or above U+E000, or None.

    Below U+E000 (surrogates aside, which keys never hold) every order of strings agrees; from
    there, ordering by UTF-16 code units (Azurite's, being JavaScript) puts U+10000 and above
    before U+E000..U+FFFF, and ordering by code point (Python's, and S3's UTF-8 bytes) after."""
    if name.isascii():
        return None
    for index, char in enumerate(name):
        if ord(char) >= 0xE000:
            return index
    return None


class _CodePointOrder:
    """Puts a listing in code-point order, whether the service sends it in that order or in
    UTF-16 order, holding back as little as possible.

    Both orders agree until two names differ at a character at or above U+E000. All names
    sharing the part before such a character, ``head``, and holding one at that place come
    together in either order (after every other name starting with ``head``): those are held
    back and released sorted once a name without that ``head`` arrives. A listing of plain
    names passes straight through."""

    def __init__(self) -> None:
        self._head: str | None = None
        self._held: list[ObjectMeta] = []

    def push(self, meta: ObjectMeta) -> list[ObjectMeta]:
        """The metas that can be released, in order, now that ``meta`` arrived."""
        released: list[ObjectMeta] = []
        if self._head is not None:
            if meta.key.startswith(self._head):
                self._held.append(meta)
                return released
            released = self.flush()
        index = _first_unordered(meta.key)
        if index is None:
            released.append(meta)
        else:
            self._head, self._held = meta.key[:index], [meta]
        return released

    def flush(self) -> list[ObjectMeta]:
        """Whatever is held back, sorted; the listing ended, or moved past it."""
        held, self._head, self._held = self._held, None, []
        return sorted(held, key=lambda meta: meta.key)


def _order_safe(start: str) -> str:
    """The longest part of ``start`` that every name after it (in code-point order) follows in
    the service's order too, whichever it uses: ``start`` cut before its first character at or
    above U+E000. Given to the service as ``startFrom``, it never skips a name we must list."""
    index = _first_unordered(start)
    return start if index is None else start[:index]


# --- arguments and URLs ---------------------------------------------------------------------------

_CONTAINER_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_ACCOUNT_RE = re.compile(r"[a-z0-9]{3,24}")
_URL_OPTIONS: dict[str, type] = {
    "account_url": str,
    "connect_timeout": float,
    "read_timeout": float,
    "max_attempts": int,
    "page_size": int,
}
# A SAS token's query parameters (Azure's names): a URL carrying one carries a credential.
# parse_store_url refuses names that look like secrets (sig, *key*, *token*...); these are the
# rest of a SAS token, and the credential's other spellings.
_SAS_PARAMETERS = frozenset(
    {
        "sv", "ss", "srt", "sp", "se", "st", "sip", "spr", "sr", "si", "sdd", "ses", "skoid",
        "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid", "sduoid", "rscc", "rscd",
        "rsce", "rscl", "rsct", "connection_string", "connectionstring", "conn_str",
    }
)  # fmt: skip
# Characters Azure does not allow in blob names: C0 and C1 controls, DEL.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_NAME_LENGTH = 1024  # characters (UTF-16 code units) in a blob name, the prefix included
MAX_NAME_SEGMENTS = 254  # '/'-separated parts of a blob name


def _validate_container(container: str) -> str:
    """Azure's naming rules for containers, checked before any I/O."""
    if not isinstance(container, str):
        raise TypeError(f"container must be a str, not {type(container).__name__}")
    if not _CONTAINER_RE.fullmatch(container) or "--" in container:
        raise ValueError(
            f"invalid Azure container name {container!r}: 3 to 63 characters, lowercase "
            "letters, digits and single '-', starting and ending with a letter or digit"
        )
    return container


def _validate_account_url(account_url: str | None) -> str | None:
    if account_url is None:
        return None
    if not isinstance(account_url, str):
        raise TypeError(f"account_url must be a str, not {type(account_url).__name__}")
    parts = urlsplit(account_url)
    if "@" in parts.netloc or parts.query:  # never echo it: a SAS token is a secret
        raise ValueError(
            "account_url must not carry credentials (user info, or a SAS token in its query): "
            f"they come from {CONNECTION_STRING_ENV} or DefaultAzureCredential"
        )
    if parts.scheme != "https" or not parts.hostname or parts.fragment:
        raise ValueError(
            "account_url must look like https://ACCOUNT.blob.core.windows.net (https: "
            f"DefaultAzureCredential's tokens are never sent in clear), got {account_url!r}"
        )
    return account_url.rstrip("/")


def _account_url_from_environment() -> str | None:
    account = os.environ.get(ACCOUNT_ENV, "").strip()
    if not account:
        return None
    if not _ACCOUNT_RE.fullmatch(account):
        raise ValueError(
            f"{ACCOUNT_ENV} must be a storage account name (3 to 24 lowercase letters and "
            f"digits), got {account!r}"
        )
    return f"https://{account}.blob.core.windows.net"


def _validate_client_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"client_options must be a mapping, not {type(options).__name__}")
    taken = sorted(
        set(options)
        & {"credential", "retry_policy", "connection_timeout", "read_timeout", "transport"}
    )
    if taken:
        raise ValueError(
            f"client_options must not set {', '.join(taken)}: the store sets them (credentials "
            "come from the environment; timeouts and attempts are the store's own arguments)"
        )
    return dict(options)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
    return float(value)


def _int_between(name: str, value: int, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        limits = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {limits}, got {value}")
    return value


def _check_name(text: str, what: str) -> str:
    """Azure's own limits on a blob name (or a prefix of one), beyond those of every store."""
    if _CONTROL_RE.search(text):
        raise InvalidKeyError(
            f"{what} {text!r} holds a control character, which Azure blob names can't"
        )
    if len(text.encode("utf-16-le")) // 2 > MAX_NAME_LENGTH:
        raise InvalidKeyError(
            f"{what} is longer than {MAX_NAME_LENGTH} characters with the store's prefix, "
            "the most an Azure blob name holds"
        )
    if text.count("/") >= MAX_NAME_SEGMENTS:
        raise InvalidKeyError(f"{what} has more than {MAX_NAME_SEGMENTS} '/'-separated parts")
    return text


# --- the store ------------------------------------------------------------------------------------


class AzureBlobStore(StoreBase):
    """Objects in one Azure Blob Storage container, optionally under a name prefix.

    ``prefix`` (``"a/b"``) is joined to every key with ``/`` and stripped from listed keys.
    ``connect_timeout`` and ``read_timeout`` bound each attempt (the connection, then every read
    of the answer); ``max_attempts`` (the first included) bounds the SDK's own retries of
    throttling (503 ServerBusy), 5xx, timeouts and network errors, with full-jitter exponential
    backoff. ``account_url`` names the account when ``AZURE_STORAGE_CONNECTION_STRING`` is not
    set. ``page_size`` is how many names one listing request asks for (Azure's most: 5,000).
    ``client_options`` go to the SDK's ``ContainerClient`` as they are (``api_version``,
    ``audience``, ``raw_request_hook``...), except what the store sets itself.
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        account_url: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        page_size: int = MAX_PAGE_SIZE,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._container = _validate_container(container)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        self._prefix = _check_name(validate_prefix(prefix), "prefix").removesuffix("/")
        self._account_url = _validate_account_url(account_url)
        self._connect_timeout = _positive("connect_timeout", connect_timeout)
        self._read_timeout = _positive("read_timeout", read_timeout)
        self._max_attempts = _int_between("max_attempts", max_attempts, 1)
        self._page_size = _int_between("page_size", page_size, 1, MAX_PAGE_SIZE)
        self._client_options = _validate_client_options(client_options)
        self._stack: AsyncExitStack | None = None
        self._client: ContainerClient | None = None
        self._endpoint = self._account_url or "the Azure endpoint"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AzureBlobStore:
        """``az://container[/prefix][?account_url=...&connect_timeout=...]`` (or ``azure://``);
        ``options`` are keyword arguments of ``AzureBlobStore`` not given in the URL. A URL
        carrying credentials (user info, an account key, a SAS token) is refused."""
        if isinstance(url, str):
            query = urlsplit(url).query
            names = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
            if names & _SAS_PARAMETERS:  # never echo them, names or values: a SAS is a secret
                raise ValueError(
                    "az:// URL carries credentials (a SAS token or a connection string); refusing "
                    f"it: credentials come from {CONNECTION_STRING_ENV} or DefaultAzureCredential"
                )
        parsed = parse_store_url(
            url,
            options=_URL_OPTIONS,
            credentials_from=f"{CONNECTION_STRING_ENV} or DefaultAzureCredential",
        )
        if parsed.scheme not in ("az", "azure"):
            raise ValueError("not an az:// (or azure://) URL")
        container = named_location(
            parsed,
            "container",
            no_port=f"the endpoint comes from {CONNECTION_STRING_ENV} or "
            "?account_url=https://ACCOUNT.blob.core.windows.net",
        )
        return cls(container, parsed.path, **merge_options(parsed, options))

    def __repr__(self) -> str:
        where = f", account_url={self._account_url!r}" if self._account_url else ""
        return f"AzureBlobStore({self._container!r}, {self._prefix!r}{where})"

    @property
    def container(self) -> str:
        return self._container

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def client(self) -> ContainerClient:
        """The SDK's ``ContainerClient``, while the store is open: for diagnostics. The store
        owns it; do not close it."""
        if self._client is None:
            raise RuntimeError(_NOT_OPEN)
        return self._client

    # --- lifecycle ---

    async def __aenter__(self) -> Self:
        _require_asyncio()
        if self._stack is not None:
            raise RuntimeError("AzureBlobStore is already open")
        stack = self._stack = AsyncExitStack()  # taken at once: a second enter fails fast
        try:
            client = await self._open(stack)
        except BaseException:  # including cancellation: release what was opened, then re-raise
            self._stack = None
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stack.aclose()
            raise
        if self._stack is not stack:  # aclose() ran while the client was being created
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stack.aclose()
            raise RuntimeError("AzureBlobStore was closed while it was being opened")
        self._client = client
        return self

    async def _open(self, stack: AsyncExitStack) -> ContainerClient:
        """The client, from the connection string if set, else for DefaultAzureCredential.
        Nothing here talks to the service: the first request does."""
        timeouts = {"connection_timeout": self._connect_timeout, "read_timeout": self._read_timeout}
        options: dict[str, Any] = {
            **self._client_options,
            **timeouts,
            "retry_policy": _Retry(self._max_attempts),
            "transport": _Transport(**timeouts),  # closed with the client
        }
        connection_string = os.environ.get(CONNECTION_STRING_ENV, "").strip()
        client: ContainerClient
        if connection_string:
            try:
                client = ContainerClient.from_connection_string(
                    connection_string, self._container, **options
                )
            except ValueError:  # never chain or echo it: the string holds a secret
                raise ValueError(
                    f"{CONNECTION_STRING_ENV} is malformed: expected "
                    "'DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...;...' or one "
                    "with BlobEndpoint=... and SharedAccessSignature=..."
                ) from None
            endpoint = self._endpoint_of(client)
            if (
                self._account_url
                and urlsplit(self._account_url).netloc != urlsplit(endpoint).netloc
            ):
                # Which one did the caller mean? Refuse rather than guess.
                await client.close()
                raise ValueError(
                    f"account_url {self._account_url!r} and {CONNECTION_STRING_ENV} (endpoint "
                    f"{endpoint}) name different accounts: unset one of them"
                )
        else:
            account_url = self._account_url or _account_url_from_environment()
            if account_url is None:
                raise AccessDeniedError(_NO_CREDENTIALS)
            # Imported here: azure-identity pulls in msal, and a connection string needs neither.
            from azure.identity.aio import DefaultAzureCredential

            credential = await stack.enter_async_context(DefaultAzureCredential())
            client = ContainerClient(account_url, self._container, credential=credential, **options)
        client = await stack.enter_async_context(client)
        self._endpoint = self._endpoint_of(client)
        return client

    @staticmethod
    def _endpoint_of(client: ContainerClient) -> str:
        """The account's endpoint, for messages: scheme, host and (for an emulator) the account,
        never a query (a SAS token)."""
        parts = urlsplit(client.primary_endpoint)
        account_path = parts.path.rstrip("/").rsplit("/", 1)[0]
        return f"{parts.scheme}://{parts.netloc}{account_path}"

    async def aclose(self) -> None:
        """Close the client; idempotent, and done even if the caller is being cancelled."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stack.aclose()

    # --- operations ---

    async def get(self, key: str) -> GetResult:
        name = self._name(key)
        client = self._require_client()
        with _map_errors("get", key, self._endpoint):
            downloader = await client.get_blob_client(name).download_blob()
            body = await downloader.readall()
        return GetResult(body=bytes(body), etag=_etag(downloader.properties.etag))

    async def head(self, key: str) -> ObjectMeta:
        name = self._name(key)
        client = self._require_client()
        with _map_errors("head", key, self._endpoint):
            properties = await client.get_blob_client(name).get_blob_properties()
        return ObjectMeta(key=key, size=int(properties.size), etag=_etag(properties.etag))

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        name = self._name(key)
        body = as_body(body)
        op: _Op
        # overwrite=True always: with False the SDK adds its own If-None-Match and reports a
        # failed If-Match as "already exists".
        conditions: dict[str, Any] = {}
        if mode == "create":
            op, conditions["match_condition"] = "create", MatchConditions.IfMissing
        elif isinstance(mode, UpdateVersion):
            etag = mode.etag.strip('"') if isinstance(mode.etag, str) else ""
            if not etag:
                raise ValueError(f"UpdateVersion needs a non-empty etag, got {mode.etag!r}")
            op = "update"
            conditions["match_condition"] = MatchConditions.IfNotModified
            conditions["etag"] = f'"{etag}"'  # an ETag is a quoted string in HTTP headers
        elif mode == "overwrite":
            op = "put"
        else:
            raise ValueError(f"unknown put mode {mode!r}")
        client = self._require_client()
        with _map_errors(op, key, self._endpoint):
            response = await client.get_blob_client(name).upload_blob(
                body, overwrite=True, length=len(body), max_concurrency=1, **conditions
            )
        return PutResult(etag=_etag(response.get("etag")))

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncGenerator[ObjectMeta, None]:
        validate_prefix(prefix)
        if start_after is not None and not isinstance(start_after, str):
            raise TypeError(f"start_after must be a str or None, not {type(start_after).__name__}")
        client = self._require_client()
        name_prefix = _check_name(self._join(prefix), "prefix")
        options: dict[str, Any] = {
            "name_starts_with": name_prefix or None,
            "results_per_page": self._page_size,
        }
        if (
            start_after is not None
            and self._service_starts_from()
            and not _CONTROL_RE.search(start_after)  # never a name, and not for a URL's query
        ):
            # Skip ahead on the service (it lists from startFrom, inclusive); the filter below
            # keeps the listing right where the service ignores it (Azurite does).
            start_from = _order_safe(self._join(start_after))
            if start_from > name_prefix:
                options["start_from"] = start_from
        strip = f"{self._prefix}/" if self._prefix else ""
        order = _CodePointOrder()
        pages = client.list_blobs(**options).by_page()
        while True:  # one page per round, fetched only when the consumer wants more
            self._require_client()  # still open?
            with _map_errors("list", prefix, self._endpoint):
                try:
                    page = await anext(pages)
                except StopAsyncIteration:
                    break
                items = [item async for item in page]
            for item in items:
                key = str(item.name).removeprefix(strip)
                if start_after is not None and key <= start_after:
                    continue
                meta = ObjectMeta(key=key, size=int(item.size), etag=_etag(item.etag))
                for released in order.push(meta):
                    yield released
        for released in order.flush():
            yield released

    async def delete(self, key: str) -> None:
        name = self._name(key)
        client = self._require_client()
        with _map_errors("delete", key, self._endpoint):
            await client.get_blob_client(name).delete_blob(delete_snapshots="include")

    # --- helpers ---

    def _require_client(self) -> ContainerClient:
        _require_asyncio()
        if self._client is None:
            raise RuntimeError(_NOT_OPEN)
        return self._client

    def _service_starts_from(self) -> bool:
        version = self._client_options.get("api_version")
        return version is None or str(version) >= _START_FROM_VERSION

    def _join(self, key_or_prefix: str) -> str:
        return f"{self._prefix}/{key_or_prefix}" if self._prefix else key_or_prefix

    def _name(self, key: str) -> str:
        validate_key(key)
        if key.endswith("."):  # Azure's naming rules: URL handling may drop it ("a." -> "a")
            raise InvalidKeyError(f"key {key!r} ends with '.', which Azure blob names can't")
        return _check_name(self._join(key), f"key {key!r}")
