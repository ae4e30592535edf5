"""Shared helpers for the benchmarks in ``bench/``: machine facts, fair timing, results on disk.

Every benchmark script imports this module as ``common`` (running ``python bench/<name>.py``
puts ``bench/`` first on ``sys.path``). The helpers exist so that all benchmarks measure the
same way:

- ``interleave`` times competing variants *round-robin* inside one process instead of one after
  the other, so that a slow minute on a shared 2-core machine (another process, thermal drift,
  the allocator warming up) hits every variant alike; ratios are taken within each round.
- ``summarize``/``paired_ratio`` report medians and quartiles, never means: one preempted sample
  must not move a number.
- ``rss_bytes`` reads the kernel's resident-set figure so memory claims ("nothing materialised")
  are measured, not assumed.
- ``write_results`` writes the machine-readable ``.json`` beside the ``.md`` section that is
  merged into BENCHMARKS.md, with the machine and date in both.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mutransfer.machine import cpu_model

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
"""The repository root: every benchmark's paths start here."""
RESULTS_DIR = BENCH_DIR / "results"
IMAGES_DIR = ROOT / "docs" / "images"
"""Where the figures that docs/ and BENCHMARKS.md show are written."""


# ------------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    """What a reader needs to judge a number: CPU, core count, Python/torch versions, date."""
    import torch

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def machine_line(info: Mapping[str, Any]) -> str:
    """One markdown line describing the machine, for the ``.md`` sections."""
    return (
        f"{info['cpu']} ({info['cpu_count']} logical CPUs, torch threads "
        f"{info['torch_threads']}), Python {info['python']}, torch {info['torch']}, "
        f"{info['platform']}; {info['date']}"
    )


# -------------------------------------------------------------------------------- timing
def interleave(
    cases: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 2,
    number: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time each case ``repeats`` times, round-robin, and return seconds per call by case.

    Each round runs every case once (``number`` calls per sample, averaged), starting from a
    different case each round so that no variant always runs first (right after another's
    allocations). ``warmup`` full rounds run first and are discarded: first calls pay for
    lazy state (optimizer moments, allocator pools, autograd graph caches).

    ``clock``: wall time by default; ``time.thread_time`` (see ``cpu_clock``) leaves out the
    time this thread spent descheduled, which on a machine shared with other jobs is most of
    the noise — valid only when all the work runs on the calling thread.
    """
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError(
            f"need repeats >= 1, number >= 1, warmup >= 0; got {repeats}, {number}, {warmup}"
        )
    names = list(cases)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        offset = r % len(names)
        for name in names[offset:] + names[:offset]:
            fn = cases[name]
            start = clock()
            for _ in range(number):
                fn()
            elapsed = (clock() - start) / number
            if r >= warmup:
                samples[name].append(elapsed)
    return samples


def cpu_clock(threads: int) -> tuple[Callable[[], float], str]:
    """The clock to time torch CPU work with, and its name for the results.

    With one torch thread, forward, backward (the autograd engine runs CPU work on the calling
    thread) and optimizer steps all run on this thread, so its CPU time is the cost of the work
    whatever else the machine is doing. With more threads that is no longer true: wall time.
    """
    if threads == 1:
        return time.thread_time, "thread CPU time (time.thread_time)"
    return time.perf_counter, "wall time (time.perf_counter)"


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, extremes and count of a list of timings."""
    if not samples:
        raise ValueError("no samples to summarize")
    xs = sorted(samples)
    if len(xs) == 1:
        q1 = q3 = xs[0]
    else:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return {
        "median": statistics.median(xs),
        "q1": q1,
        "q3": q3,
        "min": xs[0],
        "max": xs[-1],
        "n": len(xs),
    }


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Summary of per-round ratios ``numerator[i] / denominator[i]`` (same round, same load)."""
    if len(numerator) != len(denominator):
        raise ValueError("paired_ratio needs samples from the same rounds (equal lengths)")
    return summarize([a / b for a, b in zip(numerator, denominator, strict=True)])


# -------------------------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes() -> int | None:
    """Current resident set size (``VmRSS``), or None where /proc is unavailable."""
    kib = _proc_status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int | None:
    """Peak resident set size since start or the last ``reset_peak_rss`` (``VmHWM``)."""
    kib = _proc_status_kib("VmHWM")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0), so a phase's own peak can be read.

    Without it the peak is the process's whole-life maximum and hides a short-lived allocation
    in a later phase. Returns False where the kernel does not allow it.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------- results
def demo_proxy_grid(
    width: int,
    steps: int,
    log2_lrs: Sequence[float] = tuple(range(-11, -3)),
    seeds: Sequence[int] = (0, 1),
    **changes: Any,
) -> list[Any]:
    """The demo's proxy sweep at one width, one ``TrainConfig`` per (LR, seed): the byte-level
    GPT (2 blocks, 4 heads, µP with base width 32) on Shakespeare, AdamW, batch 16 × 64 bytes;
    ``changes`` replace any of those (the stacking benchmarks' shared grid)."""
    from mutransfer.training.proxy import TrainConfig

    options: dict[str, Any] = {
        "model": "gpt",
        "base_width": 32,
        "depth": 2,
        "n_heads": 4,
        "seq_len": 64,
        "batch_size": 16,
        "optimizer": "adamw",
        "data": "shakespeare",
    }
    base = TrainConfig(**{**options, "width": width, "steps": steps, **changes})
    return [base.with_(lr=2.0**e, seed=s) for e in log2_lrs for s in seeds]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that reproduces this run, relative to the repository root."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):  # a script outside the repository keeps its path
        script = script.resolve().relative_to(Path(__file__).resolve().parent.parent)
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join([".venv/bin/python", str(script), *args])


def write_results(
    name: str, payload: Mapping[str, Any], markdown: str, out_dir: Path | str = RESULTS_DIR
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return json_path, md_path


def read_results(name: str, out_dir: Path | str = RESULTS_DIR) -> dict[str, Any]:
    """The recorded ``<out_dir>/<name>.json`` (for ``--rerender``); exits if there is none."""
    path = Path(out_dir) / f"{name}.json"
    try:
        payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"{path} does not exist: run the benchmark first") from None
    return payload


def arg_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick``, ``--out-dir``, ``--threads``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and few repeats (seconds; CI smoke)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=RESULTS_DIR,
        help=f"where to write <name>.json and <name>.md (default: {RESULTS_DIR})",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (default 1: shared CPU)"
    )
    return parser


def add_run_cache_options(parser: argparse.ArgumentParser, runs_dir_help: str) -> None:
    """The options of the benchmarks that train through the demo's run store: ``--workers``,
    ``--runs-dir`` (where finished runs are cached) and ``--rerender`` (rewrite the .md from
    the recorded .json, keeping its provenance, without training)."""
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1 thread each)")
    parser.add_argument("--runs-dir", type=Path, default=None, help=runs_dir_help)
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="rewrite the .md (and figures) from the .json in --out-dir, no training: keeps the "
        "recorded runs' provenance when only the text or the figure code changed",
    )


# ------------------------------------------------------------------ the demo's record
def demo_results_section(
    summary: dict[str, Any],
    seed_checks: Sequence[dict[str, Any]] = (),
    figure: str | None = None,
    heading: str | None = None,
) -> str:
    """The demo's entry for ``bench/results/*.md``: the numbers, the command, the machine.

    One column per compared preset. ``seed_checks``: summaries of the same settings run with
    other seeds, shown as one row each so that a reader sees whether the claims depend on the
    seed. ``figure``: the image's path relative to the results file.
    """
    from mutransfer.demo.analysis import CLAIM_PAIRS
    from mutransfer.demo.axes import axis_info, setting_label
    from mutransfer.demo.report import (
        claim_lines,
        figure_name,
        finding_lines,
        fmt_fit,
        fmt_loss,
        fmt_lr,
        fmt_pct,
        normalise,
        provenance_lines,
        rules_name,
    )
    from mutransfer.demo.report import markdown_table as demo_table  # right-aligned numbers

    summary = normalise(summary)
    axis = summary["axis"]
    info = axis_info(axis)
    figure = figure or f"../../docs/images/{figure_name(axis)}"
    sizes = summary["sizes"]
    first, last = setting_label(axis, sizes[0]), setting_label(axis, sizes[-1])
    joined = "/".join(map(str, sizes))
    rules = summary["rules"]
    names = [rules_name(r) for r in rules]

    def each(fn: Any) -> list[str]:
        return [fn(summary["sweeps"][r], summary["transfer"][r]) for r in rules]

    rows = [
        [
            f"best log2 LR, {info.plural} {joined}",
            *each(lambda s, t: "/".join(map(fmt_lr, s["best_log2_lr"]))),
        ],
        ["optimum drift (octaves)", *each(lambda s, t: fmt_lr(s["drift_octaves"]))],
        [
            "fitted optimum (parabola through the best 3 points)",
            *each(lambda s, t: "/".join(fmt_fit(x) for x in s.get("fitted_log2_lr") or [])),
        ],
        [
            "fitted drift (octaves)",
            *each(lambda s, t: fmt_fit(s.get("fitted_drift_octaves"))),
        ],
        [
            f"best loss, {info.plural} {joined}",
            *each(lambda s, t: "/".join(fmt_loss(x) for x in s["best_loss"])),
        ],
        [
            f"{last} at {first}'s best LR",
            *each(
                lambda s, t: f"{fmt_loss(t['transferred_loss'])} (2^{fmt_lr(t['proxy_log2_lr'])})"
            ),
        ],
        [
            f"{last}, best of its own sweep",
            *each(
                lambda s, t: (
                    f"{fmt_loss(t['direct_best_loss'])} (2^{fmt_lr(t['direct_best_log2_lr'])})"
                )
            ),
        ],
        ["transfer regret", *each(lambda s, t: fmt_pct(t["regret_percent"]))],
    ]
    fraction = summary["transfer"][rules[0]].get("compute_fraction")
    default_heading = (
        "µTransfer demo: learning rate × width, SP vs µP (`mutransfer demo`)"
        if axis == "width"
        else f"µTransfer demo across {info.plural}: "
        + " vs ".join(names)
        + f" (`mutransfer demo --vary {axis}`)"
    )
    out = [
        f"## {heading or default_heading}",
        "",
        f"![{' vs '.join(names)}: validation loss against log2 learning rate]({figure})",
        "",
        demo_table(["", *names], rows),
        "",
    ]
    if fraction is not None and axis != "schedule":
        out += [
            f"The proxy sweep ({first}) cost {100 * fraction:.1f} % of the "
            f"FLOPs of sweeping {last} directly.",
            "",
        ]
    if summary.get("claims"):
        out += ["Claims on this run:", ""]
        out += ["- " + line for line in claim_lines(summary)]
        out.append("")
    if summary.get("findings"):
        out += ["Does the LR transfer along this axis?", ""]
        out += ["- " + line for line in finding_lines(summary)]
        out.append("")
    if seed_checks:
        reference, candidate = CLAIM_PAIRS[axis]
        ref, cand = rules_name(reference), rules_name(candidate)
        largest = info.largest
        out += [
            "Same settings, other seeds (each a full grid with one seed: "
            + ", ".join(f"`{c['run']['command']}`" for c in seed_checks)
            + "):",
            "",
            demo_table(
                [
                    "seed",
                    f"{ref} drift",
                    f"{cand} drift",
                    f"{ref} regret",
                    f"{cand} regret",
                    f"{cand} {largest} best",
                    "all claims",
                ],
                [_demo_seed_row(normalise(s)) for s in [summary, *seed_checks]],
            ),
            "",
        ]
    out += ["How it was produced:", ""]
    out += ["- " + line for line in provenance_lines(summary)]
    return "\n".join(out) + "\n"


def _demo_seed_row(summary: dict[str, Any]) -> list[str]:
    from mutransfer.demo.analysis import CLAIM_PAIRS
    from mutransfer.demo.report import fitted_short, fmt_lr, fmt_pct

    sweeps, transfer, claims = summary["sweeps"], summary["transfer"], summary.get("claims") or {}
    reference, candidate = CLAIM_PAIRS[summary["axis"]]
    better: dict[str, Any] = next((c for k, c in claims.items() if k.endswith("_is_better")), {})
    return [
        ",".join(map(str, summary["seeds"])),
        fmt_lr(sweeps[reference]["drift_octaves"]) + fitted_short(sweeps[reference]),
        fmt_lr(sweeps[candidate]["drift_octaves"]) + fitted_short(sweeps[candidate]),
        fmt_pct(transfer[reference]["regret_percent"]),
        fmt_pct(transfer[candidate]["regret_percent"]),
        "yes" if better.get("holds") else "no",
        "yes" if claims and all(c["holds"] for c in claims.values()) else "no",
    ]


def place_figure(drawn: Path, name: str, out_dir: Path) -> str:
    """Copy a figure a demo drew to where the results link it; returns the link.

    Recorded results (``out_dir`` is ``bench/results``) keep their figures with the docs, in
    ``docs/images``, which BENCHMARKS.md (at the repository root) links; any other output
    folder (``--quick``, a scratch run) gets its own copy next to its markdown.
    """
    if out_dir.resolve() == RESULTS_DIR.resolve():
        IMAGES_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(drawn, IMAGES_DIR / name)
        return f"docs/images/{name}"
    shutil.copyfile(drawn, out_dir / name)
    return name
