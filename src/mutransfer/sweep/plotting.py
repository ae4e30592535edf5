"""Figure helpers shared by the sweep's report figures (``report``, ``report_stages``)."""

from __future__ import annotations

import math
from typing import Any

from .space import Dim


def axis_scale(ax: Any, dim: Dim, axis: str = "x") -> None:
    """A hyperparameter's axis: log2 for a range, one tick per value for a list."""
    if dim.values is None:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    else:
        ticks = list(range(len(dim.values)))
        (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks, [str(v) for v in dim.values])
        (ax.set_xlim if axis == "x" else ax.set_ylim)(-0.5, len(ticks) - 0.5)


def coord(dim: Dim, value: Any) -> float:
    """Where a value sits on its axis (a list's values at 0, 1, 2...)."""
    if dim.values is None:
        return float(value)
    return float(list(dim.values).index(value)) if value in dim.values else math.nan


def width_colors(widths: list[int]) -> dict[int, Any]:
    """One colour per width, narrow (dark) to wide (light)."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    n = max(1, len(widths) - 1)
    return {w: cmap(0.9 * i / n) for i, w in enumerate(widths)}
