"""5. ``peers``: slate-epoch beside its peers, each in its own subprocess (``peer_process``).

Ratios are ours ÷ the peer's median, each against the slate-epoch run that does the most similar
work:

- SlateDB's open (read the manifest, bump the writer epoch, fence the WAL, replay it, start the
  writer; nothing cached) is compared with our open: a cold claim with ``fence_wal=True``. On a
  local folder SlateDB does not fsync, so the headline compares it with our ``durable=False``
  store; the ratio against our default (fsync) store is given too. Our claim-only rows (cold,
  warm) stay beside it.
- The hand-rolled obstore loop: warm with warm, cold with cold; no fsync either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model import Job, Row, Run, Scenario, ratio
from ..peer_process import exit_notes, run_peer, sample_row, status_row
from ..stores import Environment, new_folder

NAME = "peers"
PEERS = (
    ("slate-epoch", "memory", "benchmarks.peers.ours"),
    ("slate-epoch", "local", "benchmarks.peers.ours"),
    ("slate-epoch", "local-nofsync", "benchmarks.peers.ours"),
    ("slatedb", "memory", "benchmarks.peers.slatedb_open"),
    ("slatedb", "local", "benchmarks.peers.slatedb_open"),
    ("obstore", "memory", "benchmarks.peers.obstore_claim"),
    ("obstore", "local", "benchmarks.peers.obstore_claim"),
)
NOTES = [
    "SlateDB's open is compared with slate-epoch's open: a cold claim with fence_wal=True "
    "(both bump the writer epoch and fence the WAL; SlateDB also replays its WAL and starts "
    "its writer). "
    "Each of our opens meets the same state: the manifest and the fence it wrote are deleted "
    "again afterwards (untimed), so it finds 10 manifests and nothing in the log.",
    "fsync: slate-epoch 'local' fsyncs file and folder on every create (durable=True, the "
    "default); 'local-nofsync' is durable=False. SlateDB's and obstore's local stores never "
    "fsync: compare them with 'local-nofsync'.",
]


@dataclass(frozen=True)
class Samples:
    warm: Mapping[str, int]  # per peer backend kind: "memory" or "local"
    cold: Mapping[str, int]
    timeout: float  # seconds a peer process may take


def jobs(samples: Samples, run: Run) -> list[Job]:
    def job(peer: str, backend: str, module: str) -> Job:
        return Job(
            NAME, f"{peer}, {backend}", lambda: measure(peer, backend, module, samples, run.env)
        )

    return [job(peer, backend, module) for peer, backend, module in PEERS]


def measure(peer: str, backend: str, module: str, samples: Samples, env: Environment) -> list[Row]:
    kind = "memory" if backend == "memory" else "local"
    arguments = ["--backend", backend, "--folder", str(new_folder(env, f"peer-{peer}"))]
    arguments += ["--warm", str(samples.warm[kind]), "--cold", str(samples.cold[kind])]
    result = run_peer(module, arguments, samples.timeout)
    if result.result is None:
        return [status_row(NAME, backend, peer, result)]
    rows = []
    for temp in result.result["samples"]:
        row = sample_row(NAME, backend, peer, temp, _case(peer, temp), result)
        row.values["temperature"] = temp
        rows.append(row)
    return rows


def _case(peer: str, temp: str) -> str:
    if temp == "open":
        return f"{peer}, open (claim + fence_wal)" if peer == "slate-epoch" else f"{peer}, open"
    return f"{peer}, {temp}"


# Which of our runs each peer is compared with: (our backend, label) per peer backend.
_OURS_FOR = {
    "memory": (("memory", ""),),
    "local": (("local-nofsync", "(no fsync)"), ("local", "(fsync)")),
}


def ours_over_peers(rows: list[Row]) -> list[Row]:
    ours = {
        (r.backend, r.values["temperature"]): r
        for r in rows
        if r.values.get("peer") == "slate-epoch" and r.values.get("status") == "ok"
    }
    for row in rows:
        peer, temp = row.values.get("peer"), row.values.get("temperature")
        if row.values.get("status") != "ok":
            continue
        if peer == "slate-epoch":
            row.result = {"memory": "ours", "local": "ours, fsync"}.get(
                row.backend, "ours, no fsync"
            )
            claim = ours.get((row.backend, "cold"))
            share = ratio(row.median_us, claim.median_us if claim else None)
            if temp == "open" and share is not None:
                row.values["open_over_cold_claim"] = share
                row.result += f"; {share:.2f}x our cold claim"
            continue
        ratios: dict[str, float | None] = {}
        parts = []
        for backend, label in _OURS_FOR[row.backend]:
            mine = ours.get((backend, temp))
            value = ratio(mine.median_us if mine else None, row.median_us)
            ratios[f"{backend} {temp}"] = value
            parts.append((f"{value:.2f} {label}" if value is not None else f"- {label}").strip())
        row.values["ours_over_peer"] = ratios
        row.result = "ours÷this " + ", ".join(parts)
    return rows


def notes(run: Run, rows: list[Row]) -> list[str]:
    return [*NOTES, *exit_notes(rows)]


def plot(ax: Any, rows: list[Row]) -> None:
    labels = [f"{r.case} [{r.backend}]" for r in rows]
    colors = ["tab:blue" if r.values.get("peer") == "slate-epoch" else "tab:grey" for r in rows]
    ys = list(range(len(rows)))
    ax.barh(ys, [r.median_us for r in rows], color=colors)
    ax.set_yticks(ys, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median µs (log); blue: slate-epoch")
    ax.set_title("5. Peers")


SCENARIO = Scenario(
    name=NAME,
    order=5,
    full=Samples(
        warm={"memory": 3000, "local": 400}, cold={"memory": 800, "local": 200}, timeout=600.0
    ),
    quick=Samples(warm={"memory": 50, "local": 10}, cold={"memory": 20, "local": 5}, timeout=120.0),
    jobs=jobs,
    finish=ours_over_peers,
    notes=notes,
    panels=(plot,),
)
