"""The demo's own grid with and without stacking: ``run_demo(stacked=True)`` vs ``False``.

``mutransfer demo --quick`` (widths 32, 64, 128 × 6 LRs × SP and µP = 36 runs of 100 steps,
2 single-thread workers) from an empty folder, once with the run store's stacked packs and
once one run per task, in the order ``--order`` (default ``ABBA``: A = one run per task,
B = stacked; the repeats cancel a drift in the machine's load). Reports each variant's best
wall time and CPU time (the demo's own count: this process and its finished workers), the
ratios, and checks that both found the same best LRs and losses (to 1e-4
relative: a chaotic run at the edge of stability may differ by float32 rounding). Prints a
table; records nothing.

    .venv/bin/python bench/stacked_demo.py
    .venv/bin/python bench/stacked_demo.py --order AB
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from mutransfer import demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", default="ABBA")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    walls: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    summaries: dict[bool, dict[str, Any]] = {}
    loads = []
    for letter in args.order:
        stacked = letter == "B"
        loads.append(os.getloadavg()[0])
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            summaries[stacked] = demo.run_demo(
                Path(folder),
                quick=True,
                workers=args.workers,
                progress=False,
                echo=None,
                stacked=stacked,
            )
            walls[stacked].append(time.perf_counter() - start)
            cpus[stacked].append(summaries[stacked]["run"]["cpu_seconds"])
        way = "stacked" if stacked else "separate"
        print(f"{way}: {walls[stacked][-1]:.1f} s, CPU {cpus[stacked][-1]:.1f} s", flush=True)
    same = _same(summaries[False], summaries[True])
    best = {k: min(v) for k, v in walls.items()}
    cpu = {k: min(v) for k, v in cpus.items()}
    print(
        common.markdown_table(
            ["way", "wall s (each)", "best wall s", "× separate", "CPU s (best)", "× (CPU)"],
            [
                [
                    "one run per task" if not k else "stacked packs",
                    ", ".join(f"{w:.1f}" for w in walls[k]),
                    f"{best[k]:.1f}",
                    f"{best[False] / best[k]:.2f}",
                    f"{cpu[k]:.1f}",
                    f"{cpu[False] / cpu[k]:.2f}",
                ]
                for k in (False, True)
            ],
        )
    )
    print(f"\nSame best LRs and losses (1e-4): {same}; load average before each: {loads}")
    print(f"Command: `{common.command_line(argv)}`")
    print(common.machine_line(common.machine_info()))
    return 0


def _same(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``True`` when every best LR and loss agrees to 1e-4, else which ones differ."""
    found = []
    for rules, sweep in a["sweeps"].items():
        other = b["sweeps"][rules]
        if sweep["best_log2_lr"] != other["best_log2_lr"]:
            found.append(f"{rules} best log2 LR {sweep['best_log2_lr']} vs {other['best_log2_lr']}")
        for i, (row_a, row_b) in enumerate(zip(sweep["loss"], other["loss"], strict=True)):
            for j, (x, y) in enumerate(zip(row_a, row_b, strict=True)):
                if (x is None) != (y is None) or (x is not None and abs(x - y) > 1e-4 * abs(x)):
                    found.append(
                        f"{rules} size {a['sizes'][i]} log2 LR {a['log2_lrs'][j]}: {x} vs {y}"
                    )
    return "True" if not found else "False: " + "; ".join(found)


if __name__ == "__main__":
    raise SystemExit(main())
