"""The coordinate-check figure: the evidence behind the verdict, with the faulty series in colour.

One column per step, two rows: what the modules output (activations and attention logits) and
what each layer's own update changes (ΔW·x, Δbias and Δlogits). Every series is the RMS against size
on log-log axes, averaged over seeds (geometric mean); a flat line is what µP promises. Stable
series are drawn thin and grey so that the ones that blow up (red shades, solid) or vanish
or learn too slowly (blue shades, dashed) stand out without a 40-entry legend to decode.

matplotlib is imported here only, through ``Figure`` (no pyplot): no global state, no GUI
backend, safe in worker processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .status import BLOWS_UP, LAZY, VANISHES

if TYPE_CHECKING:
    from .verdict import CoordReport

ROWS = (("out", "logits"), ("update", "Δbias", "Δlogits"))
ROW_TITLES = ("output RMS", "update RMS (own ΔW·x, Δbias, Δlogits)")
# culprits get their own colour; consequences one light shade each; stable series grey
_CULPRIT = (
    "#d62728",
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
_CONSEQUENCE = {BLOWS_UP: "#f2a3a3", LAZY: "#9ec3e6", VANISHES: "#9ec3e6"}
MAX_CULPRITS = len(_CULPRIT)


@dataclass(frozen=True)
class _Style:
    colour: str
    line: str
    width: float
    label: str | None
    zorder: int


def _mean_over_seeds(values: list[float | None]) -> float | None:
    logs = [math.log(v) for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(logs) / len(logs)) if logs else None


def plot_report(report: CoordReport, path: str | None = None, *, dpi: int = 110) -> Any:
    """Draw ``report``; save it to ``path`` when given. Returns the matplotlib ``Figure``."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib: pip install 'mutransfer[plots]' (or matplotlib)"
        ) from exc

    steps = report.steps + 1
    fig = Figure(figsize=(2.9 * steps + 3.2, 6.2), dpi=dpi, layout="constrained")
    axes = fig.subplots(2, steps, squeeze=False)
    styles = _styles(report)
    size = "depth" if report.vary == "depth" else "width"
    legend: dict[str, Any] = {}
    for r, quantities in enumerate(ROWS):
        for t in range(steps):
            ax = axes[r][t]
            if r == 0:
                ax.set_title(f"t={t}")
            if not _draw_step(ax, report, quantities, t, styles, legend):
                ax.axis("off")
                if r == 1:
                    ax.text(
                        0.5,
                        0.5,
                        "no update yet",
                        ha="center",
                        va="center",
                        transform=ax.transAxes,
                        color="grey",
                    )
                continue
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.grid(True, which="major", alpha=0.3)
            ax.set_xticks(report.sizes, [str(s) for s in report.sizes])
            ax.minorticks_off()
            ax.set_xlabel(size)
            if t == 0 or (r == 1 and t == 1):
                ax.set_ylabel(ROW_TITLES[r])
    if legend:
        ordered = sorted(legend.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        fig.legend(
            [v[2] for _, v in ordered],
            [k for k, _ in ordered],
            loc="outside right upper",
            fontsize="small",
            frameon=False,
        )
    fig.suptitle(_title(report), fontsize="medium")
    if path is not None:
        fig.savefig(path)
    return fig


def _styles(report: CoordReport) -> dict[tuple[str, str], _Style]:
    styles: dict[tuple[str, str], _Style] = {}
    culprits = [*report.culprits(BLOWS_UP), *report.culprits(LAZY), *report.culprits(VANISHES)]
    culprits = [c for c in culprits if c.verdict in (BLOWS_UP, LAZY, VANISHES)][:MAX_CULPRITS]
    for i, row in enumerate(culprits):
        styles[row.key] = _Style(
            _CULPRIT[i],
            "-" if row.verdict == BLOWS_UP else "--",
            2.2,
            f"{row.module} ({row.quantity}): {row.verdict}",
            4,
        )
    for row in report.rows:
        if row.key in styles:
            continue
        if row.verdict in _CONSEQUENCE:
            styles[row.key] = _Style(
                _CONSEQUENCE[row.verdict],
                "-" if row.verdict == BLOWS_UP else "--",
                1.3,
                f"other series that {'blow up' if row.verdict == BLOWS_UP else 'vanish'}",
                2,
            )
        elif row.notes:
            styles[row.key] = _Style("0.45", ":", 1.3, "stable (explained, see report)", 1)
        else:
            styles[row.key] = _Style("0.7", "-", 0.8, "stable", 1)
    return styles


def _draw_step(
    ax: Any,
    report: CoordReport,
    quantities: tuple[str, ...],
    t: int,
    styles: dict[tuple[str, str], _Style],
    legend: dict[str, Any],
) -> bool:
    drawn = False
    for row in report.rows:
        if row.quantity not in quantities:
            continue
        ys = [_mean_over_seeds(per_seed) for per_seed in report.values[row.key][t]]
        points = [(x, y) for x, y in zip(report.sizes, ys, strict=True) if y is not None]
        if len(points) < 2:
            continue
        drawn = True
        xs, vals = zip(*points, strict=True)
        st = styles[row.key]
        (line,) = ax.plot(
            xs,
            vals,
            st.line,
            color=st.colour,
            lw=st.width,
            zorder=st.zorder,
            marker="o" if st.zorder == 4 else None,
            ms=3,
        )
        if st.label and st.label not in legend:
            legend[st.label] = (st.zorder, len(legend), line)
    return drawn


def _title(report: CoordReport) -> str:
    s = report.settings
    head = (
        f"coord check {'PASS' if report.ok else 'FAIL'} — rules={s.get('rules')} "
        f"optimizer={s.get('optimizer')} lr={s.get('lr')}, {len(report.seeds)} seeds"
    )
    if report.ok and report.vanishing():
        return head + " — nothing fails; the dashed series shrink (warnings)"
    if report.ok:
        return head + " — every series flat (grey) or explained"
    culprits = [r.module + f" ({r.quantity})" for r in report.culprits()]
    more = f" +{len(culprits) - 3} more" if len(culprits) > 3 else ""
    return head + "\nat fault: " + ", ".join(culprits[:3]) + more
