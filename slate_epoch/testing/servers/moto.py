"""A real S3 server for tests: moto's, in a child process, on 127.0.0.1.

``MotoServer`` starts ``python -m slate_epoch.testing.servers.moto``: the child binds port 0 (so
no free-port race), writes the port it got to a file once it listens, and serves moto's WSGI app
until it is terminated. Needs ``moto[server]`` (the ``dev`` extra).

moto checks a condition (``If-None-Match``, ``If-Match``) and then writes without holding a
lock: under thread switching two creates of one key can both win. ``_OneAtATime`` serves one
request at a time, so the tests exercise our code and not moto's race. It reads each request's
body before taking the lock, so a client paused in the middle of a request (SIGSTOP) does not
stall every other client, which no real S3 does.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ._process import ServerProcess

__all__ = ["TEST_ENVIRONMENT", "UNSET_ENVIRONMENT", "MotoServer", "create_bucket"]

# Dummy credentials: the AWS chain finds these; nothing ever talks to real AWS.
TEST_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
UNSET_ENVIRONMENT = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class MotoServer(ServerProcess):
    """A moto S3 server process; ``with MotoServer(tmp) as server: server.endpoint_url``.

    ``environment`` is added to the child's environment (e.g. moto settings); the dummy
    credentials of ``TEST_ENVIRONMENT`` always are.
    """

    name = "moto S3 server"

    @property
    def _port_file(self) -> Path:
        return self.workdir / "port"

    def command(self) -> Sequence[str]:
        self._port_file.unlink(missing_ok=True)
        self.environment = {**TEST_ENVIRONMENT, **self.environment}
        return [sys.executable, "-m", __name__, "--port-file", str(self._port_file)]

    def ready(self) -> str | None:
        if not self._port_file.exists():
            return None
        return f"http://127.0.0.1:{int(self._port_file.read_text())}"


async def create_bucket(endpoint_url: str) -> str:
    """A new, empty bucket on the server; its name. Runs on asyncio and trio, through an
    ``S3Store``'s own client (so the process's shared session and its models are reused)."""
    from slate_epoch.backends.s3 import S3Store

    bucket = f"test-{uuid.uuid4().hex}"
    async with S3Store(bucket, endpoint_url=endpoint_url) as store:
        await store.client.create_bucket(Bucket=bucket)
    return bucket


# --- the child process ----------------------------------------------------------------------------


class _OneAtATime:
    """WSGI middleware: one request at a time, response body included. The request body is
    read before the lock is taken: a client that stalls mid-request holds up nobody else."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        with self._lock:
            result = self._app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


def _serve(port_file: Path) -> None:
    import logging

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1",
        0,
        _OneAtATime(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    # Listening from here on; publish the port atomically.
    partial = port_file.with_suffix(".partial")
    partial.write_text(str(server.server_address[1]))
    partial.replace(port_file)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="moto's S3 server, one request at a time")
    parser.add_argument("--port-file", type=Path, required=True)
    _serve(parser.parse_args().port_file)
