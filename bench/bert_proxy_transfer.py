"""Tensor Programs V's BERT experiment in small: tune a proxy shrunk in width *and* depth, transfer.

The byte-level BERT (``mutransfer.models.bert``, masked LM with 15 % masking, untied decoder) on
Shakespeare, AdamW, CompleteP (µP in width, residual branches × base depth / depth):

1. **Proxy** (width 32, 1 block = the base of the rules): searches on the sweep engine
   (``mutransfer.sweep.Sweep``, Optuna, journal storage) over the LR, the init scale σ and the
   output multiplier α_out — random (24 trials), TPE (40) and u-µP's independent search (one
   dimension at a time from σ = α_out = 1: 36) — each transferred and compared at the target.
2. **Target** (width 128, 4 blocks), 2 seeds each, compared at the same training length:
   (a) the proxy's best values, transferred as they are;
   (b) the usual defaults: SP, LR 1e-4 (BERT's pretraining LR, Devlin et al. 2019) with a
       linear warmup over the first 10 % of the steps (BERT warms up too), σ = 1 (every matrix
       N(0, 1/fan_in), PyTorch's scale; BERT's absolute std 0.02 is not one σ of the rules, since
       it is the same number for embeddings and every hidden matrix) and α_out = 1;
   (c) the best of a direct LR sweep of the target (CompleteP, σ = 1, α_out = 1, one point per
       octave).

The claim to check: (a) beats (b) and is within 1 % of (c), at a small fraction of (c)'s FLOPs.

    .venv/bin/python bench/bert_proxy_transfer.py            # ~10-15 CPU-minutes
    .venv/bin/python bench/bert_proxy_transfer.py --quick    # smoke: tiny everything

Writes ``bench/results/bert_proxy_transfer.json`` and ``.md``; the sweep's journal and every
finished run are kept under ``runs/bench/`` (not in git) and found again by a re-run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import common
from mutransfer.data import load_text
from mutransfer.demo.report import fmt_loss
from mutransfer.sweep import Sweep
from mutransfer.training.proxy import TrainConfig
from mutransfer.training.runs import RunStore, run_all, source_fingerprint

SPACE = {
    "lr": {"log2": [-11, -4], "step": 0.5},
    "init_std": {"log2": [-3, 1], "step": 0.5},
    "output_multiplier": {"log2": [-3, 3], "step": 0.5},
}


def base_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        model="bert",
        width=args.target_width,
        depth=args.target_depth,
        base_width=args.proxy_width,
        base_depth=args.proxy_depth,
        rules="completep",
        n_heads=4,
        seq_len=64,
        batch_size=16,
        steps=args.steps,
        optimizer="adamw",
        beta2=0.95,
        data="shakespeare",
    )


SEARCHES = ("random", "tpe", "independent")


def proxy_search(
    search: str,
    args: argparse.Namespace,
    name: str,
    proxy_train: dict[str, Any],
    seed: int,
    store: RunStore,
) -> dict[str, Any]:
    """Run one proxy search on the sweep engine (its own journal, the shared run store) and
    return its best point, its trial count and what its trials cost."""
    kind: dict[str, Any] = {
        "random": {"sampler": "random", "trials": args.trials},
        "tpe": {"sampler": "tpe", "trials": args.tpe_trials},
        "independent": {"strategy": "independent"},
    }[search]
    sweep_name = name if search == "random" else f"{name}-{search}"  # random: the first one
    sweep = Sweep(
        sweep_name,
        widths=[args.proxy_width],
        space=SPACE,
        seeds=[seed],
        train=proxy_train,
        storage=str(Path(args.runs) / f"{sweep_name}.journal"),
        runs_dir=str(store.folder),
        **kind,
    )
    results = sweep.run(workers=args.workers)
    best = results.best(args.proxy_width)
    if best is None:
        raise SystemExit(f"every trial of the {search} proxy search failed")
    finished = [
        t for t in results.trials[args.proxy_width] if t.state in ("complete", "diverged", "pruned")
    ]
    records = []
    for trial in finished:
        config = TrainConfig.from_dict(
            {**proxy_train, **trial.params, "width": args.proxy_width, "seed": seed}
        )
        found = store.load(config)
        if found is not None:
            records.append(found)
    return {
        "trials": len(finished),
        "best": best.params,
        "best_loss": best.value,
        "flops": sum(r.get("flops", 0.0) for r in records),
        "seconds": sum(r.get("seconds", 0.0) for r in records),
    }


def mean_loss(results: list[dict[str, Any]]) -> float | None:
    values = [r.get("val_loss") for r in results]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return statistics.fmean(float(v) for v in values if v is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy-width", type=int, default=32)
    parser.add_argument("--proxy-depth", type=int, default=1)
    parser.add_argument("--target-width", type=int, default=128)
    parser.add_argument("--target-depth", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--search",
        default=",".join(SEARCHES),
        help="proxy searches to run and compare, comma-separated: random (24 trials by "
        "default), tpe (40), independent (u-µP's one dimension at a time: 36)",
    )
    parser.add_argument("--trials", type=int, default=24, help="random-search trials")
    parser.add_argument("--tpe-trials", type=int, default=40, help="TPE trials")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--lrs", default="-11:-5", help="log2 LRs of the target's direct sweep")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(common.RESULTS_DIR))
    parser.add_argument("--runs", default=str(common.ROOT / "runs" / "bench"))
    parser.add_argument("--quick", action="store_true", help="smoke test: seconds, no meaning")
    args = parser.parse_args()
    if args.quick:
        args.proxy_width, args.target_width, args.target_depth = 16, 32, 2
        args.steps, args.trials, args.seeds, args.lrs = 10, 3, "0", "-8:-7"
        args.tpe_trials = 3
    seeds = [int(s) for s in args.seeds.split(",")]
    unknown = set(args.search.split(",")) - set(SEARCHES)
    if unknown:
        parser.error(f"--search: unknown {sorted(unknown)}; choose from {', '.join(SEARCHES)}")
    first, last = (int(x) for x in args.lrs.split(":"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = Path(args.runs)
    keep.mkdir(parents=True, exist_ok=True)
    name = "bert_proxy_transfer" + ("_quick" if args.quick else "")
    started = time.perf_counter()
    target = base_config(args)

    # 1. the proxy searches, on the sweep engine; one run store, so a point two searches
    # both visit is trained once
    proxy_train = {
        k: v for k, v in target.to_dict().items() if k not in ("width", "lr", "seed", *SPACE)
    }
    proxy_train["depth"] = args.proxy_depth
    source = load_text("shakespeare")
    proxy_store = RunStore(keep / f"{name}.runs" / "proxy", source_fingerprint(source))
    searches: dict[str, dict[str, Any]] = {}
    for search in args.search.split(","):
        searches[search] = proxy_search(search, args, name, proxy_train, seeds[0], proxy_store)
    # 2. the target: transferred, defaults, direct LR sweep; 2 seeds each
    store = RunStore(keep / f"{name}.runs" / "target", source_fingerprint(source))
    transferred = {
        search: [target.with_(**found["best"], seed=s) for s in seeds]
        for search, found in searches.items()
    }
    defaults = [
        target.with_(rules="sp", lr=1e-4, warmup_steps=max(1, args.steps // 10), seed=s)
        for s in seeds
    ]
    direct = {
        lr: [target.with_(lr=2.0**lr, seed=s) for s in seeds] for lr in range(first, last + 1)
    }
    # diagnostic: the proxy's own LR sweep at σ = 1, α_out = 1 (where does its LR optimum sit?)
    proxy_lrs = {
        lr: [target.with_(width=args.proxy_width, depth=args.proxy_depth, lr=2.0**lr, seed=s)]
        for lr in range(first, last + 1)
        for s in seeds[:1]
    }
    every = [c for cs in transferred.values() for c in cs]
    every += defaults + [c for cs in direct.values() for c in cs]
    every += [c for cs in proxy_lrs.values() for c in cs]
    runs = run_all(every, store, source=source, workers=args.workers, progress=False)

    def score(configs: list[TrainConfig]) -> dict[str, Any]:
        done = [runs[c] for c in configs]
        return {
            "loss": mean_loss(done),
            "seed_losses": [r.get("val_loss") for r in done],
            "flops": sum(r.get("flops", 0.0) for r in done),
        }

    direct_scores = {lr: score(cs) for lr, cs in direct.items()}
    proxy_scores = {lr: score(cs)["loss"] for lr, cs in proxy_lrs.items()}
    finite = {lr: s for lr, s in direct_scores.items() if s["loss"] is not None}
    best_lr = min(finite, key=lambda lr: finite[lr]["loss"]) if finite else None
    c_loss = finite[best_lr]["loss"] if best_lr is not None else None
    direct_flops = sum(s["flops"] for s in direct_scores.values())
    for search, found in searches.items():
        a = score(transferred[search])
        found["transferred"] = a
        found["gap_to_direct_percent"] = (
            None if a["loss"] is None or c_loss is None else 100 * (a["loss"] - c_loss) / c_loss
        )
    data = {
        "proxy": {
            "width": args.proxy_width,
            "depth": args.proxy_depth,
            "lr_sweep_at_defaults": {str(lr): v for lr, v in proxy_scores.items()},
        },
        "searches": searches,
        "target": {"width": args.target_width, "depth": args.target_depth, "seeds": seeds},
        "steps": args.steps,
        "defaults": score(defaults),
        "direct": {str(lr): s for lr, s in direct_scores.items()},
        "direct_best_log2_lr": best_lr,
        "direct_best_loss": c_loss,
        "direct_flops": direct_flops,
        "wall_seconds": time.perf_counter() - started,
        "train_seconds": sum(f["seconds"] for f in searches.values())
        + sum(r.get("seconds", 0.0) for r in runs.values()),
        "machine": common.machine_info(),
    }
    (out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(render(data), encoding="utf-8")
    print(render(data))


SEARCH_LABELS = {
    "random": "random search",
    "tpe": "TPE",
    "independent": "independent (one dimension at a time)",
}


def _point(params: dict[str, float]) -> str:
    return ", ".join(f"{k} 2^{math.log2(v):.1f}" for k, v in sorted(params.items()))


def render(d: dict[str, Any]) -> str:
    p, t, searches = d["proxy"], d["target"], d["searches"]
    lines = [
        "## BERT: a proxy shrunk in width and depth, transferred (`bench/bert_proxy_transfer.py`)",
        "",
        f"Proxy width {p['width']}, {p['depth']} block(s), seed {t['seeds'][0]}: searches on "
        f"the sweep engine over LR, σ and α_out. Target width {t['width']}, {t['depth']} "
        f"blocks, CompleteP, {d['steps']} steps, seeds {t['seeds']} (mean).",
        "",
        "| at the target | masked-LM loss | vs (c) | tuning FLOPs |",
        "|---|---:|---:|---:|",
    ]
    for search, found in searches.items():
        gap = found["gap_to_direct_percent"]
        lines.append(
            f"| (a) transferred from the proxy's {SEARCH_LABELS[search]}, {found['trials']} "
            f"trials | {fmt_loss(found['transferred']['loss'])} | "
            + ("—" if gap is None else f"{gap:+.2f} %")
            + f" | {found['flops']:.3g} |"
        )
    lines += [
        f"| (b) usual defaults (SP, LR 1e-4, 10 % warmup) | {fmt_loss(d['defaults']['loss'])} | "
        f"{_percent(d['defaults']['loss'], d['direct_best_loss'])} | 0 |",
        f"| (c) direct LR sweep, best at 2^{d['direct_best_log2_lr']} | "
        f"{fmt_loss(d['direct_best_loss'])} | 0 | {d['direct_flops']:.3g} |",
        "",
        "What each proxy search chose (proxy loss; seed 0):",
        "",
    ]
    for search, found in searches.items():
        lines.append(
            f"- {SEARCH_LABELS[search]}: {_point(found['best'])} ({fmt_loss(found['best_loss'])}); "
            f"its FLOPs are {100 * found['flops'] / max(d['direct_flops'], 1):.1f} % of the "
            "direct sweep's"
        )
    sweep = p.get("lr_sweep_at_defaults") or {}
    if sweep:
        lines += [
            "",
            "The same LRs at σ = 1, α_out = 1, by log2 LR: target (c) "
            + ", ".join(f"{k}: {fmt_loss(v['loss'])}" for k, v in d["direct"].items())
            + "; proxy (seed 0) "
            + ", ".join(f"{k}: {fmt_loss(v)}" for k, v in sweep.items())
            + ".",
        ]
    lines += [
        "",
        f"Machine: {common.machine_line(d['machine'])}. Training time of all runs, as recorded "
        f"when each ran on one thread: {d.get('train_seconds', 0.0) / 60:.0f} min; this "
        f"invocation {d['wall_seconds']:.0f} s (finished runs are reused).",
        "",
    ]
    return "\n".join(lines)


def _percent(loss: float | None, reference: float | None) -> str:
    if loss is None or reference is None:
        return "—"
    return f"{100 * (loss - reference) / reference:+.2f} %"


if __name__ == "__main__":
    main()
