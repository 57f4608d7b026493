"""4. ``lost_responses``: sequential warm claims through ``FaultyStore`` losing that share of put
responses; beside them, SlateDB's rule (re-read and bump again after any conflict) on the same
faults, written here on the public ``ManifestStore``.

Both resend a write at once after a lost response; slate-epoch backs off only after a second
unknown outcome in a row (and after a conflict with a rival, which a lost response of its own is
not).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import anyio

from slate_epoch import (
    Manifest,
    ManifestStore,
    ManifestVersionExistsError,
    ObjectStore,
    RoleClaim,
    TransientStoreError,
    claim_epoch,
)
from slate_epoch.testing import FaultyStore

from ..claims import CLAIM_TIMEOUT, SEED, in_loop
from ..model import Job, Row, Run, Scenario, summary_us
from ..peers._common import HISTORY
from ..stores import Environment, open_backend, per_claim, prefill

NAME = "lost_responses"
VARIANTS = ("slate-epoch", "SlateDB rule")


@dataclass(frozen=True)
class Samples:
    rates: Sequence[float]  # shares of put responses lost
    claims: Mapping[str, int]  # per backend


def jobs(samples: Samples, run: Run) -> list[Job]:
    return [
        in_loop(
            NAME,
            f"{kind}, {rate:.0%} lost, {variant}",
            "asyncio",
            measure,
            kind,
            rate,
            variant,
            samples.claims[kind],
            run.env,
        )
        for kind in run.backends
        if kind in samples.claims
        for rate in samples.rates
        for variant in VARIANTS
    ]


async def measure(kind: str, rate: float, variant: str, claims: int, env: Environment) -> list[Row]:
    claim = _ours if variant == "slate-epoch" else _slatedb_rule
    async with open_backend(kind, env) as store:
        await prefill(store, HISTORY)
        faulty = FaultyStore(
            store, seed=SEED + round(rate * 100), lost_response_rate=rate, ops={"put"}
        )
        first = last = await claim(faulty)  # learn the root (not counted)
        faulty.counts.clear()
        times: list[float] = []
        for _ in range(claims):
            start = perf_counter()
            try:
                last = await claim(faulty)
            except TimeoutError:  # ClaimTimeoutError, or the rule's own deadline
                continue
            times.append(perf_counter() - start)
    ok = len(times)
    epochs = (last - first) / ok if ok else None
    median, p99 = summary_us(times)
    counts = faulty.counts
    kinds = {"list": "list", "get": "get", "head": "head", "create": "put"}
    requests = per_claim(Counter({k: counts[op] for k, op in kinds.items()}), claims)
    return [
        Row(
            NAME,
            kind,
            f"{rate:.0%} lost, {variant}",
            median,
            p99,
            ok,
            requests,
            result=f"{ok}/{claims} ok; {epochs:.2f} epochs/claim"
            if epochs is not None
            else "none ok",
            values={
                "rate": rate,
                "variant": variant,
                "claims": claims,
                "succeeded": ok,
                "epochs_per_claim": epochs,
                "lost_per_claim": counts["lost"] / claims,
            },
        )
    ]


async def _ours(store: ObjectStore) -> int:
    return (await claim_epoch(store, timeout=CLAIM_TIMEOUT)).epoch


async def _slatedb_rule(store: ObjectStore) -> int:
    """SlateDB's rule: a timeout resends the same create; any conflict (the own landed write
    included, which it cannot recognise) means re-read and bump again."""
    manifests = ManifestStore(store)
    with anyio.fail_after(CLAIM_TIMEOUT):
        latest = manifests.cached_latest() or await manifests.read_latest() or (0, Manifest())
        while True:
            base_id, base = latest
            epoch = base.epoch("writer") + 1
            claim = RoleClaim(role="writer", epoch=epoch, claim_id=os.urandom(16).hex())
            candidate = base.with_claim(claim)
            while True:
                try:
                    await manifests.write(base_id + 1, candidate)
                except TransientStoreError:
                    continue
                except ManifestVersionExistsError:
                    break
                return epoch
            latest = await manifests.read_latest(known=base_id + 1) or latest


def extra_requests(rows: list[Row]) -> list[Row]:
    """Requests per claim beyond those of the same variant with nothing lost."""
    base = {
        (r.backend, r.values["variant"]): r for r in rows if r.values["rate"] == 0 and r.requests
    }
    for row in rows:
        zero = base.get((row.backend, row.values["variant"]))
        if zero is None or row.requests is None or zero.requests is None:
            continue
        extra = row.requests["total"] - zero.requests["total"]
        row.values["extra_requests_per_claim"] = extra
        row.result += f"; {extra:+.2f} req"
    return rows


def _series(rows: list[Row]) -> list[tuple[str, str, list[Row]]]:
    series: dict[str, list[Row]] = {}
    for r in rows:
        series.setdefault(f"{r.backend}, {r.values['variant']}", []).append(r)
    out = []
    for label, points in sorted(series.items()):
        points.sort(key=lambda r: float(r.values["rate"]))
        out.append((label, "-" if "slate-epoch" in label else ":", points))
    return out


def plot_epochs(ax: Any, rows: list[Row]) -> None:
    for i, (label, style, points) in enumerate(_series(rows)):
        rates = [100 * float(r.values["rate"]) for r in points]
        epochs = [r.values.get("epochs_per_claim") or math.nan for r in points]
        # lines that coincide (every backend at 1.00) stay visible: growing markers
        ax.plot(rates, epochs, style, marker="o", markersize=10 - 2 * i, label=label)
    ax.set_xlabel("put responses lost (%)")
    ax.set_ylabel("epochs per successful claim (1.0: none burned)")
    ax.set_title("4. Lost responses: epochs burned")
    ax.legend(fontsize=8)


def plot_p99(ax: Any, rows: list[Row]) -> None:
    for label, style, points in _series(rows):
        rates = [100 * float(r.values["rate"]) for r in points]
        p99s = [(r.p99_us or math.nan) / 1e3 for r in points]
        ax.plot(rates, p99s, style, marker="o", label=label)
    ax.set_xlabel("put responses lost (%)")
    ax.set_ylabel("p99 claim ms (log)")
    ax.set_yscale("log")
    ax.set_title("4. Lost responses: p99 (resend at once; backoff after 2 losses in a row)")
    ax.legend(fontsize=8)


RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
SCENARIO = Scenario(
    name=NAME,
    order=4,
    full=Samples(rates=RATES, claims={"memory": 300, "local": 150, "s3": 40}),
    quick=Samples(rates=RATES, claims={"memory": 20, "local": 10, "s3": 5}),
    jobs=jobs,
    finish=extra_requests,
    panels=(plot_epochs, plot_p99),
)
