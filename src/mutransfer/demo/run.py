"""Running the demo: the grid's runs (saved as they finish), the µTransfer game, the outputs.

Every run is saved as it finishes (``training.runs``), so Ctrl-C or ``kill -9`` loses at most
the runs in flight, and the same command resumes. The numbers come from ``analysis`` and the
figure and report from ``report``.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..data import ArrayDataset, TextCorpus, load_text
from ..devices import resolve_device
from ..machine import cpu_model
from ..training.proxy import TrainConfig, TrainResult, load_source, train
from ..training.runs import RunStore, run_all, source_fingerprint, write_json_atomic
from . import analysis, report
from .analysis import CLAIM_PAIRS, SIZE_AXES
from .axes import axis_info
from .settings import (
    DemoError,
    DemoSettings,
    settings_for,
)

SUMMARY_FORMAT = "mutransfer.demo-summary/1"


def run_demo(
    out_dir: str | os.PathLike[str] = "runs/demo",
    quick: bool = False,
    workers: int = 2,
    *,
    settings: DemoSettings | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    command: str | None = None,
    train_fn: Callable[..., TrainResult] = train,
    stacked: bool = False,
    device: str = "cpu",
    **options: Any,
) -> dict[str, Any]:
    """Run (or resume) the demo and write its outputs to ``out_dir``; returns the summary.

    Args:
        out_dir: where ``summary.json``, the figure (``lr_transfer.png``, or
            ``lr_transfer_depth.png`` across depths), ``report.md`` and ``runs/`` go.
        quick: the small grid (``--quick``, 1–1.5 minutes on 2 cores).
        workers: parallel worker processes (one torch thread each); ``<= 1`` runs in-process.
        settings: a complete ``DemoSettings`` (then neither ``quick`` nor ``options``).
        progress: show a progress bar with a time estimate.
        echo: where to print the plan and the final table (None: silent).
        command: the command line to record in the report (default: this Python call).
        train_fn: the trainer used in-process (tests count calls with it; a trainer other
            than ``proxy.train`` trains every run alone).
        stacked: train the runs that share their shapes (other LRs, seeds, parametrizations
            at one size) together as one stacked model (``training.stacked``); each run is
            still saved as its own file. Off by default (``training.runs`` says why).
        device: where the runs train: "cpu" (default), "auto" (the GPU if torch sees one) or
            a torch device name ("cuda", "cuda:1"); refused at once if this machine lacks it.
        **options: ``settings_for``'s: ``vary`` (``"width"``: SP vs µP, or ``"depth"``: µP vs
            CompleteP at one width), ``widths``/``depths``, ``log2_lrs``, ``seeds``, ``rules``,
            ``text`` (your own text file), and any ``TrainConfig`` field for every run
            (``steps=``, ``batch_size=``...).
    """
    started = time.perf_counter()
    cpu_before = _cpu_seconds()
    load_before = _load_average()
    say = echo or (lambda _msg: None)
    if settings is None:
        settings = settings_for(quick, **options)
    elif quick or options:
        raise DemoError(
            "pass either settings= or the options (quick, vary, widths, depths, log2_lrs, seeds, "
            "rules, text, train options), not both; build settings with "
            "mutransfer.demo.settings_for(...)"
        )
    device = str(resolve_device(device))  # a missing GPU is said before anything is loaded
    out = Path(out_dir)
    source = _source_for(settings)
    fingerprint = source_fingerprint(source)
    store = RunStore(out / "runs", fingerprint)
    grid = settings.grid()
    on_disk = sum(store.load(c) is not None for c in grid)
    say(
        f"mutransfer demo: {len(settings.log2_lrs)} learning rates × {len(settings.sizes)} "
        f"{axis_info(settings.axis).plural} {list(settings.sizes)} × {len(settings.seeds)} "
        "seed(s) × "
        f"{'/'.join(map(analysis.display_name, settings.rules))} = {len(grid)} runs"
        + (f" ({on_disk} already done in {store.folder})" if on_disk else "")
        + f", {max(1, workers)} worker(s); results in {out}/"
    )
    how: dict[str, Any] = {
        "source": source,
        "workers": workers,
        "progress": progress,
        "train_fn": train_fn,
        "stacked": stacked,
        "device": device,
    }
    results = run_all(grid, store, **how)

    def lookup(rules: str) -> analysis.Lookup:
        return lambda size, lr, s: results[settings.config(rules, size, lr, s)]

    sweeps = {
        r: analysis.build_sweep(
            r, settings.sizes, settings.log2_lrs, settings.seeds, lookup(r), settings.axis
        )
        for r in settings.rules
    }
    transfers = {r: _transfer(settings, sweeps[r], results, store, how) for r in settings.rules}
    summary = _summary(
        settings,
        source,
        fingerprint,
        sweeps,
        transfers,
        results,
        wall=time.perf_counter() - started,
        cpu=_cpu_seconds() - cpu_before,
        trained=len(set(grid)) - on_disk,
        reused=on_disk,
        workers=workers,
        command=command
        or _python_call(out, quick, workers, settings.axis, settings.base.model, device),
        load_before=load_before,
        device=device,
        stacked=stacked,
    )
    _write(summary, out, settings.axis, say)
    return summary


def _source_for(settings: DemoSettings) -> TextCorpus | ArrayDataset:
    """The data the grid trains on: the model's images, or text long enough for its windows."""
    if settings.base.model not in ("gpt", "bert", "hf-bert"):
        return load_source(settings.base)
    source = load_text(settings.base.data)
    shortest = min(len(source.train), len(source.val))
    if shortest < settings.base.seq_len + 2:
        raise DemoError(
            f"the text {source.name!r} is too short: its smaller split has {shortest} bytes, "
            f"fewer than seq_len + 2 = {settings.base.seq_len + 2}; use more text or --seq-len"
        )
    return source


def _write(summary: dict[str, Any], out: Path, axis: str, say: Callable[[str], None]) -> None:
    """``summary.json``, the figure and ``report.md``; the terminal table."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "summary.json", summary)
    report.write_outputs(summary, out)
    say("")
    say(report.terminal_report(summary))
    figure = out / report.figure_name(axis)
    say(f"\nWrote {out / 'summary.json'}, {figure}, {out / report.REPORT_NAME}")


def _transfer(
    settings: DemoSettings,
    sweep: analysis.Sweep,
    results: dict[TrainConfig, dict[str, Any]],
    store: RunStore,
    how: dict[str, Any],
) -> analysis.Transfer:
    """Train (or reuse) the largest model at the proxy's best LR and score it; ``how``:
    ``run_all``'s options (source, workers, progress, trainer, stacking, device)."""
    proxy_lr = sweep.best_log2_lr[0]
    if proxy_lr is None:  # every LR diverged on the proxy: nothing to transfer
        return analysis.transfer(sweep, None, reused=False)
    targets = [
        settings.config(sweep.rules, settings.sizes[-1], proxy_lr, s) for s in settings.seeds
    ]
    # normally the proxy's LR is on the largest size's grid too: reuse those runs
    reused = all(t in results or store.load(t) is not None for t in targets)
    if not all(t in results for t in targets):
        results.update(run_all(targets, store, **how))
    values = [analysis._finite_loss(results[t]) for t in targets]
    finite = [v for v in values if v is not None]
    loss = sum(finite) / len(finite) if len(finite) == len(values) else None
    return analysis.transfer(sweep, loss, reused=reused)


def _summary(
    settings: DemoSettings,
    source: TextCorpus | ArrayDataset,
    fingerprint: str,
    sweeps: dict[str, analysis.Sweep],
    transfers: dict[str, analysis.Transfer],
    results: dict[TrainConfig, dict[str, Any]],
    *,
    wall: float,
    cpu: float,
    trained: int,
    reused: int,
    workers: int,
    command: str,
    load_before: list[float] | None,
    device: str = "cpu",
    stacked: bool = False,
) -> dict[str, Any]:
    claims = None
    reference, candidate = CLAIM_PAIRS[settings.axis]
    if settings.axis not in SIZE_AXES:  # measured on the candidate alone
        if candidate in sweeps:
            claims = analysis.transfers(sweeps[candidate], transfers[candidate])
    elif reference in sweeps and candidate in sweeps:
        claims = analysis.claims(
            sweeps[reference], sweeps[candidate], transfers[reference], transfers[candidate]
        )
    base = settings.config(settings.rules[0], settings.sizes[0], settings.log2_lrs[0], 0)
    info = axis_info(settings.axis)
    varied = ("rules", *info.fields, "lr", "seed")
    config = {k: v for k, v in base.to_dict().items() if k not in varied}
    findings = (
        None
        if settings.axis in SIZE_AXES
        else {r: analysis.finding(sweeps[r], transfers[r]) for r in settings.rules}
    )
    load_after = _load_average()
    return {
        "format": SUMMARY_FORMAT,
        "axis": settings.axis,
        "rules": list(settings.rules),
        "sizes": list(settings.sizes),
        info.key: list(settings.sizes),
        "log2_lrs": list(settings.log2_lrs),
        "seeds": list(settings.seeds),
        "sweeps": {r: s.to_dict() for r, s in sweeps.items()},
        "transfer": {r: t.to_dict() for r, t in transfers.items()},
        "claims": claims,
        "findings": findings,
        "config": config,
        "data": _data_facts(settings, source, fingerprint),
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
            "device": device,
            "stacked": stacked,
            **({"gpu": torch.cuda.get_device_name(device)} if device.startswith("cuda") else {}),
        },
    }


def _data_facts(
    settings: DemoSettings, source: TextCorpus | ArrayDataset, fingerprint: str
) -> dict[str, Any]:
    if isinstance(source, ArrayDataset):
        return {
            "name": source.name,
            "source": source.name,
            "fingerprint": fingerprint,
            "train_images": len(source.train_x),
            "val_images": len(source.val_x),
        }
    return {
        "name": source.name,
        "source": settings.base.data,
        "fingerprint": fingerprint,
        "train_bytes": len(source.train),
        "val_bytes": len(source.val),
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


def _python_call(
    out: Path, quick: bool, workers: int, axis: str, model: str = "gpt", device: str = "cpu"
) -> str:
    vary = "" if axis == "width" else f", vary={axis!r}"
    vary += "" if model == "gpt" else f", model={model!r}"
    vary += "" if device == "cpu" else f", device={device!r}"
    return f"mutransfer.demo.run_demo({str(out)!r}, quick={quick}, workers={workers}{vary})"


# ---------------------------------------------------------------------------------- CLI
