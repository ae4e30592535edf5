"""The demo's outputs for people: the SP | µP figure, the terminal table and ``report.md``.

Everything here reads the summary dict written to ``summary.json`` (see ``mutransfer.demo``), so
a figure or a report can be re-drawn from a finished run without training anything:
``mutransfer.demo.report.write_outputs(json.load(open("runs/demo/summary.json")), "runs/demo")``.
The same code draws the depth demo (``--vary depth``: µP | CompleteP across numbers of blocks)
and the demos along batch size, sequence length, steps and schedule (``demo.axes``); the
summary's ``axis`` says which, and summaries written before depth existed read as widths.

matplotlib is imported inside the plotting function: the rest of the library does not need it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..optim import OPTIMIZERS
from .analysis import NAMES, SIZE_AXES, display_name
from .axes import axis_info, setting_label

FIGURE_NAME = "lr_transfer.png"
DEPTH_FIGURE_NAME = "lr_transfer_depth.png"
REPORT_NAME = "report.md"
TITLES = {"sp": "SP (standard parametrization)", "mup": "µP (maximal update parametrization)"}
DEPTH_TITLES = {
    "sp": "SP (no width or depth rules)",
    "mup": "µP (width rules only: branches unscaled)",
    "completep": "CompleteP (branches × 1/m_L, α = 1)",
    "depth-mup": "Depth-µP (branches × 1/√m_L, α = ½)",
}
SHORT = NAMES


def rules_name(rules: str) -> str:
    return display_name(rules)


def figure_name(axis: str) -> str:
    """``lr_transfer.png`` across widths, ``lr_transfer_depth.png`` across depths,
    ``lr_transfer_batch.png``... along the other axes."""
    return FIGURE_NAME if axis == "width" else f"lr_transfer_{axis}.png"


def title(rules: str, axis: str) -> str:
    table = DEPTH_TITLES if axis == "depth" else TITLES
    return table.get(rules, rules_name(rules))


def normalise(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with ``axis`` and the generic ``sizes`` keys filled in.

    Summaries written before the depth demo existed only have ``widths`` (and ``proxy_width``
    / ``target_width`` in transfers); they read as width sweeps. Returns a copy, the input is
    left as it is.
    """
    axis = summary.get("axis", "width")
    key = axis_info(axis).key
    out = dict(summary, axis=axis)
    out.setdefault("sizes", summary.get(key))
    out["sweeps"] = {
        r: dict(sw, sizes=sw.get("sizes", sw.get(key))) for r, sw in summary["sweeps"].items()
    }
    out["transfer"] = {
        r: dict(
            t,
            proxy_size=t.get("proxy_size", t.get(f"proxy_{axis}")),
            target_size=t.get("target_size", t.get(f"target_{axis}")),
        )
        for r, t in summary["transfer"].items()
    }
    return out


def _optimizer(config: dict[str, Any]) -> str:
    known = OPTIMIZERS.get(config["optimizer"])
    name = known.display if known is not None else config["optimizer"]
    adamw_lr = config.get("adamw_lr")
    if config["optimizer"] == "muon" and adamw_lr:
        name += f" at 2^{math.log2(adamw_lr):g}"
    return name


MODEL_NAMES = {
    "gpt": "GPT",
    "resnet": "ResNet",
    "bert": "BERT",
    "mlp": "MLP",
    "hf-bert": "HF BertForMaskedLM",
}


def _model(config: dict[str, Any]) -> str:
    """The reference model's display name (summaries written before other models: GPT)."""
    name = config.get("model", "gpt")
    return MODEL_NAMES.get(name, name)


def _is_images(config: dict[str, Any]) -> bool:
    return config.get("model", "gpt") in ("resnet", "mlp")


def _fixed(summary: dict[str, Any]) -> str:
    """The dimension that does not vary, e.g. ``GPT depth 2`` across widths (and QK-norm);
    ``GPT width 32 (µP base 16), depth 2`` along the other axes."""
    config = summary["config"]
    qk = ", QK-norm" if config.get("qk_norm") else ""
    if summary["axis"] not in SIZE_AXES:
        size = f"width {config['width']} (µP base {config['base_width']}), depth {config['depth']}"
        return f"{_model(config)} {size}" + qk
    fixed = "depth" if summary["axis"] == "width" else "width"
    return f"{_model(config)} {fixed} {config[fixed]}" + qk


def _training(summary: dict[str, Any]) -> str:
    """``200 steps of 16×64 bytes, AdamW``, leaving out the setting the demo varies."""
    config, axis = summary["config"], summary["axis"]
    steps = "" if axis == "steps" else f"{config['steps']} steps of "
    if axis == "batch":
        batch = f"batches of {config['seq_len']}-byte sequences"
    elif axis == "seq-len":
        batch = f"batches of {config['batch_size']} sequences"
    else:
        batch = _batch(config)
    schedule = ""
    if axis != "schedule" and config.get("schedule", "constant") != "constant":
        schedule = f", {config['schedule']} schedule"
    return f"{steps}{batch}, {_optimizer(config)}{schedule}"


def _batch(config: dict[str, Any]) -> str:
    """What one step sees: ``16×64 bytes`` (text) or ``32 images``."""
    if _is_images(config):
        return f"{config['batch_size']} images"
    return f"{config['batch_size']}×{config['seq_len']} bytes"


def _loss_unit(config: dict[str, Any]) -> str:
    if _is_images(config):
        return "validation loss (cross-entropy, nats)"
    if config.get("model") in ("bert", "hf-bert"):
        return "validation masked-LM loss (nats per byte)"
    return "validation loss (nats per byte)"


def fmt_lr(x: float | None) -> str:
    return "—" if x is None else f"{x:g}"


def fmt_loss(x: float | None, digits: int = 3) -> str:
    return "diverged" if x is None else f"{x:.{digits}f}"


def fmt_fit(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def fmt_pct(x: float | None) -> str:
    return "diverged" if x is None else f"{x:.2f} %"


# ----------------------------------------------------------------------------- figure
def y_range(sweeps: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """One y-range for both panels: from the best loss up to a cap that keeps the basins visible.

    Losses at very bad LRs (near ln 256 = 5.5) would squash the interesting part, so the top is
    the lower of the worst finite loss and the worst *optimum* plus twice the optima's spread
    (at least 0.6 nats); curves that leave the range are clipped at the top edge.
    """
    finite = [v for s in sweeps for row in s["loss"] for v in row if v is not None]
    best = [b for s in sweeps for b in s["best_loss"] if b is not None]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    top = min(high, max(best) + max(0.6, 2 * (max(best) - min(best)))) if best else high
    pad = 0.04 * max(top - low, 1e-3)
    return low - pad, top + pad


def plot_lr_transfer(summary: dict[str, Any], path: str | Path) -> Path:
    """Validation loss vs log2 LR, one curve per size, one panel per rules (TP5, Fig. 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    summary = normalise(summary)
    axis = summary["axis"]
    sweeps = [summary["sweeps"][r] for r in summary["rules"]]
    low, high = y_range(sweeps)
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.6 * len(sweeps), 4.9), sharey=True)
    axes = list(axes) if len(sweeps) > 1 else [axes]
    cmap = plt.get_cmap("viridis")
    n_seeds = len(sweeps[0]["seeds"])
    diverged_any = False
    for ax, sweep in zip(axes, sweeps, strict=True):
        sizes, lrs = sweep["sizes"], sweep["log2_lrs"]
        any_diverged = False
        for i, size in enumerate(sizes):
            color = cmap(0.9 * i / max(1, len(sizes) - 1))
            row = sweep["loss"][i]
            xs = [x for x, v in zip(lrs, row, strict=True) if v is not None]
            ys = [v for v in row if v is not None]
            label = setting_label(axis, size)
            ax.plot(xs, ys, "-o", color=color, ms=3.5, lw=1.6, label=label)
            if n_seeds > 1:
                _seed_spread(ax, lrs, sweep["seed_loss"][i], color)
            j = sweep["best_log2_lr"][i]
            if j is not None:
                ax.plot([j], [sweep["best_loss"][i]], "*", color=color, ms=15, mec="black", mew=0.8)
            div = [x for x, v in zip(lrs, row, strict=True) if v is None]
            if div:
                any_diverged = True
                top = high - 0.015 * (high - low) * (1 + i)
                ax.plot(div, [top] * len(div), "x", color=color, ms=7, mew=2)
        _mark_transfer(ax, summary["transfer"].get(sweep["rules"]), axis)
        subtitle = "optimum moves " + _octaves(sweep["drift_octaves"]) + _fitted(sweep)
        ax.set_title(f"{title(sweep['rules'], axis)}\n{subtitle}", fontsize=11)
        ax.set_xlabel("log2 learning rate")
        ax.set_xticks(lrs)
        ax.grid(alpha=0.3)
        ax.set_ylim(low, high)
        diverged_any = diverged_any or any_diverged
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="*", color="gray", ms=12, mec="black"))
    labels.append(f"optimum of a {axis_info(axis).singular}")
    if diverged_any:
        handles.append(Line2D([], [], ls="", marker="x", color="gray", ms=7, mew=2))
        labels.append("diverged (no loss)")
    if n_seeds > 1:
        handles.append(Patch(color="gray", alpha=0.3, lw=0))
        labels.append("range over seeds")
    fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    config = summary["config"]
    axes[0].set_ylabel(_loss_unit(config))
    seeds = f"{n_seeds} seeds (mean)" if n_seeds > 1 else "1 seed"
    fig.suptitle(
        f"{_fixed(summary)} on {summary['data']['name']}, {_training(summary)}, {seeds}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _octaves(drift: float | None) -> str:
    return "—" if drift is None else f"{drift:g} octave{'' if drift == 1 else 's'}"


def _fitted(sweep: dict[str, Any]) -> str:
    """`` (fitted 1.55)``: the drift of the parabola-refined optima, when defined."""
    fitted = sweep.get("fitted_drift_octaves")
    return "" if fitted is None else f" (fitted {fitted:.2f})"


def fitted_short(sweep: dict[str, Any]) -> str:
    fitted = sweep.get("fitted_drift_octaves")
    return "" if fitted is None else f" ({fitted:.2f})"


def _mark_transfer(ax: Any, transfer: dict[str, Any] | None, axis: str) -> None:
    """A dotted line at the proxy's best LR and, in words, what it costs the largest model."""
    if not transfer or transfer["proxy_log2_lr"] is None:
        return
    ax.axvline(transfer["proxy_log2_lr"], color="gray", ls=":", lw=1.2, zorder=0)
    regret = transfer["regret_percent"]
    cost = "diverges" if regret is None else f"loss +{regret:.1f} %"
    ax.text(
        0.5,
        0.97,
        f"best LR of {setting_label(axis, transfer['proxy_size'])} (dotted) used at "
        f"{setting_label(axis, transfer['target_size'])}: {cost}",
        transform=ax.transAxes,
        ha="center",
        va="top",
        fontsize=8.5,
        bbox={"boxstyle": "round", "fc": "white", "ec": "lightgray", "alpha": 0.9},
    )


def _seed_spread(
    ax: Any, lrs: list[float], seed_rows: list[list[float | None]], color: Any
) -> None:
    """Shade the min–max range across seeds where every seed finished."""
    xs, lo, hi = [], [], []
    for x, values in zip(lrs, seed_rows, strict=True):
        if values and all(v is not None for v in values):
            finite = [float(v) for v in values if v is not None]
            xs.append(x)
            lo.append(min(finite))
            hi.append(max(finite))
    if xs:
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)


# ------------------------------------------------------------------------------ tables
def _grid_rows(sweep: dict[str, Any], axis: str) -> tuple[list[str], list[list[str]]]:
    """The loss grid; along batch, seq-len, steps and schedule also the first setting's LR's
    regret at every setting (how a miss grows with the distance from the proxy)."""
    regrets = sweep.get("regret_of_first") if axis not in SIZE_AXES else None
    header = [axis, *(fmt_lr(x) for x in sweep["log2_lrs"]), "best"]
    if regrets is not None:
        header.append("first's LR")
    rows = []
    for i, size in enumerate(sweep["sizes"]):
        best = sweep["best_index"][i] if "best_index" in sweep else None
        cells = []
        for j, value in enumerate(sweep["loss"][i]):
            text = "✗" if value is None else f"{value:.3f}"
            cells.append(text + ("*" if j == best else ""))
        rows.append([str(size), *cells, fmt_lr(sweep["best_log2_lr"][i])])
        if regrets is not None:
            rows[-1].append("—" if regrets[i] is None else f"+{regrets[i]:.2f} %")
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def transfer_lines(summary: dict[str, Any]) -> list[str]:
    summary = normalise(summary)
    axis = summary["axis"]
    lines = []
    for rules in summary["rules"]:
        t = summary["transfer"][rules]
        reuse = " (finished grid run reused)" if t["reused_run"] else " (trained for the transfer)"
        lines.append(
            f"{rules_name(rules):>3}: LR 2^{fmt_lr(t['proxy_log2_lr'])} from "
            f"{setting_label(axis, t['proxy_size'])}"
            f" → {setting_label(axis, t['target_size'])} loss "
            f"{fmt_loss(t['transferred_loss'])}{reuse}; "
            f"best by direct sweep {fmt_loss(t['direct_best_loss'])} at "
            f"2^{fmt_lr(t['direct_best_log2_lr'])}; regret {fmt_pct(t['regret_percent'])}"
        )
    fraction = summary["transfer"][summary["rules"][0]]["compute_fraction"]
    if fraction is not None and axis != "schedule":  # schedules all cost the same
        lines.append(
            f"The proxy sweep ({setting_label(axis, summary['sizes'][0])}) cost "
            f"{100 * fraction:.1f} % of the FLOPs of sweeping "
            f"{setting_label(axis, summary['sizes'][-1])} directly."
        )
    return lines


def claim_lines(summary: dict[str, Any]) -> list[str]:
    return [
        f"[{'x' if c['holds'] else ' '}] {c['rule']}" for c in summary.get("claims", {}).values()
    ]


def finding_lines(summary: dict[str, Any]) -> list[str]:
    """Along batch, seq-len, steps and schedule: per parametrization, does the LR transfer."""
    return list((summary.get("findings") or {}).values())


def terminal_report(summary: dict[str, Any]) -> str:
    """The table printed at the end of ``mutransfer demo``."""
    summary = normalise(summary)
    axis = summary["axis"]
    info = axis_info(axis)
    parts = []
    seeds = len(summary["seeds"])
    for rules in summary["rules"]:
        sweep = summary["sweeps"][rules]
        parts.append(
            f"{title(rules, axis)}: validation loss"
            f"{f' (mean of {seeds} seeds)' if seeds > 1 else ''} by {info.label} (rows) and "
            "log2 LR (columns); * = optimum, ✗ = diverged"
        )
        parts.append(text_table(*_grid_rows(sweep, axis)))
        parts.append(
            f"optimum moves {_octaves(sweep['drift_octaves'])}{_fitted(sweep)} across "
            f"{info.plural}\n"
        )
    parts.append(
        f"Transfer (tune the LR at the {info.smallest} {info.label}, use it at the {info.largest}):"
    )
    parts += ["  " + line for line in transfer_lines(summary)]
    if summary.get("findings"):
        parts.append("\nDoes the LR transfer along this axis?")
        parts += ["  " + line for line in finding_lines(summary)]
    if summary.get("claims"):
        parts.append("\nClaims on this run:")
        parts += ["  " + line for line in claim_lines(summary)]
    return "\n".join(parts)


# ------------------------------------------------------------------------------ report
_HOW_TO_READ = {
    "width": (
        "Each curve is one width ({sizes}); each point is a full training "
        "run at one learning rate, scored on held-out {held_out}; the star marks each width's best "
        "learning rate, and the dotted line the narrowest width's best. What to look for: under "
        "SP (left) the stars slide left as the model widens — the learning rate tuned on a "
        "small model is too large for a big one, so every size must be tuned again. Under µP "
        "(right) the stars line up — the small model's best learning rate is also (nearly) the "
        "big model's, and wider models are better at (nearly) every learning rate — so the "
        "learning rate can be tuned cheaply on the small model and transferred. Whether this "
        "run shows it is measured below (Claims). "
        "A cross (×) at the top of a panel is a run that diverged; it has no loss."
    ),
    "depth": (
        "Each curve is one depth, i.e. number of transformer blocks ({sizes}), at one width; "
        "each point is a full training run at one learning rate, scored on held-out text; the "
        "star marks each depth's best learning rate, and the dotted line the shallowest depth's "
        "best. The shallowest depth is the base of the depth rules, so every panel starts from "
        "the same curve. What to look for: under µP with width rules only, every block adds an "
        "update of full size to the residual stream, so the total change of the features grows "
        "with depth and the best learning rate tends to fall as the model deepens. CompleteP "
        "multiplies each residual branch by base depth / depth, so the sum over blocks keeps "
        "its size and the stars should line up; Depth-µP (if shown) uses the square root of "
        "that factor with a learning rate × √(base depth / depth). Whether this run shows it "
        "is measured below (Claims). "
        "A cross (×) at the top of a panel is a run that diverged; it has no loss."
    ),
}


_AXIS_TEMPLATE = (
    "Each curve is one {label} ({sizes}) of the same model ({model}); each point is a full "
    "training run at one learning rate, scored on held-out text; the star marks each curve's "
    "best learning rate, and the dotted line the {smallest} setting's best. What to look for: "
    "if the stars line up, the learning rate tuned at the {smallest} setting serves as is at "
    "the {largest}; if they slide, the optimum moves along this axis and must be carried by a "
    "rule (`mutransfer transfer --to-batch / --to-steps`, docs/sweeps.md). µP's width rules "
    "say nothing about this axis, so SP is shown beside it at the same width, as a reference, "
    "not a rival. {expect} Whether this run shows it is measured below (Claims and Findings). "
    "A cross (×) at the top of a panel is a run that diverged; it has no loss."
)
_EXPECT = {
    "batch": (
        "What the literature leads one to expect: a larger batch averages away gradient noise, "
        "so Adam's best LR tends to rise with it (roughly as its square root, Malladi et al. "
        "2022) until the batch passes the critical batch size."
    ),
    "seq-len": (
        "Tensor Programs V (Fig. 19) found µP's optimum stable across sequence lengths in a "
        "pre-LN Transformer; longer sequences put more tokens in each step, as a larger batch "
        "does, but the tokens of one sequence are correlated."
    ),
    "steps": (
        "Longer training tends to want a smaller LR (Bjorck et al., ICLR 2025, find the best LR "
        "falls as a power of the token horizon); Tensor Programs V found µP's optimum stable "
        "over the (short) ranges it tried."
    ),
    "schedule": (
        "The runs are the same length; the schedules differ: constant, cosine decay to 10 %, "
        "linear warmup (10 % of the steps) then linear decay, and warmup-stable-decay (the last "
        "20 % decay). A schedule that decays lowers the LR at the end, so it tends to allow a "
        "higher peak LR than a constant one."
    ),
}


def how_to_read(summary: dict[str, Any]) -> str:
    """The paragraph under the figure: what the curves are and what to look for."""
    axis, config = summary["axis"], summary["config"]
    sizes = ", ".join(map(str, summary["sizes"]))
    if axis in _HOW_TO_READ:
        held_out = "images" if _is_images(config) else "text"
        return _HOW_TO_READ[axis].format(sizes=sizes, held_out=held_out)
    info = axis_info(axis)
    return _AXIS_TEMPLATE.format(
        label=info.singular,
        sizes=sizes,
        model=_fixed(summary),
        smallest=info.smallest,
        largest=info.largest,
        expect=_EXPECT[axis],
    )


def markdown_report(summary: dict[str, Any], figure: str | None = None) -> str:
    """``report.md``: the figure, how to read it, the numbers, and how they were produced."""
    summary = normalise(summary)
    axis = summary["axis"]
    figure = figure or figure_name(axis)
    names = " vs ".join(rules_name(r) for r in summary["rules"])
    info = axis_info(axis)
    heading = "µTransfer demo" if axis == "width" else f"µTransfer demo across {info.plural}"
    out = [
        f"# {heading}: {names}",
        "",
        f"![validation loss against learning rate, {names}]({figure})",
        "",
        "## How to read it",
        "",
        how_to_read(summary),
        "",
    ]
    seeds = len(summary["seeds"])
    for rules in summary["rules"]:
        sweep = summary["sweeps"][rules]
        out += [
            f"## {title(rules, axis)}",
            "",
            f"Validation loss{f' (mean of {seeds} seeds)' if seeds > 1 else ''}; rows: "
            f"{info.label}, columns: log2 LR; * optimum, ✗ diverged"
            + (
                "; last column: the loss at the first row's best LR, above the row's best"
                if axis not in SIZE_AXES
                else ""
            )
            + f". Optimum moves **{_octaves(sweep['drift_octaves'])}**{_fitted(sweep)} across "
            f"{info.plural}.",
            "",
            markdown_table(*_grid_rows(sweep, axis)),
            "",
        ]
        if sweep.get("optimum_on_grid_edge"):
            out += [
                f"Note: the optimum of {info.label}(s) {sweep['optimum_on_grid_edge']} is on the "
                "edge of the LR grid; the true optimum may lie outside it.",
                "",
            ]
    out += ["## Transfer", ""]
    out += ["- " + line for line in transfer_lines(summary)]
    if summary.get("claims"):
        out += ["", "## Claims on this run", ""]
        out += ["- " + line for line in claim_lines(summary)]
    if summary.get("findings"):
        out += ["", "## Findings: does the LR transfer along this axis?", ""]
        out += ["- " + line for line in finding_lines(summary)]
    out += ["", "## How this was produced", ""]
    out += ["- " + line for line in provenance_lines(summary)]
    return "\n".join(out) + "\n"


def _on_device(run: dict[str, Any]) -> str:
    """Where and how the runs trained, when it was not one by one on the CPU (older summaries:
    that)."""
    device = run.get("device", "cpu")
    where = "" if device == "cpu" else f", every run on {device}"
    where += f" ({run['gpu']})" if run.get("gpu") else ""
    if run.get("stacked"):
        where += ", runs of one size stacked (`--stack`: the same runs up to float32 rounding)"
    return where


def provenance_lines(summary: dict[str, Any]) -> list[str]:
    summary = normalise(summary)
    run, machine, config = summary["run"], summary["machine"], summary["config"]
    load = machine.get("load_average")
    name = _model(config)
    if name == "ResNet":
        model = (
            f"ResNet, {config['depth']} block(s) per stage, width = channels of the first of "
            f"its 3 stages (× 1, 2, 4), base width {config['base_width']}"
        )
    elif summary["axis"] == "width":
        model = (
            f"{name} depth {config['depth']}, {config['n_heads']} heads, base width "
            f"{config['base_width']}"
        )
    elif summary["axis"] not in SIZE_AXES:
        model = f"{_fixed(summary)}, {config['n_heads']} heads"
    else:
        model = (
            f"{name} width {config['width']}, {config['n_heads']} heads, depths "
            f"{'/'.join(map(str, summary['sizes']))} (base depth {config['base_depth']})"
        )
    if config.get("model") in ("bert", "hf-bert"):
        decoder = "tied" if config.get("tie_embeddings") else "untied"
        model += f", masked LM (15 % of the bytes), {decoder} decoder"
    if config.get("qk_norm"):
        model += ", QK-norm"
    optimizer = config["optimizer"]
    if optimizer in ("adamw", "adam"):
        optimizer += f" (β2 {config['beta2']})"
    elif optimizer == "sgd":
        optimizer += " (momentum 0.9)"
    elif optimizer == "muon" and config.get("adamw_lr"):
        optimizer += f" (+ AdamW at 2^{math.log2(config['adamw_lr']):g}, β2 {config['beta2']})"
    return [
        f"command: `{run['command']}`",
        f"date: {run['finished']}",
        f"machine: {machine['cpu']} ({machine['cpus']} CPUs), torch {machine['torch']}, "
        f"Python {machine['python']}, {run['workers']} worker process(es) × "
        f"{run['threads']} thread(s)"
        + _on_device(run)
        + (
            f"; load average (1/5/15 min) before: {'/'.join(map(str, load['before']))}, "
            f"after: {'/'.join(map(str, load['after']))}"
            if load
            else ""
        ),
        f"wall time: {_fmt_duration(run['wall_seconds'])} ({run['trained']} runs trained now, "
        f"{run['reused']} found on disk)"
        + (
            f"; CPU time of the demo's processes {_fmt_duration(run['cpu_seconds'])}, i.e. "
            f"{run['cpu_seconds'] / max(run['wall_seconds'], 1e-9):.2f} cores busy on average"
            if run.get("cpu_seconds") is not None
            else ""
        )
        + (
            f"; training time of all {run['trained'] + run['reused']} runs (each on one thread, "
            f"as recorded when it ran): {_fmt_duration(run['train_seconds'])}"
            if run.get("train_seconds")
            else ""
        ),
        f"data: {_data_line(summary['data'])}",
        f"model: {model}; {_varied(config, 'steps')} steps, batch {_batch_size(config)}, "
        f"{optimizer}, warmup {_varied(config, 'warmup_steps')}, schedule "
        f"{_varied(config, 'schedule')}; seeds {summary['seeds']}",
    ]


def _data_line(data: dict[str, Any]) -> str:
    unit = "images" if "train_images" in data else "bytes"
    return (
        f"{data['name']} ({data[f'train_{unit}']:,} training {unit}, "
        f"{data[f'val_{unit}']:,} validation {unit}, fingerprint {data['fingerprint']})"
    )


def _varied(config: dict[str, Any], field: str) -> str:
    """A setting of the runs, or ``varied`` for the one the demo sweeps (not in ``config``)."""
    return str(config[field]) if field in config else "varied"


def _batch_size(config: dict[str, Any]) -> str:
    if _is_images(config):
        return f"{_varied(config, 'batch_size')} images"
    return f"{_varied(config, 'batch_size')} × {_varied(config, 'seq_len')}"


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def write_outputs(summary: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Draw the figure and write ``report.md`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    figure = plot_lr_transfer(summary, out / figure_name(summary.get("axis", "width")))
    report = out / REPORT_NAME
    report.write_text(markdown_report(summary), encoding="utf-8")
    return {"figure": figure, "report": report}
