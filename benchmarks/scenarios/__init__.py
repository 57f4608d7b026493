"""The scenarios of the harness: each module here defines one, as ``SCENARIO`` (a
``model.Scenario``), and ``registered()`` collects them, in their ``order``.

Adding a scenario is adding a module: its sample counts (full and ``--quick``), its jobs, its
``finish`` and its chart panels; ``python -m benchmarks``, the table, ``results.json`` and the
chart pick it up. Modules whose name starts with ``_`` are helpers, not scenarios.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from ..model import Scenario

__all__ = ["registered"]


@cache
def registered() -> tuple[Scenario[Any], ...]:
    """Every scenario, in ``order``; two with one name or one order are a mistake."""
    found: list[Scenario[Any]] = []
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_"):
            continue
        scenario = importlib.import_module(f"{__name__}.{module.name}").SCENARIO
        if not isinstance(scenario, Scenario):
            raise TypeError(f"{__name__}.{module.name}.SCENARIO is not a Scenario")
        found.append(scenario)
    for field in ("name", "order"):
        values = [getattr(s, field) for s in found]
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"two scenarios share a {field}: {twice}")
    return tuple(sorted(found, key=lambda s: s.order))
