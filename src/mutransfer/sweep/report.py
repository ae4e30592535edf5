"""The sweep report: does the optimum stay put across widths?

µTransfer rests on one observation: under µP the best hyperparameters of a small proxy are the
best of the wide model. The report shows exactly that, from the sweep's own trials:

* ``loss_vs_<hparam>.png`` — loss against each hyperparameter, one curve per width (for several
  searched hyperparameters, each point is the best loss over the others). Under µP the curves'
  minima line up and wider curves lie lower; under SP the minimum drifts left as width grows.
  Diverged trials are marked with ``x`` at the top.
* ``best_vs_width.png`` — the best value of each hyperparameter against width: the stability
  picture (flat = transfers).
* ``report.md`` — the per-width table (trial counts, best loss, best point), the drift of each
  optimum in octaves between the narrowest and the widest width, and the failures with reasons.

An independent search (``strategy = "independent"``) gets ``stages.png`` instead of the
``loss_vs_*`` profiles, and a section on its stages (see ``report_stages.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..measures import optimum_drift, optimum_shift
from .errors import make_output_dir
from .formatting import format_value
from .plotting import axis_scale, coord, width_colors
from .space import Dim
from .storage import redact, storage_kind

if TYPE_CHECKING:
    from .results import SweepResults, TrialRecord


@dataclass
class Report:
    markdown: str
    text: str
    files: dict[str, Path]


def drift(results: SweepResults) -> dict[str, tuple[float, float]]:
    """(drift, shift) in octaves of each log-scale optimum across the widths with a result:
    ``measures.optimum_drift`` (the spread) and ``optimum_shift`` (widest − narrowest)."""
    bests = [b for b in (results.best(w) for w in results.widths) if b is not None]
    out: dict[str, tuple[float, float]] = {}
    for dim in results.spec.space.dims:
        values = [b.params.get(dim.name) for b in bests]
        if dim.values is not None or not all(isinstance(v, int | float) for v in values):
            continue
        optima: list[float | None] = [math.log2(float(v)) for v in values]  # type: ignore[arg-type]
        spread, shift = optimum_drift(optima), optimum_shift(optima)
        if spread is not None and shift is not None:
            out[dim.name] = (spread, shift)
    return out


def dashboard_command(name: str, storage: str) -> str:
    """The command that browses a sweep in optuna-dashboard (``mutransfer dashboard``)."""
    target = storage if storage_kind(storage) != "journal" else str(Path(storage))
    return f"mutransfer dashboard {name} --storage {redact(target)}"


def make_report(results: SweepResults, out_dir: str | Path) -> Report:
    """Write the figures and ``report.md`` to ``out_dir``; return the texts and paths."""
    out = make_output_dir(out_dir)
    files: dict[str, Path] = {}
    if results.spec.strategy == "independent":
        from .report_stages import plot_stages

        if plot_stages(results, out / "stages.png"):
            files["stages"] = out / "stages.png"
    else:
        for dim in results.spec.space.dims:
            path = out / f"loss_vs_{dim.name}.png"
            if plot_loss_vs(results, dim, path):
                files[f"loss_vs_{dim.name}"] = path
    path = out / "best_vs_width.png"
    if plot_best_vs_width(results, path):
        files["best_vs_width"] = path
    text = summary_text(results, markdown=False)
    markdown = summary_text(results, markdown=True, figures=files, out_dir=out)
    files["report"] = out / "report.md"
    files["report"].write_text(markdown)
    return Report(markdown=markdown, text=text, files=files)


def summary_text(
    results: SweepResults,
    *,
    markdown: bool,
    figures: dict[str, Path] | None = None,
    out_dir: Path | None = None,
) -> str:
    spec = results.spec
    lines: list[str] = []
    title = f"Sweep {spec.name!r}"
    lines += [f"# {title}" if markdown else title, ""]
    independent = spec.strategy == "independent"
    if independent:
        from . import report_stages

        method = report_stages.describe(results) + "; over "
    else:
        method = f"{spec.sampler} sampler over "
    lines.append(
        method
        + "; ".join(d.describe() for d in spec.space.dims)
        + f"; seeds {list(spec.seeds)}; objective {spec.objective}; "
        f"storage {redact(results.storage)}"
    )
    lines.append("")
    lines.append(results.table(markdown=markdown))
    lines.append("")
    if independent:
        lines += report_stages.section(results, markdown=markdown)
    moves = drift(results)
    if moves:
        ws = [w for w in results.widths if results.best(w) is not None]
        lines.append(
            f"Optimum drift over widths {ws[0]}–{ws[-1]} (octaves, max − min of the best "
            "value; 0 = transfers exactly): "
            + ", ".join(
                f"{k} {spread:.2f} (widest − narrowest {shift:+.2f})"
                for k, (spread, shift) in moves.items()
            )
        )
        lines.append("")
    failures = results.failures()
    if failures:
        lines.append("## Failed and lost trials" if markdown else "Failed and lost trials:")
        lines.append("")
        for t in failures[:20]:
            lines.append(
                f"- width {t.width} #{t.number} "
                + " ".join(f"{k}={format_value(v)}" for k, v in t.params.items())
                + f": {t.state} — {t.reason}"
            )
        if len(failures) > 20:
            lines.append(f"- … and {len(failures) - 20} more")
        lines.append("")
    if markdown and figures and out_dir is not None:
        lines += ["## Figures", ""]
        for key, path in figures.items():
            lines.append(f"![{key}]({path.relative_to(out_dir)})")
        lines.append("")
    lines.append(
        f"Browse every trial: {dashboard_command(results.spec.name, results.storage)} "
        '(optuna-dashboard: pip install "mutransfer[dashboard]")'
    )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- figures
def _width_axis(ax: Any, widths: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()


def plot_loss_vs(results: SweepResults, dim: Dim, path: Path) -> bool:
    """Loss vs one hyperparameter, one curve per width (best over the other hyperparameters)."""
    done = {w: results.completed(w) for w in results.widths}
    if not any(done.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = width_colors(results.widths)
    finite = [t.value for ts in done.values() for t in ts if t.value is not None]
    top = max(finite) + 0.05 * (max(finite) - min(finite) + 1e-9)
    grid = results.spec.sampler == "grid"
    for width in results.widths:
        trials = done[width]
        color = colors[width]
        if grid:
            profile = _profile(trials, dim)
            xs = sorted(profile)
            ax.plot(xs, [profile[x] for x in xs], "o-", color=color, label=f"width {width}")
        else:
            ax.scatter(
                [coord(dim, t.params.get(dim.name)) for t in trials],
                [t.value if t.value is not None else math.nan for t in trials],
                color=color,
                s=14,
                label=f"width {width}",
            )
        diverged = [t for t in results.trials[width] if t.state == "diverged"]
        if diverged:
            ax.scatter(
                [coord(dim, t.params.get(dim.name)) for t in diverged],
                [top] * len(diverged),
                marker="x",
                color=color,
            )
        best = results.best(width)
        if best is not None:
            ax.scatter(
                [coord(dim, best.params.get(dim.name))],
                [best.value if best.value is not None else math.nan],
                marker="*",
                s=120,
                color=color,
                edgecolors="black",
                zorder=5,
            )
    axis_scale(ax, dim)
    ax.set_xlabel(dim.name + (" (log2 scale)" if dim.values is None else ""))
    ax.set_ylabel("loss (lower is better)")
    ax.set_title(f"{results.spec.name}: loss vs {dim.name} per width (★ best, x diverged)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _profile(trials: list[TrialRecord], dim: Dim) -> dict[float, float]:
    """Best loss at each value of ``dim`` (minimised over the other hyperparameters)."""
    best: dict[float, float] = {}
    for t in trials:
        if t.value is None or dim.name not in t.params:
            continue
        x = coord(dim, t.params[dim.name])
        best[x] = min(best.get(x, math.inf), t.value)
    return best


def plot_best_vs_width(results: SweepResults, path: Path) -> bool:
    """The stability picture: best value of each hyperparameter (and best loss) vs width."""
    widths = [w for w in results.widths if results.best(w) is not None]
    if not widths:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = list(results.spec.space.dims)
    fig, axes = plt.subplots(1, len(dims) + 1, figsize=(3.6 * (len(dims) + 1), 3.4), squeeze=False)
    bests = {w: results.best(w) for w in widths}
    for ax, dim in zip(axes[0], dims, strict=False):
        ys = [coord(dim, bests[w].params.get(dim.name)) for w in widths]  # type: ignore[union-attr]
        ax.plot(widths, ys, "o-", color="tab:blue")
        _width_axis(ax, widths)
        axis_scale(ax, dim, "y")
        if dim.values is None and dim.low is not None and dim.high is not None:
            ax.set_ylim(dim.low / 1.5, dim.high * 1.5)  # the searched range: edges are visible
        ax.set_xlabel("width")
        ax.set_title(f"best {dim.name}")
        ax.grid(alpha=0.3)
    ax = axes[0][-1]
    ax.plot(widths, [bests[w].value for w in widths], "o-", color="tab:green")  # type: ignore[union-attr]
    _width_axis(ax, widths)
    ax.set_xlabel("width")
    ax.set_title("best loss")
    ax.grid(alpha=0.3)
    fig.suptitle(f"{results.spec.name}: optimum vs width (flat = transfers)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
