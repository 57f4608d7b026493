"""GCSStore against a real GCS server (fake-gcs-server, started by conftest), plus what that
server cannot produce.

Most tests talk to fake-gcs-server over HTTP. Where a test uses something else it says so in its
docstring: "FAKE SERVER" (a raw TCP listener in the test that answers 503, 401, 501, resets,
stalls, cuts a body short, or plays a token endpoint) or "GCP-STORAGE-EMULATOR" (a second real
server, which enforces no precondition). The behaviour suite (test_claim.py, test_wal.py, ...)
runs on GCS as well through the ``store`` fixture, on asyncio and trio.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from slate_epoch import (
    AccessDeniedError,
    AlreadyExistsError,
    BucketNotFoundError,
    InvalidKeyError,
    NotFoundError,
    PreconditionError,
    StoreUnreachableError,
    TransientStoreError,
    UnsupportedStoreError,
    UpdateVersion,
    claim_epoch,
    open_store,
)
from slate_epoch.backends.gcs import DEFAULT_ENDPOINT, GCSStore
from slate_epoch.testing.servers import GcpStorageEmulator, create_gcs_bucket, free_port
from tests.fake_server import never_answer, read_request, reset_on_close, serve

# Every test here has the session's fake-gcs-server and STORAGE_EMULATOR_HOST naming it, so no
# request can reach Google; tests that need another endpoint name it explicitly.
from tests.listings import list_keys
from tests.prefixes import check_the_prefix_is_prepended_and_stripped

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("gcs_endpoint")]


@pytest.fixture
def anyio_backend() -> str:
    """asyncio here; the tests that show trio parametrize this themselves (and the behaviour
    suite runs GCS on both)."""
    return "asyncio"


@pytest.fixture
async def bucket(gcs_endpoint: str) -> str:
    return await create_gcs_bucket(gcs_endpoint)


@pytest.fixture
async def gcs(bucket: str) -> AsyncIterator[GCSStore]:
    async with GCSStore(bucket) as store:
        yield store


class Requests:
    """The HTTP requests a store's client sends (every attempt, retries included), by kind."""

    def __init__(self, store: GCSStore) -> None:
        self.sent: list[httpx.Request] = []
        store.client.event_hooks["request"].append(self._on_request)

    async def _on_request(self, request: httpx.Request) -> None:
        self.sent.append(request)

    @property
    def kinds(self) -> list[str]:
        return [_kind(request) for request in self.sent]

    def clear(self) -> None:
        self.sent.clear()


def _kind(request: httpx.Request) -> str:
    path, params = request.url.path, request.url.params
    if path.startswith("/upload/"):
        return f"upload:{params.get('uploadType')}"
    if request.method == "DELETE":
        return "delete"
    if path.endswith("/o"):
        return "list"
    if "/o/" in path:
        return "media" if params.get("alt") == "media" else "metadata"
    return "bucket"


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # a port nobody listens on


# --- URLs and arguments (no I/O) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("gs://my-bucket", "my-bucket", ""),
        ("gs://my-bucket/", "my-bucket", ""),
        ("gcs://my_bucket.example.com/a/b", "my_bucket.example.com", "a/b"),
        ("gs://my-bucket/a/b/", "my-bucket", "a/b"),
        ("GS://abc/x%20y", "abc", "x y"),
        ("gs://abc/p?endpoint_url=http://127.0.0.1:4443&anonymous=true", "abc", "p"),
        ("gs://abc?connect_timeout=1.5&read_timeout=3&max_attempts=2&page_size=10", "abc", ""),
    ],
)
def test_good_urls(url: str, bucket: str, prefix: str) -> None:
    store = GCSStore.from_url(url)
    assert (store.bucket, store.prefix) == (bucket, prefix)
    opened = open_store(url)
    assert isinstance(opened, GCSStore)
    assert (opened.bucket, opened.prefix) == (bucket, prefix)


def test_url_options_and_arguments_combine_but_never_twice() -> None:
    store = GCSStore.from_url("gs://abc/p?read_timeout=3", endpoint_url="http://127.0.0.1:1")
    assert store.endpoint_url == "http://127.0.0.1:1"
    with pytest.raises(ValueError, match="both in the URL and as arguments"):
        GCSStore.from_url("gs://abc?page_size=10", page_size=20)


@pytest.mark.parametrize(
    "url",
    [
        "gs://ya29.hunter2secret@bucket/p",
        "gs://user:hunter2secret@bucket",
        "gs://bucket/p?access_token=hunter2secret",
        "gs://bucket/p?private_key=hunter2secret",
        "gs://bucket/p?credentials=hunter2secret",
        "gcs://bucket?read_timeout=3&api_key=hunter2secret",
        "gs://bucket?endpoint_url=http://user:hunter2secret@127.0.0.1:4443",
    ],
)
def test_urls_with_secrets_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError, match="credentials") as caught:
        GCSStore.from_url(url)
    assert "hunter2secret" not in str(caught.value)
    assert "Application Default Credentials" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gs://bucket?colour=blue", "unknown option.*colour"),
        ("gs://bucket?page_size=1&page_size=2", "given twice"),
        ("gs://bucket?max_attempts=lots", "max_attempts.*int"),
        ("gs://bucket?max_attempts=0", "between 1 and 100"),
        ("gs://bucket?page_size=1001", "between 1 and 1000"),
        ("gs://bucket?connect_timeout=-1", "positive"),
        ("gs://bucket?read_timeout=nan", "positive"),
        ("gs://bucket?anonymous=perhaps", "anonymous.*true or false"),
        ("gs://bucket?endpoint_url=ftp://host", "endpoint_url"),
        ("gs://bucket?endpoint_url=http://host/storage/v1", "no path"),
        ("gs://bucket:4443/p", "no port"),
        ("gs:///p", "no bucket"),
        ("gs://bucket#frag", "fragment"),
        ("s3://bucket", "not a gs"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GCSStore.from_url(url)


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "Upper",
        "-abc",
        "abc_",
        "a..b",
        "192.168.1.1",
        "a b",
        "googbucket",
        "my-google-bucket",
        f"{'a' * 64}.com",
    ],
)
def test_bad_bucket_names(name: str) -> None:
    with pytest.raises(ValueError, match="bucket name"):
        GCSStore(name)


@pytest.mark.parametrize("prefix", ["/abs", "a//b", "a/../b", "./a", "a\nb", "a\rb"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        GCSStore("bucket", prefix)


def test_storage_emulator_host_names_the_endpoint_and_turns_credentials_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")  # no scheme: plain HTTP
    emulated = GCSStore("bucket")
    assert (emulated.endpoint_url, emulated.anonymous) == ("http://127.0.0.1:4443", True)
    # An endpoint named explicitly wins, and gets credentials unless told otherwise.
    named = GCSStore("bucket", endpoint_url="https://storage.example.com")
    assert (named.endpoint_url, named.anonymous) == ("https://storage.example.com", False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443/some/path")
    with pytest.raises(ValueError, match="STORAGE_EMULATOR_HOST"):
        GCSStore("bucket")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    real = GCSStore("bucket")
    assert (real.endpoint_url, real.anonymous) == (DEFAULT_ENDPOINT, False)


def test_without_the_gcs_extra_open_store_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "slate_epoch.backends.gcs", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'slate-epoch\[gcs\]'"):
        open_store("gs://bucket")


# --- lifecycle ------------------------------------------------------------------------------------


async def test_a_store_never_entered_says_to_use_async_with() -> None:
    store = GCSStore("bucket")
    with pytest.raises(RuntimeError, match="async with"):
        await store.get("k")
    with pytest.raises(RuntimeError, match="async with"):
        await store.put("k", b"", mode="create")
    with pytest.raises(RuntimeError, match="async with"):
        _ = store.client
    with pytest.raises(RuntimeError, match="async with"):
        async with aclosing(store.list("")) as metas:
            await anext(metas)


async def test_keys_are_validated_before_anything_else() -> None:
    store = GCSStore("bucket", "p")  # not even open: the key is refused first
    too_long = "k" * 1023  # a valid key, but over GCS's 1024 bytes once "p/" is added
    for bad in ("", "/a", "a/../b", "a//b", "a\nb", "x\r"):
        with pytest.raises(InvalidKeyError):
            await store.put(bad, b"")
        with pytest.raises(InvalidKeyError):
            await store.get(bad)
        with pytest.raises(InvalidKeyError):
            await store.delete(bad)
    with pytest.raises(InvalidKeyError, match="1024"):
        await store.head(too_long)
    with pytest.raises(InvalidKeyError, match="acme-challenge"):  # GCS reserves these names
        await GCSStore("bucket").put(".well-known/acme-challenge/t", b"")


async def test_close_is_idempotent_and_a_closed_store_refuses_work(bucket: str) -> None:
    store = GCSStore(bucket)
    async with store:
        with pytest.raises(RuntimeError, match="already open"):
            await store.__aenter__()
        await store.put("k", b"1")
    await store.aclose()
    await store.aclose()
    with pytest.raises(RuntimeError, match="async with"):
        await store.head("k")
    async with store:  # reopening after a close is fine
        assert (await store.get("k")).body == b"1"


async def test_close_happens_even_when_cancelled(bucket: str) -> None:
    store = GCSStore(bucket)
    with anyio.CancelScope() as scope:
        async with store:
            client = store.client
            scope.cancel()
            await anyio.sleep(1)
    assert client.is_closed
    with pytest.raises(RuntimeError, match="async with"):
        _ = store.client


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_runs_on_asyncio_and_trio(bucket: str, anyio_backend: str) -> None:
    """httpx runs on both, so GCSStore needs no asyncio-only refusal."""
    async with GCSStore(bucket, anyio_backend) as store:
        put = await store.put("k", b"on " + anyio_backend.encode(), mode="create")
        with pytest.raises(AlreadyExistsError):
            await store.put("k", b"again", mode="create")
        got = await store.get("k")
        assert (got.body, got.etag) == (b"on " + anyio_backend.encode(), put.etag)
        assert [m.key async for m in store.list("")] == ["k"]


# --- the real server ------------------------------------------------------------------------------

# What every store does is in test_store_contract.py, which runs on this server too: above all
# the protocol's foundation, that a second create of one key never succeeds, not even from
# sixteen clients at once (if it did, two claimers could both win). Here, what is GCS's own.


async def test_round_trip_and_the_etag_is_the_generation(
    gcs: GCSStore, gcs_endpoint: str, bucket: str
) -> None:
    put = await gcs.put("a/b c", b"hello", mode="create")
    got = await gcs.get("a/b c")
    meta = await gcs.head("a/b c")
    [listed] = [m async for m in gcs.list("")]
    assert got.body == b"hello"
    assert put.etag == got.etag == meta.etag == listed.etag
    assert (meta.key, meta.size) == (listed.key, listed.size) == ("a/b c", 5)
    async with httpx.AsyncClient() as client:  # what the server itself says, straight
        answer = await client.get(f"{gcs_endpoint}/storage/v1/b/{bucket}/o/a%2Fb%20c")
    assert put.etag == answer.json()["generation"]
    assert put.etag.isdigit()


async def test_writes_are_multipart_uploads_with_if_generation_match(gcs: GCSStore) -> None:
    requests = Requests(gcs)
    first = await gcs.put("k", b"1", mode="create")
    second = await gcs.put("k", b"2", mode=UpdateVersion(first.etag))
    await gcs.put("k", b"3")
    assert requests.kinds == ["upload:multipart"] * 3
    conditions = [r.url.params.get("ifGenerationMatch") for r in requests.sent]
    assert conditions == ["0", first.etag, None]
    assert second.etag != first.etag


async def test_the_server_ignores_preconditions_on_media_uploads(
    gcs_endpoint: str, bucket: str
) -> None:
    """Why every write is a multipart upload: fake-gcs-server lets a second create of one key
    through when it comes as ``uploadType=media``. (If it ever starts refusing it, fine: the
    creates of test_store_contract.py, multipart uploads, still decide.)"""
    url = f"{gcs_endpoint}/upload/storage/v1/b/{bucket}/o"
    params = {"uploadType": "media", "name": "k", "ifGenerationMatch": "0"}
    async with httpx.AsyncClient() as client:
        first = await client.post(url, params=params, content=b"1")
        second = await client.post(url, params=params, content=b"2")
    assert (first.status_code, second.status_code) == (200, 200)


async def test_a_refused_create_chains_the_http_error(gcs: GCSStore) -> None:
    await gcs.put("k", b"first", mode="create")
    with pytest.raises(AlreadyExistsError) as caught:
        await gcs.put("k", b"second", mode="create")
    assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)  # chained


async def test_an_etag_that_is_no_generation_is_refused_without_a_request(gcs: GCSStore) -> None:
    await gcs.put("k", b"1")
    requests = Requests(gcs)
    for etag in ("", "abc", "-1", "0", "00", "١٢", '"123"'):
        with pytest.raises(PreconditionError):
            await gcs.put("k", b"2", mode=UpdateVersion(etag))
    with pytest.raises(TypeError, match="etag"):
        await gcs.put("k", b"2", mode=UpdateVersion(123))  # type: ignore[arg-type]
    assert requests.kinds == []
    assert (await gcs.get("k")).body == b"1"


async def test_missing_keys(gcs: GCSStore) -> None:
    requests = Requests(gcs)
    with pytest.raises(NotFoundError):
        await gcs.get("missing")
    with pytest.raises(NotFoundError):
        await gcs.head("missing")
    await gcs.delete("missing")  # no error
    # A missing object and a missing bucket answer alike: the store asks about the bucket.
    assert requests.kinds == ["media", "bucket", "metadata", "bucket", "delete", "bucket"]


async def test_a_missing_bucket_on_every_operation(gcs: GCSStore) -> None:
    etag = (await gcs.put("k", b"1")).etag
    async with GCSStore("no-such-bucket-here") as store:
        operations: list[Callable[[], Awaitable[object]]] = [
            lambda: store.get("k"),
            lambda: store.head("k"),
            lambda: store.put("k", b"", mode="create"),
            lambda: store.put("k", b""),
            lambda: store.put("k", b"", mode=UpdateVersion(etag)),
            lambda: store.delete("k"),
            lambda: list_keys(store),
        ]
        for operation in operations:
            with pytest.raises(BucketNotFoundError, match="'no-such-bucket-here' does not exist"):
                await operation()


async def test_the_prefix_is_prepended_and_stripped(bucket: str) -> None:
    await check_the_prefix_is_prepended_and_stripped(lambda prefix: GCSStore(bucket, prefix))


async def test_listing_pages_lazily(bucket: str) -> None:
    keys = [f"k/{i:03d}" for i in range(25)]
    async with GCSStore(bucket, page_size=10) as store:
        for key in keys:
            await store.put(key, b"x", mode="create")
        await store.put("l/after", b"")  # not under the listed prefix

        requests = Requests(store)
        assert [m.key async for m in store.list("k/")] == keys
        assert requests.kinds == ["list"] * 3
        tokens = [r.url.params.get("pageToken") for r in requests.sent]
        assert tokens[0] is None
        assert all(tokens[1:])

        requests.clear()
        seen = []
        async with aclosing(store.list("k/")) as metas:
            async for meta in metas:
                seen.append(meta.key)
                if len(seen) == 10:
                    break
        assert seen == keys[:10]
        assert requests.kinds == ["list"]  # the second page was never asked for

        requests.clear()
        assert [m.key async for m in store.list("k/", start_after="k/014")] == keys[15:]
        assert requests.kinds == ["list"] * 2  # startOffset k/014: 10 keys, then the last


async def test_start_after_is_exclusive(gcs: GCSStore) -> None:
    """GCS's startOffset is inclusive; the store skips the equal key itself."""
    keys = ["a", "a/b", "a/c", "b", "b0"]
    for key in keys:
        await gcs.put(key, key.encode(), mode="create")
    requests = Requests(gcs)
    for i, key in enumerate(keys):
        assert [m.key async for m in gcs.list("", start_after=key)] == keys[i + 1 :]
    assert [m.key async for m in gcs.list("a/", start_after="a/b")] == ["a/c"]
    assert [m.key async for m in gcs.list("", start_after="a/bb")] == ["a/c", "b", "b0"]
    assert [m.key async for m in gcs.list("", start_after="")] == keys
    assert requests.sent[0].url.params.get("startOffset") == "a"


async def test_unreachable_endpoint_fails_within_bounded_time() -> None:
    store = GCSStore("bucket", endpoint_url=_closed_port_url(), anonymous=True, max_attempts=2)
    async with store:
        requests = Requests(store)
        with anyio.fail_after(30), pytest.raises(StoreUnreachableError, match="cannot reach"):
            await store.put("k", b"", mode="create")
    assert len(requests.sent) == 2


# --- gcp-storage-emulator: a server that enforces no precondition ---------------------------------


@pytest.fixture(scope="module")
def emulator_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with GcpStorageEmulator(tmp_path_factory.mktemp("gcp-storage-emulator")) as server:
        yield server.endpoint_url


async def test_on_gcp_storage_emulator_the_store_behaves_sanely(emulator_endpoint: str) -> None:
    """GCP-STORAGE-EMULATOR: no generation header on reads (the store asks for the metadata and
    reads exactly that generation), startOffset and maxResults ignored (the store filters),
    404s with empty bodies. Every operation answers or raises a StoreError; nothing hangs.
    What the store cannot see: the server lets a second create of one key through (a later
    store check must refuse such a server)."""
    bucket = await create_gcs_bucket(emulator_endpoint)
    with anyio.fail_after(60):
        async with GCSStore(
            bucket, "p", endpoint_url=emulator_endpoint, anonymous=True, page_size=2
        ) as store:
            put = await store.put("a", b"one", mode="create")
            got = await store.get("a")
            assert (got.body, got.etag) == (b"one", put.etag)
            assert (await store.head("a")).etag == put.etag
            for key in ("b", "c", "d"):
                await store.put(key, key.encode())
            assert [m.key async for m in store.list("")] == ["a", "b", "c", "d"]
            assert [m.key async for m in store.list("", start_after="b")] == ["c", "d"]
            with pytest.raises(NotFoundError):
                await store.get("missing")
            with pytest.raises(NotFoundError):
                await store.head("missing")
            await store.delete("missing")
            await store.delete("d")
            with pytest.raises(NotFoundError):
                await store.get("d")

            # The server's flaw, shown: this create should have been refused.
            again = await store.put("a", b"two", mode="create")
            assert again.etag != put.etag
        async with GCSStore(
            "no-such-bucket-here", endpoint_url=emulator_endpoint, anonymous=True
        ) as missing:
            with pytest.raises(BucketNotFoundError):
                await missing.get("a")
            with pytest.raises(BucketNotFoundError):
                await list_keys(missing)


# --- what fake-gcs-server never answers: fake servers ---------------------------------------------


class Received:
    def __init__(self, head: bytes, body: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.method, target, _ = lines[0].split(" ", 2)
        self.path = urlsplit(target).path
        self.params = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        self.headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in lines[1:] if ":" in line)
        }
        self.body = body


async def _read_request(stream: SocketStream) -> Received:
    return Received(*await read_request(stream))


def _answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} Status", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _gcs_error(status: int, reason: str) -> bytes:
    error = {"code": status, "message": "fake", "errors": [{"reason": reason}]}
    return json.dumps({"error": error}).encode()


def _fake_store(endpoint: str, **options: Any) -> GCSStore:
    return GCSStore("bucket", endpoint_url=endpoint, anonymous=True, **options)


@pytest.mark.parametrize(("status", "reason"), [(503, ""), (429, "rateLimitExceeded"), (500, "")])
async def test_throttling_and_server_errors_are_retried_then_transient(
    status: int, reason: str
) -> None:
    """FAKE SERVER: every request gets ``status``; the store tries max_attempts times."""
    seen: list[Received] = []

    async def failing(stream: SocketStream) -> None:
        async with stream:
            seen.append(await _read_request(stream))
            await stream.send(_answer(status, _gcs_error(status, reason)))

    async with serve(failing) as endpoint, _fake_store(endpoint, max_attempts=3) as store:
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match=f"HTTP {status}"):
            await store.put("k", b"x", mode="create")
    assert len(seen) == 3
    assert {r.params["ifGenerationMatch"] for r in seen} == {"0"}  # the same request each time


async def test_a_retry_that_succeeds_returns_its_answer() -> None:
    """FAKE SERVER: 503 twice, then the upload's answer."""
    seen: list[Received] = []

    async def flaky(stream: SocketStream) -> None:
        async with stream:
            seen.append(await _read_request(stream))
            if len(seen) < 3:
                await stream.send(_answer(503))
            else:
                answer = json.dumps({"name": "k", "generation": "42", "size": "1"})
                await stream.send(_answer(200, answer.encode()))

    async with serve(flaky) as endpoint, _fake_store(endpoint, max_attempts=3) as store:
        with anyio.fail_after(30):
            assert (await store.put("k", b"x", mode="create")).etag == "42"
    assert len(seen) == 3


async def test_a_reset_connection_is_transient() -> None:
    """FAKE SERVER: the server reads the request and drops the connection without answering."""
    seen: list[Received] = []

    async def hang_up(stream: SocketStream) -> None:
        async with stream:
            seen.append(await _read_request(stream))
            reset_on_close(stream)

    async with serve(hang_up) as endpoint, _fake_store(endpoint, max_attempts=2) as store:
        with anyio.fail_after(30), pytest.raises(TransientStoreError) as caught:
            await store.put("k", b"x", mode="create")
    assert not isinstance(caught.value, StoreUnreachableError)  # it was reached: outcome unknown
    assert len(seen) == 2


async def test_a_server_that_never_answers_times_out_as_transient() -> None:
    """FAKE SERVER: the request is read and never answered; read_timeout bounds the wait."""
    async with (
        serve(never_answer) as endpoint,
        _fake_store(endpoint, read_timeout=0.3, max_attempts=2) as store,
    ):
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match="ReadTimeout"):
            await store.get("k")


async def test_a_body_cut_short_is_transient() -> None:
    """FAKE SERVER: a read answered with Content-Length 100 and only 10 bytes, then a close."""
    seen: list[Received] = []

    async def cut_short(stream: SocketStream) -> None:
        async with stream:
            seen.append(await _read_request(stream))
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Goog-Generation: 7\r\n\r\n"
            await stream.send(head + b"SLEM012345")

    async with serve(cut_short) as endpoint, _fake_store(endpoint, max_attempts=2) as store:
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match="outcome unknown"):
            await store.get("r/manifest/00000000000000000001.manifest")
    assert len(seen) == 2


@pytest.mark.parametrize(("status", "reason"), [(401, "authError"), (403, "forbidden")])
async def test_refused_credentials_are_access_denied(status: int, reason: str) -> None:
    """FAKE SERVER: 401 (no or bad token) and 403 (not allowed) on every request; never retried."""
    seen: list[Received] = []

    async def refuse(stream: SocketStream) -> None:
        async with stream:
            seen.append(await _read_request(stream))
            await stream.send(_answer(status, _gcs_error(status, reason)))

    async with serve(refuse) as endpoint, _fake_store(endpoint, max_attempts=3) as store:
        with anyio.fail_after(30), pytest.raises(AccessDeniedError, match=f"{status} {reason}"):
            await store.get("k")
        with anyio.fail_after(30), pytest.raises(AccessDeniedError):
            await list_keys(store)
    assert len(seen) == 2


async def test_a_server_that_does_not_implement_conditional_writes_is_unsupported() -> None:
    """FAKE SERVER: every request is answered 501 Not Implemented. Permanent: one request, never
    retried, and a claim stops at once with the reason instead of timing out."""
    seen: list[Received] = []

    async def not_implemented(stream: SocketStream) -> None:
        async with stream:
            seen.append(await _read_request(stream))
            await stream.send(_answer(501, _gcs_error(501, "notImplemented")))

    async with serve(not_implemented) as endpoint, _fake_store(endpoint) as store:
        with anyio.fail_after(30), pytest.raises(UnsupportedStoreError, match="ifGenerationMatch"):
            await store.put("k", b"x", mode="create")
        assert len(seen) == 1
        with anyio.fail_after(30), pytest.raises(UnsupportedStoreError):
            await claim_epoch(store, "r", timeout=20)


async def test_an_update_answered_404_is_a_precondition_error() -> None:
    """FAKE SERVER: a server that answers 404 to an update of a missing object (fake-gcs-server
    and GCS say 412); the store asks whether the bucket exists, and it does."""
    seen: list[Received] = []

    async def not_found(stream: SocketStream) -> None:
        async with stream:
            received = await _read_request(stream)
            seen.append(received)
            if received.path == "/storage/v1/b/bucket":
                await stream.send(_answer(200, b'{"name": "bucket"}'))
            else:
                await stream.send(_answer(404, _gcs_error(404, "notFound")))

    async with serve(not_found) as endpoint, _fake_store(endpoint) as store:
        with anyio.fail_after(30), pytest.raises(PreconditionError):
            await store.put("k", b"x", mode=UpdateVersion("17"))
    assert [r.path for r in seen] == ["/upload/storage/v1/b/bucket/o", "/storage/v1/b/bucket"]


# --- Application Default Credentials: a fake token endpoint ---------------------------------------


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _service_account_file(folder: Path, key_pem: str, token_uri: str) -> Path:
    """A service-account key file, as ``gcloud iam service-accounts keys create`` writes one,
    whose token endpoint is the test's fake server."""
    path = folder / "service-account.json"
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "test-key",
        "private_key": key_pem,
        "client_email": "slate@test-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    return path


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_application_default_credentials_sign_every_request(
    tmp_path: Path, private_key_pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAKE SERVER (token endpoint and storage): GOOGLE_APPLICATION_CREDENTIALS names a
    service-account key; google-auth trades a signed JWT for a token once (in a worker thread,
    on asyncio and trio alike), and every storage request carries it."""
    seen: list[Received] = []

    async def google(stream: SocketStream) -> None:
        async with stream:
            received = await _read_request(stream)
            seen.append(received)
            if received.path == "/token":
                token = {"access_token": "tok-1", "expires_in": 3600, "token_type": "Bearer"}
                await stream.send(_answer(200, json.dumps(token).encode()))
            elif received.headers.get("authorization") != "Bearer tok-1":
                await stream.send(_answer(401, _gcs_error(401, "authError")))
            else:
                await stream.send(_answer(200, b"hello", {"X-Goog-Generation": "7"}))

    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    async with serve(google) as endpoint:
        key_file = _service_account_file(tmp_path, private_key_pem, f"{endpoint}/token")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
        async with GCSStore("bucket", endpoint_url=endpoint) as store:
            assert not store.anonymous
            with anyio.fail_after(30):
                for _ in range(3):
                    got = await store.get("k")
                    assert (got.body, got.etag) == (b"hello", "7")
    assert [r.path for r in seen] == ["/token"] + ["/storage/v1/b/bucket/o/k"] * 3
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in seen[0].body


async def test_credentials_given_as_an_argument_are_used_instead_of_adc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FAKE SERVER: a google-auth Credentials object passed to the constructor (here one with a
    fixed token) signs the requests; no credential lookup happens."""
    from google.oauth2.credentials import Credentials

    seen: list[Received] = []

    async def storage(stream: SocketStream) -> None:
        async with stream:
            seen.append(await _read_request(stream))
            await stream.send(_answer(200, b'{"name": "k", "size": "3", "generation": "9"}'))

    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/never-read.json")
    async with serve(storage) as endpoint:
        credentials = Credentials(token="fixed-token")  # type: ignore[no-untyped-call]
        async with GCSStore("bucket", endpoint_url=endpoint, credentials=credentials) as store:
            with anyio.fail_after(30):
                assert (await store.head("k")).etag == "9"
    assert [r.headers["authorization"] for r in seen] == ["Bearer fixed-token"]
    with pytest.raises(ValueError, match="exclude each other"):
        GCSStore("bucket", credentials=credentials, anonymous=True)
    with pytest.raises(TypeError, match="Credentials"):
        GCSStore("bucket", credentials="fixed-token")  # type: ignore[arg-type]


async def test_credentials_the_token_endpoint_refuses_are_access_denied(
    tmp_path: Path, private_key_pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAKE SERVER: the token endpoint answers invalid_grant (a deleted or disabled key)."""
    seen: list[Received] = []

    async def refuse(stream: SocketStream) -> None:
        async with stream:
            seen.append(await _read_request(stream))
            error = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            await stream.send(_answer(400, json.dumps(error).encode()))

    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    async with serve(refuse) as endpoint:
        key_file = _service_account_file(tmp_path, private_key_pem, f"{endpoint}/token")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
        async with GCSStore("bucket", endpoint_url=endpoint) as store:
            with anyio.fail_after(30), pytest.raises(AccessDeniedError, match="invalid_grant"):
                await store.get("k")
    assert [r.path for r in seen] == ["/token"]  # no storage request without a token


async def test_no_application_default_credentials_is_access_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    async with GCSStore("bucket", endpoint_url=_closed_port_url()) as store:
        requests = Requests(store)
        with anyio.fail_after(30), pytest.raises(AccessDeniedError, match="Application Default"):
            await store.head("k")
    assert requests.sent == []


async def test_an_unreachable_token_endpoint_is_unreachable(
    tmp_path: Path, private_key_pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    key_file = _service_account_file(tmp_path, private_key_pem, f"{_closed_port_url()}/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    async with GCSStore("bucket", endpoint_url=_closed_port_url()) as store:
        with anyio.fail_after(60), pytest.raises(StoreUnreachableError, match="token endpoint"):
            await store.get("k")
