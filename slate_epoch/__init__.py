"""slate-epoch: single-writer epochs on object storage.

Claim an epoch for a role; a newer claim fences every older holder. ``lead`` holds a role for
as long as a body runs, with standbys taking over when it stops. ``check_store`` proves that a
store enforces what all of it relies on. Logs go to the ``slate_epoch`` logger, spans and metrics
to OpenTelemetry when the application configured it. See README.md and docs/.
"""

from ._check import STORE_CHECKS, StoreCheckReport, check_store
from ._claim import EpochHandle, claim_epoch
from ._errors import (
    AccessDeniedError,
    AlreadyExistsError,
    BucketNotFoundError,
    ClaimTimeoutError,
    FencedError,
    InvalidKeyError,
    InvariantViolationError,
    LeaseCorruptError,
    LeaseLostError,
    ManifestCorruptError,
    ManifestError,
    ManifestVersionExistsError,
    NotFoundError,
    OperationTimeoutError,
    PreconditionError,
    SlateEpochError,
    StoreError,
    StoreUnreachableError,
    TransientStoreError,
    UnsupportedFormatError,
    UnsupportedStoreError,
    WalCorruptError,
    WalError,
    WalTrimmedError,
    WriteOutcomeUnknownError,
)
from ._gc import GarbageReport, collect_garbage
from ._lead import lead
from ._lease import Lease, read_lease
from ._manifest import Manifest, ManifestCache, ManifestStore, RoleClaim
from ._open import open_store, register_backend
from ._retry import Backoff
from ._store import (
    Body,
    GetResult,
    ObjectMeta,
    ObjectStore,
    PutMode,
    PutResult,
    StoreBase,
    UpdateVersion,
)
from ._wal import WalEntry, WalWriter, read_wal

__version__ = "0.1.0"

__all__ = [
    "STORE_CHECKS",
    "AccessDeniedError",
    "AlreadyExistsError",
    "Backoff",
    "Body",
    "BucketNotFoundError",
    "ClaimTimeoutError",
    "EpochHandle",
    "FencedError",
    "GarbageReport",
    "GetResult",
    "InvalidKeyError",
    "InvariantViolationError",
    "Lease",
    "LeaseCorruptError",
    "LeaseLostError",
    "Manifest",
    "ManifestCache",
    "ManifestCorruptError",
    "ManifestError",
    "ManifestStore",
    "ManifestVersionExistsError",
    "NotFoundError",
    "ObjectMeta",
    "ObjectStore",
    "OperationTimeoutError",
    "PreconditionError",
    "PutMode",
    "PutResult",
    "RoleClaim",
    "SlateEpochError",
    "StoreBase",
    "StoreCheckReport",
    "StoreError",
    "StoreUnreachableError",
    "TransientStoreError",
    "UnsupportedFormatError",
    "UnsupportedStoreError",
    "UpdateVersion",
    "WalCorruptError",
    "WalEntry",
    "WalError",
    "WalTrimmedError",
    "WalWriter",
    "WriteOutcomeUnknownError",
    "check_store",
    "claim_epoch",
    "collect_garbage",
    "lead",
    "open_store",
    "read_lease",
    "read_wal",
    "register_backend",
]
