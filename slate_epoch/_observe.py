"""What slate-epoch tells the world: logs, OpenTelemetry spans and metrics. The one module that
knows about them; the rest of the core calls its small functions.

**Logs** go to the standard ``logging`` module under the ``slate_epoch`` logger (one child per
area: ``slate_epoch.claim``, ``.wal``, ``.gc``, ``.lead``, ``.retry``, ``.store``, ``.check``),
which has a ``NullHandler`` and nothing else: the application decides where records go. Each
record carries its facts as attributes (``extra=``): ``role``, ``epoch``, ``root``,
``manifest_id`` where they apply, so a JSON formatter gets them as fields.

**OpenTelemetry** (the ``otel`` extra, the API only) is used once the application has configured
a tracer or meter provider. This module never imports OpenTelemetry: it looks in
``sys.modules`` for the API the application imported, and asks it whether a provider is set, at
most once a second (``_LOOK_EVERY``): a provider set after slate-epoch's first operation is
picked up within a second. Without the extra, or without a provider, nothing is recorded.

**Cost when nobody listens** (logging at WARNING, no provider): an operation asks a few cheap
questions (``Logger.isEnabledFor`` is cached by ``logging``; the look for a provider is one
clock read between looks) and goes on with the store it was given. Only when someone listens to
store requests (``slate_epoch.store`` at DEBUG, or a meter provider) does an operation reach the
store through a ``WatchedStore``, decided once per operation: a wrapper on every request would
cost more than the rest of a warm in-memory claim's overhead put together.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._errors import InvariantViolationError
from ._store import Body, GetResult, ObjectMeta, ObjectStore, PutMode, PutResult, StoreBase, listing

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "CHECK_LOG",
    "CLAIM_LOG",
    "GC_LOG",
    "LEAD_LOG",
    "LOGGER",
    "NO_SPAN",
    "RETRY_LOG",
    "STORE_LOG",
    "WAL_LOG",
    "SpanScope",
    "WatchedStore",
    "claimed",
    "collected",
    "conflict",
    "fenced",
    "fields",
    "lead_ended",
    "lead_taken_over",
    "look_again",
    "own_write_found",
    "quiet",
    "retrying",
    "span",
    "store_for",
    "violated",
]

T = TypeVar("T")

LOGGER: Final = logging.getLogger("slate_epoch")
LOGGER.addHandler(logging.NullHandler())  # never basicConfig: where records go is the app's call
CLAIM_LOG: Final = logging.getLogger("slate_epoch.claim")
WAL_LOG: Final = logging.getLogger("slate_epoch.wal")
GC_LOG: Final = logging.getLogger("slate_epoch.gc")
LEAD_LOG: Final = logging.getLogger("slate_epoch.lead")
RETRY_LOG: Final = logging.getLogger("slate_epoch.retry")
STORE_LOG: Final = logging.getLogger("slate_epoch.store")
CHECK_LOG: Final = logging.getLogger("slate_epoch.check")

_DEBUG: Final = logging.DEBUG
_INFO: Final = logging.INFO
_WARNING: Final = logging.WARNING


def fields(
    role: str | None = None,
    epoch: int | None = None,
    root: str | None = None,
    manifest_id: int | None = None,
    **more: object,
) -> dict[str, object]:
    """A record's facts, for ``extra=``: the ones given (None: does not apply)."""
    found: dict[str, object] = {}
    if role is not None:
        found["role"] = role
    if epoch is not None:
        found["epoch"] = epoch
    if root is not None:
        found["root"] = root
    if manifest_id is not None:
        found["manifest_id"] = manifest_id
    found.update(more)
    return found


def _attributes(facts: Mapping[str, object]) -> dict[str, str | int | float | bool]:
    """Span and metric attributes for ``facts``: ``slate_epoch.<name>``, plain values only."""
    return {
        f"slate_epoch.{name}": value
        for name, value in facts.items()
        if isinstance(value, str | int | float | bool)
    }


# -- OpenTelemetry: what the application configured -----------------------------------------

_LOOK_EVERY: Final = 1.0  # seconds between looks for a configured provider


class _Instruments:
    """The metric instruments, made once per meter provider."""

    def __init__(self, meter: Meter) -> None:
        self.claims: Counter = meter.create_counter(
            "slate_epoch.claims", unit="{claim}", description="Claims that succeeded"
        )
        self.conflicts: Counter = meter.create_counter(
            "slate_epoch.conflicts",
            unit="{conflict}",
            description="Manifest writes that found their id taken by another write",
        )
        self.lost_responses: Counter = meter.create_counter(
            "slate_epoch.lost_responses",
            unit="{write}",
            description="Writes found landed after their response was lost (recognised own writes)",
        )
        self.fenced: Counter = meter.create_counter(
            "slate_epoch.fenced",
            unit="{handle}",
            description="Handles that found themselves fenced",
        )
        self.requests: Counter = meter.create_counter(
            "slate_epoch.store.requests", unit="{request}", description="Object-store requests"
        )
        self.claim_duration: Histogram = meter.create_histogram(
            "slate_epoch.claim.duration", unit="s", description="How long successful claims took"
        )


_next_look = -1.0
_tracer: Tracer | None = None
_instruments: _Instruments | None = None
_tracer_provider: object = None
_meter_provider: object = None


def look_again() -> None:
    """Look for configured providers at the next operation (tests that set them up)."""
    global _next_look
    _next_look = -1.0


def quiet(log: logging.Logger) -> bool:
    """Whether nobody listens to an operation that logs to ``log`` (at INFO), its store
    requests (``slate_epoch.store`` at DEBUG), its span or its metrics: then the operation skips
    all of it. One call, asked once by the hot operations (a warm claim), where even the calls
    that each find nothing to do add up."""
    if time.monotonic() >= _next_look:
        _look()
    return (
        _tracer is None
        and _instruments is None
        and not log.isEnabledFor(_INFO)
        and not STORE_LOG.isEnabledFor(_DEBUG)
    )


def _look() -> None:
    """Refresh ``_tracer`` and ``_instruments`` from the providers the application set, at
    most once every ``_LOOK_EVERY`` seconds (asking OpenTelemetry while no provider is set costs
    an environment lookup: more than a warm claim can spare)."""
    global _next_look, _tracer, _instruments, _tracer_provider, _meter_provider
    now = time.monotonic()
    if now < _next_look:
        return
    _next_look = now + _LOOK_EVERY
    trace_api: Any = sys.modules.get("opentelemetry.trace")
    tracer_provider = None if trace_api is None else trace_api.get_tracer_provider()
    if tracer_provider is not None and isinstance(
        tracer_provider, trace_api.ProxyTracerProvider | trace_api.NoOpTracerProvider
    ):
        tracer_provider = None  # the API's stand-in: nobody configured tracing
    if tracer_provider is not _tracer_provider:
        _tracer_provider = tracer_provider
        _tracer = None if tracer_provider is None else tracer_provider.get_tracer("slate_epoch")
    metrics_api: Any = sys.modules.get("opentelemetry.metrics")
    meter_provider = None if metrics_api is None else metrics_api.get_meter_provider()
    # The API's stand-in until a provider is set is a private class (_ProxyMeterProvider): told
    # by its name. Should it change, metrics are simply recorded into the stand-in (correct,
    # only slower).
    if meter_provider is not None and (
        isinstance(meter_provider, metrics_api.NoOpMeterProvider)
        or type(meter_provider).__name__ == "_ProxyMeterProvider"
    ):
        meter_provider = None
    if meter_provider is not _meter_provider:
        _meter_provider = meter_provider
        meter = None if meter_provider is None else meter_provider.get_meter("slate_epoch")
        _instruments = None if meter is None else _Instruments(meter)


def _metrics() -> _Instruments | None:
    _look()
    return _instruments


# -- spans -------------------------------------------------------------------------------------


class SpanScope:
    """The span of one operation while it runs: nothing at all while nobody traces (this base
    class, one shared instance: ``NO_SPAN``), else ``_Span``. Used as ``with span(...) as
    scope:``, or opened and closed by hand (``open``, then ``close`` exactly once)."""

    __slots__ = ()

    def open(self) -> SpanScope:
        """Start the span and make it current; returns it."""
        return self

    def close(self, error: BaseException | None = None) -> None:
        """End the span: ``error`` (an ``Exception``) is recorded on it; cancellation is not an
        error."""

    def set(self, name: str, value: str | int | float | bool) -> None:
        """Set the attribute ``slate_epoch.<name>``."""

    def __enter__(self) -> SpanScope:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)


NO_SPAN: Final = SpanScope()


class _Span(SpanScope):
    """A span, current while the operation runs (contextvars: on asyncio and trio alike). An
    ``Exception`` is recorded on it as an error; cancellation ends it without an error."""

    __slots__ = ("_closed", "_span", "_token")

    def __init__(self, tracer: Tracer, name: str, attributes: dict[str, Any]) -> None:
        self._span: Span = tracer.start_span(name, attributes=attributes)
        self._token: object = None
        self._closed = False

    def open(self) -> SpanScope:
        trace_api: Any = sys.modules["opentelemetry.trace"]
        context_api: Any = sys.modules["opentelemetry.context"]
        self._token = context_api.attach(trace_api.set_span_in_context(self._span))
        return self

    def close(self, error: BaseException | None = None) -> None:
        if self._closed:  # closed by hand, then an error on the way out: once is enough
            return
        self._closed = True
        exc = error
        context_api: Any = sys.modules["opentelemetry.context"]
        context_api.detach(self._token)
        if isinstance(exc, Exception):
            trace_api: Any = sys.modules["opentelemetry.trace"]
            self._span.record_exception(exc)
            status = trace_api.Status(trace_api.StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
            self._span.set_status(status)
        elif exc is not None:
            self._span.set_attribute("slate_epoch.cancelled", True)
        self._span.end()

    def set(self, name: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(f"slate_epoch.{name}", value)


def span(name: str, role: str | None, root: str, epoch: int | None = None) -> SpanScope:
    """The span ``slate_epoch.<name>`` of an operation (a shared no-op while nobody traces)."""
    _look()
    tracer = _tracer
    if tracer is None:
        return NO_SPAN
    return _Span(
        tracer, f"slate_epoch.{name}", _attributes(fields(role=role, epoch=epoch, root=root))
    )


# -- events ------------------------------------------------------------------------------------


def claimed(
    scope: SpanScope,
    role: str,
    root: str,
    epoch: int,
    manifest_id: int,
    *,
    conflicts: int,
    lost_responses: int,
    seconds: float,
    owner: str,
) -> None:
    """A claim succeeded: its span's attributes (and its end), one INFO record, and the claim
    metrics."""
    scope.set("epoch", epoch)
    scope.set("manifest_id", manifest_id)
    scope.close()
    if CLAIM_LOG.isEnabledFor(_INFO):
        CLAIM_LOG.info(
            "claimed role %r at epoch %d (manifest %d, root %r): %d conflict(s), %d lost "
            "response(s) recognised, %.1f ms",
            role,
            epoch,
            manifest_id,
            root,
            conflicts,
            lost_responses,
            seconds * 1000,
            extra=fields(
                role,
                epoch,
                root,
                manifest_id,
                conflicts=conflicts,
                lost_responses=lost_responses,
                seconds=seconds,
                owner=owner,
            ),
        )
    meters = _metrics()
    if meters is not None:
        labels = {"slate_epoch.role": role}
        meters.claims.add(1, labels)
        meters.claim_duration.record(seconds, labels)
        if conflicts:
            meters.conflicts.add(conflicts, {**labels, "slate_epoch.operation": "claim"})
        if lost_responses:
            meters.lost_responses.add(lost_responses, {**labels, "slate_epoch.operation": "claim"})


def conflict(role: str, operation: str) -> None:
    """A handle's write found its id taken by another write (another role's): counted."""
    meters = _metrics()
    if meters is not None:
        meters.conflicts.add(1, {"slate_epoch.role": role, "slate_epoch.operation": operation})


def own_write_found(role: str, root: str, epoch: int, operation: str, where: int) -> None:
    """A write of a handle (``operation``) found landed after its response was lost."""
    if CLAIM_LOG.isEnabledFor(_DEBUG):
        CLAIM_LOG.debug(
            "%s of role %r at epoch %d landed at %d although its response was lost",
            operation,
            role,
            epoch,
            where,
            extra=fields(role, epoch, root, operation=operation, at=where),
        )
    meters = _metrics()
    if meters is not None:
        meters.lost_responses.add(1, {"slate_epoch.role": role, "slate_epoch.operation": operation})


def fenced(role: str, root: str, epoch: int, newer_epoch: int, manifest_id: int) -> None:
    """A handle found a newer claim of its role: one INFO record, counted (once per handle)."""
    if CLAIM_LOG.isEnabledFor(_INFO):
        CLAIM_LOG.info(
            "role %r at epoch %d is fenced by epoch %d (manifest %d, root %r)",
            role,
            epoch,
            newer_epoch,
            manifest_id,
            root,
            extra=fields(role, epoch, root, manifest_id, newer_epoch=newer_epoch),
        )
    meters = _metrics()
    if meters is not None:
        meters.fenced.add(1, {"slate_epoch.role": role})


def collected(root: str, latest_id: int, boundary: int, deleted: int, dry_run: bool) -> None:
    """A garbage collection finished: one INFO record."""
    if GC_LOG.isEnabledFor(_INFO):
        verb = "would delete" if dry_run else "deleted"
        GC_LOG.info(
            "collection under root %r %s %d manifest version(s): boundary %d, newest %d",
            root,
            verb,
            deleted,
            boundary,
            latest_id,
            extra=fields(
                root=root,
                manifest_id=latest_id,
                boundary=boundary,
                deleted=deleted,
                dry_run=dry_run,
            ),
        )


def lead_taken_over(
    role: str, epoch: int, root: str, manifest_id: int, owner: str, reason: str
) -> None:
    """``lead`` took a role over (``reason``: how it came free): one INFO record."""
    if LEAD_LOG.isEnabledFor(_INFO):
        LEAD_LOG.info(
            "leading role %r at epoch %d (root %r): taken over, %s",
            role,
            epoch,
            root,
            reason,
            extra=fields(role, epoch, root, manifest_id, owner=owner, reason=reason),
        )


def lead_ended(
    role: str,
    epoch: int,
    root: str,
    manifest_id: int,
    owner: str,
    *,
    ended: BaseException | None,
    released: bool,
    body_error: BaseException | None,
) -> None:
    """``lead`` stopped leading: released, or lost (``ended`` says why). One INFO record."""
    if not LEAD_LOG.isEnabledFor(_INFO):
        return
    if ended is not None:
        how = f"lost: {type(ended).__name__}: {ended}"
    elif released:
        how = "released"
    else:
        how = "ended without releasing the lease"
    if body_error is not None and ended is None:
        how += f" (the body raised {type(body_error).__name__})"
    LEAD_LOG.info(
        "stopped leading role %r at epoch %d (root %r): %s",
        role,
        epoch,
        root,
        how,
        extra=fields(role, epoch, root, manifest_id, owner=owner, outcome=how),
    )


def retrying(what: str, transient: int, error: BaseException, facts: Mapping[str, object]) -> None:
    """The ``transient``-th transient error of one operation, to be retried: the first is the
    common lost response and goes unsaid; every later one is a WARNING."""
    if transient > 1 and RETRY_LOG.isEnabledFor(_WARNING):
        RETRY_LOG.warning(
            "%s: retrying after transient error %d (%s: %s)",
            what,
            transient,
            type(error).__name__,
            error,
            extra={**facts, "transient_errors": transient, "error": type(error).__name__},
        )


def violated(error: InvariantViolationError, **facts: object) -> InvariantViolationError:
    """``error``, logged at WARNING first: ``raise violated(InvariantViolationError(...))``."""
    if LOGGER.isEnabledFor(_WARNING):
        LOGGER.warning("invariant violated: %s", error, extra=facts)
    return error


# -- store requests ----------------------------------------------------------------------------


def store_for(store: ObjectStore) -> ObjectStore:
    """``store`` while nobody listens to store requests; else ``store`` watched (each request
    logged at DEBUG and counted). Asked once per operation."""
    if STORE_LOG.isEnabledFor(_DEBUG):
        return WatchedStore(store, _metrics())
    meters = _metrics()
    if meters is None:
        return store
    return WatchedStore(store, meters)


class WatchedStore(StoreBase):
    """``inner`` with each request logged at DEBUG (``slate_epoch.store``) and counted
    (``slate_epoch.store.requests``). Made per operation; never closes ``inner``."""

    def __init__(self, inner: ObjectStore, meters: _Instruments | None) -> None:
        self.inner = inner
        self._meters = meters

    async def _request(self, op: str, key: str, call: Awaitable[T], detail: str = "") -> T:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await call
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._done(op, key, outcome, time.perf_counter() - started, detail)

    def _done(self, op: str, key: str, outcome: str, seconds: float, detail: str) -> None:
        if STORE_LOG.isEnabledFor(_DEBUG):
            STORE_LOG.debug(
                "%s%s %s: %s in %.2f ms",
                op,
                detail,
                key,
                outcome,
                seconds * 1000,
                extra={"op": op, "key": key, "outcome": outcome, "seconds": seconds},
            )
        if self._meters is not None:
            self._meters.requests.add(1, {"slate_epoch.op": op, "slate_epoch.outcome": outcome})

    async def get(self, key: str) -> GetResult:
        return await self._request("get", key, self.inner.get(key))

    async def head(self, key: str) -> ObjectMeta:
        return await self._request("head", key, self.inner.head(key))

    async def put(self, key: str, body: Body, *, mode: PutMode = "overwrite") -> PutResult:
        detail = f" ({mode})" if isinstance(mode, str) else " (update)"
        return await self._request("put", key, self.inner.put(key, body, mode=mode), detail)

    async def list(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectMeta]:
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with listing(self.inner, prefix, start_after=start_after) as metas:
                async for meta in metas:
                    yield meta
        except GeneratorExit:  # the caller stopped early: the listing itself went fine
            raise
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._done("list", prefix, outcome, time.perf_counter() - started, "")

    async def delete(self, key: str) -> None:
        await self._request("delete", key, self.inner.delete(key))
