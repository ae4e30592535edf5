"""Stacked proxy runs on an accelerator: still the separate runs, and what they cost there.

The CPU tests (``tests/test_stacked.py``) pin a stacked run to its separate run on the CPU; this
is the same check on another device, for a session that has one (``bench/stacked_gpu.sh`` runs
it with the throughput benchmarks in one call). On ``--device``:

- **same runs**: the demo's GPT at width 32 (µP, batch 16 × 64 bytes), 8 LRs × 2 seeds, 50
  steps, AdamW and SGD: every stacked run's per-step losses against its separate run's on the
  same device (the issue's bound: 1e-5 relative), and one separate run against the same run on
  the CPU (the device's own rounding, for scale);
- **step time**: wall time per step of a separate run and of one run's share of the pack of 16
  (every step reads its loss, so each ends synchronised with the device).

Prints a Markdown report; exits 1 if a stacked run leaves the bound.

    python3 bench/stacked_device_check.py --device cuda
    .venv/bin/python bench/stacked_device_check.py --device cpu --steps 12   # the same here
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch

import common
from mutransfer.data import ArrayDataset, TextCorpus
from mutransfer.devices import resolve_device
from mutransfer.training.proxy import TrainConfig, TrainResult, load_source, train
from mutransfer.training.stacked import train_stacked

BOUND = 1e-5


def grid(optimizer: str, steps: int) -> list[TrainConfig]:
    shift = 0 if optimizer != "sgd" else 6  # SGD's LRs are larger
    lrs = [e + shift for e in range(-11, -3)]
    return common.demo_proxy_grid(32, steps, lrs, optimizer=optimizer, eval_batches=1)


def max_rel(a: Sequence[float], b: Sequence[float]) -> float:
    n = min(len(a), len(b))
    return max((abs(x - y) / abs(y) for x, y in zip(a[:n], b[:n], strict=True)), default=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    source = load_source(TrainConfig())
    lines = [f"# Stacked proxy runs on {device}", ""]
    worst = 0.0
    rows = []
    for optimizer in ("adamw", "sgd"):
        configs = grid(optimizer, args.steps)
        stacked = train_stacked(configs, source=source, device=device)
        separate = [train(c, source=source, device=device) for c in configs]
        finished = [
            (s, p) for s, p in zip(stacked, separate, strict=True) if not (s.diverged or p.diverged)
        ]
        diffs = [max_rel(s.losses, p.losses) for s, p in finished]
        worst = max([worst, *diffs])
        on_cpu = train(configs[5], source=source)
        rows.append(
            [
                optimizer,
                f"{len(finished)} of {len(configs)}",
                f"{max(diffs):.1e}" if diffs else "—",
                f"{sum(s.diverged == p.diverged for s, p in zip(stacked, separate, strict=True))}"
                f" of {len(configs)}",
                f"{max_rel(separate[5].losses, on_cpu.losses):.1e}",
            ]
        )
    lines += [
        common.markdown_table(
            [
                "optimizer",
                "runs compared (neither diverged)",
                f"max rel Δ loss, {args.steps} steps, stacked vs separate",
                "same divergence verdict",
                "separate run vs the same run on the CPU",
            ],
            rows,
        ),
        "",
    ]
    timing = time_steps(device, source)
    lines += [timing, "", common.machine_line(common.machine_info())]
    if device.type == "cuda":
        lines.append(f"Device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    verdict = "within" if worst <= BOUND else "OUTSIDE"
    lines += ["", f"Stacked runs {verdict} the bound of {BOUND:g} (worst {worst:.1e})."]
    print("\n".join(lines))
    return 0 if worst <= BOUND else 1


def time_steps(device: torch.device, source: TextCorpus | ArrayDataset) -> str:
    """Wall ms per step: a separate run, and a run's share of the pack (steps 22 − steps 2)."""
    configs = grid("adamw", 2)

    def seconds(fn: Callable[[int], list[TrainResult]], steps: int) -> float:
        start = time.perf_counter()
        fn(steps)
        return time.perf_counter() - start

    def separate(steps: int) -> list[TrainResult]:
        return [train(configs[5].with_(steps=steps), source=source, device=device)]

    def stacked(steps: int) -> list[TrainResult]:
        return train_stacked([c.with_(steps=steps) for c in configs], source=source, device=device)

    separate(2), stacked(2)  # warm-up: first kernels, allocator
    best = {"separate": float("inf"), "stacked": float("inf")}
    for _ in range(2):
        for name, fn, runs in (("separate", separate, 1), ("stacked", stacked, len(configs))):
            per_step = (seconds(fn, 22) - seconds(fn, 2)) / 20 / runs
            best[name] = min(best[name], per_step)
    return common.markdown_table(
        [
            "batch 16 × 64 bytes, width 32",
            "separate ms / step",
            "stacked (16) ms / step / run",
            "×",
        ],
        [
            [
                str(device),
                f"{best['separate'] * 1e3:.2f}",
                f"{best['stacked'] * 1e3:.2f}",
                f"{best['separate'] / best['stacked']:.2f}",
            ]
        ],
    )


if __name__ == "__main__":
    raise SystemExit(main())
