"""How transfer quality is measured: one definition for the demo, the sweeps and the benchmarks.

- **optimum drift**: the spread (max − min) of the per-size optimum of a log-scale
  hyperparameter, in octaves (log2 units): 0 when every size has the same optimum. Unsigned: a
  curve whose optimum wanders up and back down drifts as much as one that moves steadily.
- **optimum shift**: the optimum at the largest size minus the one at the smallest, signed
  (negative: the larger model wants a smaller value): the direction of a drift.
- **transfer regret**: how much worse the largest model does with the smallest model's optimum
  than with its own best, in percent of its own best loss.
- **fitted optimum**: a grid optimum refined by the parabola through it and its two neighbours
  (``parabola_vertex``), so that a move smaller than one grid step is seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def optimum_drift(log2_optima: Sequence[float | None]) -> float | None:
    """Max − min of the defined optima (octaves); None with fewer than two."""
    known = [x for x in log2_optima if x is not None and math.isfinite(x)]
    return max(known) - min(known) if len(known) >= 2 else None


def optimum_shift(log2_optima: Sequence[float | None]) -> float | None:
    """Last − first optimum (octaves, signed); None if either is undefined."""
    if len(log2_optima) < 2 or log2_optima[0] is None or log2_optima[-1] is None:
        return None
    return log2_optima[-1] - log2_optima[0]


def transfer_regret(transferred_loss: float | None, best_loss: float | None) -> float | None:
    """100 · (transferred − best) / best; None when either loss is missing (diverged)."""
    if transferred_loss is None or best_loss is None:
        return None
    return 100.0 * (transferred_loss - best_loss) / best_loss


def parabola_vertex(xs: Sequence[float], ys: Sequence[float | None], j: int) -> float | None:
    """Minimum of the parabola through points j-1, j, j+1 (any spacing of ``xs``); None on the
    grid's edge, next to a missing (diverged) point, or where the three are not convex."""
    if j <= 0 or j >= len(xs) - 1:
        return None
    (x0, y0), (x1, y1), (x2, y2) = ((xs[k], ys[k]) for k in (j - 1, j, j + 1))
    if y0 is None or y1 is None or y2 is None:
        return None
    # divided differences: y = y1 + s1·(x − x1) + c·(x − x0)(x − x1)
    s01, s12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    curvature = (s12 - s01) / (x2 - x0)
    if curvature <= 0:
        return None
    vertex = (x0 + x1) / 2 - s01 / (2 * curvature)
    return float(min(max(vertex, x0), x2))
