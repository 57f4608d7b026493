"""AzureBlobStore against a real Azure Blob server (Azurite, started by conftest), plus what
Azurite cannot produce.

Most tests talk to Azurite over HTTP. Where a test uses something else its docstring says so:
"FAKE SERVER" (a raw TCP listener in the test that answers 503, 500, 501, 404 or 403, resets,
stalls, or cuts a body short: answers Azurite never gives). The behaviour suite
(test_store_contract.py, test_claim.py, test_wal.py, test_gc.py, ...) runs on Azure through the
``store`` fixture as well.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
from anyio.abc import SocketStream

from slate_epoch import (
    AccessDeniedError,
    AlreadyExistsError,
    BucketNotFoundError,
    InvalidKeyError,
    ObjectMeta,
    PreconditionError,
    StoreError,
    StoreUnreachableError,
    TransientStoreError,
    UnsupportedStoreError,
    UpdateVersion,
    claim_epoch,
    open_store,
)
from slate_epoch.backends.azure import AzureBlobStore, _CodePointOrder
from slate_epoch.testing.servers import azurite_connection_string, create_container, free_port
from tests.fake_server import Handler, never_answer, read_head, read_request, reset_on_close, serve
from tests.prefixes import check_the_prefix_is_prepended_and_stripped

pytestmark = pytest.mark.anyio

CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"


@pytest.fixture
def anyio_backend() -> str:
    """AzureBlobStore runs on asyncio only; the one trio test parametrizes this itself."""
    return "asyncio"


@pytest.fixture
def no_azure_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Neither a connection string nor an account in the environment."""
    monkeypatch.delenv(CONNECTION_STRING, raising=False)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT", raising=False)
    return monkeypatch


@pytest.fixture
async def container(azure_connection_string: str) -> str:
    return await create_container(azure_connection_string)


@pytest.fixture
async def azure(container: str) -> AsyncIterator[AzureBlobStore]:
    async with AzureBlobStore(container) as store:
        yield store


class Requests:
    """The HTTP requests a store's client sends (every attempt, retries included), seen through
    the SDK's ``raw_request_hook``; give ``requests.options`` as the store's client_options."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (operation, query string)
        self.options = {"raw_request_hook": self._on_request}

    def _on_request(self, request: Any) -> None:
        http = request.http_request
        parts = urlsplit(http.url)
        query = parse_qs(parts.query)
        if query.get("comp") == ["list"]:
            operation = "List"
        else:
            operation = {"GET": "Get", "HEAD": "Head", "PUT": "Put", "DELETE": "Delete"}.get(
                http.method, http.method
            )
        self.sent.append((operation, parts.query))

    @property
    def operations(self) -> list[str]:
        return [operation for operation, _ in self.sent]

    def clear(self) -> None:
        self.sent.clear()


# --- URLs and arguments (no I/O) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "container", "prefix"),
    [
        ("az://my-container", "my-container", ""),
        ("az://my-container/", "my-container", ""),
        ("azure://abc/a/b", "abc", "a/b"),
        ("az://abc/a/b/", "abc", "a/b"),
        ("AZ://abc/x%20y", "abc", "x y"),
        ("az://abc/p?account_url=https://acct.blob.core.windows.net", "abc", "p"),
        ("az://abc?connect_timeout=1.5&read_timeout=3&max_attempts=2&page_size=10", "abc", ""),
    ],
)
def test_good_urls(url: str, container: str, prefix: str) -> None:
    store = AzureBlobStore.from_url(url)
    assert (store.container, store.prefix) == (container, prefix)
    opened = open_store(url)
    assert isinstance(opened, AzureBlobStore)
    assert (opened.container, opened.prefix) == (container, prefix)


def test_url_options_and_arguments_combine_but_never_twice() -> None:
    store = AzureBlobStore.from_url("az://abc/p?max_attempts=2", account_url="https://a.example")
    assert "https://a.example" in repr(store)
    with pytest.raises(ValueError, match="both in the URL and as arguments"):
        AzureBlobStore.from_url("az://abc?max_attempts=2", max_attempts=3)


@pytest.mark.parametrize(
    "url",
    [
        "az://account:hunter2secret@container/p",
        "az://hunter2secret@container",
        "az://container/p?account_key=hunter2secret",
        "az://container/p?AccountKey=hunter2secret",
        "az://container?sig=hunter2secret",
        "az://container?sv=2024-11-04&ss=b&srt=co&sp=rwdl&se=2030-01-01&sig=hunter2secret",
        "az://container?sv=hunter2secret",  # one SAS parameter is enough
        "az://container?se=2030-01-01&sp=hunter2secret",
        "az://container?sas_token=hunter2secret",
        "az://container?connection_string=hunter2secret",
        "az://container?credential=hunter2secret",
        "az://container?account_url=https://acct.blob.core.windows.net/%3Fsig%3Dhunter2secret",
        "az://container?account_url=https://user:hunter2secret@acct.blob.core.windows.net",
    ],
)
def test_urls_with_secrets_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError, match="credentials") as caught:
        AzureBlobStore.from_url(url)
    assert "hunter2secret" not in str(caught.value)
    assert caught.value.__cause__ is None
    with pytest.raises(ValueError, match="credentials") as caught:
        open_store(url)
    assert "hunter2secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("az://container?colour=blue", "unknown option.*colour"),
        ("az://container?max_attempts=1&max_attempts=2", "given twice"),
        ("az://container?max_attempts=lots", "max_attempts.*int"),
        ("az://container?max_attempts=0", "at least 1"),
        ("az://container?connect_timeout=-1", "positive"),
        ("az://container?read_timeout=nan", "positive"),
        ("az://container?page_size=0", "between 1 and 5000"),
        ("az://container?page_size=5001", "between 1 and 5000"),
        ("az://container?account_url=http://acct.blob.core.windows.net", "https"),
        ("az://container?account_url=acct", "https"),
        ("az://container:10000/p", "no port"),
        ("az:///p", "no container"),
        ("az://container#frag", "fragment"),
        ("s3://container", "not an az://"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AzureBlobStore.from_url(url)


def test_without_the_extra_open_store_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "azure.storage.blob.aio", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "slate_epoch.backends.azure", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'slate-epoch\[azure\]'"):
        open_store("az://container")


@pytest.mark.parametrize(
    "name", ["ab", "a" * 64, "Upper", "under_score", "-abc", "abc-", "a--b", "a.b", "a b", "$root"]
)
def test_bad_container_names(name: str) -> None:
    with pytest.raises(ValueError, match="container name"):
        AzureBlobStore(name)


@pytest.mark.parametrize("prefix", ["/abs", "a//b", "a/../b", "./a", "a\x01b", "x" * 1100])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        AzureBlobStore("container", prefix)


def test_client_options_may_not_replace_what_the_store_sets() -> None:
    with pytest.raises(ValueError, match="credential"):
        AzureBlobStore("container", client_options={"credential": "hunter2secret"})
    with pytest.raises(ValueError, match="retry_policy"):
        AzureBlobStore("container", client_options={"retry_policy": None})


# --- lifecycle ------------------------------------------------------------------------------------


async def test_a_store_never_entered_says_to_use_async_with() -> None:
    store = AzureBlobStore("container")
    with pytest.raises(RuntimeError, match="async with"):
        await store.get("k")
    with pytest.raises(RuntimeError, match="async with"):
        await store.put("k", b"", mode="create")
    with pytest.raises(RuntimeError, match="async with"):
        _ = store.client
    with pytest.raises(RuntimeError, match="async with"):
        async with aclosing(store.list("")) as metas:
            await anext(metas)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/a",
        "a/../b",
        "a//b",
        "a.",  # Azure's naming rules: a trailing dot may be dropped on the way
        "x/y.",
        "a\x01b",  # control characters: not allowed in blob names
        "a\x7f",
        "a\x85b",
        "/".join(["p"] * 255),  # more than 254 parts
    ],
)
async def test_keys_are_validated_before_anything_else(key: str) -> None:
    store = AzureBlobStore("container")  # not even open: the key is refused first
    with pytest.raises(InvalidKeyError):
        await store.put(key, b"")
    with pytest.raises(InvalidKeyError):
        await store.get(key)
    with pytest.raises(InvalidKeyError):
        await store.delete(key)


async def test_a_key_too_long_with_the_prefix_is_refused() -> None:
    store = AzureBlobStore("container", "p" * 1000)  # 1,000 + "/" + 23 is the most
    with pytest.raises(InvalidKeyError, match="1024"):
        await store.put("k" * 24, b"")
    with pytest.raises(InvalidKeyError, match="1024"):  # U+1F600 is two UTF-16 units
        await store.head("\U0001f600" * 12)
    with pytest.raises(RuntimeError, match="async with"):  # valid: on to the next check
        await store.head("k" * 23)


async def test_close_is_idempotent_and_a_closed_store_refuses_work(
    azure_connection_string: str,
) -> None:
    store = AzureBlobStore("container")
    async with store:
        with pytest.raises(RuntimeError, match="already open"):
            await store.__aenter__()
    await store.aclose()
    await store.aclose()
    with pytest.raises(RuntimeError, match="async with"):
        await store.head("k")
    async with store:  # reopening after a close is fine
        assert store.client is not None


async def test_close_happens_even_when_cancelled(azure_connection_string: str) -> None:
    store = AzureBlobStore("container")
    with anyio.CancelScope() as scope:
        async with store:
            client = store.client
            scope.cancel()
            await anyio.sleep(1)
    with pytest.raises(RuntimeError, match="async with"):
        _ = store.client
    # the aiohttp session the client owned is closed too
    session = getattr(client._pipeline._transport, "session", None)
    assert session is None or session.closed


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_the_azure_store_says_it_needs_asyncio() -> None:
    store = AzureBlobStore("container")
    with pytest.raises(RuntimeError, match=r"needs asyncio.*trio"):
        await store.__aenter__()
    with pytest.raises(RuntimeError, match="needs asyncio"):
        await store.get("k")
    with pytest.raises(RuntimeError, match="needs asyncio"):
        async with aclosing(store.list("")) as metas:
            await anext(metas)


# --- credentials ----------------------------------------------------------------------------------


async def test_no_account_anywhere_is_refused_at_open(
    no_azure_environment: pytest.MonkeyPatch,
) -> None:
    store = AzureBlobStore("container")
    with pytest.raises(AccessDeniedError, match=r"AZURE_STORAGE_CONNECTION_STRING.*account_url"):
        await store.__aenter__()
    with pytest.raises(RuntimeError, match="async with"):  # nothing half-open was left behind
        _ = store.client


async def test_a_malformed_connection_string_is_refused_without_echoing_it(
    no_azure_environment: pytest.MonkeyPatch,
) -> None:
    no_azure_environment.setenv(CONNECTION_STRING, "AccountKey=hunter2secret;;;garbage")
    with pytest.raises(ValueError, match="malformed") as caught:
        async with AzureBlobStore("container"):
            pass
    assert "hunter2secret" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


async def test_account_url_and_a_connection_string_naming_another_account_are_refused(
    azure_connection_string: str,
) -> None:
    store = AzureBlobStore("container", account_url="https://other.blob.core.windows.net")
    with pytest.raises(ValueError, match="different accounts"):
        await store.__aenter__()
    assert "AccountKey" not in repr(store)


async def test_without_a_connection_string_the_account_gets_default_azure_credential(
    no_azure_environment: pytest.MonkeyPatch,
) -> None:
    """Opening sends nothing: the client and DefaultAzureCredential are made, not used."""
    async with AzureBlobStore("container", account_url="https://acct.blob.core.windows.net") as s:
        assert s.client.url.startswith("https://acct.blob.core.windows.net/container")
        assert type(s.client.credential).__name__ == "DefaultAzureCredential"
    no_azure_environment.setenv("AZURE_STORAGE_ACCOUNT", "myaccount")
    async with AzureBlobStore("container") as store:
        assert store.client.url.startswith("https://myaccount.blob.core.windows.net/container")
    no_azure_environment.setenv("AZURE_STORAGE_ACCOUNT", "Not An Account")
    with pytest.raises(ValueError, match="AZURE_STORAGE_ACCOUNT"):
        await AzureBlobStore("container").__aenter__()


async def test_no_token_from_the_credential_chain_is_access_denied(
    no_azure_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DefaultAzureCredential limited to the Azure CLI credential, with no ``az`` on PATH: it
    finds no token, so the request is never sent (to a port nobody listens on, all the same)."""
    no_azure_environment.setenv("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")
    no_azure_environment.setenv("PATH", str(tmp_path))
    requests = Requests()
    store = AzureBlobStore(
        "container",
        account_url=f"https://127.0.0.1:{free_port()}",  # a port nobody listens on
        client_options=requests.options,
    )
    async with store:
        with anyio.fail_after(30), pytest.raises(AccessDeniedError, match="no usable credentials"):
            await store.get("k")
        with pytest.raises(AccessDeniedError, match="AzureCliCredential"):  # what was tried
            await store.head("k")
    assert requests.operations == ["Get", "Head"]  # no retry: asking again would not help


# --- the real server ------------------------------------------------------------------------------

# What every store does (puts in each mode, missing keys, listings) is in test_store_contract.py,
# which runs on Azurite too (an update of a missing blob: Azurite answers 412; Azure's 404 is in
# test_answers_azurite_never_gives); here, what is Azure's own.


async def test_etags_come_unquoted_and_a_quoted_one_is_the_same_version(
    azure: AzureBlobStore,
) -> None:
    """Azure puts quotes around its etags: the store takes them off (get, head and list give the
    put's etag: test_store_contract.py), and takes an etag back with or without them."""
    first = await azure.put("k", b"1", mode="create")
    assert '"' not in first.etag
    # a quoted etag, as HTTP headers carry them, is the same version
    await azure.put("k", b"2", mode=UpdateVersion(f'"{first.etag}"'))
    assert (await azure.get("k")).body == b"2"


async def test_a_refused_create_chains_the_sdks_error(azure: AzureBlobStore) -> None:
    await azure.put("k", b"1", mode="create")
    with pytest.raises(AlreadyExistsError) as caught:
        await azure.put("k", b"2", mode="create")
    assert caught.value.__cause__ is not None  # the SDK's error, chained


async def test_missing_container_on_every_operation(azure_connection_string: str) -> None:
    async with AzureBlobStore("no-such-container") as store:
        with pytest.raises(BucketNotFoundError, match="container does not exist"):
            await store.get("k")
        with pytest.raises(BucketNotFoundError):
            await store.head("k")  # a HEAD answer has no body, but Azure's error code header
        with pytest.raises(BucketNotFoundError):
            await store.put("k", b"")
        with pytest.raises(BucketNotFoundError):
            await store.put("k", b"", mode="create")
        with pytest.raises(BucketNotFoundError):
            await store.put("k", b"", mode=UpdateVersion("0x8DC0000000000000"))
        with pytest.raises(BucketNotFoundError):
            await store.delete("k")
        with pytest.raises(BucketNotFoundError):
            [m async for m in store.list("")]
        with pytest.raises(BucketNotFoundError):
            [m async for m in store.list("", start_after="a")]


async def test_the_prefix_is_prepended_and_stripped(container: str) -> None:
    await check_the_prefix_is_prepended_and_stripped(
        lambda prefix: AzureBlobStore(container, prefix)
    )


async def test_listing_pages_lazily(container: str) -> None:
    """Pages of 4 (``page_size``, the SDK's results_per_page): a page is asked for only when
    the one before is used up, and never after the caller stops."""
    keys = [f"k/{i:02d}" for i in range(10)]
    requests = Requests()
    async with AzureBlobStore(container, page_size=4, client_options=requests.options) as store:
        for key in reversed(keys):
            await store.put(key, b"x", mode="create")
        await store.put("l/after", b"")  # not under the listed prefix

        requests.clear()
        assert [m.key async for m in store.list("k/")] == keys
        assert requests.operations == ["List"] * 3

        requests.clear()
        seen = []
        async with aclosing(store.list("k/")) as metas:
            async for meta in metas:
                seen.append(meta.key)
                if len(seen) == 4:
                    break
        assert seen == keys[:4]
        assert requests.operations == ["List"]  # the second page was never asked for

        requests.clear()
        assert [m.key async for m in store.list("k/", start_after="k/05")] == keys[6:]
        assert [m.key async for m in store.list("k/", start_after="k/09")] == []
        assert [m.key async for m in store.list("k/", start_after="a")] == keys
        assert [m.key async for m in store.list("k/", start_after="z")] == []


async def test_start_after_asks_the_service_to_start_there(container: str) -> None:
    """The listing asks for ``startFrom`` (Azure skips the names before it; Azurite ignores it,
    and the store filters them out itself)."""
    requests = Requests()
    async with AzureBlobStore(container, "pre", client_options=requests.options) as store:
        await store.put("m/1", b"")
        await store.put("m/2", b"")
        assert [m.key async for m in store.list("m/", start_after="m/1")] == ["m/2"]
        assert [m.key async for m in store.list("", start_after="m/\ue000x")] == []
    [first, second] = [parse_qs(query) for _, query in requests.sent if "comp=list" in query]
    assert first["startFrom"] == ["pre/m/1"]
    assert first["prefix"] == ["pre/m/"]
    # cut before U+E000: a name that sorts after it by code point may sort before it by UTF-16
    assert second["startFrom"] == ["pre/m/"]


def _meta(key: str) -> ObjectMeta:
    return ObjectMeta(key=key, size=0, etag="e")


@pytest.mark.parametrize("seed", range(20))
def test_listings_come_out_in_code_point_order_from_either_service_order(seed: int) -> None:
    """No server: names in UTF-16 order (Azurite's) or in code-point order (Azure's, S3's) go
    through ``_CodePointOrder`` and come out in code-point order, held back only where the two
    orders can differ."""
    alphabet = ["a", "b", "/", "\u00fc", "\ud7ff", "\ue000", "\uffef", "\U0001f600", "\U00010000"]
    rng = random.Random(seed)
    names = sorted({"".join(rng.choices(alphabet, k=rng.randint(1, 4))) for _ in range(60)})
    utf16 = sorted(names, key=lambda name: name.encode("utf-16-be"))
    for service_order in (names, utf16):
        order = _CodePointOrder()
        out = [m.key for name in service_order for m in order.push(_meta(name))]
        out += [m.key for m in order.flush()]
        assert out == names


def test_plain_names_are_never_held_back() -> None:
    order = _CodePointOrder()
    assert [m.key for m in order.push(_meta("a/1"))] == ["a/1"]
    assert order.push(_meta("a/\U0001f600")) == []  # held: U+E000 and above may come next
    assert order.push(_meta("a/\ue000")) == []
    assert [m.key for m in order.push(_meta("b"))] == ["a/\ue000", "a/\U0001f600", "b"]
    assert order.flush() == []


async def test_wrong_account_key_is_access_denied(
    azurite: Any, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The development account with a wrong (well-formed) key: Azurite checks the signature."""
    wrong = "d3Jvbmcta2V5LW5vdC10aGUtZGV2LWFjY291bnRzLWtleQ=="
    monkeypatch.setenv(
        CONNECTION_STRING, azurite_connection_string(azurite.endpoint_url, account_key=wrong)
    )
    async with AzureBlobStore(container) as store:
        with pytest.raises(AccessDeniedError, match=r"AuthorizationFailure|AuthenticationFailed"):
            await store.get("k")
        with pytest.raises(AccessDeniedError):
            await store.put("k", b"", mode="create")
        with pytest.raises(AccessDeniedError):
            [m async for m in store.list("")]
        with pytest.raises(AccessDeniedError, match="HTTP 403"):
            await store.head("k")
        with pytest.raises(AccessDeniedError):
            await store.delete("k")


async def test_an_account_key_that_cannot_sign_is_access_denied(
    azurite: Any, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key that is not base64: the SDK can't sign the request, so nothing is sent."""
    monkeypatch.setenv(
        CONNECTION_STRING,
        azurite_connection_string(azurite.endpoint_url, account_key="not*base64*hunter2secret"),
    )
    async with AzureBlobStore(container) as store:
        with pytest.raises(AccessDeniedError, match="no usable credentials") as caught:
            await store.get("k")
    assert "hunter2secret" not in str(caught.value)


async def test_unreachable_endpoint_fails_within_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    monkeypatch.setenv(CONNECTION_STRING, azurite_connection_string(endpoint))
    requests = Requests()
    started = time.monotonic()
    async with AzureBlobStore("container", max_attempts=2, client_options=requests.options) as s:
        with anyio.fail_after(30), pytest.raises(StoreUnreachableError, match="cannot reach"):
            await s.put("k", b"", mode="create")
        with anyio.fail_after(30), pytest.raises(StoreUnreachableError, match=r"127\.0\.0\.1"):
            [m async for m in s.list("")]
    assert time.monotonic() - started < 30
    assert requests.operations == ["Put", "Put", "List", "List"]  # max_attempts each


# --- what Azurite never answers: fake servers -----------------------------------------------------


@asynccontextmanager
async def _serve(handler: Handler, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """FAKE SERVER helper: ``serve(handler)``, set as the connection string's endpoint."""
    async with serve(handler) as endpoint:
        monkeypatch.setenv(CONNECTION_STRING, azurite_connection_string(endpoint))
        yield endpoint


async def _read_request(stream: SocketStream) -> str:
    """The request line (the headers are read; the small bodies sent here come along or are
    dropped)."""
    head, _ = await read_head(stream)
    return head.split(b"\r\n", 1)[0].decode()


def _error_answer(status: int, reason: str, code: str, *, head_request: bool = False) -> bytes:
    """An error as Azure words it: the code in ``x-ms-error-code`` and (except in the answer to
    a HEAD, which has no body) in an XML body."""
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
        f"<Message>fake: {reason}</Message></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"x-ms-error-code: {code}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + (b"" if head_request else body)


def _answering(status: int, reason: str, code: str, seen: list[str]) -> Any:
    async def answer(stream: SocketStream) -> None:
        async with stream:
            request_line = await _read_request(stream)
            seen.append(request_line)
            head_request = request_line.startswith("HEAD ")
            await stream.send(_error_answer(status, reason, code, head_request=head_request))

    return answer


@pytest.mark.parametrize(
    ("status", "reason", "code", "op"),
    [
        (503, "Server Busy", "ServerBusy", "create"),
        (500, "Operation Timed Out", "OperationTimedOut", "get"),
        (500, "Internal Server Error", "InternalError", "list"),
        (503, "Server Busy", "ServerBusy", "head"),
        (502, "Bad Gateway", "", "update"),
    ],
)
async def test_throttling_and_server_errors_are_retried_a_bounded_number_of_times_then_transient(
    monkeypatch: pytest.MonkeyPatch, status: int, reason: str, code: str, op: str
) -> None:
    """FAKE SERVER: every request gets the same 5xx answer; the SDK tries max_attempts times,
    then the store reports the outcome unknown."""
    seen: list[str] = []
    async with (
        _serve(_answering(status, reason, code, seen), monkeypatch),
        AzureBlobStore("container", max_attempts=3) as store,
    ):
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match=f"HTTP {status}"):
            await _call(store, op)
    assert len(seen) == 3


async def _call(store: AzureBlobStore, op: str) -> object:
    if op == "create":
        return await store.put("k", b"x", mode="create")
    if op == "update":
        return await store.put("k", b"x", mode=UpdateVersion("0x8DC"))
    if op == "get":
        return await store.get("k")
    if op == "head":
        return await store.head("k")
    if op == "delete":
        await store.delete("k")
        return None
    return [m async for m in store.list("")]


@pytest.mark.parametrize(
    ("status", "reason", "code", "op", "error"),
    [
        # Azure's answer to If-Match on a missing blob (Azurite says 412)
        (404, "Not Found", "BlobNotFound", "update", PreconditionError),
        # an emulator that answers a failed If-None-Match with 412 (Azure says 409)
        (412, "Precondition Failed", "ConditionNotMet", "create", AlreadyExistsError),
        (409, "Conflict", "BlobAlreadyExists", "create", AlreadyExistsError),
        (404, "Not Found", "BlobNotFound", "delete", None),
        # a role assignment without the data action (RBAC)
        (403, "Forbidden", "AuthorizationPermissionMismatch", "get", AccessDeniedError),
        (401, "Unauthorized", "NoAuthenticationInformation", "list", AccessDeniedError),
        (404, "Not Found", "ContainerNotFound", "head", BucketNotFoundError),
        (409, "Conflict", "ContainerBeingDeleted", "create", BucketNotFoundError),
        (412, "Precondition Failed", "LeaseIdMissing", "update", StoreError),
        (400, "Bad Request", "InvalidResourceName", "create", InvalidKeyError),
        (429, "Too Many Requests", "TooManyRequests", "get", TransientStoreError),
    ],
)
async def test_answers_azurite_never_gives(
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    reason: str,
    code: str,
    op: str,
    error: type[BaseException] | None,
) -> None:
    """FAKE SERVER: one answer, the error it maps to (by status and error code; None: none),
    no retry."""
    seen: list[str] = []
    async with (
        _serve(_answering(status, reason, code, seen), monkeypatch),
        AzureBlobStore("container", max_attempts=3) as store,
    ):
        if error is None:
            assert await _call(store, op) is None
        else:
            with anyio.fail_after(30), pytest.raises(error) as caught:
                await _call(store, op)
            assert type(caught.value) is error  # not a subclass that means something else
            assert caught.value.__cause__ is not None
    assert len(seen) == 1


async def test_a_reset_connection_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE SERVER: the server reads the request and drops the connection without answering."""
    seen: list[str] = []

    async def hang_up(stream: SocketStream) -> None:
        async with stream:
            seen.append(await _read_request(stream))
            reset_on_close(stream)

    requests = Requests()
    async with (
        _serve(hang_up, monkeypatch),
        AzureBlobStore("container", max_attempts=2, client_options=requests.options) as store,
    ):
        with anyio.fail_after(30), pytest.raises(TransientStoreError) as caught:
            await store.put("k", b"x", mode="create")
    assert not isinstance(caught.value, StoreUnreachableError)  # it was reached: outcome unknown
    assert requests.operations == ["Put", "Put"]  # max_attempts
    # aiohttp itself may resend an idempotent request once when the connection drops
    assert 2 <= len(seen) <= 4


async def test_a_server_that_never_answers_times_out_as_transient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FAKE SERVER: the request is read and never answered; read_timeout bounds the wait."""
    async with (
        _serve(never_answer, monkeypatch),
        AzureBlobStore("container", read_timeout=0.3, max_attempts=2) as store,
    ):
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match="Timeout"):
            await store.get("k")


async def test_a_body_cut_short_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE SERVER: a GET answered with Content-Length 100 and only 10 bytes, then a close
    (the SDK's downloader re-reads a short body a few times itself, then gives up)."""

    async def cut_short(stream: SocketStream) -> None:
        async with stream:
            await _read_request(stream)
            head = (
                "HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\n"
                'ETag: "0x8DC"\r\nContent-Range: bytes 0-99/100\r\nx-ms-blob-type: BlockBlob\r\n'
                "Connection: close\r\n\r\n"
            )
            await stream.send(head.encode() + b"SLEM012345")

    async with (
        _serve(cut_short, monkeypatch),
        AzureBlobStore("container", max_attempts=1) as store,
    ):
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match="broke off"):
            await store.get("r/manifest/00000000000000000001.manifest")


async def test_a_listing_answer_that_breaks_off_is_transient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FAKE SERVER: a List Blobs answer whose XML stops halfway (complete as HTTP, cut short as
    a document)."""

    async def half_a_listing(stream: SocketStream) -> None:
        async with stream:
            await _read_request(stream)
            body = b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs><Blob><Na'
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )

    async with (
        _serve(half_a_listing, monkeypatch),
        AzureBlobStore("container", max_attempts=1) as store,
    ):
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match="broke off"):
            [m async for m in store.list("")]


async def test_errors_never_quote_a_sas_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE SERVER: a garbled answer (bytes after a ``Connection: close`` body) makes aiohttp
    raise an error quoting the request's URL, whose query carries the connection string's SAS
    token: the store's message blanks the signature."""

    async def garbled(stream: SocketStream) -> None:
        async with stream:
            await _read_request(stream)
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nokEXTRA"
            )

    async with _serve(garbled, monkeypatch) as endpoint:
        monkeypatch.setenv(
            CONNECTION_STRING,
            f"BlobEndpoint={endpoint}/devstoreaccount1;"
            "SharedAccessSignature=sv=2024-11-04&sp=rwdl&sig=hunter2secret",
        )
        async with AzureBlobStore("container", max_attempts=1) as store:
            with anyio.fail_after(30), pytest.raises(TransientStoreError) as caught:
                await store.head("k")
    assert "sig=REDACTED" in str(caught.value)
    assert "hunter2secret" not in str(caught.value)


async def test_a_server_that_does_not_implement_conditional_writes_is_unsupported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FAKE SERVER: every request is answered 501 NotImplemented, as a server without
    conditional writes answers If-None-Match. Permanent: one request, never retried, and a
    claim stops at once with the reason instead of timing out."""
    seen: list[str] = []
    async with (
        _serve(_answering(501, "Not Implemented", "NotImplemented", seen), monkeypatch),
        AzureBlobStore("container", max_attempts=3) as store,
    ):
        with anyio.fail_after(30), pytest.raises(UnsupportedStoreError, match="If-None-Match"):
            await store.put("k", b"x", mode="create")
        assert len(seen) == 1
        with anyio.fail_after(30), pytest.raises(UnsupportedStoreError):
            await claim_epoch(store, "r", timeout=20)


async def test_a_large_body_goes_out_whole_on_every_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FAKE SERVER: a 3 MiB put (sent in slices, so aiohttp has nothing to warn about) is
    answered 503 once, then 201; both attempts carry the whole body."""
    body = bytes(range(256)) * (3 * 4096)
    received: list[int] = []

    async def busy_then_created(stream: SocketStream) -> None:
        async with stream:
            _, rest = await read_request(stream)
            received.append(len(rest))
            assert rest == body
            if len(received) == 1:
                await stream.send(_error_answer(503, "Server Busy", "ServerBusy"))
            else:
                await stream.send(
                    b'HTTP/1.1 201 Created\r\nETag: "0x8DCBEEF"\r\nContent-Length: 0\r\n'
                    b"Connection: close\r\n\r\n"
                )

    async with (
        _serve(busy_then_created, monkeypatch),
        AzureBlobStore("container", max_attempts=2) as store,
    ):
        with anyio.fail_after(30):
            assert (await store.put("big", body, mode="create")).etag == "0x8DCBEEF"
    assert received == [len(body), len(body)]


# --- claims through Azure -------------------------------------------------------------------------


async def test_requests_per_claim(container: str) -> None:
    """As on S3: a cold claim over a short history takes 4 requests (list, read the newest,
    write the next, check the retention boundary); one that knows the newest id, 2."""
    async with AzureBlobStore(container) as earlier:
        for _ in range(3):
            await claim_epoch(earlier, "svc")
    requests = Requests()
    async with AzureBlobStore(container, client_options=requests.options) as fresh:
        handle = await claim_epoch(fresh, "svc")
        assert handle.epoch == 4
        assert sorted(requests.operations) == ["Get", "Get", "List", "Put"], requests.sent

        requests.clear()
        handle = await claim_epoch(fresh, "svc")
        assert handle.epoch == 5
        assert requests.operations == ["Put", "Get"], requests.sent
