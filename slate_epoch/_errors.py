"""The exception tree. Every error the library raises derives from ``SlateEpochError``.

    SlateEpochError
    ├── StoreError                      a store operation failed
    │   ├── NotFoundError               stop: no object at that key (often simply the answer)
    │   ├── AlreadyExistsError          stop: a "create" found the key taken
    │   ├── PreconditionError           stop: an update-by-etag found another version, or none
    │   ├── BucketNotFoundError         stop: the bucket the store names does not exist
    │   ├── AccessDeniedError           stop: credentials missing, wrong, or not allowed
    │   ├── UnsupportedStoreError       stop: the store does not enforce what the protocol needs;
    │   │                               .check names what (``check_store`` proves it up front)
    │   └── TransientStoreError         RETRY: timeout, 5xx, dropped connection - outcome unknown
    │       └── StoreUnreachableError   RETRY: no connection to the endpoint, after bounded retries
    ├── InvalidKeyError (ValueError)    stop: a key the stores cannot hold; raised before any I/O
    ├── ManifestError                   a manifest could not be used
    │   ├── ManifestVersionExistsError  RETRY: another write took that manifest id; re-read, redo
    │   ├── ManifestCorruptError        stop: bad magic, checksum or body; the object is left as is
    │   │   └── LeaseCorruptError       stop: ... of a role's lease object (see ``lead``)
    │   └── UnsupportedFormatError      stop: an intact manifest from a newer slate-epoch
    ├── WalError                        the write-ahead log could not be read
    │   ├── WalCorruptError             stop: an entry with a bad header or checksum; left as is
    │   └── WalTrimmedError             stop: the entries asked for were trimmed after replay
    ├── FencedError                     stop: a newer epoch holds the role; this handle is finished,
    │   │                               and nothing of the call that raised it landed
    │   └── WriteOutcomeUnknownError    stop: ... fenced, and the call's write may have landed:
    │                                   nothing left on the store can tell
    ├── LeaseLostError                  stop: ``lead`` could not renew its lease in time
    ├── OperationTimeoutError (TimeoutError)   stop: the deadline passed; .attempts, .last_error
    │   └── ClaimTimeoutError           ... while claiming (or after max_conflicts conflicts)
    └── InvariantViolationError         stop: the store holds what the protocol forbids

"RETRY" errors are retried by the claim loop and by ``EpochHandle.update`` under their deadline;
a caller only sees them from the raw store or ``ManifestStore``. Everything else means stop: a
retry would get the same answer. Native errors (``OSError``, botocore's) are translated at the
backend edge and chained with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "AlreadyExistsError",
    "BucketNotFoundError",
    "ClaimTimeoutError",
    "FencedError",
    "InvalidKeyError",
    "InvariantViolationError",
    "LeaseCorruptError",
    "LeaseLostError",
    "ManifestCorruptError",
    "ManifestError",
    "ManifestVersionExistsError",
    "NotFoundError",
    "OperationTimeoutError",
    "PreconditionError",
    "SlateEpochError",
    "StoreError",
    "StoreUnreachableError",
    "TransientStoreError",
    "UnsupportedFormatError",
    "UnsupportedStoreError",
    "WalCorruptError",
    "WalError",
    "WalTrimmedError",
    "WriteOutcomeUnknownError",
]


class SlateEpochError(Exception):
    """Base of every error raised by slate-epoch."""


class StoreError(SlateEpochError):
    """An object-store operation failed."""


class NotFoundError(StoreError):
    """No object exists at the key."""


class AlreadyExistsError(StoreError):
    """A ``mode="create"`` put found the key already taken."""


class PreconditionError(StoreError):
    """An ``UpdateVersion`` put found a different version of the object, or no object."""


class TransientStoreError(StoreError):
    """The outcome is unknown (timeout, 5xx, dropped connection): the operation may have
    happened. Safe to retry with the identical request."""


class BucketNotFoundError(StoreError):
    """The bucket the store names does not exist (S3 ``NoSuchBucket``). A HEAD answer carries
    no error code, so there a missing bucket looks like a missing key (``NotFoundError``)."""


class AccessDeniedError(StoreError):
    """The store refused the credentials or the operation: none found in the credential chain,
    an unknown key id, a wrong secret, an expired token, or a policy that denies it (HTTP 403)."""


class UnsupportedStoreError(StoreError):
    """The store does not provide what the protocol needs: it answered that it does not
    implement a conditional write (HTTP 501), or it did not enforce one. Permanent: no retry
    helps; use a store that enforces create-if-absent and update-by-etag.

    ``check`` names the check of ``check_store`` that failed (None when a backend found out by
    itself, e.g. from a 501 answer)."""

    def __init__(self, message: str, *, check: str | None = None) -> None:
        super().__init__(message)
        self.check = check


class StoreUnreachableError(TransientStoreError):
    """No connection to the store's endpoint (refused, DNS, connect timeout), after the client's
    own bounded retries. Transient: the endpoint may come back."""


class InvalidKeyError(SlateEpochError, ValueError):
    """A key that no store may hold: empty component, ``.``/``..``, leading ``/``, backslash,
    NUL, or a name reserved by the backend. Raised before any I/O."""


class ManifestError(SlateEpochError):
    """A manifest could not be written or read."""


class ManifestVersionExistsError(ManifestError):
    """The manifest id is already taken by another write."""

    def __init__(self, manifest_id: int, *, collected: bool = False) -> None:
        reason = "is at or below the retention boundary" if collected else "already exists"
        super().__init__(f"manifest {manifest_id} {reason}")
        self.manifest_id = manifest_id
        self.collected = collected


class ManifestCorruptError(ManifestError):
    """The object at a manifest key is not an intact slate-epoch manifest."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class LeaseCorruptError(ManifestCorruptError):
    """The object at a role's lease key is not an intact slate-epoch lease (framed like a
    manifest, with its own magic). Never overwritten: ``lead`` stops until someone looks."""


class UnsupportedFormatError(ManifestError):
    """An intact manifest written in a format newer than this library reads."""

    def __init__(self, key: str, version: int, supported: int) -> None:
        super().__init__(
            f"{key}: format {version} is newer than the newest supported ({supported})"
        )
        self.key = key
        self.version = version


class WalError(SlateEpochError):
    """The write-ahead log could not be read."""


class WalCorruptError(WalError):
    """The object at a log id is neither a fence nor an intact entry."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class WalTrimmedError(WalError):
    """The entries asked for were already trimmed (deleted after being replayed)."""

    def __init__(self, after: int, first_kept: int) -> None:
        super().__init__(
            f"log entries {after + 1}..{first_kept - 1} were trimmed; the log now starts at "
            f"{first_kept}: read from the manifest's replay point instead"
        )
        self.after = after
        self.first_kept = first_kept


class FencedError(SlateEpochError):
    """A newer epoch holds the role: this handle may no longer write. Nothing the call that
    raised it tried to write landed (when that cannot be known, ``WriteOutcomeUnknownError``,
    a subclass, is raised instead)."""

    def __init__(self, role: str, epoch: int, newer_epoch: int) -> None:
        super().__init__(f"role {role!r}: epoch {epoch} is fenced by epoch {newer_epoch}")
        self.role = role
        self.epoch = epoch
        self.newer_epoch = newer_epoch


class WriteOutcomeUnknownError(FencedError):
    """The handle is fenced, and the write of the call that raised it may have landed before
    the newer claim: its response was lost, or its create landed at an id retention had reached
    by the time it checked, and what could tell is gone (retention deleted the manifest version
    it wrote, or a newer writer trimmed the log entry it appended). Treat the
    write as possibly applied: the newer holder's state (or log replay) has it or not.

    A ``FencedError``, so ``except FencedError`` still catches it. ``write`` says which write:
    ``"update"``, ``"mark_replayed"``, ``"append at log id N"``."""

    def __init__(self, role: str, epoch: int, newer_epoch: int, *, write: str) -> None:
        super().__init__(role, epoch, newer_epoch)
        self.args = (
            f"role {role!r}: epoch {epoch} is fenced by epoch {newer_epoch}; whether its "
            f"{write} landed before that is unknown (its response was lost, or retention "
            "reached its id, and the object that could tell was since deleted)",
        )
        self.write = write


class LeaseLostError(SlateEpochError):
    """``lead`` lost its lease without seeing a newer claim: its renewals kept failing until the
    lease would run out by this process's own clock (the body is then cancelled before a standby
    may take over), or a standby found the lease stale and took it over. Either way the body was
    cancelled; fencing protects the store regardless."""

    def __init__(self, role: str, epoch: int, reason: str) -> None:
        super().__init__(f"role {role!r}: the lease of epoch {epoch} was lost: {reason}")
        self.role = role
        self.epoch = epoch
        self.reason = reason


class OperationTimeoutError(SlateEpochError, TimeoutError):
    """The operation's deadline passed before it could finish."""

    def __init__(self, message: str, *, attempts: int, last_error: BaseException | None) -> None:
        if last_error is not None:
            message = f"{message} (last error: {type(last_error).__name__}: {last_error})"
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


class ClaimTimeoutError(OperationTimeoutError):
    """The claim ran out of time, or met more conflicts than ``max_conflicts`` allows."""


class InvariantViolationError(SlateEpochError):
    """The store holds what the protocol forbids (an epoch that went down, two claims of one
    epoch). Something other than slate-epoch wrote there, or there is a bug: never written over."""
