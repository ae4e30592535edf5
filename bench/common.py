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
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mutransfer.machine import cpu_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"


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
