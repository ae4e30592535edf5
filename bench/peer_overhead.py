"""Per-step cost of each µP library against plain PyTorch, on the same GPT, side by side.

The same reference GPT (``mutransfer.models.GPT``) trained by a plain ``AdamW(model.parameters())``
is the baseline. Against it, in the same process, round-robin (``common.interleave``):

- ``plain-copy``: an identical second plain model — the A/A control, its ratio is the noise floor;
- ``mutransfer``: the model as written, ``parametrize`` (absorbed mode, the default) and
  ``AdamW(plan.param_groups(...))``;
- ``mup``: the GPT written for microsoft/mup (``MuReadout``, hand-written 1/d attention) with
  ``MuAdamW`` (``bench/peers/mup_gpt.py``);
- ``unit-scaling``: the GPT from unit-scaling's u-µP ops with ``unit_scaling.optim.AdamW``
  (``bench/peers/unit_gpt.py``): its cost includes its unit-scaled ops (custom autograd
  functions that scale forward and backward separately), because that is what using it costs.

For each AdamW implementation (``foreach=True`` and ``fused=True``, the fast ones), the full
training step (forward, backward, ``step``, ``zero_grad``) and ``optimizer.step()`` alone are
timed. Ratios are medians of per-round ratios; the clock is this thread's CPU time (one torch
thread), so other processes on the machine do not count.

    .venv/bin/python bench/peer_overhead.py            # full (a few minutes on 2 cores)
    .venv/bin/python bench/peer_overhead.py --quick    # seconds, CI smoke
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

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
from peers import INSTALL_HINT, available

NAME = "peer_overhead"
VARIANTS = ("plain", "plain-copy", "mutransfer", "mup", "unit-scaling")
LIBRARY = {"mup": "mup", "unit-scaling": "unit-scaling"}
IMPLS: dict[str, dict[str, Any]] = {"foreach": {"foreach": True}, "fused": {"fused": True}}
LR = 1e-3


@dataclass(frozen=True)
class Workload:
    description: str
    width: int
    base_width: int
    depth: int
    n_heads: int
    batch: int
    seq: int
    repeats_step: int
    repeats_opt: int
    number_opt: int

    def cfg(self) -> GPTConfig:
        return GPTConfig(width=self.width, depth=self.depth, n_heads=self.n_heads, seq_len=self.seq)


def workload(quick: bool) -> Workload:
    if quick:
        return Workload("GPT depth 2, width 64, 4 heads, batch 2×16", 64, 32, 2, 4, 2, 16, 3, 3, 2)
    return Workload("GPT depth 6, width 512, 8 heads, batch 4×64", 512, 128, 6, 8, 4, 64, 12, 20, 3)


def build(work: Workload, variant: str, impl: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Model and optimizer of one variant, the way a user of that library writes them."""
    cfg = work.cfg()
    kwargs = {"weight_decay": 0.0, **IMPLS[impl]}
    torch.manual_seed(0)
    if variant.startswith("plain"):
        model: nn.Module = GPT(cfg)
        return model, torch.optim.AdamW(model.parameters(), lr=LR, **kwargs)
    if variant == "mutransfer":
        model = GPT(cfg)
        with torch.device("meta"):
            base = GPT(cfg.with_(width=work.base_width))
        plan = mutransfer.parametrize(model, base, seed=0, **gpt_parametrize_options(cfg))
        return model, torch.optim.AdamW(plan.param_groups(LR), lr=LR, **kwargs)
    if variant == "mup":
        from peers import mup_gpt

        model = mup_gpt.build(cfg, work.base_width, 0)
        return model, mup_gpt.optimizer(model, LR, **kwargs)
    from peers import unit_gpt

    model = unit_gpt.build(cfg, 0)
    return model, unit_gpt.optimizer(model, LR, **kwargs)


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Each model's own training loss (unit-scaling's is its unit-scaled cross entropy)."""
    return model.loss(*batch)  # type: ignore[operator]


def measure(
    work: Workload, impl: str, variants: list[str], clock: Callable[[], float]
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (work.batch, work.seq + 1), generator=g)
    batch = (tokens[:, :-1], tokens[:, 1:])
    built = {v: build(work, v, impl) for v in variants}

    def train_step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        opt.step()

    steps = {v: (lambda m=m, o=o: train_step(m, o)) for v, (m, o) in built.items()}
    step_samples = interleave(steps, repeats=work.repeats_step, warmup=2, clock=clock)
    for model, opt in built.values():
        opt.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
    opt_samples = interleave(
        {v: o.step for v, (_, o) in built.items()},
        repeats=work.repeats_opt,
        warmup=2,
        number=work.number_opt,
        clock=clock,
    )
    result: dict[str, Any] = {
        "param_groups": {v: len(o.param_groups) for v, (_, o) in built.items()},
        "parameters": {v: sum(p.numel() for p in m.parameters()) for v, (m, _) in built.items()},
    }
    for what, samples in (("step", step_samples), ("opt_step", opt_samples)):
        result[what] = {
            "seconds": {v: summarize(xs) for v, xs in samples.items()},
            "ratio_vs_plain": {
                v: paired_ratio(samples[v], samples["plain"]) for v in variants if v != "plain"
            },
        }
    del built, steps
    gc.collect()
    return result


def fused_available() -> str | None:
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.ones(4)
    try:
        torch.optim.AdamW([p], lr=LR, fused=True).step()
    except (RuntimeError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(args.threads)
    clock, clock_name = cpu_clock(args.threads)
    versions = available()
    missing = {
        v: f"{LIBRARY[v]} not installed ({INSTALL_HINT[LIBRARY[v]]})"
        for v in VARIANTS
        if v in LIBRARY and versions.get(LIBRARY[v]) is None
    }
    variants = [v for v in VARIANTS if v not in missing]
    work = workload(args.quick)
    fused_error = fused_available()
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "command": command_line(argv),
        "quick": args.quick,
        "machine": machine_info(),
        "versions": {"mutransfer": mutransfer.__version__, **versions},
        "clock": clock_name,
        "workload": asdict(work),
        "not_installed": missing,
        "impls": {},
    }
    for impl in IMPLS:
        if impl == "fused" and fused_error is not None:
            payload["impls"][impl] = {"skipped": fused_error}
            continue
        print(f"[{NAME}] {impl} ...", flush=True)
        payload["impls"][impl] = measure(work, impl, variants, clock)
    payload["reading"] = reading(payload)
    json_path, md_path = write_results(NAME, payload, render(payload), args.out_dir)
    print(render(payload))
    print(f"\nwrote {json_path} and {md_path}")
    return 0


def _ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.3f} [{r['q1']:.3f}, {r['q3']:.3f}]"


def render(payload: dict[str, Any]) -> str:
    rows = []
    for impl, res in payload["impls"].items():
        if "skipped" in res:
            rows.append([impl, "skipped", "", *([res["skipped"]] * (len(VARIANTS) - 1))])
            continue
        for what, label in (("step", "fwd+bwd+step"), ("opt_step", "optimizer.step")):
            r = res[what]
            row = [impl, label, f"{r['seconds']['plain']['median'] * 1e3:.2f}"]
            for v in VARIANTS[1:]:
                row.append(
                    "not installed"
                    if v in payload["not_installed"]
                    else _ratio(r["ratio_vs_plain"][v])
                )
            rows.append(row)
    table = markdown_table(
        ["AdamW", "timed", "plain ms", *(f"{v} ÷ plain" for v in VARIANTS[1:])], rows
    )
    first = next((r for r in payload["impls"].values() if "param_groups" in r), None)
    facts = ""
    if first is not None:
        facts = markdown_table(
            ["", *VARIANTS],
            [
                ["parameter groups", *(str(first["param_groups"].get(v, "—")) for v in VARIANTS)],
                [
                    "parameters",
                    *(
                        f"{first['parameters'][v] / 1e6:.2f} M" if v in first["parameters"] else "—"
                        for v in VARIANTS
                    ),
                ],
            ],
        )
    w = payload["workload"]
    return "\n\n".join(
        [
            "## Per-step overhead against plain PyTorch, per library",
            f"Command: `{payload['command']}`  \nMachine: {machine_line(payload['machine'])}  \n"
            + "Versions: "
            + ", ".join(f"{k} {v or 'not installed'}" for k, v in payload["versions"].items()),
            f"Model: {w['description']}, base width {w['base_width']} for the µP variants. "
            "`plain` = the reference GPT with `AdamW(model.parameters())`; `plain-copy` = an "
            "identical second copy (A/A control: the noise floor); `mutransfer` = the same "
            "model parametrized (absorbed mode) with `AdamW(plan.param_groups(lr))`; `mup` = the "
            "GPT with `MuReadout` and `MuAdamW`; `unit-scaling` = the GPT from unit-scaling's "
            "u-µP ops with `unit_scaling.optim.AdamW`. Each optimizer gets the same "
            "`foreach`/`fused` flag. Medians of per-round ratios, quartiles in brackets; clock: "
            f"{payload['clock']}.",
            table,
            facts,
            payload["reading"],
        ]
    )


def reading(payload: dict[str, Any]) -> str:
    lines = ["Reading (generated from the numbers above):", ""]
    for impl, res in payload["impls"].items():
        if "skipped" in res:
            lines.append(f"- {impl}: not available here ({res['skipped']}).")
            continue
        for what, label in (("step", "full step"), ("opt_step", "`optimizer.step()`")):
            r = res[what]["ratio_vs_plain"]
            aa = abs(r["plain-copy"]["median"] - 1)
            parts = []
            for v in VARIANTS[2:]:
                if v not in r:
                    continue
                x = r[v]["median"]
                tag = (
                    "within noise"
                    if abs(x - 1) <= max(aa, 0.01)
                    else f"{'+' if x > 1 else '−'}{abs(x - 1):.1%}"
                )
                parts.append(f"{v} {x:.3f} ({tag})")
            lines.append(f"- {impl}, {label}: " + "; ".join(parts) + f"; A/A noise {aa:.1%}.")
        ours = res["step"]["ratio_vs_plain"].get("mutransfer", {}).get("median")
        for peer in ("mup", "unit-scaling"):
            theirs = res["step"]["ratio_vs_plain"].get(peer, {}).get("median")
            if ours is None or theirs is None:
                continue
            noise = abs(res["step"]["ratio_vs_plain"]["plain-copy"]["median"] - 1)
            if ours > theirs + max(noise, 0.01):
                lines.append(
                    f"- {impl}: **mutransfer's full step is slower than {peer}'s** "
                    f"({ours:.3f} vs {theirs:.3f} of plain)."
                )
    groups = next((r["param_groups"] for r in payload["impls"].values() if "param_groups" in r), {})
    if groups.get("unit-scaling", 0) > 10:
        lines.append(
            f"- unit-scaling's optimizer makes one group per parameter ({groups['unit-scaling']} "
            "groups): `foreach`/`fused` then batch nothing across tensors."
        )
    for v, why in payload["not_installed"].items():
        lines.append(f"- {v}: {why}; not measured.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
