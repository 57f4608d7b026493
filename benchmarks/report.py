"""The run's outputs: one table (rich if installed, plain text otherwise), a Markdown copy of it,
``results.json`` and a PNG chart (matplotlib; skipped, with the reason, if it is missing)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .model import SCENARIOS, Row, fmt_us, requests_text

__all__ = ["chart", "markdown", "print_table", "write_json"]

TITLES = {
    "uncontended": "1 uncontended",
    "history": "2 history",
    "contention": "3 contention",
    "lost_responses": "4 lost responses",
    "peers": "5 peers",
}
HEADER = ("scenario", "backend", "case", "median", "p99", "requests / claim", "result")


def _cells(row: Row) -> tuple[str, ...]:
    return (
        TITLES[row.scenario],
        row.backend,
        row.case,
        fmt_us(row.median_us),
        fmt_us(row.p99_us),
        requests_text(row.requests),
        row.result,
    )


def _ordered(rows: Sequence[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: SCENARIOS.index(r.scenario))


def print_table(rows: Sequence[Row], notes: Sequence[str]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _print_plain(rows, notes)
        return
    table = Table(title="slate-epoch benchmarks (medians and p99; ratios within this run)")
    for name in HEADER:
        if name in ("median", "p99"):
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="fold")
    previous = None
    for row in _ordered(rows):
        if previous is not None and row.scenario != previous:
            table.add_section()
        previous = row.scenario
        table.add_row(*_cells(row))
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    for note in notes:
        console.print(f"- {note}", highlight=False)


def _print_plain(rows: Sequence[Row], notes: Sequence[str]) -> None:
    lines = [HEADER, *(_cells(r) for r in _ordered(rows))]
    widths = [min(60, max(len(line[i]) for line in lines)) for i in range(len(HEADER))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    for note in notes:
        print(f"- {note}")


def markdown(rows: Sequence[Row], meta: dict[str, Any], notes: Sequence[str]) -> str:
    out = [
        f"Run of {meta['date']} on {meta['machine']}; `{meta['command']}`"
        f" ({'quick' if meta['quick'] else 'full'} run, {meta['wall_s']:.0f} s; load average"
        f" {meta['load_average_before'][0]:.1f} before, {meta['load_average_after'][0]:.1f}"
        " after).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "| " + " | ".join("---:" if h in ("median", "p99") else "---" for h in HEADER) + " |",
    ]
    for row in _ordered(rows):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    out.append("")
    out += [f"- {note}" for note in notes]
    return "\n".join(out) + "\n"


def write_json(path: Path, rows: Sequence[Row], meta: dict[str, Any], notes: Sequence[str]) -> None:
    scenarios: dict[str, list[dict[str, Any]]] = {name: [] for name in SCENARIOS}
    for row in _ordered(rows):
        scenarios[row.scenario].append(asdict(row))
    document = {"meta": meta, "notes": list(notes), "scenarios": scenarios}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


# --- the chart ----------------------------------------------------------------------------------


def chart(path: Path, rows: Sequence[Row]) -> str | None:
    """Draw the PNG; return why not if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no chart: matplotlib is not installed ({exc})"
    by: dict[str, list[Row]] = {name: [] for name in SCENARIOS}
    for row in rows:
        if row.median_us:
            by[row.scenario].append(row)
    figure, axes = plt.subplots(2, 3, figsize=(18, 10.5))
    panels = (
        (axes[0][0], "uncontended", _plot_uncontended),
        (axes[0][1], "history", _plot_history),
        (axes[0][2], "contention", _plot_contention),
        (axes[1][0], "lost_responses", _plot_lost_epochs),
        (axes[1][1], "lost_responses", _plot_lost_latency),
        (axes[1][2], "peers", _plot_peers),
    )
    try:
        for ax, name, plot in panels:
            if by[name]:
                plot(ax, by[name])
            else:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{TITLES[name]}: not run", ha="center", transform=ax.transAxes)
        figure.suptitle("slate-epoch benchmarks: medians of one run (compare within the run)")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    except Exception as exc:  # a broken chart must not lose the table and the JSON
        return f"no chart: drawing it failed ({type(exc).__name__}: {exc})"
    finally:
        plt.close(figure)
    return None


def _plot_uncontended(ax: Any, rows: list[Row]) -> None:
    rows = [r for r in rows if r.median_us]
    labels = [f"{r.backend}\n{r.case.replace(', ', ' ')}" for r in rows]
    xs = list(range(len(rows)))
    ax.bar(xs, [r.median_us for r in rows], color="tab:blue", label="claim")
    ax.bar(
        xs,
        [r.values.get("raw_median_us") or 0 for r in rows],
        width=0.4,
        color="tab:orange",
        label="its raw requests",
    )
    for x, r in zip(xs, rows, strict=True):
        overhead = r.values.get("overhead_ratio")
        if overhead:
            ax.annotate(
                f"{overhead:.1f}x", (x, r.median_us or 0), ha="center", va="bottom", fontsize=7
            )
    ax.set_xticks(xs, labels, rotation=70, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median µs (log)")
    ax.set_title("1. Uncontended claim vs its raw requests (overhead ratio)")
    ax.legend(fontsize=8)


def _plot_history(ax: Any, rows: list[Row]) -> None:
    series: dict[str, list[Row]] = {}
    for r in rows:
        series.setdefault(f"{r.backend} {r.values['temperature']}", []).append(r)
    for label, points in sorted(series.items()):
        points.sort(key=lambda r: int(r.values["size"]))
        ax.plot(
            [int(r.values["size"]) for r in points],
            [r.values.get("ratio_to_smallest") or math.nan for r in points],
            marker="o",
            label=label,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("manifests in the folder")
    ax.set_ylabel("median claim ÷ median at the smallest history (log)")
    ax.set_title("2. History growth")
    ax.legend(fontsize=8)


def _plot_contention(ax: Any, rows: list[Row]) -> None:
    series: dict[str, list[Row]] = {}
    for r in rows:
        series.setdefault(r.backend, []).append(r)
    for backend, points in sorted(series.items()):
        points.sort(key=lambda r: int(r.values["claimers"]))
        ns = [int(r.values["claimers"]) for r in points]
        ax.plot(
            ns,
            [r.values["all_done_median_us"] / 1e3 for r in points],
            marker="o",
            label=f"{backend}: all returned",
        )
        ax.plot(
            ns,
            [(r.median_us or math.nan) / 1e3 for r in points],
            linestyle="--",
            marker=".",
            label=f"{backend}: median claimer",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent claimers")
    ax.set_ylabel("ms (log)")
    ax.set_title("3. Contention")
    ax.legend(fontsize=8)


def _lost_series(rows: list[Row]) -> list[tuple[str, str, list[Row]]]:
    series: dict[str, list[Row]] = {}
    for r in rows:
        series.setdefault(f"{r.backend}, {r.values['variant']}", []).append(r)
    out = []
    for label, points in sorted(series.items()):
        points.sort(key=lambda r: float(r.values["rate"]))
        out.append((label, "-" if "slate-epoch" in label else ":", points))
    return out


def _plot_lost_epochs(ax: Any, rows: list[Row]) -> None:
    for i, (label, style, points) in enumerate(_lost_series(rows)):
        rates = [100 * float(r.values["rate"]) for r in points]
        epochs = [r.values.get("epochs_per_claim") or math.nan for r in points]
        # lines that coincide (every backend at 1.00) stay visible: growing markers
        ax.plot(rates, epochs, style, marker="o", markersize=10 - 2 * i, label=label)
    ax.set_xlabel("put responses lost (%)")
    ax.set_ylabel("epochs per successful claim (1.0: none burned)")
    ax.set_title("4. Lost responses: epochs burned")
    ax.legend(fontsize=8)


def _plot_lost_latency(ax: Any, rows: list[Row]) -> None:
    for label, style, points in _lost_series(rows):
        rates = [100 * float(r.values["rate"]) for r in points]
        p99s = [(r.p99_us or math.nan) / 1e3 for r in points]
        ax.plot(rates, p99s, style, marker="o", label=label)
    ax.set_xlabel("put responses lost (%)")
    ax.set_ylabel("p99 claim ms (log)")
    ax.set_yscale("log")
    ax.set_title("4. Lost responses: p99 (resend at once; backoff after 2 losses in a row)")
    ax.legend(fontsize=8)


def _plot_peers(ax: Any, rows: list[Row]) -> None:
    rows = [r for r in rows if r.median_us]
    labels = [f"{r.case} [{r.backend}]" for r in rows]
    colors = ["tab:blue" if r.values.get("peer") == "slate-epoch" else "tab:grey" for r in rows]
    ys = list(range(len(rows)))
    ax.barh(ys, [r.median_us for r in rows], color=colors)
    ax.set_yticks(ys, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median µs (log); blue: slate-epoch")
    ax.set_title("5. Peers")
