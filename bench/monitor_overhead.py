"""What watching µP during training costs: the layer monitor's samples against the step time.

``mutransfer train --monitor-every N`` copies the parameters before every N-th optimizer step
and then runs one recorded forward pass on a small fixed batch (``training/monitor.py``). Its
cost per sample, C, is paid once per N steps, so the overhead is C / (N·S) with S the time of a
training step. Both are timed here on the same model, round-robin in one process:

- ``step``: one training step (forward, backward, AdamW over the plan's groups, zero_grad);
- ``sample``: the monitor's snapshot + probe pass + record (what a sampled step adds);
- end to end: blocks of N training steps with the monitor on, and the same blocks with it
  off, on two identical copies of the model, interleaved (the ratio of the two is the
  overhead as a user sees it, noise included).

    .venv/bin/python bench/monitor_overhead.py            # full (a few minutes on 2 cores)
    .venv/bin/python bench/monitor_overhead.py --quick    # seconds, CI smoke
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import torch

import mutransfer
from common import (
    arg_parser,
    command_line,
    cpu_clock,
    interleave,
    machine_info,
    machine_line,
    markdown_table,
    paired_ratio,
    summarize,
    write_results,
)
from mutransfer.models import GPT, GPTConfig, gpt_parametrize_options
from mutransfer.training.monitor import LayerMonitor

NAME = "monitor_overhead"
GOAL = 0.01
"""Overhead the issue allows at the recommended cadence (1 %)."""


def build(cfg: GPTConfig, base_width: int) -> tuple[GPT, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT(cfg)
    plan = mutransfer.parametrize(
        model,
        lambda w: GPT(cfg.with_(width=w)),
        base_width=base_width,
        seed=0,
        **gpt_parametrize_options(cfg),
    )
    return model, torch.optim.AdamW(plan.param_groups(1e-3, weight_decay=0.1))


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, nargs="+", default=[10, 50, 100])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock, clock_name = cpu_clock(args.threads)
    if args.quick:
        cfg = GPTConfig(width=64, depth=2, n_heads=2, seq_len=32)
        batch, repeats, block_every, blocks = 4, 3, 5, 2
    else:
        cfg = GPTConfig(width=256, depth=4, n_heads=4, seq_len=128)
        batch, repeats, block_every, blocks = 8, 8, 20, 3
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len + 1), generator=g)
    x, y = tokens[:, :-1], tokens[:, 1:]
    probe = torch.randint(0, cfg.vocab_size, (4, cfg.seq_len), generator=g)
    folder = tempfile.mkdtemp(prefix="monitor-bench-")

    def trainer(model: GPT, opt: torch.optim.Optimizer, mon: LayerMonitor | None) -> Any:
        step = [0]

        def one() -> None:
            if mon is not None:
                mon.before_step(step[0])
            opt.zero_grad(set_to_none=True)
            model.loss(x, y).backward()
            opt.step()
            if mon is not None:
                mon.after_step(step[0], 1e-3)
            step[0] += 1

        return one

    model, opt = build(cfg, base_width=64)
    monitor = LayerMonitor(model, probe, every=1, out_dir=folder, warn=False)

    def sample() -> None:
        monitor.before_step(0)
        monitor.after_step(0, 1e-3)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = interleave(
            {"step": trainer(model, opt, None), "sample": sample},
            repeats=repeats,
            warmup=2,
            clock=clock,
        )
        # end to end: N steps with the monitor sampling once, against N steps without it
        on_model, on_opt = build(cfg, base_width=64)
        off_model, off_opt = build(cfg, base_width=64)
        on_monitor = LayerMonitor(on_model, probe, every=block_every, out_dir=folder, warn=False)
        on_step = trainer(on_model, on_opt, on_monitor)
        off_step = trainer(off_model, off_opt, None)

        def block(step: Callable[[], None]) -> Callable[[], None]:
            return lambda: [step() for _ in range(block_every)] and None

        ends = interleave(
            {"monitor on": block(on_step), "monitor off": block(off_step)},
            repeats=blocks,
            warmup=1,
            clock=clock,
        )

    step_s = summarize(parts["step"])["median"]
    sample_s = summarize(parts["sample"])["median"]
    predicted = {n: sample_s / (n * step_s) for n in args.every}
    measured = paired_ratio(ends["monitor on"], ends["monitor off"])
    n_params = sum(p.numel() for p in model.parameters())
    payload = {
        "command": command_line(),
        "machine": machine_info(),
        "quick": args.quick,
        "clock": clock_name,
        "model": f"GPT width {cfg.width}, depth {cfg.depth}, {n_params / 1e6:.1f} M parameters",
        "batch": f"{batch} × {cfg.seq_len} tokens; probe 4 × {cfg.seq_len}",
        "step_seconds": parts["step"],
        "sample_seconds": parts["sample"],
        "sample_in_steps": sample_s / step_s,
        "predicted_overhead": {str(n): v for n, v in predicted.items()},
        "end_to_end": {"every": block_every, "ratio": measured},
        "snapshot_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "goal": GOAL,
    }
    rows = [
        [f"monitor_every = {n}", f"{100 * v:.2f} %", "yes" if v <= GOAL else "no"]
        for n, v in predicted.items()
    ]
    markdown = "\n".join(
        [
            "## Watching µP during training: the layer monitor's cost",
            "",
            f"Model: {payload['model']}, batch {payload['batch']}. Clock: {clock_name}.",
            "",
            f"- one training step: {step_s * 1e3:.1f} ms (median of {len(parts['step'])}); "
            f"one sample (parameter copy + recorded probe pass): {sample_s * 1e3:.1f} ms = "
            f"{sample_s / step_s:.2f} steps",
            f"- end to end, {block_every} steps with one sample ÷ {block_every} steps without "
            f"(two copies of the model, interleaved, {blocks} rounds): median "
            f"{measured['median']:.4f} (quartiles {measured['q1']:.4f}–{measured['q3']:.4f})",
            f"- memory: the parameter copy held for one step, "
            f"{payload['snapshot_bytes'] / 2**20:.1f} MiB here (1 × the parameters)",
            "",
            markdown_table(["cadence", "overhead (sample ÷ N steps)", f"≤ {GOAL:.0%}"], rows),
            "",
            f"Machine: {machine_line(payload['machine'])}",
            f"Command: `{payload['command']}`",
        ]
    )
    write_results(NAME, payload, markdown, args.out_dir)
    print(markdown)


if __name__ == "__main__":
    main()
