"""A real Azure Blob Storage server for tests: Azurite, Microsoft's emulator, in a child process.

``AzuriteServer`` runs ``azurite-blob`` (the npm package ``azurite``, which ``make test`` installs
into ``.venv/azurite``) on 127.0.0.1, keeping everything in memory. It is ready once an HTTP
request to its port is answered by Azurite itself. Clients reach it with the well-known
development account's connection string (``server.connection_string``), as
``AZURE_STORAGE_CONNECTION_STRING``.

What Azurite does as Azure does: ``If-None-Match: *`` (409 BlobAlreadyExists), ``If-Match``
(412), one winner among concurrent creates, ``ContainerNotFound`` on every operation of a
missing container, 403 for a wrong account key. Where it differs: quoted ETags, 412 (not 404)
for an ``If-Match`` update of a missing blob, listings in UTF-16 order, and ``startFrom`` on
List Blobs ignored (the store copes with each).
"""

from __future__ import annotations

import http.client
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ._process import ServerProcess, free_port

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_ACCOUNT_NAME",
    "AzuriteServer",
    "azurite_connection_string",
    "azurite_executable",
    "create_container",
]

# Azurite's built-in development account: public, documented, good for nothing but an emulator.
AZURITE_ACCOUNT_NAME: Final = "devstoreaccount1"
AZURITE_ACCOUNT_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# Where `make test` installs it (npm install --prefix .venv/azurite azurite@3).
_INSTALLED = Path("azurite") / "node_modules" / ".bin" / "azurite-blob"
_PORT_ATTEMPTS = 3  # free_port() can race with another process; Azurite then exits at once


def azurite_executable() -> str:
    """``azurite-blob``: ``$AZURITE_BLOB`` if set, else the one ``make test`` installs beside
    this interpreter's environment, else one on ``PATH``."""
    override = os.environ.get("AZURITE_BLOB")
    if override:
        return override
    installed = Path(sys.prefix) / _INSTALLED
    if installed.exists():
        return str(installed)
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise RuntimeError(
        f"azurite-blob is not installed (looked in {installed} and on PATH): run `make test` "
        "(it installs it), or `npm install --prefix .venv/azurite azurite@3`"
    )


def azurite_connection_string(endpoint_url: str, *, account_key: str = AZURITE_ACCOUNT_KEY) -> str:
    """The development account's connection string for Azurite at ``endpoint_url``
    (``http://127.0.0.1:PORT``); ``account_key`` replaces the key (to test a wrong one)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT_NAME};"
        f"AccountKey={account_key};BlobEndpoint={endpoint_url}/{AZURITE_ACCOUNT_NAME};"
    )


async def create_container(connection_string: str) -> str:
    """A new, empty container on the server the connection string names; its name."""
    from azure.storage.blob.aio import ContainerClient

    name = f"test-{uuid.uuid4().hex}"
    async with ContainerClient.from_connection_string(connection_string, name) as client:
        await client.create_container()
    return name


class AzuriteServer(ServerProcess):
    """An Azurite blob server process; ``with AzuriteServer(tmp) as server:
    server.connection_string``. Everything it stores is in memory, gone when it stops."""

    name = "Azurite blob server"

    def __init__(self, workdir: Path, environment: dict[str, str] | None = None) -> None:
        super().__init__(workdir, environment)
        self.port = 0

    @property
    def connection_string(self) -> str:
        if not self.endpoint_url:
            raise RuntimeError("the Azurite server is not running")
        return azurite_connection_string(self.endpoint_url)

    def command(self) -> Sequence[str]:
        self.port = free_port()
        return [
            azurite_executable(),
            "--inMemoryPersistence",
            "--extentMemoryLimit",  # MB; its default is half the machine's memory
            "1024",
            "--loose",  # ignore headers it does not know instead of refusing the request
            "--skipApiVersionCheck",  # the SDK may speak a newer service version than it knows
            "--disableTelemetry",  # it sends usage data to Microsoft by default: not from tests
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
        ]

    def cwd(self) -> Path | None:
        return self.workdir  # whatever it might write lands there, never in the checkout

    def ready(self) -> str | None:
        """Ready when Azurite itself answers an HTTP request (not whatever else took the port)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            connection.request("GET", f"/{AZURITE_ACCOUNT_NAME}?comp=properties&restype=service")
            server = connection.getresponse().getheader("Server") or ""
        except OSError:
            return None
        finally:
            connection.close()
        return f"http://127.0.0.1:{self.port}" if server.startswith("Azurite-Blob") else None

    def start(self) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                super().start()
                return
            except RuntimeError:
                if attempt == _PORT_ATTEMPTS or "EADDRINUSE" not in self._log():
                    raise

    def _log(self) -> str:
        try:
            return (self.workdir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
