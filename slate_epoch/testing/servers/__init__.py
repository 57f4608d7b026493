"""Real storage servers for tests, each in a child process on 127.0.0.1, stopped by PID.

- ``MotoServer``: moto's S3 server (``moto[server]``, in the ``dev`` extra).

Each is a context manager: ``with MotoServer(tmp_path) as server: server.endpoint_url``.
"""

from ._process import ServerProcess, free_port
from .moto import TEST_ENVIRONMENT, UNSET_ENVIRONMENT, MotoServer, create_bucket

__all__ = [
    "TEST_ENVIRONMENT",
    "UNSET_ENVIRONMENT",
    "MotoServer",
    "ServerProcess",
    "create_bucket",
    "free_port",
]
