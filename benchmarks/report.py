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

from .model import Row, Scenario, fmt_us, requests_text

__all__ = ["chart", "markdown", "print_table", "write_json"]

HEADER = ("scenario", "backend", "case", "median", "p99", "requests / claim", "result")
COLUMNS = 3  # of chart panels


def _cells(row: Row, titles: dict[str, str]) -> tuple[str, ...]:
    return (
        titles[row.scenario],
        row.backend,
        row.case,
        fmt_us(row.median_us),
        fmt_us(row.p99_us),
        requests_text(row.requests),
        row.result,
    )


def _ordered(rows: Sequence[Row], scenarios: Sequence[Scenario[Any]]) -> list[Row]:
    """Rows in the scenarios' order (stable within a scenario)."""
    order = {s.name: i for i, s in enumerate(scenarios)}
    return sorted(rows, key=lambda r: order[r.scenario])


def _titles(scenarios: Sequence[Scenario[Any]]) -> dict[str, str]:
    return {s.name: s.title for s in scenarios}


def print_table(
    rows: Sequence[Row], notes: Sequence[str], scenarios: Sequence[Scenario[Any]]
) -> None:
    titles = _titles(scenarios)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _print_plain(rows, notes, scenarios)
        return
    table = Table(title="slate-epoch benchmarks (medians and p99; ratios within this run)")
    for name in HEADER:
        if name in ("median", "p99"):
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="fold")
    previous = None
    for row in _ordered(rows, scenarios):
        if previous is not None and row.scenario != previous:
            table.add_section()
        previous = row.scenario
        table.add_row(*_cells(row, titles))
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    for note in notes:
        console.print(f"- {note}", highlight=False)


def _print_plain(
    rows: Sequence[Row], notes: Sequence[str], scenarios: Sequence[Scenario[Any]]
) -> None:
    titles = _titles(scenarios)
    lines = [HEADER, *(_cells(r, titles) for r in _ordered(rows, scenarios))]
    widths = [min(60, max(len(line[i]) for line in lines)) for i in range(len(HEADER))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    for note in notes:
        print(f"- {note}")


def markdown(
    rows: Sequence[Row],
    meta: dict[str, Any],
    notes: Sequence[str],
    scenarios: Sequence[Scenario[Any]],
) -> str:
    titles = _titles(scenarios)
    out = [
        f"Run of {meta['date']} on {meta['machine']}; `{meta['command']}`"
        f" ({'quick' if meta['quick'] else 'full'} run, {meta['wall_s']:.0f} s; load average"
        f" {meta['load_average_before'][0]:.1f} before, {meta['load_average_after'][0]:.1f}"
        " after).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "| " + " | ".join("---:" if h in ("median", "p99") else "---" for h in HEADER) + " |",
    ]
    for row in _ordered(rows, scenarios):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row, titles)) + " |")
    out.append("")
    out += [f"- {note}" for note in notes]
    return "\n".join(out) + "\n"


def write_json(
    path: Path,
    rows: Sequence[Row],
    meta: dict[str, Any],
    notes: Sequence[str],
    scenarios: Sequence[Scenario[Any]],
) -> None:
    """``{"meta", "notes", "scenarios": {name: [row, ...]}}``, every scenario named (not run:
    no rows)."""
    by_name: dict[str, list[dict[str, Any]]] = {s.name: [] for s in scenarios}
    for row in _ordered(rows, scenarios):
        by_name[row.scenario].append(asdict(row))
    document = {"meta": meta, "notes": list(notes), "scenarios": by_name}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


# --- the chart ----------------------------------------------------------------------------------


def chart(path: Path, rows: Sequence[Row], scenarios: Sequence[Scenario[Any]]) -> str | None:
    """Draw every scenario's panels, in order, ``COLUMNS`` to a line; a scenario that did not
    run gets its panels' places marked so. Return why not if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no chart: matplotlib is not installed ({exc})"
    measured: dict[str, list[Row]] = {s.name: [] for s in scenarios}
    for row in rows:
        if row.median_us:
            measured[row.scenario].append(row)
    panels = [(s, panel) for s in scenarios for panel in s.panels]
    lines = max(1, math.ceil(len(panels) / COLUMNS))
    figure, axes = plt.subplots(lines, COLUMNS, figsize=(6 * COLUMNS, 5.25 * lines), squeeze=False)
    places = [ax for line in axes for ax in line]
    try:
        for ax, (scenario, panel) in zip(places, panels, strict=False):
            if measured[scenario.name]:
                panel(ax, measured[scenario.name])
            else:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{scenario.title}: not run", ha="center", transform=ax.transAxes)
        for ax in places[len(panels) :]:
            ax.set_axis_off()
        figure.suptitle("slate-epoch benchmarks: medians of one run (compare within the run)")
        figure.tight_layout(rect=(0, 0, 1, 0.98))  # room for the title above the panels
        figure.savefig(path, dpi=110)
    except Exception as exc:  # a broken chart must not lose the table and the JSON
        return f"no chart: drawing it failed ({type(exc).__name__}: {exc})"
    finally:
        plt.close(figure)
    return None
