"""An HTTP/1.1 proxy on 127.0.0.1 that puts a server a network round trip away: ``LatencyProxy``.

What it models: a client on keep-alive connections to a server ``delay_ms`` away. Every piece of
a message, in either direction, is passed on half the round trip after it arrived, in order,
without waiting for the pieces behind it (a delay line, not a queue). So a request and its
response cost one added round trip; a client that waits for ``100 Continue`` before sending a
body pays the second round trip it pays on a real link; a new connection pays one round trip
before its first request (the TCP handshake; TLS, which a real region adds, is not modelled).
Each connection has its own tasks: concurrent requests never wait for one another here.

Why HTTP and not bare TCP: moto's server (werkzeug) closes the connection after every response,
where S3 keeps it open. The proxy keeps the client's connection open (it drops the response's
``Connection: close`` when the response's length is known) and sends each request to the server
on a connection of its own, opened on 127.0.0.1 at no modelled cost.

``GET /__latency_proxy__`` is answered by the proxy itself, at once: ``{"requests": n,
"connections": m}``, the requests relayed and the client connections that carried them, so far
(for peers whose requests nothing else counts).

``LatencyProxy`` runs it in a child process (``python -m benchmarks.latency_proxy``), stopped by
PID, as the test servers are; the child binds port 0 and publishes the port in a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from slate_epoch.testing.servers import ServerProcess

__all__ = ["STATS_PATH", "LatencyProxy"]

REPOSITORY = Path(__file__).resolve().parent.parent
STATS_PATH = "/__latency_proxy__"
CHUNK = 65536
HEAD_LIMIT = 65536  # bytes in a request or response head
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # for the next piece of a request or response under way
# A client connection with no request for this long is closed (longer than any client's own
# idle limit: aiohttp's 15 s, reqwest's 90 s).
IDLE_TIMEOUT = 300.0
CLOSE_TIMEOUT = 5.0
MAX_INTERIM = 8  # 1xx responses before the final one
MAX_CHUNKS = 1 << 20  # of a chunked request body


class LatencyProxy(ServerProcess):
    """``with LatencyProxy(workdir, "http://127.0.0.1:5000", 20.0) as proxy:
    proxy.endpoint_url``: the same server, ``delay_ms`` further away."""

    name = "latency proxy"

    def __init__(self, workdir: Path, upstream_url: str, delay_ms: float) -> None:
        super().__init__(workdir)
        parts = urlsplit(upstream_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream_url needs a host and a port, got {upstream_url!r}")
        self.upstream = f"{parts.hostname}:{parts.port}"
        self.delay_ms = delay_ms

    @property
    def _port_file(self) -> Path:
        return self.workdir / "port"

    def command(self) -> Sequence[str]:
        self._port_file.unlink(missing_ok=True)
        return [
            sys.executable,
            "-m",
            "benchmarks.latency_proxy",
            "--upstream",
            self.upstream,
            "--delay-ms",
            str(self.delay_ms),
            "--port-file",
            str(self._port_file),
        ]

    def cwd(self) -> Path | None:
        return REPOSITORY

    def ready(self) -> str | None:
        if not self._port_file.exists():
            return None
        return f"http://127.0.0.1:{int(self._port_file.read_text())}"


# --- the child process ----------------------------------------------------------------------------


class _DelayLine:
    """Writes to ``writer`` what it is given, ``delay`` s after it was given, in order.
    ``close()`` closes the writer once everything given before has been written."""

    def __init__(self, writer: asyncio.StreamWriter, delay: float) -> None:
        self._writer = writer
        self._delay = delay
        self._loop = asyncio.get_running_loop()
        self._line: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

    def send(self, data: bytes) -> None:
        self._line.put_nowait((self._loop.time() + self._delay, data))

    def close(self) -> None:
        self._line.put_nowait((self._loop.time() + self._delay, None))

    async def run(self) -> None:
        """Until ``close()``'s turn comes, or the other end goes away."""
        try:
            while True:  # ends at close(), which every user of a line calls at its end
                due, data = await self._line.get()
                await asyncio.sleep(max(0.0, due - self._loop.time()))
                if data is None:
                    return
                self._writer.write(data)
                await asyncio.wait_for(self._writer.drain(), READ_TIMEOUT)
        except OSError:  # TimeoutError included
            pass  # the other end went away, or reads nothing: nothing more can reach it
        finally:
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self._writer.wait_closed(), CLOSE_TIMEOUT)


@dataclass(frozen=True)
class _Head:
    """A request's or a response's start line and headers, as received."""

    raw: bytes

    @property
    def start(self) -> list[bytes]:
        return self.raw.split(b"\r\n", 1)[0].split(b" ", 2)

    def header(self, name: bytes) -> bytes | None:
        for line in self.raw.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return None

    @property
    def chunked(self) -> bool:
        return b"chunked" in (self.header(b"transfer-encoding") or b"").lower()

    def with_connection(self, value: bytes) -> bytes:
        """The head with one ``Connection: value`` header instead of any it had."""
        start, *headers = self.raw.removesuffix(b"\r\n\r\n").split(b"\r\n")
        kept = [h for h in headers if h.partition(b":")[0].strip().lower() != b"connection"]
        return b"\r\n".join([start, *kept, b"Connection: " + value]) + b"\r\n\r\n"


class _Proxy:
    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.requests = 0
        self.connections = 0

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: its requests, one after another, until it closes. Counted
        at its first request (the statistics are not one)."""
        relayed = 0
        to_client = _DelayLine(writer, self.delay / 2)
        sender = asyncio.create_task(to_client.run())
        try:
            await asyncio.sleep(self.delay)  # the handshake's round trip
            keep_alive = True
            while keep_alive:  # a request a turn, until the client closes or idles: bounded
                head = _Head(await asyncio.wait_for(_read_head(reader), IDLE_TIMEOUT))
                if head.start[1:2] == [STATS_PATH.encode()]:
                    writer.write(self._stats())
                    continue
                if relayed == 0:
                    self.connections += 1
                relayed += 1
                self.requests += 1
                keep_alive = await self._exchange(head, reader, to_client)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            pass  # closed, idle, cut or garbled (LimitOverrunError is a ValueError): close it
        finally:
            to_client.close()
            await sender

    def _stats(self) -> bytes:
        body = json.dumps({"requests": self.requests, "connections": self.connections}).encode()
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async def _exchange(
        self, request: _Head, client: asyncio.StreamReader, to_client: _DelayLine
    ) -> bool:
        """Send ``request`` (and its body) to the server on a new connection, and its response
        to the client; whether the client's connection can carry another request."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*self.upstream), CONNECT_TIMEOUT
        )
        to_server = _DelayLine(writer, self.delay / 2)
        sender = asyncio.create_task(to_server.run())
        to_server.send(request.with_connection(b"close"))  # the server ends its response with EOF
        body = asyncio.create_task(_relay_body(request, client, to_server))
        try:
            keep_alive = await _relay_response(request, reader, to_client)
        finally:
            # The response is whole (or failed): nothing else goes to this server connection,
            # and the client's next request must not wait for it to close.
            if not body.done():  # answered before the whole body came: the stream is lost
                keep_alive = False
            body.cancel()
            sender.cancel()  # its end closes the connection
            await asyncio.gather(sender, body, return_exceptions=True)
        return keep_alive and not body.cancelled() and body.exception() is None


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > HEAD_LIMIT:
        raise asyncio.LimitOverrunError("head too long", len(head))
    return head


async def _relay_body(request: _Head, client: asyncio.StreamReader, to_server: _DelayLine) -> None:
    """The request's body, as it comes: ``Content-Length`` bytes, or chunks to the last."""
    if request.chunked:
        for _ in range(MAX_CHUNKS):  # chunks of a body; the last has size 0
            size_line = await asyncio.wait_for(client.readuntil(b"\r\n"), READ_TIMEOUT)
            to_server.send(size_line)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            to_server.send(await asyncio.wait_for(client.readexactly(size + 2), READ_TIMEOUT))
        for _ in range(MAX_CHUNKS):  # trailer fields, then an empty line
            line = await asyncio.wait_for(client.readuntil(b"\r\n"), READ_TIMEOUT)
            to_server.send(line)
            if line == b"\r\n":
                return
        raise ValueError(f"a chunked body of more than {MAX_CHUNKS} chunks or trailer fields")
    remaining = int(request.header(b"content-length") or 0)
    while remaining > 0:  # each read takes at least one byte, or raises
        data = await asyncio.wait_for(client.read(min(CHUNK, remaining)), READ_TIMEOUT)
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(data)
        to_server.send(data)


async def _relay_response(
    request: _Head, server: asyncio.StreamReader, to_client: _DelayLine
) -> bool:
    """The server's response (interim ones first), to its end; whether its length is known
    (else the client reads it to the end of the connection, which must then close)."""
    for _ in range(MAX_INTERIM + 1):
        head = _Head(await asyncio.wait_for(_read_head(server), READ_TIMEOUT))
        status = int(head.start[1])
        if not 100 <= status < 200:
            break
        to_client.send(head.raw)  # 100 Continue and the like
    else:
        raise ValueError(f"more than {MAX_INTERIM} interim responses")
    delimited = (
        request.start[0] == b"HEAD"
        or status in (204, 304)
        or head.chunked
        or head.header(b"content-length") is not None
    )
    to_client.send(head.with_connection(b"keep-alive") if delimited else head.raw)
    while data := await asyncio.wait_for(server.read(CHUNK), READ_TIMEOUT):  # to the server's EOF
        to_client.send(data)
    return delimited


async def _serve(upstream: tuple[str, int], delay: float, port_file: Path) -> None:
    proxy = _Proxy(upstream, delay)
    server = await asyncio.start_server(proxy.client, "127.0.0.1", 0, limit=HEAD_LIMIT * 2)
    partial = port_file.with_suffix(".partial")
    partial.write_text(str(server.sockets[0].getsockname()[1]))
    partial.replace(port_file)  # listening from here on: publish the port at once, whole
    async with server:
        await server.serve_forever()  # until terminated by PID


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="host:port of the server")
    parser.add_argument("--delay-ms", type=float, required=True, help="added per round trip")
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    asyncio.run(_serve((host, int(port)), args.delay_ms / 1000, args.port_file))


if __name__ == "__main__":
    main()
