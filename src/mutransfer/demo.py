"""``mutransfer demo``: µTransfer on real text, SP and µP side by side.

The demo sweeps the learning rate (a log2 grid) at several widths of the reference GPT, once
under the standard parametrization and once under µP, on Shakespeare (or the user's text). It
then plays the µTransfer game: take the LR that was best on the narrowest model (the cheap proxy)
and use it for the widest; the loss it reaches, next to the best the widest model reaches when
swept directly, is the *regret* of transferring. Under SP the optimum drifts with width and the
regret is large; under µP it stays put and the regret is small. This is Tensor Programs V's
Figure 1, measured by the library's own code on data that ships with it.

``--vary depth`` plays the same game along depth: a fixed width, the number of transformer
blocks from 2 to 16, µP (width rules only: every residual branch adds its full update) against
CompleteP (branches × base_depth/depth, Dey et al. 2025) and optionally Depth-µP (× its square
root). The proxy is the shallowest model and the target the deepest.

Every run is saved as it finishes (``demo_runs``), so Ctrl-C or ``kill -9`` loses at most the
runs in flight, and the same command resumes. The numbers come from ``demo_analysis`` and the
figure and report from ``report``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import demo_analysis, report
from .data import DataNotFoundError, TextCorpus, load_text
from .demo_analysis import AXES, CLAIM_PAIRS, Axis
from .demo_runs import RunStore, run_all, source_fingerprint, write_json_atomic
from .machine import cpu_model
from .rules import get_rules
from .training.proxy import TrainConfig, TrainResult, train

SUMMARY_FORMAT = "mutransfer.demo-summary/1"


class DemoError(ValueError):
    """Options that cannot make a demo (too few widths, text too short...); says what to change."""


@dataclass(frozen=True)
class DemoSettings:
    """The grid: sizes × log2 LRs × seeds × parametrizations, around one base ``TrainConfig``.

    ``axis`` says what the sizes are: widths (the base config's depth is kept) or depths, i.e.
    numbers of transformer blocks (the base config's width is kept). The base config holds
    everything else (steps, batch, schedule, optimizer, data...). The smallest size is the base
    of the parametrization (``base_width`` resp. ``base_depth``), so all rules are the same
    model there and the panels of the figure start from the same curve.
    """

    sizes: tuple[int, ...]
    log2_lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    base: TrainConfig
    rules: tuple[str, ...] = ("sp", "mup")
    axis: Axis = "width"

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise DemoError(f"the demo varies 'width' or 'depth', not {self.axis!r}")
        plural = f"{self.axis}s"
        if len(self.sizes) < 2:
            raise DemoError(f"the demo needs at least two {plural}, got {list(self.sizes)}")
        if list(self.sizes) != sorted(set(self.sizes)) or self.sizes[0] < 1:
            raise DemoError(
                f"{plural} must be increasing, distinct and >= 1, got {list(self.sizes)}"
            )
        bad = [w for w in self.widths if w % self.base.n_heads]
        if bad:
            raise DemoError(
                f"width(s) {bad} are not divisible by the number of heads ({self.base.n_heads})"
            )
        if len(self.log2_lrs) < 2 or list(self.log2_lrs) != sorted(set(self.log2_lrs)):
            raise DemoError(
                f"give at least two distinct, increasing log2 LRs, got {list(self.log2_lrs)}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise DemoError(f"seeds must be distinct and at least one, got {list(self.seeds)}")
        if not self.rules or len(set(self.rules)) != len(self.rules):
            raise DemoError(f"give distinct rules presets, got {list(self.rules)}")
        for name in self.rules:
            try:
                get_rules(name)
            except ValueError as exc:
                raise DemoError(str(exc)) from None

    @property
    def widths(self) -> tuple[int, ...]:
        """The widths the grid trains: the sizes, or the base config's width across depths."""
        return self.sizes if self.axis == "width" else (self.base.width,)

    @property
    def depths(self) -> tuple[int, ...]:
        """The depths the grid trains: the sizes, or the base config's depth across widths."""
        return self.sizes if self.axis == "depth" else (self.base.depth,)

    def config(self, rules: str, size: int, log2_lr: float, seed: int) -> TrainConfig:
        """One run of the grid; ``size`` is a width or a depth according to ``axis``."""
        common = {"rules": rules, "lr": 2.0**log2_lr, "seed": seed}
        if self.axis == "width":
            return self.base.with_(width=size, base_width=self.sizes[0], **common)
        # one width throughout: it is its own base width, so only the depth rules act
        return self.base.with_(
            depth=size, base_depth=self.sizes[0], base_width=self.base.width, **common
        )

    def grid(self) -> list[TrainConfig]:
        return [
            self.config(r, size, lr, s)
            for r in self.rules
            for size in self.sizes
            for lr in self.log2_lrs
            for s in self.seeds
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "sizes": list(self.sizes),
            "widths": list(self.widths),
            "depths": list(self.depths),
            "log2_lrs": list(self.log2_lrs),
            "seeds": list(self.seeds),
            "rules": list(self.rules),
            "base": self.base.to_dict(),
        }


# Measured defaults (docs/demo.md, bench/results/demo.md): a 2-block byte-level GPT over an 8×
# width range, AdamW at a constant LR, 200 steps: 64 runs in about 4.5 minutes on an idle 2-core
# CPU. Every claim of the demo held on seeds 0, 1 and 2 with these settings (seed 0 is the
# default; the others are recorded in bench/results/demo.md).
DEFAULT_BASE = TrainConfig(
    model="gpt",
    depth=2,
    n_heads=4,
    seq_len=64,
    batch_size=16,
    steps=200,
    optimizer="adamw",
    beta2=0.95,
    warmup_steps=0,
    schedule="constant",
    data="shakespeare",
)
DEFAULT = DemoSettings(
    sizes=(32, 64, 128, 256),
    log2_lrs=tuple(float(x) for x in range(-11, -3)),
    seeds=(0,),
    base=DEFAULT_BASE,
)
QUICK = DemoSettings(
    sizes=(32, 64, 128),
    log2_lrs=tuple(float(x) for x in range(-9, -3)),
    seeds=(0,),
    base=DEFAULT_BASE.with_(steps=100),
)
# Depth (bench/results/depth_transfer.md): width 64, 2 → 16 blocks (8×), the same training
# setting as the width demo otherwise.
DEPTH_DEFAULT = DemoSettings(
    sizes=(2, 4, 8, 16),
    log2_lrs=tuple(float(x) for x in range(-10, -2)),
    seeds=(0,),
    base=DEFAULT_BASE.with_(width=64),
    rules=("mup", "completep"),
    axis="depth",
)
DEPTH_QUICK = DemoSettings(
    sizes=(2, 4, 8),
    log2_lrs=tuple(float(x) for x in range(-9, -3)),
    seeds=(0,),
    base=DEFAULT_BASE.with_(width=64, steps=100),
    rules=("mup", "completep"),
    axis="depth",
)
PRESETS: dict[tuple[str, bool], DemoSettings] = {
    ("width", False): DEFAULT,
    ("width", True): QUICK,
    ("depth", False): DEPTH_DEFAULT,
    ("depth", True): DEPTH_QUICK,
}


def settings_for(
    quick: bool = False,
    *,
    vary: str = "width",
    widths: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    log2_lrs: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    rules: Sequence[str] | None = None,
    text: str | None = None,
    **train_options: Any,
) -> DemoSettings:
    """The default (or ``--quick``) settings of ``vary`` with the user's changes applied.

    ``widths`` are the swept sizes when ``vary="width"``, ``depths`` when ``vary="depth"``; the
    other axis is fixed by a train option (``depth=`` across widths, ``width=`` across depths).
    """
    if vary not in AXES:
        raise DemoError(f"vary must be 'width' or 'depth', got {vary!r}")
    fixed = "depth" if vary == "width" else "width"
    wrong = depths if vary == "width" else widths
    if wrong is not None:
        raise DemoError(
            f"{fixed}s are fixed when the demo varies the {vary}: give one {fixed} "
            f"(--{fixed} N), or vary the {fixed} (--vary {fixed})"
        )
    if vary in train_options:
        raise DemoError(
            f"the demo varies the {vary}: give the {vary}s to sweep (--{vary}s), not one {vary}"
        )
    preset = PRESETS[vary, quick]
    base = preset.base
    if text is not None:
        try:
            base = base.with_(data=text)
        except ValueError as exc:
            raise DemoError(str(exc)) from None
    if train_options:
        try:
            base = TrainConfig.from_dict({**base.to_dict(), **train_options})
        except (TypeError, ValueError) as exc:
            raise DemoError(str(exc)) from None
    sizes = widths if vary == "width" else depths
    return DemoSettings(
        sizes=tuple(sizes) if sizes is not None else preset.sizes,
        log2_lrs=tuple(float(x) for x in log2_lrs) if log2_lrs is not None else preset.log2_lrs,
        seeds=tuple(seeds) if seeds is not None else preset.seeds,
        base=base,
        rules=tuple(rules) if rules is not None else preset.rules,
        axis=preset.axis,
    )


# ------------------------------------------------------------------------------ running
def run_demo(
    out_dir: str | os.PathLike[str] = "runs/demo",
    quick: bool = False,
    workers: int = 2,
    *,
    vary: str = "width",
    widths: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    log2_lrs: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    rules: Sequence[str] | None = None,
    text: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    command: str | None = None,
    settings: DemoSettings | None = None,
    train_fn: Callable[..., TrainResult] = train,
    **train_options: Any,
) -> dict[str, Any]:
    """Run (or resume) the demo and write its outputs to ``out_dir``; returns the summary.

    Args:
        out_dir: where ``summary.json``, the figure (``lr_transfer.png``, or
            ``lr_transfer_depth.png`` across depths), ``report.md`` and ``runs/`` go.
        quick: the small grid (``--quick``, 1–1.5 minutes on 2 cores).
        workers: parallel worker processes (one torch thread each); ``<= 1`` runs in-process.
        vary: ``"width"`` (SP vs µP) or ``"depth"`` (µP vs CompleteP at one width).
        widths, depths, log2_lrs, seeds, rules, text: override the grid (``widths`` across
            widths, ``depths`` across depths), the presets compared, or use your own text file.
        progress: show a progress bar with a time estimate.
        echo: where to print the plan and the final table (None: silent).
        command: the command line to record in the report (default: this Python call).
        settings: a complete ``DemoSettings`` (then quick/widths/... must not be given).
        train_fn: the trainer used in-process (tests count calls with it).
        **train_options: any ``TrainConfig`` field for every run (``steps=``, ``batch_size=``...).
    """
    started = time.perf_counter()
    cpu_before = _cpu_seconds()
    load_before = _load_average()
    say = echo or (lambda _msg: None)
    if settings is None:
        settings = settings_for(
            quick,
            vary=vary,
            widths=widths,
            depths=depths,
            log2_lrs=log2_lrs,
            seeds=seeds,
            rules=rules,
            text=text,
            **train_options,
        )
    elif (
        quick
        or train_options
        or vary != "width"
        or any(x is not None for x in (widths, depths, log2_lrs, seeds, rules, text))
    ):
        raise DemoError(
            "pass either settings= or the options (quick, vary, widths, depths, log2_lrs, seeds, "
            "rules, text, train options), not both; build settings with "
            "mutransfer.demo.settings_for(...)"
        )
    out = Path(out_dir)
    source = load_text(settings.base.data)
    shortest = min(len(source.train), len(source.val))
    if shortest < settings.base.seq_len + 2:
        raise DemoError(
            f"the text {source.name!r} is too short: its smaller split has {shortest} bytes, "
            f"fewer than seq_len + 2 = {settings.base.seq_len + 2}; use more text or --seq-len"
        )
    fingerprint = source_fingerprint(source)
    store = RunStore(out / "runs", fingerprint)

    grid = settings.grid()
    on_disk = sum(store.load(c) is not None for c in grid)
    say(
        f"mutransfer demo: {len(settings.log2_lrs)} learning rates × {len(settings.sizes)} "
        f"{settings.axis}s {list(settings.sizes)} × {len(settings.seeds)} seed(s) × "
        f"{'/'.join(map(demo_analysis.display_name, settings.rules))} = {len(grid)} runs"
        + (f" ({on_disk} already done in {store.folder})" if on_disk else "")
        + f", {max(1, workers)} worker(s); results in {out}/"
    )
    results = run_all(
        grid, store, source=source, workers=workers, progress=progress, train_fn=train_fn
    )

    def lookup(rules: str) -> demo_analysis.Lookup:
        return lambda size, lr, s: results[settings.config(rules, size, lr, s)]

    sweeps = {
        r: demo_analysis.build_sweep(
            r, settings.sizes, settings.log2_lrs, settings.seeds, lookup(r), settings.axis
        )
        for r in settings.rules
    }
    transfers = {
        r: _transfer(settings, sweeps[r], results, store, source, workers, progress, train_fn)
        for r in settings.rules
    }
    trained = len(set(grid)) - on_disk
    summary = _summary(
        settings,
        source,
        fingerprint,
        sweeps,
        transfers,
        results,
        wall=time.perf_counter() - started,
        cpu=_cpu_seconds() - cpu_before,
        trained=trained,
        reused=on_disk,
        workers=workers,
        command=command or _python_call(out, quick, workers, settings.axis),
        load_before=load_before,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "summary.json", summary)
    report.write_outputs(summary, out)
    say("")
    say(report.terminal_report(summary))
    figure = out / report.figure_name(settings.axis)
    say(f"\nWrote {out / 'summary.json'}, {figure}, {out / report.REPORT_NAME}")
    return summary


def _transfer(
    settings: DemoSettings,
    sweep: demo_analysis.Sweep,
    results: dict[TrainConfig, dict[str, Any]],
    store: RunStore,
    source: TextCorpus,
    workers: int,
    progress: bool,
    train_fn: Callable[..., TrainResult],
) -> demo_analysis.Transfer:
    """Train (or reuse) the largest model at the proxy's best LR and score it."""
    proxy_lr = sweep.best_log2_lr[0]
    if proxy_lr is None:  # every LR diverged on the proxy: nothing to transfer
        return demo_analysis.transfer(sweep, None, reused=False)
    targets = [
        settings.config(sweep.rules, settings.sizes[-1], proxy_lr, s) for s in settings.seeds
    ]
    # normally the proxy's LR is on the largest size's grid too: reuse those runs
    reused = all(t in results or store.load(t) is not None for t in targets)
    if not all(t in results for t in targets):
        results.update(
            run_all(
                targets,
                store,
                source=source,
                workers=workers,
                progress=progress,
                train_fn=train_fn,
            )
        )
    values = [demo_analysis._finite_loss(results[t]) for t in targets]
    finite = [v for v in values if v is not None]
    loss = sum(finite) / len(finite) if len(finite) == len(values) else None
    return demo_analysis.transfer(sweep, loss, reused=reused)


def _summary(
    settings: DemoSettings,
    source: TextCorpus,
    fingerprint: str,
    sweeps: dict[str, demo_analysis.Sweep],
    transfers: dict[str, demo_analysis.Transfer],
    results: dict[TrainConfig, dict[str, Any]],
    *,
    wall: float,
    cpu: float,
    trained: int,
    reused: int,
    workers: int,
    command: str,
    load_before: list[float] | None,
) -> dict[str, Any]:
    claims = None
    reference, candidate = CLAIM_PAIRS[settings.axis]
    if reference in sweeps and candidate in sweeps:
        claims = demo_analysis.claims(
            sweeps[reference], sweeps[candidate], transfers[reference], transfers[candidate]
        )
    base = settings.config(settings.rules[0], settings.sizes[0], settings.log2_lrs[0], 0)
    varied = ("rules", settings.axis, "lr", "seed")
    config = {k: v for k, v in base.to_dict().items() if k not in varied}
    load_after = _load_average()
    return {
        "format": SUMMARY_FORMAT,
        "axis": settings.axis,
        "rules": list(settings.rules),
        "sizes": list(settings.sizes),
        f"{settings.axis}s": list(settings.sizes),
        "log2_lrs": list(settings.log2_lrs),
        "seeds": list(settings.seeds),
        "sweeps": {r: s.to_dict() for r, s in sweeps.items()},
        "transfer": {r: t.to_dict() for r, t in transfers.items()},
        "claims": claims,
        "config": config,
        "data": {
            "name": source.name,
            "source": settings.base.data,
            "fingerprint": fingerprint,
            "train_bytes": len(source.train),
            "val_bytes": len(source.val),
        },
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average": (
                {"before": load_before, "after": load_after}
                if load_before is not None and load_after is not None
                else None
            ),
        },
        "run": {
            "command": command,
            "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "train_seconds": float(sum(r.get("seconds", 0.0) for r in results.values())),
            "trained": trained,
            "reused": reused,
            "workers": max(1, workers),
            "threads": 1 if workers >= 2 else torch.get_num_threads(),
        },
    }


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the workers): with the wall time, it
    shows how much of the machine the demo actually got when other processes were running."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _python_call(out: Path, quick: bool, workers: int, axis: str) -> str:
    vary = "" if axis == "width" else f", vary={axis!r}"
    return f"mutransfer.demo.run_demo({str(out)!r}, quick={quick}, workers={workers}{vary})"


# ---------------------------------------------------------------------------------- CLI
def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 32,64,128, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _lr_list(text: str) -> list[float]:
    """``-11:-4`` (every integer in between, both ends included) or ``-10,-8.5,-7``."""
    text = text.replace(" ", "")
    try:
        if ":" in text:
            first, last = (float(x) for x in text.split(":"))
            if first > last or first != int(first) or last != int(last):
                raise ValueError
            return [float(x) for x in range(int(first), int(last) + 1)]
        return [float(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected log2 learning rates as a range like -11:-4 or a list like -10,-8,-6 "
            f"(write --lrs=-11:-4 so the minus sign is not read as an option), got {text!r}"
        ) from None


def _str_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return values


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="µTransfer on real text: learning rate × width, SP vs µP (the first thing to run)",
        description=(
            "Sweep the learning rate at several widths of a small GPT on Shakespeare, under SP "
            "and under µP; show that µP's optimum stays put while SP's drifts, and what "
            "transferring the small model's LR to the big one costs. With --vary depth: the "
            "same across depths (2 to 16 blocks at width 64), µP vs CompleteP. Interrupt it at "
            "any time: the same command resumes. Outputs: lr_transfer.png "
            "(lr_transfer_depth.png), summary.json, report.md."
        ),
    )
    parser.add_argument(
        "--vary",
        choices=AXES,
        default="width",
        help="sweep widths (SP vs µP, default) or depths (µP vs CompleteP at one width)",
    )
    parser.add_argument(
        "--out", help="output folder (default: runs/demo, or runs/demo-depth with --vary depth)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small grid (1–1.5 minutes on 2 cores)"
    )
    parser.add_argument("--widths", type=_int_list, help="e.g. 32,64,128,256 (--vary width)")
    parser.add_argument("--depths", type=_int_list, help="e.g. 2,4,8,16 (--vary depth)")
    parser.add_argument("--lrs", type=_lr_list, help="log2 learning rates: --lrs=-11:-4 or -10,-8")
    parser.add_argument(
        "--rules",
        type=_str_list,
        help="presets compared, e.g. mup,completep,depth-mup (default: sp,mup across widths, "
        "mup,completep across depths)",
    )
    parser.add_argument("--optimizer", help="adamw (default), adam, sgd, lion or muon")
    parser.add_argument("--steps", type=int, help="training steps per run")
    parser.add_argument("--seeds", type=_int_list, help="seeds averaged per point, e.g. 0,1,2")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--text", metavar="PATH", help="train on your own UTF-8 text file")
    parser.add_argument("--batch-size", type=int, help="sequences per step")
    parser.add_argument("--seq-len", type=int, help="bytes per sequence")
    parser.add_argument("--depth", type=int, help="transformer blocks (--vary width)")
    parser.add_argument("--width", type=int, help="model width (--vary depth; default 64)")
    parser.add_argument("--warmup", type=int, dest="warmup_steps", help="LR warmup steps")
    parser.add_argument(
        "--qk-norm",
        dest="qk_norm",
        action="store_const",
        const=True,
        help="RMS-normalise each head's queries and keys (recommended with --vary depth)",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from .errors import UserError

    names = (
        "steps",
        "batch_size",
        "seq_len",
        "depth",
        "width",
        "warmup_steps",
        "optimizer",
        "qk_norm",
    )
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    out = args.out or ("runs/demo" if args.vary == "width" else f"runs/demo-{args.vary}")
    try:
        settings = settings_for(
            args.quick,
            vary=args.vary,
            widths=args.widths,
            depths=args.depths,
            log2_lrs=args.lrs,
            seeds=args.seeds,
            rules=args.rules,
            text=args.text,
            **options,
        )
        run_demo(
            out,
            workers=args.workers,
            settings=settings,
            progress=args.progress,
            command="mutransfer " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None,
        )
    except (DataNotFoundError, DemoError) as exc:
        raise UserError(str(exc)) from None
    return 0


__all__ = [
    "DEFAULT",
    "DEPTH_DEFAULT",
    "DEPTH_QUICK",
    "QUICK",
    "DemoError",
    "DemoSettings",
    "register",
    "run_demo",
    "settings_for",
]
