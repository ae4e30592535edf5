"""Per-step cost of mutransfer's parameter groups against a plain AdamW on the same model.

The claim under test (DESIGN.md, "the forward pass pays nothing" and "as few groups as
possible"): training a parametrized model costs the same per step as training it with
``AdamW(model.parameters())``. What could cost:

- more parameter groups: torch's optimizers loop over groups in Python and, with ``foreach``
  or ``fused``, launch one batch of kernels per group (and per ε/LR value);
- the extra ``param_names``/``lr_scale`` keys in each group;
- in explicit mode, forward hooks (one multiply on the readout's input, in Python).

Five variants of the same model, same batch, are timed round-robin in one process
(``common.interleave``): ``plain`` (default init, one group), ``plain-copy`` (an identical second
copy: the A/A control that shows the noise floor), ``mup-1group`` (the µP-initialised model with
a plain one-group AdamW: it separates what the µP *values* cost — different gradients, e.g. more
dead ReLUs — from what the *groups* cost), ``absorbed`` (mutransfer's default mode: multipliers
folded into init/LR/ε) and ``explicit`` (multipliers applied by hooks). For each
AdamW implementation available on this device — the per-tensor loop (torch's CPU default),
``foreach=True`` and ``fused=True`` — both the full training step (forward, backward,
``step``, ``zero_grad``) and ``optimizer.step()`` alone are timed.

    .venv/bin/python bench/step_overhead.py            # full (a few minutes on 2 cores)
    .venv/bin/python bench/step_overhead.py --quick    # seconds, CI smoke
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
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
from mutransfer.models import GPT, MLP, GPTConfig, gpt_parametrize_options

NAME = "step_overhead"
VARIANTS = ("plain", "plain-copy", "mup-1group", "absorbed", "explicit")
IMPLS: dict[str, dict[str, Any]] = {
    "for-loop": {"foreach": False, "fused": False},
    "foreach": {"foreach": True, "fused": False},
    "fused": {"fused": True},
}
LR, WEIGHT_DECAY, TARGET_RATIO = 1e-3, 0.1, 1.02


@dataclass(frozen=True)
class Workload:
    """One model to time: how to build it at any width, its batch, and the repeat counts."""

    name: str
    description: str
    width: int
    base_width: int
    batch: int
    repeats_step: int
    repeats_opt: int
    number_opt: int
    seq: int = 0
    depth: int = 0
    instances: int = 1
    """Copies of each variant, timed and averaged: a memory-bound optimizer step runs a few
    per cent faster or slower depending on where its tensors happen to sit in memory, fixed for
    the life of an instance, so one copy per variant mistakes placement for overhead."""

    def factory(self) -> Callable[[int], nn.Module]:
        if self.name == "mlp":
            return lambda w: MLP(width=w, depth=self.depth, in_features=784, num_classes=10)
        cfg = GPTConfig(width=self.width, depth=self.depth, n_heads=8, seq_len=self.seq)
        return lambda w: GPT(cfg.with_(width=w))

    def options(self) -> dict[str, Any]:
        if self.name == "gpt":
            cfg = GPTConfig(width=self.width, depth=self.depth, n_heads=8, seq_len=self.seq)
            return gpt_parametrize_options(cfg)
        return {}

    def batch_and_loss(self) -> tuple[Any, Callable[[nn.Module, Any], torch.Tensor]]:
        """A fixed random batch (Fashion-MNIST-shaped for the MLP, bytes for the GPT)."""
        g = torch.Generator().manual_seed(0)
        if self.name == "mlp":
            x = torch.rand(self.batch, 1, 28, 28, generator=g)
            y = torch.randint(0, 10, (self.batch,), generator=g)
            return (x, y), lambda m, b: F.cross_entropy(m(b[0]), b[1])
        tok = torch.randint(0, 256, (self.batch, self.seq + 1), generator=g)
        return (tok[:, :-1], tok[:, 1:]), lambda m, b: m.loss(b[0], b[1])


def workloads(quick: bool) -> list[Workload]:
    if quick:
        return [
            Workload("mlp", "MLP 784-256-256-10", 256, 64, 64, 3, 3, 2, depth=3, instances=2),
            Workload("gpt", "GPT depth 2, width 64, batch 2x16", 64, 32, 2, 3, 3, 2, 16, 2),
        ]
    return [
        Workload(
            "mlp",
            "MLP 784-1024-1024-10, batch 256",
            1024,
            128,
            256,
            20,
            30,
            10,
            depth=3,
            instances=4,
        ),
        Workload(
            "gpt", "GPT depth 6, width 512, 8 heads, batch 4x64", 512, 128, 4, 12, 20, 3, 64, 6
        ),
    ]


def fused_available() -> str | None:
    """None when ``AdamW(fused=True)`` runs here, else why not (the error message)."""
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.ones(4)
    try:
        torch.optim.AdamW([p], lr=LR, fused=True).step()
    except (RuntimeError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def build(work: Workload, variant: str, impl: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model and optimizer of one variant; same seed, same shapes for all."""
    torch.manual_seed(0)
    factory = work.factory()
    model = factory(work.width)
    if variant.startswith("plain"):
        groups: Any = model.parameters()
    else:
        mode: Literal["absorbed", "explicit"] = "explicit" if variant == "explicit" else "absorbed"
        plan = mutransfer.parametrize(
            model, factory, base_width=work.base_width, mode=mode, seed=0, **work.options()
        )
        groups = (
            model.parameters()
            if variant == "mup-1group"
            else plan.param_groups(LR, weight_decay=WEIGHT_DECAY)
        )
    opt = torch.optim.AdamW(groups, lr=LR, weight_decay=WEIGHT_DECAY, **IMPLS[impl])
    return model, opt


def train_step(
    model: nn.Module, opt: torch.optim.Optimizer, batch: Any, loss_fn: Callable[..., torch.Tensor]
) -> None:
    opt.zero_grad(set_to_none=True)
    loss_fn(model, batch).backward()
    opt.step()


def measure(work: Workload, impl: str, clock: Callable[[], float]) -> dict[str, Any]:
    """Full-step and optimizer-only timings of every variant for one AdamW implementation.

    Each variant has ``work.instances`` copies; a round's time for a variant is the mean over
    its copies, and ratios are taken within rounds.
    """
    batch, loss_fn = work.batch_and_loss()
    keys = [(v, i) for i in range(work.instances) for v in VARIANTS]
    built = {k: build(work, k[0], impl) for k in keys}
    steps = {
        f"{v}#{i}": (lambda m=m, o=o: train_step(m, o, batch, loss_fn))
        for (v, i), (m, o) in built.items()
    }
    step_samples = interleave(steps, repeats=work.repeats_step, warmup=2, clock=clock)
    for model, opt in built.values():  # gradients present for the optimizer-only timing
        opt.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
    opt_samples = interleave(
        {f"{v}#{i}": o.step for (v, i), (_, o) in built.items()},
        repeats=work.repeats_opt,
        warmup=2,
        number=work.number_opt,
        clock=clock,
    )
    first = {v: built[(v, 0)] for v in VARIANTS}
    result: dict[str, Any] = {
        "instances": work.instances,
        "param_groups": {v: len(o.param_groups) for v, (_, o) in first.items()},
        "hooks": {
            v: sum(len(mod._forward_pre_hooks) + len(mod._forward_hooks) for mod in m.modules())
            for v, (m, _) in first.items()
        },
        # exact zeros in the gradients the optimizer-only timing steps with (dead ReLUs...)
        "zero_grad_fraction": {v: _zero_fraction(m) for v, (m, _) in first.items()},
    }
    for what, raw in (("step", step_samples), ("opt_step", opt_samples)):
        per_instance = {k: summarize(xs)["median"] for k, xs in raw.items()}
        samples = {
            v: [
                sum(vals) / len(vals)
                for vals in zip(*(raw[f"{v}#{i}"] for i in range(work.instances)), strict=True)
            ]
            for v in VARIANTS
        }
        result[what] = {
            "seconds": {v: summarize(xs) for v, xs in samples.items()},
            "ratio_vs_plain": {v: paired_ratio(samples[v], samples["plain"]) for v in VARIANTS[1:]},
            # the fastest sample of each: the least disturbed by other processes on a shared CPU
            "ratio_of_minima": {v: min(samples[v]) / min(samples["plain"]) for v in VARIANTS[1:]},
            # the groups alone: same µP values, mutransfer's groups vs one group
            "ratio_vs_mup_1group": {
                v: paired_ratio(samples[v], samples["mup-1group"]) for v in ("absorbed", "explicit")
            },
            # how much identical copies differ (placement): max/min of their medians
            "instance_spread": {
                v: max(per_instance[f"{v}#{i}"] for i in range(work.instances))
                / min(per_instance[f"{v}#{i}"] for i in range(work.instances))
                for v in VARIANTS
            },
        }
    del built, steps
    gc.collect()
    return result


def _zero_fraction(model: nn.Module) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    zeros = sum(int((g == 0).sum()) for g in grads)
    return zeros / max(1, sum(g.numel() for g in grads))


def sqrt_zero_cost(clock: Callable[[], float], quick: bool) -> dict[str, Any]:
    """``torch.sqrt`` on 1M floats with and without 30 % exact zeros.

    Adam takes ``sqrt(exp_avg_sq)`` every step and ``exp_avg_sq`` is exactly zero wherever the
    gradient has always been zero; on some CPU builds that input is much slower. Measured here
    because it explains a value-dependent (not group-dependent) difference between variants.
    """
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(1_000_000, generator=g) + 0.5
    sparse = dense.clone()
    sparse[torch.rand(1_000_000, generator=g) < 0.3] = 0.0
    samples = interleave(
        {"no_zeros": lambda: dense.sqrt(), "zeros_30pct": lambda: sparse.sqrt()},
        repeats=3 if quick else 20,
        warmup=1,
        number=5,
        clock=clock,
    )
    out = {k: summarize(v)["median"] for k, v in samples.items()}
    return {"seconds": out, "ratio": out["zeros_30pct"] / out["no_zeros"]}


def group_cost(impl: str, quick: bool, clock: Callable[[], float]) -> dict[str, Any]:
    """The fixed cost of one more parameter group in ``optimizer.step()``, in seconds.

    Measured on tiny tensors, where the arithmetic is negligible and what remains is torch's
    per-group work (Python bookkeeping, tensor grouping, one kernel batch per group): 12 tensors
    of 64 elements in one group against the same in four groups of three, differenced within
    each round.
    """

    def tiny_params() -> list[nn.Parameter]:
        params = [nn.Parameter(torch.zeros(64)) for _ in range(12)]
        for p in params:
            p.grad = torch.ones(64)
        return params

    one = torch.optim.AdamW(tiny_params(), lr=LR, **IMPLS[impl])
    p4 = tiny_params()
    four = torch.optim.AdamW(
        [{"params": p4[i : i + 3], "lr": LR / (i + 1)} for i in range(0, 12, 3)],
        lr=LR,
        **IMPLS[impl],
    )
    samples = interleave(
        {"one": one.step, "four": four.step},
        repeats=5 if quick else 60,
        warmup=2,
        number=50,
        clock=clock,
    )
    diffs = [(b - a) / 3 for a, b in zip(samples["one"], samples["four"], strict=True)]
    return {
        "one_group_s": summarize(samples["one"]),
        "four_groups_s": summarize(samples["four"]),
        "per_extra_group_s": summarize(diffs)["median"],
    }


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['median'] * 1e3:.2f}"


def _ratio(summary: dict[str, float]) -> str:
    return f"{summary['median']:.3f} [{summary['q1']:.3f}, {summary['q3']:.3f}]"


def render(payload: dict[str, Any]) -> str:
    rows = []
    for work in payload["workloads"]:
        for impl, res in work["impls"].items():
            if "skipped" in res:
                rows.append([work["description"], impl, "skipped: " + res["skipped"]] + ["—"] * 7)
                continue
            for what, label in (("step", "fwd+bwd+step"), ("opt_step", "optimizer.step")):
                sec, ratio = res[what]["seconds"], res[what]["ratio_vs_plain"]
                rows.append(
                    [
                        work["description"],
                        impl,
                        label,
                        _ms(sec["plain"]),
                        _ms(sec["absorbed"]),
                        _ratio(ratio["plain-copy"]),
                        _ratio(ratio["absorbed"]),
                        _ratio(ratio["explicit"]),
                        _ratio(ratio["mup-1group"]),
                        _ratio(res[what]["ratio_vs_mup_1group"]["absorbed"]),
                    ]
                )
    table = markdown_table(
        [
            "model",
            "AdamW",
            "timed",
            "plain ms",
            "absorbed ms",
            "A/A: copy ÷ plain",
            "absorbed ÷ plain",
            "explicit ÷ plain",
            "values: mup-1group ÷ plain",
            "groups: absorbed ÷ mup-1group",
        ],
        rows,
    )
    groups = []
    for work in payload["workloads"]:
        res = next((r for r in work["impls"].values() if "param_groups" in r), None)
        if res is not None:
            groups.append(
                [
                    work["description"],
                    f"{work['parameters'] / 1e6:.1f} M",
                    str(work["instances"]),
                    *(str(res["param_groups"][v]) for v in VARIANTS),
                    *(str(res["hooks"][v]) for v in ("absorbed", "explicit")),
                ]
            )
    groups_table = markdown_table(
        [
            "model",
            "parameters",
            "copies per variant",
            *(f"groups: {v}" for v in VARIANTS),
            "hooks: absorbed",
            "hooks: explicit",
        ],
        groups,
    )
    costs = [
        [impl, f"{c['per_extra_group_s'] * 1e6:.1f}", f"{c['one_group_s']['median'] * 1e6:.1f}"]
        for impl, c in payload["group_cost"].items()
    ]
    cost_table = markdown_table(
        ["AdamW", "µs per extra group per step", "µs per step, 12 tiny tensors, 1 group"], costs
    )
    return "\n\n".join(
        [
            "## Per-step overhead of mutransfer's parameter groups",
            f"Command: `{payload['command']}`  \nMachine: {machine_line(payload['machine'])}",
            "Five variants of the same model and batch, timed round-robin in one process (each "
            "as several identical copies where the table below says so, averaged per round, "
            "since a copy's memory placement alone moves a memory-bound step by a few per cent): "
            "`plain` = `AdamW(model.parameters())` on the default init; `plain-copy` = an "
            "identical second copy (A/A control: its ratio is the noise floor); `mup-1group` = "
            "the µP-initialised model with that same one-group AdamW (so `mup-1group ÷ plain` "
            "is what the µP *values* cost and `absorbed ÷ mup-1group` what the *groups* cost); "
            "`absorbed` = `AdamW(plan.param_groups(...))`, mutransfer's default mode; "
            "`explicit` = the same with forward hooks for the multipliers. Ratios are medians "
            "of per-round ratios, "
            f"quartiles in brackets; target ≤ {TARGET_RATIO}. Clock: {payload['clock']}. "
            "`for-loop` is "
            "`foreach=False, fused=False`, what AdamW picks by default for CPU tensors.",
            table,
            groups_table,
            "Fixed cost of a parameter group, measured on tiny tensors:",
            cost_table,
            zero_text(payload),
            payload.get("reading", "").strip(),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(args.threads)
    fused_error = fused_available()
    clock, clock_name = cpu_clock(args.threads)
    impls = [i for i in IMPLS if i != "fused" or fused_error is None]
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "command": command_line(argv),
        "quick": args.quick,
        "machine": machine_info(),
        "target_ratio": TARGET_RATIO,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "fused_error": fused_error,
        "clock": clock_name,
        "workloads": [],
        "group_cost": {},
    }
    for work in workloads(args.quick):
        n_params = sum(p.numel() for p in work.factory()(work.width).parameters())
        entry: dict[str, Any] = {**asdict(work), "parameters": n_params, "impls": {}}
        for impl in IMPLS:
            if impl not in impls:
                entry["impls"][impl] = {"skipped": str(fused_error)}
                continue
            print(f"[{NAME}] {work.name} / {impl} ...", flush=True)
            entry["impls"][impl] = measure(work, impl, clock)
        payload["workloads"].append(entry)
    for impl in impls:
        payload["group_cost"][impl] = group_cost(impl, args.quick, clock)
    payload["sqrt_zero_cost"] = sqrt_zero_cost(clock, args.quick)
    payload["reading"] = reading(payload)
    json_path, md_path = write_results(NAME, payload, render(payload), args.out_dir)
    print(render(payload))
    print(f"\nwrote {json_path} and {md_path}")
    return 0


def zero_text(payload: dict[str, Any]) -> str:
    """Gradient zeros per variant and what ``torch.sqrt`` pays for zeros on this machine."""
    parts, close = [], []
    for w in payload["workloads"]:
        res = next((r for r in w["impls"].values() if "zero_grad_fraction" in r), None)
        if res is not None:
            z = res["zero_grad_fraction"]
            parts.append(
                f"{w['name']}: {z['plain']:.1%} (plain) vs {z['mup-1group']:.1%} (µP init)"
            )
            close.append(abs(z["plain"] - z["mup-1group"]) < 0.02)
    sq = payload.get("sqrt_zero_cost")
    sqrt_text = (
        f" `torch.sqrt` over 1M floats takes {sq['ratio']:.1f}× as long here when 30 % of them "
        "are exact zeros (AdamW takes `sqrt(exp_avg_sq)` every step), so optimizer time "
        "depends on the gradient values"
        + (
            "; the zero counts are about equal, though, so they alone do not explain the "
            "values column."
            if close and all(close)
            else "."
        )
        if sq
        else ""
    )
    return (
        "Exact zeros in the gradients at the optimizer-only timing: "
        + "; ".join(parts)
        + "."
        + sqrt_text
    )


def _cells(payload: dict[str, Any], what: str) -> list[tuple[dict[str, Any], str]]:
    return [
        (res[what], f"{w['name']}/{impl}")
        for w in payload["workloads"]
        for impl, res in w["impls"].items()
        if what in res
    ]


def reading(payload: dict[str, Any]) -> str:
    """The interpretation, computed from this run's numbers (so it cannot go stale)."""
    lines = ["Reading (generated from the numbers above):", ""]
    for what, label in (("step", "Full training step"), ("opt_step", "`optimizer.step()` alone")):
        cells = _cells(payload, what)
        if not cells:
            continue

        def worst(get: Callable[[dict[str, Any]], float], cells: Any = cells) -> tuple[float, str]:
            return max((get(r), at) for r, at in cells)

        total = worst(lambda r: r["ratio_vs_plain"]["absorbed"]["median"])
        groups = worst(lambda r: r["ratio_vs_mup_1group"]["absorbed"]["median"])
        values = worst(lambda r: r["ratio_vs_plain"]["mup-1group"]["median"])
        hooks = worst(lambda r: r["ratio_vs_plain"]["explicit"]["median"])
        aa = worst(lambda r: abs(r["ratio_vs_plain"]["plain-copy"]["median"] - 1))
        verdict = "within" if total[0] <= TARGET_RATIO else "above"
        lines.append(
            f"- {label}: worst absorbed ÷ plain {total[0]:.3f} ({total[1]}), {verdict} the "
            f"{TARGET_RATIO} target; explicit mode (hooks) worst {hooks[0]:.3f} ({hooks[1]}). "
            f"Split: the groups alone (absorbed ÷ mup-1group) worst {groups[0]:.3f} "
            f"({groups[1]}); the µP values alone (mup-1group ÷ plain) worst {values[0]:.3f} "
            f"({values[1]}). The A/A control moved by up to {aa[0]:.1%} in the same run: "
            "differences smaller than that are not resolved."
        )
    for w in payload["workloads"]:
        for impl, res in w["impls"].items():
            if "opt_step" not in res or impl not in payload["group_cost"]:
                continue
            extra = res["param_groups"]["absorbed"] - res["param_groups"]["plain"]
            cost = extra * payload["group_cost"][impl]["per_extra_group_s"]
            plain = res["opt_step"]["seconds"]["plain"]["median"]
            step = res["step"]["seconds"]["plain"]["median"]
            lines.append(
                f"- {w['name']}/{impl}: {extra} extra group(s) × "
                f"{payload['group_cost'][impl]['per_extra_group_s'] * 1e6:.0f} µs predicts "
                f"+{cost / plain:.2%} on `optimizer.step()` and +{cost / step:.2%} on the "
                "full step."
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
