"""One proxy sweep → a target that differs in width, depth, batch size and steps at once.

The proxy (width 32, 2 blocks, CompleteP rules) is swept on the sweep engine over the learning
rate × batch size × steps, at batch sizes and lengths up to the nominal (B, T); ``mutransfer
transfer --to-width --to-depth --to-batch 4B --to-steps 4T`` then fits how the best LR moves with
batch size and steps and writes the target's config. At the target, 2 seeds each:

- (a) the full transfer: the LR moved by the fitted power law, the warmup scaled;
- (b) width-only µTransfer: the proxy's best LR copied unchanged (µP/CompleteP carry width and
  depth, nothing carries batch and steps);
- (c) SP with the proxy's LR: no µP at all;

each against a direct LR sweep of the target (the same model under CompleteP, ``--target-lrs``
LRs × 2 seeds): regret = 100 · (loss − best direct loss) / best direct loss. The proxy sweep's
compute is reported as a percentage of one target training run's (Tensor Programs V: 7 % for
GPT-3 6.7B).

Sizes: the target is width 64, 4 blocks, batch 32, 400 steps — 2× the proxy's width and depth,
4× its largest batch and steps. A wider target (the issue's width 256, 8 blocks) costs hours per
run on 2 CPU cores; width and depth transfer are measured at larger ratios elsewhere
(``transfer_fidelity``, ``depth_transfer``), so here the budget goes to batch and steps.

Proxy runs are the sweep's trials (journal in ``--runs-dir``: a rerun resumes); target runs are
cached in the demo's run store there too.

    .venv/bin/python bench/moonshot_transfer.py            # the recorded numbers
    .venv/bin/python bench/moonshot_transfer.py --quick    # smoke: tiny, pydoc text, meaningless
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from common import (
    ROOT,
    add_run_cache_options,
    arg_parser,
    command_line,
    machine_info,
    machine_line,
    markdown_table,
    write_results,
)
from mutransfer.measures import transfer_regret
from mutransfer.sweep import Sweep
from mutransfer.training.proxy import TrainConfig, load_source
from mutransfer.training.runs import RunStore, run_all, source_fingerprint

NAME = "moonshot_transfer"


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(
            proxy=dict(width=16, depth=1, n_heads=2, seq_len=16, data="pydoc", eval_batches=1),
            batches=[2, 4], steps=[4, 8], lrs=(-6, 3), target_width=32, target_depth=2,
            target_lrs=[-4, -3, -2], seeds=[0],
        )  # fmt: skip
    return dict(
        proxy=dict(width=32, depth=2, n_heads=4, seq_len=32, data="shakespeare"),
        batches=[2, 4, 8], steps=[25, 50, 100], lrs=(-10, -4), target_width=64,
        target_depth=4, target_lrs=[-9, -8, -7, -6, -5, -4, -3], seeds=[0, 1],
    )  # fmt: skip


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0])
    add_run_cache_options(parser, "where the proxy sweep's journal and the target runs live")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = settings(args.quick)
    scratch = tempfile.TemporaryDirectory() if args.quick and args.runs_dir is None else None
    root = Path(scratch.name) if scratch else (args.runs_dir or ROOT / "runs" / "bench" / NAME)
    nominal_b, nominal_t = max(s["batches"]), max(s["steps"])
    train = {
        "model": "gpt", "base_width": s["proxy"]["width"], "base_depth": s["proxy"]["depth"],
        "rules": "completep", "warmup_steps": 0, "schedule": "cosine", **s["proxy"],
    }  # fmt: skip
    train.pop("width")
    sweep = Sweep(
        "moonshot",
        widths=[s["proxy"]["width"]],
        space={
            "lr": {"log2": list(s["lrs"]), "step": 0.5},
            "batch_size": {"values": s["batches"]},
            "steps": {"values": s["steps"]},
        },
        train=train,
        storage=str(root / "moonshot.journal"),
        runs_dir=str(root / "runs"),
    )
    results = sweep.run(workers=args.workers, processes=args.workers > 1, log=print)
    proxy_store = RunStore(
        root / "runs", source_fingerprint(load_source(TrainConfig.from_dict(train)))
    )
    proxy_flops = sum(
        _flops(proxy_store, t.params, train) for t in results.completed(sweep.spec.widths[0])
    )
    to_batch, to_steps = 4 * nominal_b, 4 * nominal_t
    full = results.transfer(
        s["target_width"], to_depth=s["target_depth"], to_batch=to_batch, to_steps=to_steps
    )
    best = results.best(sweep.spec.widths[0])
    assert best is not None
    target = TrainConfig.from_dict(full.config)
    width_only = target.with_(lr=best.params["lr"], warmup_steps=0)
    sp = width_only.with_(rules="sp")
    source = load_source(target)
    store = RunStore(root / "runs", source_fingerprint(source))
    direct = [target.with_(lr=2.0**x) for x in s["target_lrs"]]
    variants = {"a: full transfer": target, "b: width-only µTransfer": width_only,
                "c: SP, proxy's LR": sp}  # fmt: skip
    configs = [c.with_(seed=seed) for c in [*direct, *variants.values()] for seed in s["seeds"]]
    runs = run_all(configs, store, source=source, workers=args.workers, progress=True)

    def mean_loss(config: TrainConfig) -> float | None:
        losses = [runs[config.with_(seed=seed)]["val_loss"] for seed in s["seeds"]]
        if any(v is None or not math.isfinite(v) for v in losses):
            return None
        return statistics.fmean(losses)

    direct_losses = {math.log2(c.lr): mean_loss(c) for c in direct}
    finite = {k: v for k, v in direct_losses.items() if v is not None}
    best_direct = min(finite.values()) if finite else None
    best_direct_lr = min(finite, key=lambda k: finite[k]) if finite else None
    rows, outcome = [], {}
    for name, config in variants.items():
        loss = mean_loss(config)
        regret = transfer_regret(loss, best_direct)
        outcome[name] = {"lr": config.lr, "loss": loss, "regret_percent": regret}
        rows.append([name, f"2^{math.log2(config.lr):.2f}", _fmt(loss), _fmt(regret, ".2f")])
    target_flops = runs[target.with_(seed=s["seeds"][0])]["flops"]
    payload = {
        "command": command_line(),
        "machine": machine_info(),
        "quick": args.quick,
        "proxy": {**train, "width": s["proxy"]["width"], "batches": s["batches"],
                  "steps": s["steps"], "trials": len(results.completed(sweep.spec.widths[0]))},
        "target": {"width": target.width, "depth": target.depth, "batch_size": target.batch_size,
                   "steps": target.steps, "warmup_steps": target.warmup_steps},
        "fit": full.fit,
        "rules": full.rules,
        "direct": {"log2_lr": list(direct_losses), "loss": list(direct_losses.values()),
                   "best_log2_lr": best_direct_lr, "best_loss": best_direct},
        "variants": outcome,
        "proxy_compute_percent_of_target": 100.0 * proxy_flops / target_flops,
        "seeds": s["seeds"],
    }  # fmt: skip
    fit = full.fit or {}
    law = ", ".join(
        f"{a} {e:+.3f} ± {fit['stderr'][a]:.3f}" for a, e in fit.get("exponents", {}).items()
    )
    markdown = "\n".join(
        [
            "## One proxy sweep → a target wider, deeper, with a larger batch and more steps",
            "",
            f"Proxy: width {s['proxy']['width']}, {s['proxy']['depth']} blocks, CompleteP, "
            f"batch {s['batches']} × steps {s['steps']} × LR 2^{s['lrs'][0]}…2^{s['lrs'][1]} "
            f"(half octaves), {payload['proxy']['trials']} trials on the sweep engine. Target: "
            f"width {target.width}, {target.depth} blocks, batch {target.batch_size}, "
            f"{target.steps} steps (4× the proxy's largest batch and steps). Seeds {s['seeds']}.",
            "",
            f"Fitted exponents of the best LR: {law or '—'}.",
            "",
            markdown_table(["at the target", "LR", "val loss", "regret vs direct, %"], rows),
            "",
            f"Direct LR sweep of the target: best 2^{best_direct_lr} "
            f"(loss {_fmt(best_direct)}); losses by log2 LR: "
            + ", ".join(f"{k:g}: {_fmt(v)}" for k, v in direct_losses.items()),
            "",
            f"Proxy sweep compute: {payload['proxy_compute_percent_of_target']:.1f} % of one "
            "target training run.",
            "",
            f"Machine: {machine_line(payload['machine'])}",
            f"Command: `{payload['command']}`",
        ]
    )
    write_results(NAME, payload, markdown, args.out_dir)
    print(markdown)
    if scratch:
        scratch.cleanup()


def _flops(store: RunStore, params: dict[str, Any], train: dict[str, Any]) -> float:
    """FLOPs of one proxy trial, from the run store's record of it (seed 0: the sweep's)."""
    config = TrainConfig.from_dict({**train, **params, "width": train["base_width"], "seed": 0})
    found = store.load(config)
    return float(found["flops"]) if found else 0.0


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "diverged" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
