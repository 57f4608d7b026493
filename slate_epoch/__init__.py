"""slate-epoch: single-writer epochs on object storage.

Claim an epoch for a role; a newer claim fences every older holder. See README.md.
"""

from ._errors import (
    AlreadyExistsError,
    ClaimTimeoutError,
    FencedError,
    InvalidKeyError,
    InvariantViolationError,
    ManifestCorruptError,
    ManifestError,
    ManifestVersionExistsError,
    NotFoundError,
    OperationTimeoutError,
    PreconditionError,
    SlateEpochError,
    StoreError,
    TransientStoreError,
    UnsupportedFormatError,
)
from ._store import GetResult, ObjectMeta, ObjectStore, PutMode, PutResult, UpdateVersion

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "ClaimTimeoutError",
    "FencedError",
    "GetResult",
    "InvalidKeyError",
    "InvariantViolationError",
    "ManifestCorruptError",
    "ManifestError",
    "ManifestVersionExistsError",
    "NotFoundError",
    "ObjectMeta",
    "ObjectStore",
    "OperationTimeoutError",
    "PreconditionError",
    "PutMode",
    "PutResult",
    "SlateEpochError",
    "StoreError",
    "TransientStoreError",
    "UnsupportedFormatError",
    "UpdateVersion",
]
