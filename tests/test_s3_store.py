"""S3Store against a real S3 server (moto, started by conftest), plus what moto cannot produce.

Most tests talk to the moto server over HTTP. Where a test uses something else it says so in its
docstring: "STUBBED" (botocore's Stubber answers instead of a server: 409 and 5xx bodies that moto
never sends) or "FAKE SERVER" (a raw TCP listener in the test that resets, stalls, cuts an
answer short, answers 503 or records what it received). Every test runs on asyncio and trio
(conftest's ``anyio_backend``: S3Store's transport is httpx on both).
The behaviour suite (test_claim.py, test_manifest.py, ...) runs on S3 through the ``store``
fixture as well.
"""

from __future__ import annotations

import json
import multiprocessing
import ssl
import statistics
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from aiobotocore.stub import AioStubber
from anyio.abc import SocketStream

from slate_epoch import (
    AccessDeniedError,
    AlreadyExistsError,
    BucketNotFoundError,
    InvalidKeyError,
    NotFoundError,
    StoreError,
    StoreUnreachableError,
    TransientStoreError,
    UnsupportedStoreError,
    UpdateVersion,
    claim_epoch,
    open_store,
)
from slate_epoch.backends import _s3_shared
from slate_epoch.backends.s3 import S3Store
from slate_epoch.testing.servers import MotoServer, create_bucket, free_port
from tests.fake_server import never_answer, read_head, read_request, reset_on_close, serve
from tests.prefixes import check_the_prefix_is_prepended_and_stripped

# Dummy credentials for every test here, including those that never reach moto.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("aws_test_environment")]


@pytest.fixture
async def bucket(s3_endpoint: str) -> str:
    return await create_bucket(s3_endpoint)


@pytest.fixture
async def s3(s3_endpoint: str, bucket: str) -> AsyncIterator[S3Store]:
    async with S3Store(bucket, endpoint_url=s3_endpoint) as store:
        yield store


class Requests:
    """Counts the HTTP requests a store's client sends (every attempt, retries included)."""

    def __init__(self, store: S3Store) -> None:
        self.operations: list[str] = []
        store.client.meta.events.register("before-send.s3.*", self._on_send)

    def _on_send(self, event_name: str, **kwargs: Any) -> None:
        self.operations.append(event_name.rsplit(".", 1)[-1])

    def clear(self) -> None:
        self.operations.clear()


# --- URLs and arguments (no I/O) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("s3://my.bucket-1/a/b", "my.bucket-1", "a/b"),
        ("s3://my-bucket/a/b/", "my-bucket", "a/b"),
        ("S3://abc/x%20y", "abc", "x y"),
        ("s3://abc/p?endpoint_url=http://127.0.0.1:9000&region=us-east-1", "abc", "p"),
        (
            "s3://abc?connect_timeout=1.5&read_timeout=3&max_attempts=2&conflict_attempts=4",
            "abc",
            "",
        ),
        ("s3://abc?addressing_style=path", "abc", ""),
    ],
)
def test_good_urls(url: str, bucket: str, prefix: str) -> None:
    store = S3Store.from_url(url)
    assert (store.bucket, store.prefix) == (bucket, prefix)
    opened = open_store(url)
    assert isinstance(opened, S3Store)
    assert (opened.bucket, opened.prefix) == (bucket, prefix)


def test_url_options_and_arguments_combine_but_never_twice() -> None:
    store = S3Store.from_url("s3://abc/p?region=eu-west-1", endpoint_url="http://127.0.0.1:1")
    assert "127.0.0.1:1" in repr(store)
    with pytest.raises(ValueError, match="both in the URL and as arguments"):
        S3Store.from_url("s3://abc?region=eu-west-1", region="us-east-1")


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAEXAMPLE:hunter2secret@bucket/p",
        "s3://AKIAEXAMPLE@bucket",
        "s3://bucket/p?aws_access_key_id=AKIAEXAMPLE",
        "s3://bucket/p?aws_secret_access_key=hunter2secret",
        "s3://bucket/p?aws_session_token=hunter2secret",
        "s3://bucket?region=us-east-1&secret=hunter2secret",
        "s3://bucket?endpoint_url=http://AKIAEXAMPLE:hunter2secret@127.0.0.1:9000",
    ],
)
def test_urls_with_secrets_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError, match="credentials") as caught:
        S3Store.from_url(url)
    assert "hunter2secret" not in str(caught.value)
    assert "AKIAEXAMPLE" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket?colour=blue", "unknown option.*colour"),
        ("s3://bucket?region=a&region=b", "given twice"),
        ("s3://bucket?max_attempts=lots", "max_attempts.*int"),
        ("s3://bucket?max_attempts=0", "at least 1"),
        ("s3://bucket?connect_timeout=-1", "positive"),
        ("s3://bucket?addressing_style=sideways", "addressing_style"),
        ("s3://bucket?endpoint_url=ftp://host", "endpoint_url"),
        ("s3://bucket:9000/p", "no port"),
        ("s3:///p", "no bucket"),
        ("s3://bucket#frag", "fragment"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Store.from_url(url)


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 64, "Upper", "under_score", "-abc", "abc-", "a..b", "a.-b", "192.168.1.1", "a b"],
)
def test_bad_bucket_names(name: str) -> None:
    with pytest.raises(ValueError, match="bucket name"):
        S3Store(name)


@pytest.mark.parametrize("prefix", ["/abs", "a//b", "a/../b", "./a"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        S3Store("bucket", prefix)


# --- lifecycle ------------------------------------------------------------------------------------


async def test_a_store_never_entered_says_to_use_async_with() -> None:
    store = S3Store("bucket")
    with pytest.raises(RuntimeError, match="async with"):
        await store.get("k")
    with pytest.raises(RuntimeError, match="async with"):
        _ = store.client
    with pytest.raises(RuntimeError, match="async with"):
        async with aclosing(store.list("")) as metas:
            await anext(metas)


async def test_keys_are_validated_before_anything_else() -> None:
    store = S3Store("bucket")  # not even open: the key is refused first
    for bad in ("", "/a", "a/../b", "a//b"):
        with pytest.raises(InvalidKeyError):
            await store.put(bad, b"")
        with pytest.raises(InvalidKeyError):
            await store.get(bad)


async def test_close_is_idempotent_and_a_closed_store_refuses_work(s3_endpoint: str) -> None:
    store = S3Store("bucket", endpoint_url=s3_endpoint)
    async with store:
        with pytest.raises(RuntimeError, match="already open"):
            await store.__aenter__()
    await store.aclose()
    with pytest.raises(RuntimeError, match="async with"):
        await store.head("k")
    async with store:  # reopening after a close is fine
        assert store.client is not None


async def test_a_failed_open_leaves_the_store_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    store = S3Store("bucket", endpoint_url="http://127.0.0.1:1")
    with pytest.raises(StoreError, match="ProfileNotFound"):
        await store.__aenter__()
    with pytest.raises(RuntimeError, match="async with"):
        _ = store.client
    monkeypatch.delenv("AWS_PROFILE")
    async with store:  # nothing half-open was left behind
        assert store.client is not None


async def test_close_happens_even_when_cancelled(s3_endpoint: str) -> None:
    store = S3Store("bucket", endpoint_url=s3_endpoint)
    with anyio.CancelScope() as scope:
        async with store:
            scope.cancel()
            await anyio.sleep(1)
    with pytest.raises(RuntimeError, match="async with"):
        _ = store.client


# --- the real server ------------------------------------------------------------------------------

# What every store does (puts in each mode, missing keys, listings) is in test_store_contract.py,
# which runs on moto too (an update of a missing key: moto answers 404 NoSuchKey, as AWS does,
# where other servers say 412); here, what is S3's own.


async def test_etags_come_unquoted_and_a_quoted_one_is_the_same_version(s3: S3Store) -> None:
    """S3 puts quotes around its etags: the store takes them off (get, head and list give the
    put's etag: test_store_contract.py), and takes an etag back with or without them."""
    first = await s3.put("k", b"1", mode="create")
    assert '"' not in first.etag
    # a quoted etag, as some tools print them, is the same version
    await s3.put("k", b"2", mode=UpdateVersion(f'"{first.etag}"'))
    assert (await s3.get("k")).body == b"2"


async def test_a_refused_create_chains_the_botocore_error(s3: S3Store) -> None:
    await s3.put("k", b"1", mode="create")
    with pytest.raises(AlreadyExistsError) as caught:
        await s3.put("k", b"2", mode="create")
    assert caught.value.__cause__ is not None  # the botocore error, chained


async def test_missing_bucket(s3_endpoint: str) -> None:
    async with S3Store("no-such-bucket", endpoint_url=s3_endpoint) as store:
        with pytest.raises(BucketNotFoundError, match="bucket does not exist"):
            await store.get("k")
        with pytest.raises(BucketNotFoundError):
            await store.put("k", b"", mode="create")
        with pytest.raises(BucketNotFoundError):
            await store.delete("k")
        with pytest.raises(BucketNotFoundError):
            [m async for m in store.list("")]
        # A HEAD answer has no body, so no error code: a plain 404, like a missing key.
        with pytest.raises(NotFoundError):
            await store.head("k")


async def test_the_prefix_is_prepended_and_stripped(s3_endpoint: str, bucket: str) -> None:
    await check_the_prefix_is_prepended_and_stripped(
        lambda prefix: S3Store(bucket, prefix, endpoint_url=s3_endpoint)
    )


async def test_listing_pages_lazily(s3: S3Store) -> None:
    keys = [f"k/{i:05d}" for i in range(1100)]
    limiter = anyio.CapacityLimiter(16)

    async def put(key: str) -> None:
        async with limiter:
            await s3.put(key, b"x", mode="create")

    async with anyio.create_task_group() as tg:
        for key in reversed(keys):
            tg.start_soon(put, key)
    await s3.put("l/after", b"")  # not under the listed prefix

    requests = Requests(s3)
    assert [m.key async for m in s3.list("k/")] == keys
    assert requests.operations == ["ListObjectsV2", "ListObjectsV2"]

    requests.clear()
    seen = []
    async with aclosing(s3.list("k/")) as metas:
        async for meta in metas:
            seen.append(meta.key)
            if len(seen) == 1000:
                break
    assert seen == keys[:1000]
    assert requests.operations == ["ListObjectsV2"]  # the second page was never asked for

    requests.clear()
    assert [m.key async for m in s3.list("k/", start_after="k/00999")] == keys[1000:]
    assert [m.key async for m in s3.list("k/010")] == keys[1000:1100]
    assert [m.key async for m in s3.list("k/", start_after="k/01099")] == []
    assert requests.operations == ["ListObjectsV2"] * 3


async def test_no_credentials_in_the_chain(
    s3_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    async with S3Store(bucket, endpoint_url=s3_endpoint) as store:
        with pytest.raises(AccessDeniedError, match="credential chain"):
            await store.get("k")


async def test_unreachable_endpoint_fails_within_bounded_time() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    started = time.monotonic()
    async with S3Store("bucket", endpoint_url=endpoint, max_attempts=2) as store:
        with anyio.fail_after(30), pytest.raises(StoreUnreachableError, match="cannot reach"):
            await store.put("k", b"", mode="create")
    assert time.monotonic() - started < 30


# --- bad credentials: a second moto server that checks signatures and IAM policies ----------------


@pytest.fixture(scope="module")
def auth_server(
    aws_test_environment: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """A moto server with IAM authentication on, a bucket, and a user allowed only
    s3:GetObject, s3:PutObject and s3:ListBucket. Yields (endpoint, bucket, that user's key)."""
    from botocore.session import get_session

    with MotoServer(tmp_path_factory.mktemp("moto-auth")) as server:
        url = server.endpoint_url
        session = get_session()
        iam = session.create_client("iam", endpoint_url=url)
        s3 = session.create_client("s3", endpoint_url=url)
        try:
            iam.create_user(UserName="limited")
            key = iam.create_access_key(UserName="limited")["AccessKey"]
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
                        "Resource": "*",
                    }
                ],
            }
            iam.put_user_policy(
                UserName="limited", PolicyName="limited", PolicyDocument=json.dumps(policy)
            )
            s3.create_bucket(Bucket="guarded")
        finally:
            iam.close()
            s3.close()
        # From now on moto checks every request's signature and the caller's IAM policy.
        request = urllib.request.Request(
            f"{url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        yield url, "guarded", {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


@pytest.mark.parametrize(
    "case", ["unknown key id (InvalidAccessKeyId)", "wrong secret (SignatureDoesNotMatch)"]
)
async def test_bad_credentials(
    auth_server: tuple[str, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    url, bucket, key = auth_server
    key_id = "AKIAUNKNOWN000000000" if case.startswith("unknown") else key["id"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    code = case[case.index("(") + 1 : -1]
    async with S3Store(bucket, endpoint_url=url) as store:
        with pytest.raises(AccessDeniedError, match=code):
            await store.get("k")
        with pytest.raises(AccessDeniedError, match=code):
            await store.put("k", b"", mode="create")
        with pytest.raises(AccessDeniedError, match=code):
            [m async for m in store.list("")]
        with pytest.raises(AccessDeniedError, match="HTTP 403"):  # HEAD: a bare 403, no code
            await store.head("k")


async def test_good_credentials_but_not_allowed(
    auth_server: tuple[str, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bucket, key = auth_server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["secret"])
    async with S3Store(bucket, endpoint_url=url) as store:
        await store.put("k", b"1")
        assert (await store.get("k")).body == b"1"
        with pytest.raises(AccessDeniedError, match="AccessDenied"):
            await store.delete("k")  # the policy has no s3:DeleteObject


# --- what moto never answers: stubbed responses, fake servers -------------------------------------


async def test_conditional_conflicts_are_retried_then_succeed(s3: S3Store) -> None:
    """STUBBED (botocore Stubber): 409 ConditionalRequestConflict twice, then success."""
    with AioStubber(s3.client) as stub:
        for _ in range(2):
            stub.add_client_error("put_object", "ConditionalRequestConflict", "busy", 409)
        stub.add_response("put_object", {"ETag": '"e1"'})
        assert (await s3.put("k", b"x", mode="create")).etag == "e1"
        stub.assert_no_pending_responses()


async def test_conditional_conflicts_are_retried_a_bounded_number_of_times(
    s3_endpoint: str, bucket: str
) -> None:
    """STUBBED (botocore Stubber): 409 ConditionalRequestConflict on every attempt."""
    async with S3Store(bucket, endpoint_url=s3_endpoint, conflict_attempts=3) as store:
        with AioStubber(store.client) as stub:
            for _ in range(3):
                stub.add_client_error("put_object", "ConditionalRequestConflict", "busy", 409)
            with pytest.raises(TransientStoreError, match="3 times") as caught:
                await store.put("k", b"x", mode="create")
            stub.assert_no_pending_responses()
    assert type(caught.value) is TransientStoreError


@pytest.mark.parametrize(
    ("method", "code", "status"),
    [
        ("put_object", "SlowDown", 503),
        ("get_object", "InternalError", 500),
        ("list_objects_v2", "ServiceUnavailable", 503),
        ("head_object", "", 503),
        ("put_object", "", 502),
        ("get_object", "RequestTimeout", 400),
        ("get_object", "OperationAborted", 409),
    ],
)
async def test_throttling_and_server_errors_are_transient(
    s3: S3Store, method: str, code: str, status: int
) -> None:
    """STUBBED (botocore Stubber): the final answer after the client's retries (the stubber
    bypasses those retries; the fake-server test below shows them)."""

    async def call() -> object:
        if method == "put_object":
            return await s3.put("k", b"x", mode="create")
        if method == "get_object":
            return await s3.get("k")
        if method == "head_object":
            return await s3.head("k")
        return [m async for m in s3.list("")]

    with AioStubber(s3.client) as stub:
        stub.add_client_error(method, code, "try later", status)
        with pytest.raises(TransientStoreError, match=f"HTTP {status}"):
            await call()


async def test_the_clients_retries_are_bounded_then_transient() -> None:
    """FAKE SERVER: every request gets 503 SlowDown; the client tries max_attempts times."""
    body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message></Error>"

    async def slow_down(stream: SocketStream) -> None:
        async with stream:
            await read_head(stream)
            head = f"HTTP/1.1 503 Slow Down\r\nContent-Length: {len(body)}\r\n"
            await stream.send(head.encode() + b"Connection: close\r\n\r\n" + body)

    async with (
        serve(slow_down) as endpoint,
        S3Store("bucket", endpoint_url=endpoint, max_attempts=3) as store,
    ):
        requests = Requests(store)
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match="SlowDown"):
            await store.get("k")
    assert requests.operations == ["GetObject"] * 3


async def test_a_reset_connection_is_transient() -> None:
    """FAKE SERVER: the server reads the request and drops the connection without answering."""

    async def hang_up(stream: SocketStream) -> None:
        async with stream:
            await read_head(stream)
            reset_on_close(stream)

    async with (
        serve(hang_up) as endpoint,
        S3Store("bucket", endpoint_url=endpoint, max_attempts=2) as store,
    ):
        with anyio.fail_after(30), pytest.raises(TransientStoreError) as caught:
            await store.put("k", b"x", mode="create")
    assert not isinstance(caught.value, StoreUnreachableError)  # it was reached: outcome unknown


async def test_a_server_that_never_answers_times_out_as_transient() -> None:
    """FAKE SERVER: the request is read and never answered; read_timeout bounds the wait."""
    async with (
        serve(never_answer) as endpoint,
        S3Store("bucket", endpoint_url=endpoint, read_timeout=0.3, max_attempts=2) as store,
    ):
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match="Timeout"):
            await store.get("k")


async def test_a_body_cut_short_is_transient() -> None:
    """FAKE SERVER: a GET answered with Content-Length 100 and only 10 bytes, then a close."""

    async def cut_short(stream: SocketStream) -> None:
        async with stream:
            await read_head(stream)
            head = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nETag: "abc"\r\n\r\n'
            await stream.send(head + b"SLEM012345")

    async with (
        serve(cut_short) as endpoint,
        S3Store("bucket", endpoint_url=endpoint, max_attempts=1) as store,
    ):
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match="broke off"):
            await store.get("r/manifest/00000000000000000001.manifest")


async def test_an_error_answer_cut_short_is_transient() -> None:
    """FAKE SERVER: a GET answered 503 with Content-Length 100 and only 10 bytes, then a close.
    botocore reads the body of an error answer to a streaming operation outside the transport's
    wrapping, so httpx's own error reaches the store's edge: still translated."""

    async def cut_short(stream: SocketStream) -> None:
        async with stream:
            await read_head(stream)
            await stream.send(b"HTTP/1.1 503 Slow Down\r\nContent-Length: 100\r\n\r\n<Error><C")

    async with (
        serve(cut_short) as endpoint,
        S3Store("bucket", endpoint_url=endpoint, max_attempts=1) as store,
    ):
        with anyio.fail_after(30), pytest.raises(TransientStoreError, match="broke off"):
            await store.get("k")


async def test_a_server_that_stops_reading_the_body_is_transient_not_unreachable() -> None:
    """FAKE SERVER: the server reads a PUT's headers, then never reads its body (bigger than the
    socket buffers): the write times out after read_timeout. The server was reached and holds
    part of the request: the outcome is unknown, not "unreachable"."""
    async with (
        serve(never_answer) as endpoint,
        S3Store("bucket", endpoint_url=endpoint, read_timeout=0.5, max_attempts=1) as store,
    ):
        with (
            anyio.fail_after(30),
            pytest.raises(TransientStoreError, match="WriteTimeout") as caught,
        ):
            await store.put("k", bytes(64 << 20), mode="create")
    assert not isinstance(caught.value, StoreUnreachableError)


async def test_a_conditional_put_sends_its_body_without_waiting_for_100_continue() -> None:
    """FAKE SERVER: records the request of a conditional create and never sends
    "100 Continue". The request has no Expect header, and its body arrives all the same, right
    behind the headers: one round trip per write, not two."""
    seen: list[tuple[bytes, bytes]] = []

    async def record(stream: SocketStream) -> None:
        async with stream:
            with anyio.fail_after(10):  # a client waiting for "100 Continue" sends no body
                seen.append(await read_request(stream))
            await stream.send(
                b'HTTP/1.1 200 OK\r\nETag: "e1"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
            )

    async with (
        serve(record) as endpoint,
        S3Store("bucket", endpoint_url=endpoint, max_attempts=1) as store,
    ):
        with anyio.fail_after(30):
            assert (await store.put("k", b"manifest", mode="create")).etag == "e1"
    [(head, body)] = seen
    request_line, *lines = head.lower().split(b"\r\n")
    # (aiobotocore's httpx transport sends the whole URL as the request target: legal HTTP/1.1)
    assert request_line.startswith(b"put "), head
    assert request_line.endswith(b"/bucket/k http/1.1"), head
    assert b"if-none-match: *" in lines, head  # the conditional create it is
    assert not [line for line in lines if line.startswith(b"expect:")], head
    assert b"accept-encoding: identity" in lines, head  # S3 bodies as stored, never gzipped
    assert body == b"manifest"


async def test_a_retried_put_sends_the_whole_body_again() -> None:
    """FAKE SERVER: the first attempt of a put is answered 503 SlowDown, the second 200. The
    body is binary with a newline every 256 bytes (aiobotocore's httpx transport would stream it
    line by line; the store sends it in one piece): both attempts carry all of it."""
    body = bytes(range(256)) * 1024
    received: list[bytes] = []
    slow_down = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message></Error>"

    async def fail_once(stream: SocketStream) -> None:
        async with stream:
            received.append((await read_request(stream))[1])
            if len(received) == 1:
                head = f"HTTP/1.1 503 Slow Down\r\nContent-Length: {len(slow_down)}\r\n"
                answer = head.encode() + b"Connection: close\r\n\r\n" + slow_down
            else:
                answer = b'HTTP/1.1 200 OK\r\nETag: "e1"\r\nContent-Length: 0\r\n\r\n'
            await stream.send(answer)

    async with (
        serve(fail_once) as endpoint,
        S3Store("bucket", endpoint_url=endpoint, max_attempts=2) as store,
    ):
        with anyio.fail_after(30):
            assert (await store.put("k", body, mode="create")).etag == "e1"
    assert received == [body, body]


async def test_a_server_that_does_not_implement_conditional_writes_is_unsupported() -> None:
    """FAKE SERVER: every request is answered 501 NotImplemented, as a server without
    conditional writes answers If-None-Match. Permanent: one request, never retried, and a
    claim stops at once with the reason instead of timing out."""
    body = b"<Error><Code>NotImplemented</Code><Message>not implemented</Message></Error>"
    seen: list[int] = []

    async def not_implemented(stream: SocketStream) -> None:
        async with stream:
            await read_head(stream)
            seen.append(1)
            head = f"HTTP/1.1 501 Not Implemented\r\nContent-Length: {len(body)}\r\n"
            await stream.send(head.encode() + b"Connection: close\r\n\r\n" + body)

    async with (
        serve(not_implemented) as endpoint,
        S3Store("bucket", endpoint_url=endpoint, max_attempts=3) as store,
    ):
        with anyio.fail_after(30), pytest.raises(UnsupportedStoreError, match="If-None-Match"):
            await store.put("k", b"x", mode="create")
        assert len(seen) == 1
        with anyio.fail_after(30), pytest.raises(UnsupportedStoreError):
            await claim_epoch(store, "r", timeout=20)


# --- what the stores of a process share -----------------------------------------------------------


async def test_stores_share_one_session_and_each_owns_its_client(
    s3_endpoint: str, bucket: str
) -> None:
    """Stores in one event loop share the aiobotocore session (so botocore's models load once);
    each creates and closes its own client. Prints the open time of further stores (the first
    open in a process loads the models): nothing asserts it."""
    async with S3Store(bucket, endpoint_url=s3_endpoint) as first:
        times = []
        for round_ in range(9):
            started = time.perf_counter()
            async with S3Store(bucket, endpoint_url=s3_endpoint) as second:
                times.append(time.perf_counter() - started)
                assert second._session is first._session
                assert second.client is not first.client
                await second.put(f"k{round_}", b"2")
            # closing the second store closed its client only
            assert (await first.get(f"k{round_}")).body == b"2"
    ms = sorted(f"{t * 1000:.1f}" for t in times)
    print(f"\nopening a further S3Store: median {statistics.median(times) * 1000:.1f} ms ({ms})")


async def test_a_changed_aws_environment_gets_a_new_session(
    s3_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session caches the profile, config files and credentials it read: a store opened after
    an AWS_* variable changed gets a new session, which sees the change."""
    async with S3Store(bucket, endpoint_url=s3_endpoint) as before:
        await before.put("k", b"1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
        async with (
            S3Store(bucket, endpoint_url=s3_endpoint) as after,
            S3Store(bucket, endpoint_url=s3_endpoint) as again,
        ):
            assert after._session is not before._session
            assert again._session is after._session
            await after.put("k", b"2")  # moto takes any key: both sessions work
        assert (await before.get("k")).body == b"2"


async def test_tls_contexts_are_built_once_per_setting() -> None:
    """The transport builds a TLS context (the CA bundle: ~15 ms) once per process for each
    verify setting, and hands the same one to every client. (White-box: it checks the context
    the transport holds, which it would build anew if aiobotocore stopped calling the
    override.)"""
    async with (
        _s3_shared.Transport(verify=True) as one,
        _s3_shared.Transport(verify=True) as two,
        _s3_shared.Transport(verify=False) as unverified,
    ):
        assert isinstance(one._verify, ssl.SSLContext)
        assert one._verify is two._verify
        assert unverified._verify is not one._verify
        assert unverified._verify.verify_mode == ssl.CERT_NONE


def test_event_loops_in_two_threads_get_a_session_each(s3_endpoint: str) -> None:
    """Two event loops (asyncio and trio), each in its own thread, open stores at the same time:
    each loop gets a session of its own, shared by its stores, and all of them work."""

    async def open_stores() -> Any:
        bucket = await create_bucket(s3_endpoint)
        async with (
            S3Store(bucket, endpoint_url=s3_endpoint) as one,
            S3Store(bucket, endpoint_url=s3_endpoint) as two,
        ):
            assert one._session is two._session
            await one.put("k", b"1", mode="create")
            assert (await two.get("k")).body == b"1"
            return one._session

    with (
        anyio.from_thread.start_blocking_portal("asyncio") as on_asyncio,
        anyio.from_thread.start_blocking_portal("trio") as on_trio,
    ):
        futures = [on_asyncio.start_task_soon(open_stores), on_trio.start_task_soon(open_stores)]
        sessions = [future.result(timeout=60) for future in futures]
    assert sessions[0] is not sessions[1]


def _in_the_child(endpoint: str, bucket: str) -> None:
    """After fork: the lock works even though the parent held it, no session came along, and a
    store opens (with a session of its own) and writes."""
    shared = _s3_shared._shared
    assert shared.lock.acquire(timeout=10), "the lock held at the fork was inherited"
    shared.lock.release()
    assert len(shared.sessions) == 0

    async def write() -> None:
        async with S3Store(bucket, endpoint_url=endpoint) as store:
            await store.put("from-the-child", b"1")

    anyio.run(write)


# Python 3.12+ warns that fork() in a threaded process may deadlock: the case under test.
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_child_after_fork_starts_with_no_session(s3_endpoint: str) -> None:
    """The parent has a live session (an event loop in a portal thread) and holds the lock
    when it forks, as another thread might: the child starts clean and works."""

    async def open_one() -> str:
        bucket = await create_bucket(s3_endpoint)
        async with S3Store(bucket, endpoint_url=s3_endpoint) as store:
            await store.put("from-the-parent", b"1")
        return bucket

    context = multiprocessing.get_context("fork")
    with anyio.from_thread.start_blocking_portal() as portal:
        bucket = portal.call(open_one)
        assert len(_s3_shared._shared.sessions) >= 1
        child = context.Process(target=_in_the_child, args=(s3_endpoint, bucket))
        with _s3_shared._shared.lock:
            child.start()
        child.join(60)
        if child.exitcode is None:
            child.kill()
            child.join(10)
    assert child.exitcode == 0


# --- claims through S3 ----------------------------------------------------------------------------


async def test_requests_per_claim(s3_endpoint: str, bucket: str) -> None:
    """A cold claim over a short history: 4 requests (list to find the newest, read it, write
    the next, check the retention boundary); a claim by a process that knows the newest id: 2
    (the write and the boundary check). The boundary check is the one request per write that
    retention costs: without it a stale writer could recreate a collected id."""
    async with S3Store(bucket, endpoint_url=s3_endpoint) as earlier:
        for _ in range(3):
            await claim_epoch(earlier, "svc")
    async with S3Store(bucket, endpoint_url=s3_endpoint) as fresh:  # a new process: no cache
        requests = Requests(fresh)
        handle = await claim_epoch(fresh, "svc")
        assert handle.epoch == 4
        assert sorted(requests.operations) == sorted(
            ["ListObjectsV2", "GetObject", "PutObject", "GetObject"]
        ), requests.operations

        requests.clear()
        handle = await claim_epoch(fresh, "svc")
        assert handle.epoch == 5
        assert requests.operations == ["PutObject", "GetObject"], requests.operations
