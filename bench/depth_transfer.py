"""Depth transfer on the real text: does the best learning rate stay put from 2 to 16 blocks?

µTransfer across depth needs depth rules: with µP's width rules alone every residual branch adds
an update of full size to the residual stream, so the features move more as blocks are added
and the best learning rate falls. CompleteP (Dey et al. 2025, α = 1) multiplies each branch by
base_depth / depth so that the sum over blocks keeps its size; Depth-µP (α = ½) uses the square
root of that factor and LR × √(base_depth / depth). This benchmark measures it on the shipped
Shakespeare text with the demo's own code (``mutransfer demo --vary depth`` and its analysis):
a byte-level GPT at one width, 2 → 16 blocks (8×), an LR grid per preset, and records

- the best log2 LR per depth and its drift (max − min, octaves),
- the transfer regret: the deepest model trained at the shallowest model's best LR, against
  the deepest model's own best, in % of loss,

with the figure (``docs/images/lr_transfer_depth.png``), the command, the machine and the date.
Five settings are measured: the depth demo's own (200 steps, one point per octave, all three
presets), the same with twice the steps on a half-octave grid (µP and CompleteP), and that one
with a 10 % linear LR warmup at depths 2 and 16 — the longer ones because the claim did not
survive the longer horizon, the warmup to test whether early instability at depth moves the
optimum — and the two long ones again with QK-norm (queries and keys RMS-normalised per head),
because attention logits in the hundreds were the instability seen there. The default and the
long QK-norm setting are also run with a second seed (``SEED_CHECKS``).

Runs are cached one file per run (``--runs-dir``; the demo's run store), so an interrupted run
resumes. ``--quick`` is a seconds-long smoke test (tiny model, pydoc text) whose numbers mean
nothing.

    .venv/bin/python bench/depth_transfer.py            # the recorded numbers (5 settings)
    .venv/bin/python bench/depth_transfer.py --quick    # smoke
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
    place_figure,
    read_results,
    write_results,
)
from mutransfer.demo.report import fmt_loss, fmt_lr

NAME = "depth_transfer"
ROOT = common.ROOT


HALF_OCTAVES = tuple(x / 2 for x in range(-18, -11))
"""-9, -8.5, ..., -6: the long setting's grid, twice as fine around the optima of the default."""
QK_NORM_GRID = tuple(x / 2 for x in range(-18, -8))
"""-9, -8.5, ..., -4.5: the QK-norm settings' grid, 1.5 octaves higher than the long one's."""


def settings(quick: bool) -> dict[str, Any]:
    """The settings measured, by name: the depth demo's default grid with all three presets,
    and a longer run (2× the steps) on a half-octave grid, which resolves drifts below one
    grid step of the default. ``quick``: two tiny smoke grids of the same shape."""
    from mutransfer import demo

    if quick:
        tiny = {
            "depths": [1, 2],
            "log2_lrs": [-8.0, -6.0],
            "text": "pydoc",
            "width": 16,
            "n_heads": 2,
            "batch_size": 4,
            "seq_len": 16,
            "eval_batches": 1,
            "eval_batch_size": 4,
        }
        return {
            "default": demo.settings_for(vary="depth", steps=8, **tiny),
            "long": demo.settings_for(vary="depth", steps=16, **tiny),
            "warmup": demo.settings_for(vary="depth", steps=16, warmup_steps=2, **tiny),
            "long_qk_norm": demo.settings_for(vary="depth", steps=16, qk_norm=True, **tiny),
            "warmup_qk_norm": demo.settings_for(
                vary="depth", steps=16, warmup_steps=2, qk_norm=True, **tiny
            ),
        }
    return {
        "default": demo.settings_for(vary="depth", rules=["mup", "completep", "depth-mup"]),
        "long": demo.settings_for(vary="depth", steps=400, log2_lrs=HALF_OCTAVES),
        # the long setting with a 10 % linear warmup, at the two ends of the depth range only;
        # warmup allows larger LRs, so the grid extends 1.5 octaves further up
        "warmup": demo.settings_for(
            vary="depth",
            steps=400,
            warmup_steps=40,
            log2_lrs=tuple(x / 2 for x in range(-18, -8)),
            depths=[2, 16],
        ),
        # the long setting and the warmup one with queries and keys RMS-normalised per head:
        # in both, the depth-16 attention logits grew to the hundreds under µP and CompleteP
        # alike, an instability no depth rule addresses; QK-norm bounds them. The grid reaches
        # higher, where the bounded logits may move the optima.
        "long_qk_norm": demo.settings_for(
            vary="depth", steps=400, log2_lrs=QK_NORM_GRID, qk_norm=True
        ),
        "warmup_qk_norm": demo.settings_for(
            vary="depth",
            steps=400,
            warmup_steps=40,
            log2_lrs=QK_NORM_GRID,
            depths=[2, 16],
            qk_norm=True,
        ),
    }


SEED_CHECKS: dict[str, tuple[int, ...]] = {"default": (1,), "long_qk_norm": (1,)}
"""Other seeds, each a full grid (µP and CompleteP only): whether a setting's verdict, which
hangs on one grid step, depends on the seed."""


def seed_check(name: str, seed: int, runs_root: Path) -> tuple[Path, Any, str]:
    """(folder, settings, the equivalent ``mutransfer demo`` command) of one seed check."""
    from mutransfer import demo

    if name == "default":
        folder = runs_root / f"{NAME}-seed{seed}"
        grid = demo.settings_for(vary="depth", seeds=[seed])
        flags = ""
    elif name == "long_qk_norm":
        folder = runs_root / f"{NAME}-{name}-seed{seed}"
        grid = demo.settings_for(
            vary="depth", steps=400, log2_lrs=QK_NORM_GRID, qk_norm=True, seeds=[seed]
        )
        flags = f" --steps 400 --lrs={','.join(f'{x:g}' for x in QK_NORM_GRID)} --qk-norm"
    else:
        raise ValueError(f"no seed check defined for setting {name!r}")
    command = f"mutransfer demo --vary depth{flags} --seeds {seed} --out {_rel(folder)}"
    return folder, grid, command


FIGURES = {
    "default": "lr_transfer_depth.png",
    "long": "lr_transfer_depth_long.png",
    "warmup": "lr_transfer_depth_warmup.png",
    "long_qk_norm": "lr_transfer_depth_long_qk_norm.png",
    "warmup_qk_norm": "lr_transfer_depth_warmup_qk_norm.png",
}
TITLES = {
    "default": "the depth demo's setting (`mutransfer demo --vary depth`)",
    "long": "twice the steps, half-octave LR grid",
    "warmup": "twice the steps with 10 % LR warmup, half-octave LR grid",
    "long_qk_norm": "twice the steps, QK-norm, half-octave LR grid",
    "warmup_qk_norm": "twice the steps with 10 % LR warmup, QK-norm, half-octave LR grid",
}


def reading(summary: dict[str, Any]) -> list[str]:
    """What the numbers say, in sentences generated from them (never hand-edited)."""
    sweeps, transfer = summary["sweeps"], summary["transfer"]
    depths = summary["sizes"]
    lines = []
    for rules in summary["rules"]:
        s, t = sweeps[rules], transfer[rules]
        regret = t["regret_percent"]
        lines.append(
            f"{_name(rules)}: best log2 LR {'/'.join(fmt_lr(x) for x in s['best_log2_lr'])} at "
            f"depths {'/'.join(map(str, depths))} (drift {_octaves(s['drift_octaves'])}); "
            f"depth {depths[-1]} at depth {depths[0]}'s best LR: "
            + ("diverged" if regret is None else f"regret {regret:.2f} %")
            + f"; best loss {fmt_loss(s['best_loss'][0])} → {fmt_loss(s['best_loss'][-1])}."
        )
    cp, mup = sweeps.get("completep"), sweeps.get("mup")
    if cp and mup and cp["drift_octaves"] is not None and mup["drift_octaves"] is not None:
        holds = cp["drift_octaves"] <= 1 and mup["drift_octaves"] > cp["drift_octaves"]
        lines.append(
            f"Claim 'CompleteP's optimum moves <= 1 octave across {depths[-1] // depths[0]}× "
            f"depth, µP's more': {'holds' if holds else 'does NOT hold'} on this run "
            f"(CompleteP {_octaves(cp['drift_octaves'])}, µP {_octaves(mup['drift_octaves'])})."
        )
    return lines


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _name(rules: str) -> str:
    from mutransfer.demo.analysis import display_name

    return display_name(rules)


def _octaves(x: float | None) -> str:
    return "—" if x is None else f"{x:g} octave{'' if x == 1 else 's'}"


def claim_holds(summary: dict[str, Any]) -> bool | None:
    """'CompleteP's optimum moves <= 1 octave, µP's more' (None if not measurable)."""
    cp, mup = summary["sweeps"].get("completep"), summary["sweeps"].get("mup")
    if not cp or not mup or cp["drift_octaves"] is None or mup["drift_octaves"] is None:
        return None
    return bool(cp["drift_octaves"] <= 1 and mup["drift_octaves"] > cp["drift_octaves"])


def overview(payload: dict[str, Any]) -> str:
    """One row per setting and seed: the drifts, regrets and the verdict side by side."""
    from common import markdown_table

    rows = []
    for name, result in payload["settings"].items():
        for summary in [result["summary"], *result.get("seed_checks", ())]:
            sweeps, transfer = summary["sweeps"], summary["transfer"]
            verdict = claim_holds(summary)

            def drift(rules: str, sweeps: dict[str, Any] = sweeps) -> str:
                fitted = sweeps[rules].get("fitted_drift_octaves")
                grid = fmt_lr(sweeps[rules]["drift_octaves"])
                return grid if fitted is None else f"{grid} ({fitted:.2f})"

            def regret(rules: str, transfer: dict[str, Any] = transfer) -> str:
                value = transfer[rules]["regret_percent"]
                return "diverged" if value is None else f"{value:.2f} %"

            def deeper(rules: str, sweeps: dict[str, Any] = sweeps) -> str:
                best = sweeps[rules]["best_loss"]
                return f"{fmt_loss(best[0])} → {fmt_loss(best[-1])}"

            rows.append(
                [
                    TITLES[name],
                    ",".join(map(str, summary["seeds"])),
                    "/".join(map(str, summary["sizes"])),
                    drift("mup"),
                    drift("completep"),
                    regret("mup"),
                    regret("completep"),
                    deeper("mup"),
                    deeper("completep"),
                    "—" if verdict is None else ("holds" if verdict else "fails"),
                ]
            )
    return markdown_table(
        [
            "setting",
            "seed",
            "depths",
            "µP drift (fitted)",
            "CompleteP drift (fitted)",
            "µP regret",
            "CompleteP regret",
            "µP best loss, shallowest → deepest",
            "CompleteP best loss, shallowest → deepest",
            "CompleteP ≤ 1 octave, µP more",
        ],
        rows,
    )


def render(payload: dict[str, Any]) -> str:

    first = next(iter(payload["settings"].values()))["summary"]
    sizes = first["sizes"]
    out = [
        "## Depth transfer at a glance (`bench/depth_transfer.py`)",
        "",
        f"Byte-level GPT at width {first['config']['width']} on {first['data']['name']}, "
        f"{sizes[0]} → {sizes[-1]} blocks ({sizes[-1] // sizes[0]}×), the shallowest model as "
        "the proxy. Drift = max − min of the best log2 LR across depths in octaves (in brackets: "
        "of the optima refined by a parabola through the best grid point and its neighbours); "
        "regret = loss of the deepest model at the shallowest model's best LR over its own "
        "best, in %. The sections below give each setting's grid, figure and provenance.",
        "",
        overview(payload),
        "",
    ]
    for name, result in payload["settings"].items():
        summary = result["summary"]
        section = demo_results_section(
            summary,
            seed_checks=result.get("seed_checks", ()),
            figure=result["figure"],
            heading=(
                f"Depth transfer: {' vs '.join(map(_name, summary['rules']))}, "
                f"{summary['sizes'][0]} → {summary['sizes'][-1]} blocks; {TITLES[name]}"
            ),
        )
        head, _, tail = section.partition("How it was produced:")
        reading_md = ["Reading (generated from the numbers above):", ""]
        reading_md += ["- " + line for line in result["reading"]]
        out.append(
            head.replace("## Depth transfer:", "### Depth transfer:", 1)
            + "\n".join(reading_md)
            + "\n\nHow it was produced:"
            + tail
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__.splitlines()[0])
    add_run_cache_options(
        parser,
        "parent of the demo outputs and run caches, one folder per setting (default: "
        "runs/bench, i.e. runs/bench/depth_transfer[-SETTING]; --quick uses a temporary folder)",
    )
    args = parser.parse_args(argv)
    if args.rerender:
        return rerender(Path(args.out_dir))
    torch.set_num_threads(args.threads)
    from mutransfer import demo
    from mutransfer.demo import report

    scratch = tempfile.TemporaryDirectory(prefix=NAME) if args.quick else None
    runs_root = args.runs_dir or (Path(scratch.name) if scratch else ROOT / "runs" / "bench")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name, grid in settings(args.quick).items():
        folder = runs_root / (NAME if name == "default" else f"{NAME}-{name}")
        summary = demo.run_demo(
            folder,
            workers=1 if args.quick else args.workers,
            settings=grid,
            progress=not args.quick,
            echo=print,
            command=command_line(argv),
        )
        figure = place_figure(folder / report.DEPTH_FIGURE_NAME, FIGURES[name], out_dir)
        results[name] = {"figure": figure, "summary": summary, "reading": reading(summary)}
    for name, seeds in {} if args.quick else SEED_CHECKS.items():
        checks = []
        for seed in seeds:
            folder, grid, command = seed_check(name, seed, runs_root)
            checks.append(
                demo.run_demo(
                    folder,
                    workers=args.workers,
                    settings=grid,
                    progress=True,
                    echo=print,
                    command=command,  # what it is: the CLI's depth demo with another seed
                )
            )
        results[name]["seed_checks"] = checks
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "command": command_line(argv),
        "quick": args.quick,
        "machine": machine_info(),
        "settings": results,
    }
    json_path, md_path = write_results(NAME, payload, render(payload), out_dir)
    print(f"\nwrote {json_path} and {md_path}")
    if scratch is not None:
        scratch.cleanup()
    return 0


def rerender(out_dir: Path) -> int:
    """Regenerate the readings and the markdown of a recorded run."""
    payload = read_results(NAME, out_dir)
    for result in payload["settings"].values():
        result["reading"] = reading(result["summary"])
    json_path, md_path = write_results(NAME, payload, render(payload), out_dir)
    print(f"rewrote {json_path} and {md_path} from the recorded runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
