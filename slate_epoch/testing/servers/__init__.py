"""Real storage servers for tests, each in a child process on 127.0.0.1, stopped by PID.

- ``MotoServer``: moto's S3 server (``moto[server]``, in the ``dev`` extra).
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
from .moto import TEST_ENVIRONMENT, UNSET_ENVIRONMENT, MotoServer, create_bucket

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_ACCOUNT_NAME",
    "TEST_ENVIRONMENT",
    "UNSET_ENVIRONMENT",
    "AzuriteServer",
    "MotoServer",
    "ServerProcess",
    "azurite_connection_string",
    "azurite_executable",
    "create_bucket",
    "create_container",
    "free_port",
]
