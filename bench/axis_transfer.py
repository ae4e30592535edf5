"""Beyond width: does the best LR stay put across batch size, sequence length, steps, schedule?

Tensor Programs V (§ 6.1, Fig. 19) found µP's optimum stable across batch size, sequence length,
training steps and LR schedule in a pre-LN Transformer, "within reasonable ranges"; later work
moves it on purpose along some of them (Bjorck et al. 2025: the best LR falls with the token
horizon; square-root scaling in batch size for Adam, Malladi et al. 2022). This benchmark
measures each axis on the shipped Shakespeare text with the demo's own code
(``mutransfer demo --vary AXIS``, 2 seeds): the reference GPT at width 32 (µP's base 16, so SP
beside it differs by 2×), 2 blocks, AdamW, and per axis

- the best log2 LR per setting, on the grid and refined by a parabola, and its drift;
- the signed shift from the first setting to the last (which way the optimum moves);
- the regret of the first setting's LR at every setting (how a miss grows with the distance);

with the figures (``docs/images/lr_transfer_AXIS.png``), the command, the machine and the date,
and a verdict per axis: "transfers as is" (drift ≤ 1 octave and regret ≤ 1 %) or "moves".

Runs are cached one file per run (``--runs-dir``; the demo's run store), so an interrupted run
resumes; ``mutransfer demo --vary AXIS --seeds 0,1 --out runs/bench/axis_transfer-AXIS`` fills
the same caches. ``--quick`` is a seconds-long smoke test (tiny model, pydoc text) whose numbers
mean nothing.

    .venv/bin/python bench/axis_transfer.py            # the recorded numbers (4 axes, 2 seeds)
    .venv/bin/python bench/axis_transfer.py --quick    # smoke
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import common
from common import (
    add_run_cache_options,
    arg_parser,
    command_line,
    demo_results_section,
    machine_info,
    markdown_table,
    place_figure,
    read_results,
    write_results,
)
from mutransfer.demo.report import fmt_lr

NAME = "axis_transfer"
ROOT = common.ROOT
AXES = ("batch", "seq-len", "steps", "schedule")
SEEDS = (0, 1)


def settings(quick: bool) -> dict[str, Any]:
    """The grid of each axis: the demo's default (``--vary AXIS``) with 2 seeds; ``quick``:
    tiny grids of the same shape."""
    from mutransfer import demo
    from mutransfer.demo.axes import axis_info

    if not quick:
        return {axis: demo.settings_for(vary=axis, seeds=SEEDS) for axis in AXES}
    tiny = {
        "log2_lrs": [-8.0, -6.0],
        "text": "pydoc",
        "width": 32,
        "n_heads": 2,
        "eval_batches": 1,
        "eval_batch_size": 4,
    }
    fixed = {"steps": 4, "batch_size": 2, "seq_len": 16}
    values: dict[str, list[Any]] = {
        "batch": [2, 4],
        "seq-len": [8, 16],
        "steps": [2, 4],
        "schedule": ["constant", "wsd"],
    }
    out = {}
    for axis in AXES:
        options = {k: v for k, v in fixed.items() if k != axis_info(axis).field}
        out[axis] = demo.settings_for(vary=axis, values=values[axis], **tiny, **options)
    return out


def verdict(summary: dict[str, Any], rules: str) -> str:
    """``transfers as is`` or ``moves``, from the same two checks as the demo's findings."""
    from mutransfer.demo.analysis import transfers_as_is

    sweep, transfer = summary["sweeps"][rules], summary["transfer"][rules]
    stable = transfers_as_is(sweep["drift_octaves"], transfer["regret_percent"])
    measured = "transfers as is" if stable else "moves"
    if sweep.get("optimum_on_grid_edge"):
        return f"{measured}? (optimum on the grid's edge)"
    return measured


def overview(payload: dict[str, Any]) -> str:
    """One row per axis and parametrization: optima, shift, drift, regret, verdict."""
    from mutransfer.demo.analysis import display_name
    from mutransfer.demo.axes import setting_label

    rows = []
    for axis, result in payload["axes"].items():
        summary = result["summary"]
        sizes = summary["sizes"]
        span = f"{setting_label(axis, sizes[0])} → {sizes[-1]}"
        if axis != "schedule":
            span += f" ({int(sizes[-1]) // int(sizes[0])}×)"
        for rules in summary["rules"]:
            sweep = summary["sweeps"][rules]
            fitted = sweep.get("fitted_log2_lr") or []
            shift = sweep.get("shift_octaves")
            refined = (
                f"{fitted[-1] - fitted[0]:+.2f}"
                if fitted and fitted[0] is not None and fitted[-1] is not None
                else "—"
            )
            regrets = sweep.get("regret_of_first") or []
            rows.append(
                [
                    axis,
                    span,
                    display_name(rules),
                    "/".join(fmt_lr(x) for x in sweep["best_log2_lr"]),
                    "/".join("—" if x is None else f"{x:.2f}" for x in fitted),
                    f"{fmt_lr(shift) if shift is None else f'{shift:+g}'} ({refined})",
                    fmt_lr(sweep["drift_octaves"]),
                    " / ".join("—" if r is None else f"{r:.2f}" for r in regrets),
                    verdict(summary, rules),
                ]
            )
    return markdown_table(
        [
            "axis",
            "settings",
            "rules",
            "best log2 LR per setting",
            "parabola-refined",
            "shift first → last, octaves (refined)",
            "drift",
            "regret of the first's LR per setting, %",
            "verdict",
        ],
        rows,
    )


def render(payload: dict[str, Any]) -> str:
    first = next(iter(payload["axes"].values()))["summary"]
    config = first["config"]
    out = [
        "## Transfer along batch size, sequence length, steps and schedule "
        "(`bench/axis_transfer.py`)",
        "",
        f"Byte-level GPT at width {config['width']} (µP's base {config['base_width']}), "
        f"depth {config['depth']}, on {first['data']['name']}, AdamW, "
        f"seeds {'/'.join(map(str, first['seeds']))} (cells are seed means); one axis varied "
        "at a time, everything else as in the width demo (200 steps of 16 × 64 bytes, constant "
        "LR). Shift = best log2 LR at the last setting minus at the first (positive: the "
        "optimum rises); drift = max − min across all settings; regret = a setting's loss at the "
        "first setting's best LR over its own best, in %. Verdict: *transfers as is* when the "
        "drift is ≤ 1 octave and the last setting's regret ≤ 1 %, else *moves*.",
        "",
        overview(payload),
        "",
        "Reading (generated from the numbers above):",
        "",
    ]
    for result in payload["axes"].values():
        out += ["- " + line for line in (result["summary"].get("findings") or {}).values()]
    out.append("")
    for axis, result in payload["axes"].items():
        section = demo_results_section(
            result["summary"], figure=result["figure"], heading=f"Along {axis}: details"
        )
        out.append(section.replace("## Along", "### Along", 1))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__.splitlines()[0])
    add_run_cache_options(
        parser,
        "parent of the demo outputs and run caches, one folder per axis (default: runs/bench, "
        "i.e. runs/bench/axis_transfer-AXIS; --quick uses a temporary folder)",
    )
    args = parser.parse_args(argv)
    if args.rerender:
        payload = read_results(NAME, Path(args.out_dir))
        json_path, md_path = write_results(NAME, payload, render(payload), Path(args.out_dir))
        print(f"rewrote {json_path} and {md_path} from the recorded runs")
        return 0
    torch.set_num_threads(args.threads)
    from mutransfer import demo
    from mutransfer.demo import report

    scratch = tempfile.TemporaryDirectory(prefix=NAME) if args.quick else None
    runs_root = args.runs_dir or (Path(scratch.name) if scratch else ROOT / "runs" / "bench")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for axis, grid in settings(args.quick).items():
        folder = runs_root / f"{NAME}-{axis}"
        summary = demo.run_demo(
            folder,
            workers=1 if args.quick else args.workers,
            settings=grid,
            progress=not args.quick,
            echo=print,
            command=f"mutransfer demo --vary {axis} --seeds {','.join(map(str, SEEDS))}"
            if not args.quick
            else command_line(argv),
        )
        name = report.figure_name(axis)
        figure = place_figure(folder / name, name, out_dir)
        results[axis] = {"figure": figure, "summary": summary}
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "command": command_line(argv),
        "quick": args.quick,
        "machine": machine_info(),
        "axes": results,
    }
    json_path, md_path = write_results(NAME, payload, render(payload), out_dir)
    print(f"\nwrote {json_path} and {md_path}")
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
