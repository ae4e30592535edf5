"""Transfer fidelity side by side: SP, µP and u-µP from mutransfer, microsoft/mup, unit-scaling.

The question µTransfer lives on: tune the learning rate on the narrowest model and use it on
the widest — how far does the optimum move with width, and what does using the proxy's LR cost?
Every parametrization trains the same byte-level GPT on the same Shakespeare bytes, with the
same widths, steps, batches, seeds and LR grid as ``mutransfer demo`` (read from
``mutransfer.demo.DEFAULT``, so the two cannot drift apart). Per parametrization and width the
optimum is the grid LR with the lowest validation loss; the *drift* is the spread of those
optima in octaves, and the *regret* is the widest model's loss at the narrowest model's optimum
over its own best loss, in % (``mutransfer.demo.analysis``, the demo's own definitions).

Variants (one column each; a peer that is not installed gets a "not installed" column):

- ``sp``, ``mutransfer-mup``, ``mutransfer-u-mup``: ``mutransfer.training.proxy.train`` with the
  ``sp``, ``mup`` and ``u-mup`` presets (the reference GPT as written, parametrized from outside);
- ``mup``: the same GPT written for microsoft/mup (``bench/peers/mup_gpt.py``);
- ``unit-scaling``: the same GPT from unit-scaling's u-µP building blocks
  (``bench/peers/unit_gpt.py``).

The peers train in ``bench/peers/loop.py``, which reproduces the built-in trainer exactly. The
two unit-scaled variants (weights of std 1, LR × fan_in^-½) have their optimum about 5 octaves
above µP's (std 1/√32 at the base width, a factor 2^2.5, times the LR rule's √32 = 2^2.5), so
their grid is the demo's grid shifted by ``UNIT_LR_SHIFT`` octaves: same points per octave, same
number of points, centred on their own optimum. The tables say so.

Runs are cached one JSON file per run (``--runs-dir``), keyed by the full config, the data and
the peer versions, so an interrupted run resumes. The full run takes about 30 minutes with 2
workers on 2 idle cores; ``--quick`` is a seconds-long smoke test whose numbers mean nothing.

    .venv/bin/python bench/transfer_fidelity.py            # the demo setting (recorded numbers)
    .venv/bin/python bench/transfer_fidelity.py --quick    # smoke
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import common
from common import (
    RESULTS_DIR,
    add_run_cache_options,
    arg_parser,
    command_line,
    machine_info,
    machine_line,
    markdown_table,
    read_results,
    write_results,
)
from peers import INSTALL_HINT, available
from peers.loop import Batch, train_with

NAME = "transfer_fidelity"
ROOT = common.ROOT
UNIT_LR_SHIFT = 5.0
"""Octaves between µP's and the unit-scaled variants' grids (see the module docstring)."""


@dataclass(frozen=True)
class Variant:
    """One parametrization: who implements it, how its runs are trained, its grid offset."""

    key: str
    label: str
    library: str
    """``mutransfer`` or the peer's distribution name (for the "not installed" check)."""
    rules: str
    """The preset for ``training.proxy.train``; peers store their own key here (never
    parametrized)."""
    lr_shift: float = 0.0


VARIANTS = (
    Variant("sp", "SP", "mutransfer", "sp"),
    Variant("mutransfer-mup", "µP (mutransfer)", "mutransfer", "mup"),
    Variant("mup", "µP (microsoft/mup)", "mup", "peer-mup"),
    Variant(
        "unit-scaling", "u-µP (unit-scaling)", "unit-scaling", "peer-unit-scaling", UNIT_LR_SHIFT
    ),
    Variant("mutransfer-u-mup", "u-µP (mutransfer preset)", "mutransfer", "u-mup", UNIT_LR_SHIFT),
)


# ------------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Grid:
    """Widths × log2 LRs × seeds around one base ``TrainConfig`` (as the demo's settings)."""

    name: str
    widths: tuple[int, ...]
    log2_lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    base: Any  # mutransfer.training.TrainConfig

    def lrs(self, variant: Variant) -> list[float]:
        return [x + variant.lr_shift for x in self.log2_lrs]

    def config(self, variant: Variant, width: int, log2_lr: float, seed: int) -> Any:
        return self.base.with_(
            rules=variant.rules, width=width, lr=2.0**log2_lr, seed=seed, base_width=self.widths[0]
        )

    def configs(self, variant: Variant) -> list[Any]:
        return [
            self.config(variant, w, lr, s)
            for w in self.widths
            for lr in self.lrs(variant)
            for s in self.seeds
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "widths": list(self.widths),
            "log2_lrs": list(self.log2_lrs),
            "seeds": list(self.seeds),
            "base": self.base.to_dict(),
        }


def grid(quick: bool, setting: str) -> Grid:
    """The demo's setting (``demo``), its ``--quick`` setting, or a seconds-long smoke grid."""
    try:
        from mutransfer.demo import DEFAULT, QUICK
    except ImportError as err:  # the demo is part of the library; say what is missing
        raise SystemExit(f"mutransfer.demo is needed for the demo setting: {err}") from None
    if quick:
        return Grid("smoke", (32, 64), (-8.0, -6.0), (0,), DEFAULT.base.with_(steps=12))
    preset = QUICK if setting == "demo-quick" else DEFAULT
    return Grid(setting, preset.widths, preset.log2_lrs, preset.seeds, preset.base)


# ------------------------------------------------------------------------------ training
def _mean_ce(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def _gpt_config(config: Any) -> Any:
    from mutransfer.models import GPTConfig

    return GPTConfig(
        width=config.width, depth=config.depth, n_heads=config.n_heads, seq_len=config.seq_len
    )


def _adam_kwargs(config: Any) -> dict[str, Any]:
    # the built-in trainer's AdamW settings (trainer.make_optimizer)
    return {
        "betas": (0.9, config.beta2),
        "eps": config.eps,
        "weight_decay": config.weight_decay,
        "foreach": True,
    }


def _build_mup(config: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    from peers import mup_gpt

    model = mup_gpt.build(_gpt_config(config), config.base_width, config.seed)
    return model, mup_gpt.optimizer(model, config.lr, **_adam_kwargs(config))


def _build_unit(config: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    from peers import unit_gpt

    model = unit_gpt.build(_gpt_config(config), config.seed)
    return model, unit_gpt.optimizer(model, config.lr, **_adam_kwargs(config))


def _unit_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    return model.loss(*batch)  # type: ignore[operator]


PEER_TRAINERS: dict[str, tuple[Callable[[Any], Any], Callable[[nn.Module, Batch], Any]]] = {
    "peer-mup": (_build_mup, _mean_ce),
    "peer-unit-scaling": (_build_unit, _unit_loss),
}


def train_one(config: Any, source: Any) -> Any:
    """One run of the grid: the built-in trainer for presets, the peer loop for peers."""
    from mutransfer.training.proxy import train

    if config.rules in PEER_TRAINERS:
        build, loss_fn = PEER_TRAINERS[config.rules]
        return train_with(config, source, build, loss_fn)
    return train(config, source=source)


_WORKER: dict[str, Any] = {}


def _init_worker(folder: str, fingerprint: str) -> None:
    import signal

    from mutransfer.training.proxy import load_source
    from mutransfer.training.runs import RunStore

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    torch.set_num_threads(1)
    _WORKER["store"] = RunStore(folder, fingerprint)
    _WORKER["load"] = load_source


def _run_in_worker(config_dict: dict[str, Any]) -> dict[str, Any]:
    from mutransfer.training.proxy import TrainConfig

    config = TrainConfig.from_dict(config_dict)
    if "source" not in _WORKER:
        _WORKER["source"] = _WORKER["load"](config)
    result = train_one(config, _WORKER["source"])
    _WORKER["store"].save(config, result)
    out: dict[str, Any] = result.to_dict()
    return out


def run_grid(configs: list[Any], store: Any, source: Any, workers: int) -> dict[Any, dict]:
    """Every config's result: cached ones from disk, the rest trained (largest first)."""
    results: dict[Any, dict[str, Any]] = {}
    todo = []
    for c in dict.fromkeys(configs):
        found = store.load(c)
        if found is None:
            todo.append(c)
        else:
            results[c] = found
    todo.sort(key=lambda c: (c.width, c.rules), reverse=True)
    print(f"[{NAME}] {len(results)} runs cached, {len(todo)} to train", flush=True)
    started = time.perf_counter()
    if workers <= 1:
        for i, c in enumerate(todo):
            result = train_one(c, source)
            store.save(c, result)
            results[c] = result.to_dict()
            _progress(i + 1, len(todo), c, started)
        return results
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(str(store.folder), store.fingerprint),
    ) as pool:
        futures = {pool.submit(_run_in_worker, c.to_dict()): c for c in todo}
        for i, future in enumerate(as_completed(futures)):
            results[futures[future]] = future.result()
            _progress(i + 1, len(todo), futures[future], started)
    return results


def _progress(done: int, total: int, config: Any, started: float) -> None:
    elapsed = time.perf_counter() - started
    print(
        f"[{NAME}] {done}/{total} {config.rules} w{config.width} lr 2^{math.log2(config.lr):g} "
        f"({elapsed:.0f} s)",
        flush=True,
    )


# ------------------------------------------------------------------------------ analysis
def analyse(g: Grid, variant: Variant, results: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """Sweep, drift and transfer of one variant, with the demo's own definitions."""
    from mutransfer.demo import analysis as demo_analysis

    def lookup(width: int, log2_lr: float, seed: int) -> dict[str, Any]:
        return results[g.config(variant, width, log2_lr, seed)]

    sweep = demo_analysis.build_sweep(variant.key, g.widths, g.lrs(variant), g.seeds, lookup)
    proxy = sweep.best_index[0]
    transferred = None if proxy is None else sweep.loss[-1][proxy]
    transfer = demo_analysis.transfer(sweep, transferred, reused=True)
    seconds = [
        results[g.config(variant, g.widths[-1], lr, s)].get("seconds", 0.0)
        for lr in g.lrs(variant)
        for s in g.seeds
    ]
    return {
        "label": variant.label,
        "library": variant.library,
        "lr_shift": variant.lr_shift,
        "sweep": sweep.to_dict(),
        "transfer": transfer.to_dict(),
        "widest_run_seconds_median": sorted(seconds)[len(seconds) // 2],
    }


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--setting",
        choices=("demo", "demo-quick"),
        default="demo",
        help="the demo's default setting (recorded numbers) or its --quick setting",
    )
    add_run_cache_options(
        parser,
        "cache of finished runs (default: runs/bench/transfer_fidelity; --quick and --fresh "
        "use a temporary folder)",
    )
    parser.add_argument(
        "--only", default=None, help="comma-separated variant keys (default: all installed)"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="ignore cached runs (the cache key does not cover changes to the code)",
    )
    args = parser.parse_args(argv)
    if args.rerender:
        return rerender(Path(args.out_dir))
    torch.set_num_threads(args.threads)
    from mutransfer.training.proxy import load_source
    from mutransfer.training.runs import RunStore, source_fingerprint

    g = grid(args.quick, args.setting)
    versions = available()
    wanted = set(args.only.split(",")) if args.only else {v.key for v in VARIANTS}
    unknown = wanted - {v.key for v in VARIANTS}
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; known: {[v.key for v in VARIANTS]}")
    variants = [v for v in VARIANTS if v.key in wanted]
    missing = {
        v.key: f"{v.library} not installed ({INSTALL_HINT[v.library]})"
        for v in variants
        if v.library != "mutransfer" and versions.get(v.library) is None
    }
    runnable = [v for v in variants if v.key not in missing]
    source = load_source(g.base)
    peers_tag = "-".join(f"{d}{versions[d]}" for d in sorted(versions) if versions[d])
    # the smoke test never trusts a cache (it exists to catch breakage); --fresh likewise
    scratch = tempfile.TemporaryDirectory(prefix=NAME) if args.quick or args.fresh else None
    runs_dir = args.runs_dir or (Path(scratch.name) if scratch else ROOT / "runs" / "bench" / NAME)
    store = RunStore(runs_dir, f"{source_fingerprint(source)}-{peers_tag}")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    configs = [c for v in runnable for c in g.configs(v)]
    cached = sum(1 for c in dict.fromkeys(configs) if store.load(c) is not None)
    results = run_grid(configs, store, source, 1 if args.quick else args.workers)
    wall = time.perf_counter() - started
    trained_now = sum(1 for c in configs if c in results) - cached
    import mutransfer

    payload: dict[str, Any] = {
        "benchmark": NAME,
        "command": command_line(argv),
        "quick": args.quick,
        "machine": machine_info(),
        "versions": {"mutransfer": mutransfer.__version__, **versions},
        "grid": g.to_dict(),
        "workers": 1 if args.quick else args.workers,
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "wall_seconds": wall,
        "runs": len(configs),
        "runs_trained_now": trained_now,
        "run_seconds_total": sum(r.get("seconds", 0.0) for r in results.values()),
        "variants": {v.key: analyse(g, v, results) for v in runnable},
        "not_installed": missing,
        "order": [v.key for v in variants],
        "labels": {v.key: v.label for v in variants},
    }
    figure = Path(args.out_dir) / f"{NAME}.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    if payload["variants"]:
        plot(payload, figure)
        # linked from BENCHMARKS.md at the repository root, or from a BENCHMARKS.md beside it
        in_repo = Path(args.out_dir).resolve() == RESULTS_DIR.resolve()
        payload["figure"] = f"bench/results/{figure.name}" if in_repo else figure.name
    payload["reading"] = reading(payload)
    json_path, md_path = write_results(NAME, payload, render(payload), args.out_dir)
    print(render(payload))
    print(f"\nwrote {json_path}, {md_path}" + (f" and {figure}" if payload["variants"] else ""))
    if scratch is not None:
        scratch.cleanup()
    return 0


def rerender(out_dir: Path) -> int:
    """Regenerate the reading, the markdown and the figure of a recorded run."""
    payload = read_results(NAME, out_dir)
    if payload.get("variants"):
        plot(payload, out_dir / f"{NAME}.png")
    payload["reading"] = reading(payload)
    json_path, md_path = write_results(NAME, payload, render(payload), out_dir)
    print(f"rewrote {json_path} and {md_path} from the recorded runs")
    return 0


# ------------------------------------------------------------------------------ outputs
def plot(payload: dict[str, Any], path: Path) -> Path:
    """One panel per variant: validation loss vs log2 LR, one curve per width, optima starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mutransfer.demo.report import y_range

    keys = [k for k in payload["order"] if k in payload["variants"]]
    sweeps = [payload["variants"][k]["sweep"] for k in keys]
    low, high = y_range(sweeps)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.7 * len(keys), 4.2), sharey=True)
    axes = list(axes) if len(keys) > 1 else [axes]
    cmap = plt.get_cmap("viridis")
    for ax, key, sweep in zip(axes, keys, sweeps, strict=True):
        res = payload["variants"][key]
        lrs = sweep["log2_lrs"]
        for i, width in enumerate(sweep["widths"]):
            color = cmap(0.9 * i / max(1, len(sweep["widths"]) - 1))
            row = sweep["loss"][i]
            pts = [(x, min(v, high)) for x, v in zip(lrs, row, strict=True) if v is not None]
            ax.plot(*zip(*pts, strict=True), "-o", color=color, ms=3, lw=1.4, label=f"w{width}")
            if sweep["best_log2_lr"][i] is not None:
                ax.plot(
                    [sweep["best_log2_lr"][i]],
                    [sweep["best_loss"][i]],
                    "*",
                    color=color,
                    ms=13,
                    mec="black",
                    mew=0.7,
                )
            div = [x for x, v in zip(lrs, row, strict=True) if v is None]
            if div:
                ax.plot(div, [high - 0.02 * (high - low) * (1 + i)] * len(div), "x", color=color)
        tr = res["transfer"]
        if tr["proxy_log2_lr"] is not None:
            ax.axvline(tr["proxy_log2_lr"], color="gray", ls=":", lw=1.1, zorder=0)
        regret = tr["regret_percent"]
        ax.set_title(
            f"{res['label']}\ndrift {_fmt(sweep['drift_octaves'], 'g')} oct, regret "
            + ("diverged" if regret is None else f"{regret:.2f} %"),
            fontsize=9.5,
        )
        shift = res["lr_shift"]
        ax.set_xlabel("log2 LR" + (f" (grid shifted +{shift:g})" if shift else ""), fontsize=9)
        ax.set_xticks(lrs)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.set_ylim(low, high)
    axes[0].set_ylabel("validation loss (nats/byte)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8.5, frameon=False)
    base = payload["grid"]["base"]
    fig.suptitle(
        f"Byte-level GPT depth {base['depth']}, {base['steps']} steps of "
        f"{base['batch_size']}×{base['seq_len']} bytes, AdamW, seeds {payload['grid']['seeds']}"
        " — dotted: the narrowest width's best LR",
        fontsize=9.5,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def table_rows(payload: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key in payload["order"]:
        label = payload["labels"][key]
        if key in payload["not_installed"]:
            rows.append([label, *(["not installed"] * 6)])
            continue
        res = payload["variants"][key]
        sweep, tr = res["sweep"], res["transfer"]
        best = ", ".join(_fmt(b, "g") for b in sweep["best_log2_lr"])
        edge = sweep["optimum_on_grid_edge"]
        rows.append(
            [
                label,
                f"{sweep['log2_lrs'][0]:g} … {sweep['log2_lrs'][-1]:g}",
                best + (f" (edge at w{', w'.join(map(str, edge))})" if edge else ""),
                _fmt(sweep["drift_octaves"], "g"),
                "diverged" if tr["regret_percent"] is None else f"{tr['regret_percent']:.2f} %",
                _fmt(tr["direct_best_loss"], ".3f"),
                _fmt(tr["transferred_loss"], ".3f"),
            ]
        )
    return rows


def render(payload: dict[str, Any]) -> str:
    g = payload["grid"]
    base = g["base"]
    widths = ", ".join(map(str, g["widths"]))
    table = markdown_table(
        [
            "parametrization",
            "log2 LR grid",
            "best log2 LR per width",
            "drift (octaves)",
            f"regret at w{g['widths'][-1]}",
            f"best loss w{g['widths'][-1]}",
            "loss with proxy's LR",
        ],
        table_rows(payload),
    )
    grid_rows = []
    for key in payload["order"]:
        if key not in payload["variants"]:
            continue
        sweep = payload["variants"][key]["sweep"]
        for i, w in enumerate(sweep["widths"]):
            grid_rows.append(
                [payload["labels"][key], str(w)]
                + [_fmt(v, ".3f") if v is not None else "div." for v in sweep["loss"][i]]
            )
    n_lrs = len(g["log2_lrs"])
    loss_table = markdown_table(
        ["parametrization", "width", *(f"LR {j + 1}" for j in range(n_lrs))], grid_rows
    )
    load = payload["load_average_before_after"]
    setting = (
        "a smoke-test grid (numbers meaningless)"
        if payload["quick"]
        else f"`mutransfer demo`'s {g['name']} setting"
    )
    parts = [
        "## Transfer fidelity: the LR optimum across widths, side by side",
        f"Command: `{payload['command']}`  \nMachine: {machine_line(payload['machine'])}  \n"
        + "Versions: "
        + ", ".join(f"{k} {v or 'not installed'}" for k, v in payload["versions"].items())
        + f"  \n{payload['runs']} runs, {payload['run_seconds_total'] / 60:.1f} min of training "
        f"in all (sum over runs, {payload['workers']} worker process(es) of 1 thread); this "
        f"invocation trained {payload['runs_trained_now']} of them in "
        f"{payload['wall_seconds'] / 60:.1f} min wall (the rest came from the run cache); "
        f"load average {load[0]} before, {load[1]} after.",
        f"Setting: {setting} — "
        f"byte-level GPT, depth {base['depth']}, {base['n_heads']} heads, widths {widths} "
        f"(the narrowest is the µP base width and the proxy), {base['steps']} steps of "
        f"{base['batch_size']} × {base['seq_len']} bytes of Shakespeare, AdamW "
        f"(β2 {base['beta2']}, ε {base['eps']:g}, no weight decay, {base['schedule']} LR), "
        f"seeds {g['seeds']}, validation on {base['eval_batches']} × {base['eval_batch_size']} "
        "held-out windows. Every variant sees the same batches in the same order. The "
        f"unit-scaled variants' grid is the same {n_lrs} points shifted by "
        f"+{UNIT_LR_SHIFT:g} octaves (their weights are unit-scale). Drift = max − min of the "
        "best log2 LR across widths; regret = loss of the widest model at the narrowest "
        "model's best LR over the widest model's own best, in %.",
        table,
    ]
    if payload.get("figure"):
        parts.append(
            f"![validation loss vs log2 LR per width, one panel per parametrization]"
            f"({payload['figure']})"
        )
    parts += [
        "Validation loss per grid point (LR j = the j-th point of each variant's own grid; "
        "`div.` = diverged):",
        loss_table,
        payload["reading"],
    ]
    return "\n\n".join(parts)


def reading(payload: dict[str, Any]) -> str:
    """What the numbers say, computed from them; where mutransfer loses, it says so."""
    v = payload["variants"]
    lines = ["Reading (generated from the numbers above):", ""]
    if payload["quick"]:
        lines.append("- Smoke run: tiny grid and 12 steps; the numbers mean nothing.")

    def regret(key: str) -> float | None:
        return v[key]["transfer"]["regret_percent"] if key in v else None

    def drift(key: str) -> float | None:
        return v[key]["sweep"]["drift_octaves"] if key in v else None

    for ours, theirs, what in (
        ("mutransfer-mup", "mup", "µP"),
        ("mutransfer-u-mup", "unit-scaling", "u-µP"),
    ):
        if ours not in v or theirs not in v:
            if theirs in payload["not_installed"]:
                lines.append(f"- {what}: {payload['labels'][theirs]} not installed; no comparison.")
            continue
        a, b = regret(ours), regret(theirs)
        da, db = drift(ours), drift(theirs)
        if a is None or b is None:
            lines.append(
                f"- {what}: regret mutransfer {_fmt(a, '.2f')} %, {payload['labels'][theirs]} "
                f"{_fmt(b, '.2f')} % (None = the transferred run diverged)."
            )
            continue
        if abs(a - b) < 0.25:
            verdict = "a tie within grid noise (< 0.25 points)"
        elif a < b:
            verdict = f"mutransfer better by {b - a:.2f} points"
        else:
            verdict = f"**mutransfer worse** by {a - b:.2f} points"
        la = v[ours]["transfer"]["direct_best_loss"]
        lb = v[theirs]["transfer"]["direct_best_loss"]
        lines.append(
            f"- {what}: regret {a:.2f} % (mutransfer) vs {b:.2f} % ({payload['labels'][theirs]})"
            f" — {verdict}; drift {_fmt(da, 'g')} vs {_fmt(db, 'g')} octaves; best loss at the "
            f"widest width {_fmt(la, '.3f')} vs {_fmt(lb, '.3f')}."
        )
    if v:
        finals = {
            k: r["transfer"]["direct_best_loss"]
            for k, r in v.items()
            if r["transfer"]["direct_best_loss"] is not None
        }
        if finals:
            best = min(finals, key=lambda k: finals[k])
            ranked = sorted(finals, key=lambda k: finals[k])
            tied = [k for k in ranked if finals[k] - finals[best] <= 0.005]
            lines.append(
                "- Best loss at the widest width (each at its own best LR): "
                + ", ".join(f"{payload['labels'][k]} {finals[k]:.3f}" for k in ranked)
                + ". Lowest: "
                + " = ".join(payload["labels"][k] for k in tied)
                + (" (within 0.005)." if len(tied) > 1 else ".")
            )
            us, sp = finals.get("unit-scaling"), finals.get("sp")
            if us is not None and sp is not None and us > sp:
                lines.append(
                    f"- unit-scaling's u-µP GPT ends above SP's best ({us:.3f} vs {sp:.3f}) at "
                    "this horizon with the library's default constants, which were not tuned "
                    "here (u-µP tunes them one at a time at the best LR). Its model is not the "
                    "reference GPT's function: unit-scaled ops (scaled GELU and attention, "
                    "residual τ rule) replace the plain ones, so its loss difference to "
                    "mutransfer's u-µP preset on the reference GPT is a model difference as "
                    "much as a library one."
                )
    if "sp" in v and "mutransfer-mup" in v:
        lines.append(
            f"- SP for reference: drift {_fmt(drift('sp'), 'g')} octaves, regret "
            f"{_fmt(regret('sp'), '.2f')} %."
        )
    edges = [
        f"{payload['labels'][k]} (w{', w'.join(map(str, r['sweep']['optimum_on_grid_edge']))})"
        for k, r in v.items()
        if r["sweep"]["optimum_on_grid_edge"]
    ]
    if edges:
        lines.append(
            "- Optimum on the edge of the grid for: " + "; ".join(edges) + ". The true optimum "
            "may lie outside, so drift and regret there are lower bounds."
        )
    seeds = payload["grid"]["seeds"]
    if len(seeds) == 1:
        lines.append(
            "- One seed, one grid point per octave: a regret difference of a fraction of a "
            "point between two µP implementations is within seed noise (see the demo's seed "
            "check in `bench/results/demo.md`); drift is resolved to whole octaves."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
