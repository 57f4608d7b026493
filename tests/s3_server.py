"""A real S3 server for the tests: moto's, in a subprocess, on 127.0.0.1.

``MotoServer`` (used by the session fixture in conftest.py) starts ``python -m tests.s3_server``
from the repository root. The child binds port 0 (so no free-port race), writes the
port it got to a file once it listens, and serves moto's WSGI app until it is terminated.

moto checks a condition (``If-None-Match``, ``If-Match``) and then writes without holding a
lock: under thread switching two creates of one key can both win. ``_OneAtATime`` serves one
request at a time, so the tests exercise our code and not moto's race.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

START_TIMEOUT = 60.0  # importing moto on a busy 2-core machine takes a few seconds
STOP_TIMEOUT = 10.0

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


class MotoServer:
    """A moto S3 server process; ``with MotoServer(tmp) as server: server.endpoint_url``.

    ``environment`` is added to the child's environment (e.g. moto settings).
    """

    def __init__(self, workdir: Path, environment: Mapping[str, str] | None = None) -> None:
        self._workdir = workdir
        self._environment = dict(environment or {})
        self._process: subprocess.Popen[bytes] | None = None
        self.endpoint_url = ""

    def start(self) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        port_file = self._workdir / "port"
        log_file = self._workdir / "server.log"
        port_file.unlink(missing_ok=True)
        env = {**os.environ, **TEST_ENVIRONMENT, **self._environment}
        with log_file.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.s3_server", "--port-file", str(port_file)],
                cwd=Path(__file__).parent.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_tail = log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"moto S3 server did not start; its log:\n{log_tail}")
            time.sleep(0.05)
        self.endpoint_url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def stop(self) -> None:
        """Terminate by PID, wait a bounded time, kill if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def create_bucket(endpoint_url: str) -> str:
    """A new, empty bucket on the server; its name."""
    bucket = f"test-{uuid.uuid4().hex}"
    async with _admin_session().create_client("s3", endpoint_url=endpoint_url) as client:
        await client.create_bucket(Bucket=bucket)
    return bucket


@functools.cache
def _admin_session() -> Any:
    """One session for all bucket creations, so botocore's models load once."""
    from aiobotocore.session import AioSession

    return AioSession()


# --- the child process ----------------------------------------------------------------------------


class _OneAtATime:
    """WSGI middleware: one request at a time, response body included."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True)
    _serve(parser.parse_args().port_file)
