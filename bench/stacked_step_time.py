"""Where a proxy step's time goes: per-run overhead against arithmetic, separate vs stacked.

The demo's GPT at width 32 (2 blocks, µP, AdamW, sequences of 64 bytes), one torch thread. For
each batch size, the thread CPU time of one training step of a separate run (``proxy.train``)
against one run's share of a stacked step of ``--pack`` runs (``train_stacked``, LRs 2^-11,
2^-10, ... × seeds 0 and 1; 16 by default: 8 LRs × 2 seeds). A
step's time is measured as the difference between a run of ``--steps`` steps and one of 2 steps
(so that building the models and the final evaluation cancel), best of ``--repeats``
interleaved repeats. At batch size 1 a step is nearly all per-step overhead (Python, dispatch,
the optimizer's per-tensor loop); the larger the batch, the larger the arithmetic stacking does
not change. Prints a table; records nothing.

    .venv/bin/python bench/stacked_step_time.py
    .venv/bin/python bench/stacked_step_time.py --width 256 --batch-sizes 16 --pack 4 --steps 8
    .venv/bin/python bench/stacked_step_time.py --device cuda     # on a GPU: wall time per step

On a GPU (``--device cuda``) a step is timed in wall time instead of thread CPU time (the
trainers read every step's loss, so each step ends synchronised with the device).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import common
from mutransfer.devices import resolve_device
from mutransfer.training.proxy import TrainConfig, load_source, train
from mutransfer.training.stacked import train_stacked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pack", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto...")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    clock = time.thread_time if device.type == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    source = load_source(TrainConfig())
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        grid = common.demo_proxy_grid(args.width, 1, batch_size=batch, eval_batches=1)
        grid = grid[: args.pack]

        def separate(steps: int, grid: list[TrainConfig] = grid) -> None:
            train(grid[min(5, len(grid) - 1)].with_(steps=steps), source=source, device=device)

        def stacked(steps: int, grid: list[TrainConfig] = grid) -> None:
            train_stacked([c.with_(steps=steps) for c in grid], source=source, device=device)

        separate(2), stacked(2)  # warm-up
        best = {"separate": float("inf"), "stacked": float("inf")}
        for _ in range(args.repeats):
            for name, fn, runs in (("separate", separate, 1), ("stacked", stacked, len(grid))):
                best[name] = min(best[name], _step_seconds(fn, args.steps, clock) / runs)
        print(f"width {args.width}, batch {batch}: done", flush=True)
        rows.append(
            [
                batch,
                f"{best['separate'] * 1e3:.2f}",
                f"{best['stacked'] * 1e3:.2f}",
                f"{best['separate'] / best['stacked']:.2f}",
            ]
        )
    print(
        common.markdown_table(
            [
                "batch (× 64 bytes)",
                f"separate ms / step ({device})",
                f"stacked ({args.pack}) ms / step / run",
                "ratio",
            ],
            rows,
        )
    )
    print(f"\nCommand: `{common.command_line(argv)}`")
    print(common.machine_line(common.machine_info()))
    return 0


def _step_seconds(fn: Callable[[int], None], steps: int, clock: Callable[[], float]) -> float:
    """Seconds of one step by ``clock``: (``steps`` steps − 2 steps) / (``steps`` − 2)."""
    start = clock()
    fn(2)
    short = clock() - start
    start = clock()
    fn(steps)
    return (clock() - start - short) / (steps - 2)


if __name__ == "__main__":
    raise SystemExit(main())
