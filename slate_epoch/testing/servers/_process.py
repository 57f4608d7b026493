"""A server in a child process on 127.0.0.1: started on a free port, stopped by PID.

Every test server (moto for S3, Azurite for Azure Blob, fake-gcs-server for GCS) runs this way:
the test session starts it once, waits until it answers, and stops it at the end, so a test run
needs nothing started by hand and leaves nothing running.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ServerProcess", "free_port"]

START_TIMEOUT = 60.0  # a busy 2-core machine takes seconds to import moto or start node
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers that can't bind 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """One server process; ``with Server(workdir) as server: server.endpoint_url``.

    Subclasses say how to start it (``command``) and when it is ready (``ready``, which returns
    the endpoint URL once the server answers). Its output goes to ``workdir/server.log``, quoted
    in the error when it does not start. ``environment`` is added to the child's environment.
    """

    name = "server"

    def __init__(self, workdir: Path, environment: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.environment = dict(environment or {})
        self.endpoint_url = ""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def cwd(self) -> Path | None:
        return None

    def ready(self) -> str | None:
        """The endpoint URL once the server answers; None while it is still starting."""
        raise NotImplementedError

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_file = self.workdir / "server.log"
        command = list(self.command())
        with log_file.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.cwd(),
                env={**os.environ, **self.environment},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            endpoint = self.ready()
            if endpoint:
                self.endpoint_url = endpoint
                return
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_tail = log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{self.name} did not start ({command[0]}); its log:\n{log_tail}"
                )
            time.sleep(0.05)

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


def answers(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False
