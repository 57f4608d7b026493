"""What slate-epoch tells the world: log records (levels, fields), OpenTelemetry spans and
metrics read back through the SDK's in-memory exporter and metric reader, on asyncio and trio;
and that nothing of it costs an import or a provider when nobody asked for it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once

from slate_epoch import (
    FencedError,
    InvariantViolationError,
    Manifest,
    ManifestStore,
    RoleClaim,
    check_store,
    claim_epoch,
    collect_garbage,
    lead,
)
from slate_epoch import _observe as observe
from slate_epoch.backends.memory import MemoryStore
from slate_epoch.testing import FaultyStore
from tests.interpose import Interposer

pytestmark = pytest.mark.anyio


def state(data: bytes) -> Callable[[Manifest], Manifest]:
    def mutate(manifest: Manifest) -> Manifest:
        return msgspec.structs.replace(manifest, state=manifest.state + data)

    return mutate


def records(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and r.levelno == level]


# -- logs ----------------------------------------------------------------------------------------


def test_the_library_logger_has_a_null_handler_and_configures_nothing() -> None:
    code = textwrap.dedent(
        """
        import logging
        root_handlers = list(logging.getLogger().handlers)
        import slate_epoch
        handlers = logging.getLogger("slate_epoch").handlers
        assert [type(h).__name__ for h in handlers] == ["NullHandler"], handlers
        assert logging.getLogger().handlers == root_handlers  # never basicConfig
        assert logging.getLogger().level == logging.WARNING
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_a_claim_is_one_info_record_with_its_facts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    await claim_epoch(store, "tenant-7")  # 1
    rival_store = Interposer(store)

    async def rival_claims() -> None:
        await claim_epoch(rival_store, "tenant-7", owner="rival")

    view = Interposer(store)
    view.on_create("tenant-7/manifest/", before=rival_claims)  # the rival takes 2 first
    lossy = FaultyStore(view, seed=0)
    # the first create meets the rival's claim; the second lands, and its response is lost
    lossy.script("lost", op="create", prefix="tenant-7/manifest/", times=2)
    with caplog.at_level(logging.INFO, logger="slate_epoch"):
        handle = await claim_epoch(lossy, "tenant-7", owner="me")
    claims = [r for r in records(caplog, "slate_epoch.claim", logging.INFO) if r.owner == "me"]  # type: ignore[attr-defined]
    assert len(claims) == 1
    record: Any = claims[0]
    assert (record.role, record.epoch, record.root, record.manifest_id) == (
        "writer",
        handle.epoch,
        "tenant-7",
        handle.manifest_id,
    )
    assert (record.conflicts, record.lost_responses) == (1, 1)
    assert record.seconds > 0
    assert record.getMessage().startswith("claimed role 'writer' at epoch 3 (manifest 3")


async def test_fencing_is_one_info_record_per_handle(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    old = await claim_epoch(store)
    await claim_epoch(Interposer(store))
    with caplog.at_level(logging.INFO, logger="slate_epoch"):
        for _ in range(3):
            with pytest.raises(FencedError):
                await old.update(state(b"x"))
    fenced: list[Any] = [
        r for r in records(caplog, "slate_epoch.claim", logging.INFO) if "fenced" in r.msg
    ]
    assert len(fenced) == 1
    assert (fenced[0].role, fenced[0].epoch, fenced[0].newer_epoch, fenced[0].manifest_id) == (
        "writer",
        1,
        2,
        2,
    )


async def test_retries_after_the_first_transient_error_are_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    handle = await claim_epoch(store)
    faulty = FaultyStore(store, seed=0)
    await claim_epoch(store, "other")
    flaky = await claim_epoch(faulty, "flaky")
    faulty.script("error", op="get", times=3)
    with caplog.at_level(logging.WARNING, logger="slate_epoch"):
        await flaky.refresh()  # three errors, then an answer
        await handle.refresh()
    warnings: list[Any] = records(caplog, "slate_epoch.retry", logging.WARNING)
    assert [w.transient_errors for w in warnings] == [2, 3]  # the first goes unsaid
    assert all((w.role, w.root, w.epoch) == ("writer", "flaky", 1) for w in warnings)
    assert "refresh of role 'writer' at epoch 1: retrying after transient error 2" in (
        warnings[0].getMessage()
    )


async def test_an_invariant_violation_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    handle = await claim_epoch(store)
    forged = handle.manifest.with_claim(RoleClaim("writer", 1, claim_id="someone-else"))
    await ManifestStore(store).write(2, forged)
    with (
        caplog.at_level(logging.WARNING, logger="slate_epoch"),
        pytest.raises(InvariantViolationError),
    ):
        await handle.refresh()
    (record,) = records(caplog, "slate_epoch", logging.WARNING)
    assert record.getMessage().startswith("invariant violated: manifest 2: epoch 1")
    assert (record.role, record.manifest_id) == ("writer", 2)  # type: ignore[attr-defined]


async def test_each_store_request_is_a_debug_record(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    await claim_epoch(store)
    with caplog.at_level(logging.DEBUG, logger="slate_epoch.store"):
        await claim_epoch(store)  # warm: a create and the boundary read
    requests: list[Any] = records(caplog, "slate_epoch.store", logging.DEBUG)
    assert [(r.op, r.outcome) for r in requests] == [("put", "ok"), ("get", "NotFoundError")]
    assert requests[0].key == "manifest/00000000000000000002.manifest"
    assert "put (create) manifest/00000000000000000002.manifest: ok in" in (
        requests[0].getMessage()
    )


async def test_a_collection_and_a_store_check_are_info_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    for _ in range(3):
        await claim_epoch(store, "r")
    with caplog.at_level(logging.INFO, logger="slate_epoch"):
        await collect_garbage(store, "r", keep=1)
        await check_store(store)
    (collection,) = records(caplog, "slate_epoch.gc", logging.INFO)
    facts: Any = collection
    assert (facts.root, facts.manifest_id, facts.boundary, facts.deleted) == ("r", 3, 2, 2)
    checks: list[Any] = records(caplog, "slate_epoch.check", logging.INFO)
    assert len(checks) == 5


async def test_a_lead_taken_over_and_released_are_info_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    with caplog.at_level(logging.INFO, logger="slate_epoch.lead"):
        async with lead(store, "svc", lease=1.0, owner="a") as handle:
            await handle.update(state(b"a"))
        async with lead(store, "svc", lease=1.0, owner="b"):
            pass
    messages = [r.getMessage() for r in records(caplog, "slate_epoch.lead", logging.INFO)]
    assert messages == [
        "leading role 'writer' at epoch 1 (root 'svc'): taken over, never claimed",
        "stopped leading role 'writer' at epoch 1 (root 'svc'): released",
        "leading role 'writer' at epoch 2 (root 'svc'): taken over, released by its holder",
        "stopped leading role 'writer' at epoch 2 (root 'svc'): released",
    ]


async def test_a_json_formatter_gets_the_facts_as_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    standard = set(vars(logging.LogRecord("x", 0, "", 0, "", (), None))) | {"message"}

    class Json(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            facts = {k: v for k, v in vars(record).items() if k not in standard}
            return json.dumps({"message": record.getMessage(), **facts})

    with caplog.at_level(logging.INFO, logger="slate_epoch"):
        await claim_epoch(MemoryStore(), "t")
    line = json.loads(Json().format(records(caplog, "slate_epoch.claim", logging.INFO)[0]))
    assert {"role", "epoch", "root", "manifest_id", "conflicts", "lost_responses"} <= set(line)


# -- OpenTelemetry -------------------------------------------------------------------------------


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str, root: str | None = None) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans.get_finished_spans()
            if s.name == name
            and (root is None or dict(s.attributes or {}).get("slate_epoch.root") == root)
        ]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for found in scope.metrics
            if found.name == metric
            for point in found.data.data_points
        ]

    def total(self, metric: str, **attributes: str) -> int:
        return sum(
            int(point.value)
            for point in self.points(metric)
            if all(point.attributes.get(f"slate_epoch.{k}") == v for k, v in attributes.items())
        )


@pytest.fixture
def telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    """An SDK tracer and meter provider, set as the global ones for this test only (the API
    allows setting them once per process: its globals are put back afterwards)."""
    found = Telemetry()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER", None)
    trace.set_tracer_provider(found.tracer_provider)
    metrics.set_meter_provider(found.meter_provider)
    observe.look_again()
    yield found
    found.meter_provider.shutdown()
    found.tracer_provider.shutdown()
    monkeypatch.undo()
    observe.look_again()


async def test_every_operation_is_a_span_with_its_facts(telemetry: Telemetry) -> None:
    store = MemoryStore()
    handle = await claim_epoch(store, "t")
    await handle.update(state(b"u"))
    await handle.refresh()
    log = await handle.fence_wal()
    await log.append(b"entry")
    await collect_garbage(store, "t", keep=1)
    async with lead(store, "led", lease=1.0):
        pass
    for name, epoch, manifest_id in [
        ("claim", 1, 1),
        ("update", 1, 2),
        ("refresh", 1, 2),
        ("fence_wal", 1, 2),  # the fence writes no manifest version
        ("append", 1, None),
        ("collect_garbage", None, 2),
        ("lead", 1, 1),
    ]:
        root = "led" if name == "lead" else "t"
        (span,) = telemetry.finished(f"slate_epoch.{name}", root)
        attributes = dict(span.attributes or {})
        assert attributes.get("slate_epoch.epoch") == epoch, name
        assert attributes.get("slate_epoch.manifest_id") == manifest_id, name
        if name != "collect_garbage":
            assert attributes["slate_epoch.role"] == "writer"
        assert span.status.status_code is not StatusCode.ERROR
    (append,) = telemetry.finished("slate_epoch.append")
    assert dict(append.attributes or {})["slate_epoch.log_id"] == 2


async def test_errors_are_recorded_on_the_span(telemetry: Telemetry) -> None:
    store = MemoryStore()
    old = await claim_epoch(store)
    await claim_epoch(Interposer(store))
    with pytest.raises(FencedError):
        await old.update(state(b"x"))
    (span,) = telemetry.finished("slate_epoch.update")
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    assert str(dict(span.events[0].attributes or {})["exception.type"]).endswith("FencedError")


async def test_spans_nest_under_the_callers_across_awaits(telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    store = MemoryStore()
    with tracer.start_as_current_span("request") as parent:
        handle = await claim_epoch(store)
        await anyio.lowlevel.checkpoint()
        await handle.update(state(b"x"))
    context = parent.get_span_context()
    for name in ("slate_epoch.claim", "slate_epoch.update"):
        (span,) = telemetry.finished(name)
        assert span.parent is not None
        assert span.parent.span_id == context.span_id


async def test_the_metrics(telemetry: Telemetry) -> None:
    store = MemoryStore()
    old = await claim_epoch(store)  # a claim: put and get
    lossy = FaultyStore(store, seed=0)
    lossy.script("lost", op="create", prefix="manifest/")
    await claim_epoch(lossy)  # a lost response recognised
    view = Interposer(store)
    view.on_create("manifest/", before=lambda: claim_epoch(Interposer(store)))
    await claim_epoch(view)  # a conflict
    with pytest.raises(FencedError):
        await old.refresh()
    assert telemetry.total("slate_epoch.claims", role="writer") == 4
    assert telemetry.total("slate_epoch.conflicts", role="writer", operation="claim") == 1
    assert telemetry.total("slate_epoch.lost_responses", role="writer", operation="claim") == 1
    assert telemetry.total("slate_epoch.fenced", role="writer") == 1
    assert telemetry.total("slate_epoch.store.requests", op="put") >= 4
    assert telemetry.total("slate_epoch.store.requests", op="get") >= 4
    (duration,) = telemetry.points("slate_epoch.claim.duration")
    assert duration.count == 4
    assert duration.sum > 0


async def test_without_a_provider_nothing_is_recorded_and_nothing_is_watched() -> None:
    observe.look_again()
    assert observe.quiet(observe.CLAIM_LOG)
    store = MemoryStore()
    manifests = ManifestStore(store)
    assert manifests.observed() is manifests
    assert observe.store_for(store) is store


def test_without_opentelemetry_installed_nothing_changes() -> None:
    """opentelemetry made unimportable (as if the extra were not installed): slate-epoch imports,
    claims and checks a store; and it never imports OpenTelemetry by itself either way."""
    code = textwrap.dedent(
        """
        import sys
        blocked = "--blocked" in sys.argv
        if blocked:
            sys.modules["opentelemetry"] = None  # any import of it fails
        import anyio
        from slate_epoch import check_store, claim_epoch
        from slate_epoch.backends.memory import MemoryStore

        async def main():
            store = MemoryStore()
            handle = await claim_epoch(store)
            await handle.update(lambda m: m)
            await check_store(store)

        anyio.run(main)
        assert blocked or "opentelemetry" not in sys.modules
        print("ok")
        """
    )
    for args in ([], ["--blocked"]):
        result = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
        )
        assert result.stdout == "ok\n", result.stderr
