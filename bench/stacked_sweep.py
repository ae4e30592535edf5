"""A sweep's trials one at a time against the same sweep stacked (``sweep.stack``).

The same grid through the whole sweep engine — Optuna's journal storage, worker processes,
heartbeats, the run store, the pruner's reports — twice from an empty folder: once with one
trial per worker at a time, once with each worker training its share of the grid as one
stacked pack. The grid is the demo's proxy (byte-level GPT, 2 blocks, µP with base width 32,
AdamW, sequences of 64 bytes of Shakespeare) at width 32: 8 LRs (2^-11 … 2^-4) × 2 seeds per
trial, 100 steps, 2 single-thread workers; at the demo's batch of 16 sequences, where a CPU
step is mostly arithmetic, and at 4, where its fixed overhead (what stacking removes) weighs
more. The wall time covers everything the command does
(starting the workers, loading the data, building the models, training, the final
evaluation); CPU time is that of the worker processes. Each trial's value is compared between
the two ways (float32 rounding; a run at the edge of stability amplifies it).

    .venv/bin/python bench/stacked_sweep.py                 # the recorded numbers (batch 16, 4)
    .venv/bin/python bench/stacked_sweep.py --quick         # seconds (smoke)
    .venv/bin/python bench/stacked_sweep.py --device cuda   # the workers train on the GPU

Writes ``bench/results/stacked_sweep.json`` and ``.md`` (``stacked_sweep_cuda.*`` on a GPU).
"""

from __future__ import annotations

import math
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

import common
from mutransfer.devices import resolve_device
from mutransfer.sweep import Sweep
from mutransfer.sweep.trials import point_of

NAME = "stacked_sweep"
TITLE = "Stacked sweeps: a sweep's trials packed"


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children (the sweep's worker processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sweep(
    folder: Path, *, stacked: bool, options: dict[str, Any], workers: int, device: str = "cpu"
) -> dict[str, Any]:
    """One sweep from an empty folder; its wall and worker CPU time, and each trial's value."""
    sweep = Sweep(
        "bench",
        storage=str(folder / "bench.journal"),
        stack=stacked,
        objective="builtin",
        **options,
    )
    load = os.getloadavg()[0]
    cpu = children_cpu_seconds()
    start = time.perf_counter()
    results = sweep.run(workers=workers, processes=True, log=None, device=device)
    wall = time.perf_counter() - start
    cpu = children_cpu_seconds() - cpu
    values = {}
    states = {}
    for width, study in sweep.studies().items():
        for trial in study.get_trials():
            key = f"w{width} " + " ".join(f"{k}={v:g}" for k, v in sorted(point_of(trial).items()))
            values[key] = trial.value
            states[key] = trial.state.name
    best = results.best(options["widths"][0])
    return {
        "stacked": stacked,
        "wall_seconds": round(wall, 2),
        "worker_cpu_seconds": round(cpu, 2),
        "load_average_before": round(load, 2),
        "values": values,
        "states": states,
        "best": None if best is None else {"params": best.params, "value": best.value},
    }


def main(argv: list[str] | None = None) -> int:
    parser = common.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per trial (0, 1, ...)")
    parser.add_argument(
        "--batch-sizes",
        default="16,4",
        help="sequences per batch, one grid each (default 16,4: the demo's, and a small one "
        "where a step is mostly overhead)",
    )
    parser.add_argument(
        "--order",
        default="AB",
        help="A = one trial at a time, B = stacked; e.g. ABBA to cancel a drift in the load",
    )
    parser.add_argument("--device", default="cpu", help="where the workers train: cpu, cuda...")
    args = parser.parse_args(argv)
    args.device = str(resolve_device(args.device))  # "auto" → what this machine has
    torch.set_num_threads(args.threads)  # this process only waits; each worker has one thread
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if set(args.order) - {"A", "B"} or not {"A", "B"} <= set(args.order):
        parser.error(f"--order takes A and B (each at least once), got {args.order!r}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    grids = []
    for batch_size in [4] if args.quick else batch_sizes:
        grids.append(measure(args, batch_size))
    payload = {
        "quick": args.quick,
        "command": common.command_line(argv),
        "machine": common.machine_info(),
        "workers": args.workers,
        "order": args.order,
        "grids": grids,
    }
    if args.device != "cpu":
        payload["device"] = args.device
    name = NAME if args.device == "cpu" else f"{NAME}_{torch.device(args.device).type}"
    common.write_results(name, payload, markdown(payload), args.out_dir)
    print(markdown(payload))
    return 0


def measure(args: Any, batch_size: int) -> dict[str, Any]:
    """Both ways on one grid (in ``args.order``), and how their trials compare."""
    lrs = {"log2": [-11, -4]}
    train: dict[str, Any] = {"model": "gpt", "depth": 2, "n_heads": 4, "base_width": 32}
    train.update(seq_len=64, batch_size=batch_size, steps=args.steps, data="shakespeare")
    width, seeds = args.width, list(range(args.seeds))
    if args.quick:
        lrs = {"log2": [-8, -6]}
        train.update(depth=1, n_heads=2, base_width=16, seq_len=16, steps=10)
        train.update(data="pydoc", eval_batches=1, eval_batch_size=4)
        width, seeds = 16, [0]
    options = {"widths": [width], "space": {"lr": lrs}, "seeds": seeds, "train": train}
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    for letter in args.order:
        with tempfile.TemporaryDirectory() as folder:
            stacked = letter == "B"
            run = run_sweep(
                Path(folder),
                stacked=stacked,
                options=options,
                workers=args.workers,
                device=args.device,
            )
        runs[letter].append(run)
        way = "stacked" if stacked else "one trial at a time"
        print(
            f"batch {batch_size}, {way}: {run['wall_seconds']:.1f} s wall, "
            f"{run['worker_cpu_seconds']:.1f} s worker CPU (load average before: "
            f"{run['load_average_before']})",
            flush=True,
        )
    first_a, first_b = runs["A"][0], runs["B"][0]
    rel = [
        abs(first_b["values"][k] - v) / abs(v)
        for k, v in first_a["values"].items()
        if v is not None and first_b["values"][k] is not None
    ]
    best_wall = {k: min(r["wall_seconds"] for r in v) for k, v in runs.items()}
    best_cpu = {k: min(r["worker_cpu_seconds"] for r in v) for k, v in runs.items()}
    return {
        "grid": {"width": width, "lr": lrs, "seeds": seeds, "train": train},
        "runs": runs,
        "speedup_wall": round(best_wall["A"] / best_wall["B"], 3),
        "speedup_cpu": round(best_cpu["A"] / best_cpu["B"], 3),
        "trials": len(first_a["states"]),
        "same_states": first_a["states"] == first_b["states"],
        "states": sorted(set(first_a["states"].values()) | set(first_b["states"].values())),
        "max_rel_value_difference": max(rel) if rel else None,
        "best": {"A": first_a["best"], "B": first_b["best"]},
    }


def _lr(best: dict[str, Any] | None) -> str:
    if best is None:
        return "none"
    return f"2^{math.log2(best['params']['lr']):g} ({best['value']:.4f})"


def markdown(p: dict[str, Any]) -> str:
    first = p["grids"][0]["grid"]
    lr = first["lr"]["log2"]
    rows = []
    for g in p["grids"]:
        for letter, way in (("A", "one trial at a time"), ("B", "stacked (`--stack`)")):
            runs = g["runs"][letter]
            diff = g["max_rel_value_difference"]
            rows.append(
                [
                    g["grid"]["train"]["batch_size"],
                    way,
                    ", ".join(f"{r['wall_seconds']:.1f}" for r in runs),
                    ", ".join(f"{r['worker_cpu_seconds']:.1f}" for r in runs),
                    "" if letter == "A" else f"{g['speedup_wall']:.2f}",
                    "" if letter == "A" else f"{g['speedup_cpu']:.2f}",
                    _lr(g["best"][letter]),
                    "" if letter == "A" or diff is None else f"{diff:.1e}",
                    ", ".join(f"{r['load_average_before']:.1f}" for r in runs),
                ]
            )
    same = all(g["same_states"] for g in p["grids"])
    lines = [
        f"## {TITLE}",
        "",
        f"The same sweep through the whole engine (journal storage, {p['workers']} worker "
        "processes with one thread each, heartbeats, run store, the pruner's reports) from an "
        f"empty folder, one trial at a time and with `--stack`: the reference GPT (2 blocks, "
        f"µP, AdamW) at width {first['width']}, LR 2^{lr[0]} … 2^{lr[1]} × "
        f"{len(first['seeds'])} seed(s) per trial ({p['grids'][0]['trials']} trials), "
        f"{first['train']['steps']} steps of `batch` × {first['train']['seq_len']} bytes. Wall "
        "time covers everything the command does (worker start-up and data loading included); "
        "CPU time is the workers'. `×`: the stacked sweep's speed-up (best of each way). "
        "`max rel Δ`: the largest relative difference of a trial's value between the ways "
        "(float32 rounding, amplified by the runs near the edge of stability). `load avg`: the "
        "machine's 1-minute load average before the run (above the core count, other jobs "
        "shared the cores).",
        "",
        common.markdown_table(
            [
                "batch",
                "way",
                "wall s",
                "worker CPU s",
                "× wall",
                "× CPU",
                "best LR (loss)",
                "max rel Δ",
                "load avg",
            ],
            rows,
        ),
        "",
        f"Every trial ended the same way both ways (state by state): {'yes' if same else 'no'}.",
        "",
        f"Command: `{p['command']}`; {common.machine_line(p['machine'])}"
        + (f"; the workers trained on {p['device']}" if p.get("device") else ""),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
