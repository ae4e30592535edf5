"""The report of an independent search: each stage's 1-D sweep, and whether the optima combine.

A grid report plots each hyperparameter's *profile* (the best loss over all the others); for an
independent search that would mix the stages (the LR curve would pick up the stage-2 trials run
at the best LR). So an independent search gets its own picture, ``stages.png``: one panel per
hyperparameter, showing exactly the 1-D sweep its stage ran (the LR with the others at their
defaults; each other one at the best LR), one curve per width, ★ the value the stage chose and
◆ the loss of the combined trial. The Markdown section tabulates the same per width and says
when the combination is *not* the best point measured: then the hyperparameters interact (or the
difference is noise between single runs), and the independent search's premise does not hold
well for this model and parametrization.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .formatting import format_value
from .space import Dim
from .stages import DONE, Stages

if TYPE_CHECKING:
    from .results import SweepResults


def describe(results: SweepResults) -> str:
    """One line: the recipe and its cost against the full grid."""
    dims = results.spec.space.dims
    lead, others = dims[0], dims[1:]
    grid = math.prod(len(d.grid()) for d in dims)
    rest = (
        f", then {', '.join(d.name for d in others)} one at a time at the best {lead.name}, "
        "then their combination"
        if others
        else ""
    )
    return (
        f"independent search: {lead.name} first (others at their defaults){rest}; at most "
        f"{results.spec.points_per_width} trials per width (the full grid has {grid} points)"
    )


def stage_of(stages: Stages) -> str:
    if stages.blocked:
        return "stopped"
    return "done" if stages.stage == DONE else f"stage {stages.stage}"


def section(results: SweepResults, *, markdown: bool) -> list[str]:
    """The per-width table of the stages' choices, and the notes on each width's search."""
    names = list(results.spec.space.names)
    headers = ["width", "search", *names, "combined loss", "best loss"]
    rows: list[list[str]] = []
    notes: list[str] = []
    for width in results.widths:
        stages = results.stages(width)
        cells = [str(width), stage_of(stages)]
        for name in names:
            pick = stages.picks.get(name)
            cells.append("–" if pick is None else f"{format_value(pick.value)} ({pick.loss:.4f})")
        combined = stages.combined_outcome
        if combined is None or not combined.finished:
            cells.append("–")
        else:
            cells.append(f"{combined.value:.4f}" if combined.value is not None else combined.status)
        best = results.best(width)
        cells.append("–" if best is None else f"{best.value:.4f}")
        rows.append(cells)
        notes += _notes(results, width, stages)
    lines = ["## Independent search" if markdown else "Independent search:", ""]
    lines.append(
        "Each cell: the value the stage chose (its loss). Stage 1 searches "
        f"{names[0]} with the others at their defaults; stage 2 each other hyperparameter at "
        f"the best {names[0]}; the combined trial runs all the choices together."
    )
    lines.append("")
    if markdown:
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        lines.append("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("")
    if notes:
        lines += [f"- {n}" for n in notes]
        lines.append("")
    return lines


def _notes(results: SweepResults, width: int, stages: Stages) -> list[str]:
    if stages.blocked:
        return [f"width {width}: the search stopped: {stages.blocked}"]
    combined, best = stages.combined_outcome, results.best(width)
    if stages.stage != DONE or combined is None or best is None:
        return []
    if combined.status != "complete" or combined.value is None:
        return [
            f"width {width}: the combination {combined.status}: the hyperparameters interact; "
            f"the best measured point (trial #{best.number}) is the sweep's answer"
        ]
    if best.number != combined.number and best.value is not None and best.value < combined.value:
        return [
            f"width {width}: the combination (loss {combined.value:.4f}) is worse than trial "
            f"#{best.number} (loss {best.value:.4f}, by {combined.value - best.value:.4f}): the "
            "optima do not simply combine (the hyperparameters interact, or the difference is "
            "run-to-run noise: compare it with the spread over seeds); transfer uses the best "
            "measured point"
        ]
    return []


# ------------------------------------------------------------------------------- figure
def plot_stages(results: SweepResults, path: Path) -> bool:
    """One panel per hyperparameter: its stage's 1-D sweep at every width (see module doc)."""
    per_width = {w: results.stages(w) for w in results.widths}
    if not any(
        o is not None and o.status == "complete" for s in per_width.values() for o in _outcomes(s)
    ):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plotting import axis_scale, coord, width_colors

    dims = list(results.spec.space.dims)
    ncols = min(3, len(dims))
    nrows = math.ceil(len(dims) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.8 * nrows), squeeze=False)
    colors = width_colors(results.widths)
    for i, dim in enumerate(dims):
        ax = axes[i // ncols][i % ncols]
        _panel(ax, dim, i == 0, per_width, colors, coord)
        axis_scale(ax, dim)
        ax.set_xlabel(dim.name + (" (log2 scale)" if dim.values is None else ""))
        if i % ncols == 0:
            ax.set_ylabel("loss (lower is better)")
        lead = dims[0].name
        ax.set_title(
            f"stage 1: {dim.name} (others at defaults)"
            if i == 0
            else f"stage 2: {dim.name} (at the best {lead})",
            fontsize=10,
        )
        ax.grid(alpha=0.3)
    for j in range(len(dims), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"{results.spec.name}: independent search per width (★ chosen, ◆ combined trial, "
        "x diverged, dotted: default)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _outcomes(stages: Stages) -> list[Any]:
    return [o for curve in stages.curves.values() for _, o in curve]


def _panel(
    ax: Any,
    dim: Dim,
    first: bool,
    per_width: dict[int, Stages],
    colors: dict[int, Any],
    coord: Any,
) -> None:
    finite = [
        o.value
        for s in per_width.values()
        for _, o in s.curves.get(dim.name, [])
        if o is not None and o.value is not None
    ]
    top = max(finite) + 0.05 * (max(finite) - min(finite) + 1e-9) if finite else 1.0
    if not first and dim.default is not None:
        ax.axvline(coord(dim, dim.default), color="grey", lw=0.8, ls=":", label=None)
    for width, stages in per_width.items():
        color = colors[width]
        curve = stages.curves.get(dim.name, [])
        done = [(coord(dim, v), o.value) for v, o in curve if o is not None and o.value is not None]
        if done:
            ax.plot(*zip(*done, strict=True), "o-", color=color, ms=4, label=f"width {width}")
        diverged = [coord(dim, v) for v, o in curve if o is not None and o.status == "diverged"]
        if diverged:
            ax.scatter(diverged, [top] * len(diverged), marker="x", color=color)
        pick = stages.picks.get(dim.name)
        if pick is not None:
            ax.scatter(
                [coord(dim, pick.value)],
                [pick.loss],
                marker="*",
                s=120,
                color=color,
                edgecolors="black",
                zorder=5,
            )
            combined = stages.combined_outcome
            if combined is not None and combined.value is not None:
                ax.scatter(
                    [coord(dim, pick.value)],
                    [combined.value],
                    marker="D",
                    s=36,
                    color=color,
                    edgecolors="black",
                    zorder=6,
                )
