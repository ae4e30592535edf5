"""LR transfer across widths beyond Adam: Lion and Muon on the demo setting, SP vs µP.

The width demo (``mutransfer demo``) shows µTransfer with AdamW. Here the same grid (the
reference GPT on Shakespeare, widths 32 → 256, 200 steps, the demo's batches and seeds) is
trained with

- **Lion** (sign updates; the PyPI package ``lion-pytorch``, betas 0.9/0.99): the µP table of the
  ``lion`` family is Adam's without ε (a sign step has Adam's per-entry size);
- **Muon** (``torch.optim.Muon`` on the hidden matrices, at the swept LR) with AdamW on every
  other tensor at a fixed LR, ``ADAMW_LR``: the µP ``muon`` family scales the hidden LR by
  √(m_out/m_in) (torch's ``adjust_lr_fn="original"`` already makes the step width-aware), the
  AdamW side follows µP-Adam.

Each optimizer is one run of the demo's code (``mutransfer.demo.run_demo`` with the optimizer
as a training option) under SP and µP, with an LR grid of 8 octaves centred on the optimizer's
optimum at the base width (located in a pilot at width 32; Lion's is about 1 octave below
AdamW's, Muon's 1 octave above). The numbers are the demo's: best log2 LR per width, its drift
in octaves, and the transfer regret (the widest model at the narrowest model's best LR, against
its own best). AdamW's row is the width demo's recorded run (``bench/results/demo.json``).

Runs are cached (``--runs-dir``), so an interrupted run resumes; ``--rerender`` rewrites the
markdown from the recorded JSON; ``--quick`` is a seconds-long smoke test (tiny widths, pydoc
text) whose numbers mean nothing.

    .venv/bin/python bench/optimizers_transfer.py               # Lion and Muon (~25 min, 2 cores)
    .venv/bin/python bench/optimizers_transfer.py --only lion   # one optimizer
    .venv/bin/python bench/optimizers_transfer.py --quick       # smoke
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import common
from common import (
    RESULTS_DIR,
    add_run_cache_options,
    arg_parser,
    command_line,
    machine_info,
    markdown_table,
    place_figure,
    read_results,
    write_results,
)
from mutransfer.demo.report import fmt_loss, fmt_lr, fmt_pct

NAME = "optimizers_transfer"
ROOT = common.ROOT

ADAMW_LR = 2.0**-6
"""Muon's AdamW side (embeddings, readout, norm gains): the width demo's best µP-AdamW LR at the
base width 32 (bench/results/demo.md, seeds 0, 1, 2), held fixed while Muon's LR is swept."""


@dataclass(frozen=True)
class Spec:
    """One optimizer of the comparison: its LR grid and the training options that select it."""

    key: str
    label: str
    log2_lrs: tuple[float, ...]
    options: dict[str, Any] = field(default_factory=dict)


SPECS = {
    "lion": Spec(
        "lion",
        "Lion (lion-pytorch)",
        tuple(float(x) for x in range(-12, -4)),
        {"optimizer": "lion"},
    ),
    "muon": Spec(
        "muon",
        "Muon (hidden) + AdamW at 2^-6",
        tuple(float(x) for x in range(-9, -1)),
        {"optimizer": "muon", "adamw_lr": ADAMW_LR},
    ),
}


def settings(spec: Spec, quick: bool) -> Any:
    from mutransfer import demo

    if quick:
        return demo.settings_for(
            widths=[16, 32],
            log2_lrs=[spec.log2_lrs[2], spec.log2_lrs[4]],
            text="pydoc",
            n_heads=2,
            steps=8,
            batch_size=4,
            seq_len=16,
            eval_batches=1,
            eval_batch_size=4,
            **spec.options,
        )
    return demo.settings_for(log2_lrs=spec.log2_lrs, **spec.options)


def row(label: str, summary: dict[str, Any]) -> list[str]:
    """One line of the comparison table from a demo summary (SP and µP)."""
    sweeps, transfer = summary["sweeps"], summary["transfer"]
    claims = summary.get("claims") or {}

    def best(rules: str) -> str:
        return "/".join(fmt_lr(x) for x in sweeps[rules]["best_log2_lr"])

    def drift(rules: str) -> str:
        fitted = fitted_drift(sweeps[rules])
        grid = fmt_lr(sweeps[rules]["drift_octaves"])
        return grid if fitted is None else f"{grid} ({fitted:.2f})"

    return [
        label,
        best("sp"),
        drift("sp"),
        fmt_pct(transfer["sp"]["regret_percent"]),
        best("mup"),
        drift("mup"),
        fmt_pct(transfer["mup"]["regret_percent"]),
        fmt_loss(sweeps["mup"]["best_loss"][-1]),
        f"{sum(c['holds'] for c in claims.values())} of {len(claims)}" if claims else "—",
    ]


def fitted_drift(sweep: dict[str, Any]) -> float | None:
    """The drift of the parabola-refined optima (``demo_analysis``), from a sweep's JSON."""
    from mutransfer.demo import analysis as demo_analysis

    sizes = sweep.get("sizes", sweep.get("widths"))
    rebuilt = demo_analysis.Sweep(
        sweep["rules"],
        sizes,
        sweep["log2_lrs"],
        sweep["seeds"],
        sweep["loss"],
        sweep["seed_loss"],
        sweep["flops"],
        sweep["planned_flops"],
        sweep["seconds"],
    )
    return rebuilt.fitted_drift_octaves


def recorded_adamw() -> dict[str, Any] | None:
    """The width demo's recorded AdamW run, for the baseline row (None if not recorded)."""
    try:
        data = json.loads((RESULTS_DIR / "demo.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    summary: dict[str, Any] = data["summary"]
    return summary


def reading(payload: dict[str, Any]) -> list[str]:
    """Sentences generated from the numbers: which optimizers transfer under µP."""
    lines = []
    for key, result in payload["optimizers"].items():
        sweeps, transfer = result["summary"]["sweeps"], result["summary"]["transfer"]
        mup, sp = sweeps["mup"]["drift_octaves"], sweeps["sp"]["drift_octaves"]
        regret = transfer["mup"]["regret_percent"]
        stable = mup is not None and mup <= 1
        lines.append(
            f"{SPECS[key].label}: µP's best LR moves {fmt_lr(mup)} octave(s) across widths "
            f"(SP's {fmt_lr(sp)}); transferring width {payload['widths'][0]}'s best LR to width "
            f"{payload['widths'][-1]} costs {fmt_pct(regret)} under µP and "
            f"{fmt_pct(transfer['sp']['regret_percent'])} under SP: µP transfer "
            + ("holds (drift <= 1 octave)." if stable else "does NOT hold (drift > 1 octave).")
        )
        if sp is not None and sp <= 1 and key == "muon":
            best_sp, best_mup = sweeps["sp"]["best_loss"][-1], sweeps["mup"]["best_loss"][-1]
            lines.append(
                f"{SPECS[key].label}: SP's optimum does not move either. The swept LR only "
                "drives Muon, whose orthogonalised update has the same spectral size at every "
                "width under both rule sets (torch's adjust_lr_fn='original'), so this grid "
                "cannot tell SP from µP; they differ in the tensors AdamW trains at the fixed "
                f"LR (embeddings, readout: best loss at width {payload['widths'][-1]} "
                f"SP {fmt_loss(best_sp)}, µP {fmt_loss(best_mup)})."
            )
        edges = {r: sweeps[r]["optimum_on_grid_edge"] for r in ("sp", "mup")}
        for rules, widths in edges.items():
            if widths:
                lines.append(
                    f"{SPECS[key].label}, {rules}: the optimum of width(s) {widths} is on the "
                    "edge of the LR grid; the true optimum may lie outside it."
                )
    return lines


def setting(payload: dict[str, Any]) -> str:
    """The training setting in words, from the first optimizer's recorded config."""
    first = next(iter(payload["optimizers"].values()))["summary"]
    c, seeds = first["config"], first["seeds"]
    return (
        f"Setting: the width demo's (byte-level GPT, depth {c['depth']}, {c['n_heads']} heads, "
        f"widths {', '.join(map(str, payload['widths']))}; the narrowest is the µP base width "
        f"and the proxy), {c['steps']} steps of {c['batch_size']} × {c['seq_len']} bytes of "
        f"{first['data']['name']}, {c['schedule']} LR, warmup {c['warmup_steps']}, seeds "
        f"{seeds}. Drift = max − min of the best log2 LR across widths (octaves), in "
        "brackets the spread of the optima refined by a parabola through the best grid point "
        "and its neighbours; regret = "
        "loss of the widest model at the narrowest model's best LR over its own best, in %."
    )


def render(payload: dict[str, Any]) -> str:
    widths = "/".join(map(str, payload["widths"]))
    header = [
        "optimizer",
        f"SP best log2 LR ({widths})",
        "SP drift (fitted)",
        "SP regret",
        f"µP best log2 LR ({widths})",
        "µP drift (fitted)",
        "µP regret",
        f"µP best loss, width {payload['widths'][-1]}",
        "demo claims held",
    ]
    rows = []
    if payload.get("adamw"):
        rows.append(row("AdamW (recorded width demo)", payload["adamw"]))
    for key, result in payload["optimizers"].items():
        rows.append(row(SPECS[key].label, result["summary"]))
    out = [
        "## LR transfer across widths with Lion and Muon (`bench/optimizers_transfer.py`)",
        "",
        setting(payload),
        "",
        markdown_table(header, rows),
        "",
    ]
    for key, result in payload["optimizers"].items():
        out += [f"![{SPECS[key].label}: SP vs µP]({result['figure']})", ""]
    out += ["Reading (generated from the numbers above):", ""]
    out += ["- " + line for line in payload["reading"]]
    out += ["", "How it was produced:", ""]
    out += [f"- command: `{payload['command']}`"]
    for key, result in payload["optimizers"].items():
        run = result["summary"]["run"]
        load = result["summary"]["machine"].get("load_average") or {}
        out.append(
            f"- {SPECS[key].label}: LR grid 2^{fmt_lr(result['log2_lrs'][0])}…"
            f"2^{fmt_lr(result['log2_lrs'][-1])}, {run['trained']} runs trained now and "
            f"{run['reused']} found on disk in {run['wall_seconds'] / 60:.1f} min, "
            f"{run['workers']} worker(s) × {run['threads']} thread(s); finished {run['finished']}"
            + (
                f"; load average before/after {load['before'][0]}/{load['after'][0]}"
                if load
                else ""
            )
        )
    m = payload["machine"]
    out.append(
        f"- machine: {m['cpu']} ({m['cpu_count']} CPUs), torch {m['torch']}, Python {m['python']}"
    )
    if payload.get("adamw"):
        out.append(
            f"- AdamW row: `{payload['adamw']['run']['command']}` "
            f"({payload['adamw']['run']['finished']}), see the demo's section"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__.splitlines()[0])
    add_run_cache_options(
        parser,
        "the demo outputs and run cache, one folder per optimizer (default: "
        "runs/bench/optimizers_transfer; --quick uses a temporary folder)",
    )
    parser.add_argument(
        "--only", default=None, help=f"comma-separated optimizers (default: {','.join(SPECS)})"
    )
    args = parser.parse_args(argv)
    if args.rerender:
        return rerender(Path(args.out_dir))
    torch.set_num_threads(args.threads)
    wanted = args.only.split(",") if args.only else list(SPECS)
    unknown = [k for k in wanted if k not in SPECS]
    if unknown:
        parser.error(f"unknown optimizer(s) {unknown}; known: {', '.join(SPECS)}")
    try:
        import lion_pytorch  # noqa: F401
    except ImportError:
        if "lion" in wanted:
            parser.error("Lion needs the package lion-pytorch: pip install lion-pytorch")
    from mutransfer import demo
    from mutransfer.demo import report

    scratch = tempfile.TemporaryDirectory(prefix=NAME) if args.quick else None
    runs_root = args.runs_dir or (Path(scratch.name) if scratch else ROOT / "runs" / "bench" / NAME)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    optimizers: dict[str, Any] = {}
    widths: list[int] = []
    for key in wanted:
        spec = SPECS[key]
        grid = settings(spec, args.quick)
        folder = runs_root / key
        summary = demo.run_demo(
            folder,
            workers=1 if args.quick else args.workers,
            settings=grid,
            progress=not args.quick,
            echo=print,
            command=command_line(argv),
        )
        name = f"lr_transfer_{key}.png"
        figure = place_figure(folder / report.FIGURE_NAME, name, out_dir)
        optimizers[key] = {"log2_lrs": list(grid.log2_lrs), "figure": figure, "summary": summary}
        widths = summary["widths"]
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "command": command_line(argv),
        "quick": args.quick,
        "machine": machine_info(),
        "widths": widths,
        "adamw_lr_for_muon": ADAMW_LR,
        "adamw": None if args.quick else recorded_adamw(),
        "optimizers": optimizers,
    }
    payload["reading"] = reading(payload)
    json_path, md_path = write_results(NAME, payload, render(payload), out_dir)
    print(render(payload))
    print(f"\nwrote {json_path} and {md_path}")
    if scratch is not None:
        scratch.cleanup()
    return 0


def rerender(out_dir: Path) -> int:
    """Regenerate the reading and the markdown of a recorded run."""
    payload = read_results(NAME, out_dir)
    payload["reading"] = reading(payload)
    json_path, md_path = write_results(NAME, payload, render(payload), out_dir)
    print(f"rewrote {json_path} and {md_path} from the recorded runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
