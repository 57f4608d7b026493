"""The "FAKE SERVER" of the cloud stores' tests (test_s3_store.py, test_azure_store.py,
test_gcs_store.py): a raw TCP listener on 127.0.0.1 whose handler answers what the real test
servers never do (5xx and other codes, resets, stalls, bodies cut short), and the reading of a
request it needs to do so. What to answer, in each service's words, stays in each test file.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from anyio.abc import SocketStream

Handler = Callable[[SocketStream], Awaitable[None]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """A TCP listener on 127.0.0.1 running ``handler`` per connection; yields its URL,
    ``http://127.0.0.1:PORT``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


async def read_head(stream: SocketStream) -> tuple[bytes, bytes]:
    """The request line and headers, and whatever came after them."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


async def read_request(stream: SocketStream) -> tuple[bytes, bytes]:
    """The request line and headers, and the body (Content-Length bytes)."""
    head, body = await read_head(stream)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive()
    return head, body


async def never_answer(stream: SocketStream) -> None:
    """A handler that reads a request's head and then nothing more, and never answers."""
    async with stream:
        await read_head(stream)
        await anyio.sleep_forever()


def reset_on_close(stream: SocketStream) -> None:
    """Make closing ``stream`` drop the connection with an RST (SO_LINGER on, 0 seconds)."""
    stream.extra(anyio.abc.SocketAttribute.raw_socket).setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )
