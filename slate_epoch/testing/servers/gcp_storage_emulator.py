"""gcp-storage-emulator (PyPI ``gcp-storage-emulator``, in the ``dev`` extra), a Python GCS
emulator, in a child process on 127.0.0.1.

It is a store that does NOT provide what slate-epoch needs, kept for tests of how the GCS store
behaves on such a server. Measured: it ignores ``ifGenerationMatch`` (a second create of one key
succeeds), ignores ``startOffset`` and ``maxResults``, sends no ``X-Goog-Generation`` header with
an object's bytes, and answers 404 with an empty body.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ._process import ServerProcess, free_port
from .fake_gcs import answers_json_api

__all__ = ["GcpStorageEmulator"]


class GcpStorageEmulator(ServerProcess):
    """A gcp-storage-emulator process, objects in memory;
    ``with GcpStorageEmulator(tmp) as server: server.endpoint_url``."""

    name = "gcp-storage-emulator"

    def __init__(self, workdir: Path, environment: dict[str, str] | None = None) -> None:
        super().__init__(workdir, environment)
        self._port = 0

    def command(self) -> Sequence[str]:
        self._port = free_port()
        return [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self._port),
            "--in-memory",
            "--quiet",
        ]

    def ready(self) -> str | None:
        url = f"http://127.0.0.1:{self._port}"
        return url if answers_json_api(url) else None
