"""Wall time of ``mutransfer.coord_check`` against microsoft/mup's ``get_coord_data``.

The setup is mup's own coordinate-check example (``mup.coord_check.example_plot_coord_check``
with ``arch='mlp'``, which builds its models with ``mup/test/models.py``): an MLP
3072 → width → width → 10 with ReLU and biases, base width 256, Kaiming fan-in normal init,
zero-initialised readout, SGD at lr 0.1 (``MuSGD``), batch size 1, 3 steps, 10 seeds,
widths 2^7 … 2^13. CIFAR-10 is not available offline, so both get the same single batch of
one Gaussian 3×32×32 image (``get_coord_data`` uses only the first batch by default anyway).

Both run in this process, in rotating order, with the same torch thread budget: mup with
torch's intra-op threads, mutransfer with ``workers`` threads of one intra-op thread each; the
table reports the best and the median wall time over repeats, and the CPU seconds used. mup
records before each update, so its last update is never observed: mutransfer is timed both with
the same number of updates (one more recorded state) and with the same recorded states (one
update fewer). mutransfer records more (every module's output and every layer's own update
ΔW·x) and returns a verdict; mup records the mean |output| per module.

On a machine with more cores, ``--cpus 0,1`` pins the run to two of them.

    .venv/bin/python bench/coord_check_speed.py                 # the full example (~minutes)
    .venv/bin/python bench/coord_check_speed.py --seeds 2 --widths 128,256,512 --repeats 1

Needs ``mup`` (``pip install --no-deps mup``) and ``pandas`` (mup's coord check returns a
DataFrame). Writes ``bench/results/coord_check_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import common

RESULTS = common.RESULTS_DIR
EXAMPLE_WIDTHS = "128,256,512,1024,2048,4096,8192"


def mlp(width: int) -> nn.Sequential:
    """The example's MLP, in plain PyTorch (mutransfer parametrizes it from the outside)."""
    return nn.Sequential(
        nn.Linear(3072, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )


def mup_models(widths: list[int], base_width: int) -> dict[int, Any]:
    """Lazy models the way mup's example builds them: model, base model, shapes, init."""
    from mup import MuReadout, set_base_shapes
    from mup.init import kaiming_normal_

    def build(width: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(3072, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            MuReadout(width, 10, readout_zero_init=False),
        )

    def lazy(width: int) -> Any:
        def make() -> nn.Sequential:
            model = build(width)
            set_base_shapes(model, build(base_width))
            for p in model.parameters():
                if p.dim() >= 2:
                    kaiming_normal_(p, mode="fan_in")
            readout = list(model.modules())[-1]
            readout.weight.data.zero_()
            readout.bias.data.zero_()
            return model

        return make

    return {w: lazy(w) for w in widths}


def run_mup(widths: list[int], seeds: int, steps: int, batch: Any, device: str) -> int:
    from mup.coord_check import get_coord_data

    frame = get_coord_data(
        mup_models(widths, 256),
        [batch],
        optimizer="sgd",
        lr=0.1,
        mup=True,
        flatten_input=True,
        nseeds=seeds,
        nsteps=steps,
        cuda=device == "cuda",
        show_progress=False,
    )
    return len(frame)


def run_ours(
    widths: list[int], seeds: int, steps: int, batch: Any, workers: int, device: str
) -> Any:
    from mutransfer.coord import coord_check

    x, y = batch
    return coord_check(
        mlp,
        widths,
        steps=steps,
        seeds=seeds,
        optimizer="sgd",
        lr=0.1,
        data=(x.flatten(1), y),
        base_width=256,
        parametrize_kwargs={"zero_init_readout": True, "init_std": math.sqrt(2.0)},
        workers=workers,
        device=device,
    )


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Any, device: str) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of all threads, result)."""
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def machine(cores: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    import mup

    return {
        "cpu": cpu,
        "cores": cores,
        "torch": torch.__version__,
        "mup": getattr(mup, "__version__", "1.0.0"),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default=EXAMPLE_WIDTHS)
    parser.add_argument("--seeds", type=int, default=10, help="mup's example uses 10")
    parser.add_argument("--steps", type=int, default=3, help="mup's example uses 3")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="mutransfer worker threads")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    parser.add_argument("--cpus", default=None, help="pin to these CPUs, e.g. 0,1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", "--out-dir", dest="out", default=str(RESULTS))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test for CI: widths 128-512, 2 seeds, 1 repeat (seconds; numbers meaningless)",
    )
    args = parser.parse_args()
    if args.quick:
        args.widths, args.seeds, args.repeats = "128,256,512", 2, 1

    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(args.threads or cores)
    widths = [int(w) for w in args.widths.split(",")]
    generator = torch.Generator().manual_seed(20240601)
    batch = (torch.randn(1, 3, 32, 32, generator=generator), torch.tensor([3]))
    # warm-up: imports, first-call costs, allocator
    run_mup(widths[:2], 1, 1, batch, args.device)
    run_ours(widths[:2], 1, 1, batch, args.workers, args.device)
    load_before = os.getloadavg()[0]
    runs = {
        "mup": lambda: run_mup(widths, args.seeds, args.steps, batch, args.device),
        "mutransfer": lambda: run_ours(
            widths, args.seeds, args.steps, batch, args.workers, args.device
        ),
        # mup's last update is never observed (it records before each update): with one update
        # fewer, mutransfer records exactly the states mup records (after 0 … steps−1 updates)
        "mutransfer_same_states": lambda: run_ours(
            widths, args.seeds, args.steps - 1, batch, args.workers, args.device
        ),
    }
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    results: dict[str, Any] = {}
    for repeat in range(args.repeats):
        names = list(runs)
        names = names[repeat % len(names) :] + names[: repeat % len(names)]  # rotate the order
        for name in names:
            seconds, cpu_used, results[name] = timed(runs[name], args.device)
            wall[name].append(seconds)
            cpu[name].append(cpu_used)
            print(f"repeat {repeat + 1}: {name:24s} {seconds:7.2f} s wall {cpu_used:7.2f} s CPU")
    report = results["mutransfer"]
    best = {k: min(v) for k, v in wall.items()}
    median = {k: statistics.median(v) for k, v in wall.items()}
    result = {
        "benchmark": "coord_check_speed",
        "quick": args.quick,
        "date": datetime.date.today().isoformat(),
        "machine": machine(cores),
        "device": args.device,
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "setup": {
            "model": "MLP 3072-w-w-10, ReLU, biases, zero-init readout, base width 256",
            "widths": widths,
            "seeds": args.seeds,
            "steps": args.steps,
            "optimizer": "SGD lr 0.1 (mup: MuSGD)",
            "batch": "one Gaussian 3x32x32 image (batch size 1)",
            "mutransfer_workers": args.workers,
        },
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "best_seconds": best,
        "median_seconds": median,
        "speedup_best": {
            k: round(best["mup"] / best[k], 2) for k in ("mutransfer", "mutransfer_same_states")
        },
        "speedup_median": {
            k: round(median["mup"] / median[k], 2) for k in ("mutransfer", "mutransfer_same_states")
        },
        "mup_rows": results["mup"],
        "mutransfer_series": len(report.rows),
        "mutransfer_verdict": "PASS" if report.ok else "FAIL",
        "mutransfer_warnings": [r.describe() for r in report.vanishing()],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coord_check_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "coord_check_speed.md").write_text(markdown(result, sys.argv[1:]))
    print(json.dumps({k: result[k] for k in ("best_seconds", "speedup_best", "speedup_median")}))


def markdown(r: dict[str, Any], argv: list[str]) -> str:
    m, s = r["machine"], r["setup"]
    best, median, cpu = r["best_seconds"], r["median_seconds"], r["cpu_seconds"]
    rows = [
        ("mup `get_coord_data`", "mup", f"{s['steps']} updates, {s['steps']} recorded states"),
        (
            f"mutransfer `coord_check`, {s['mutransfer_workers']} workers",
            "mutransfer",
            f"{s['steps']} updates, {s['steps'] + 1} recorded states",
        ),
        (
            f"mutransfer `coord_check`, {s['mutransfer_workers']} workers",
            "mutransfer_same_states",
            f"{s['steps'] - 1} updates, the same {s['steps']} states as mup",
        ),
    ]
    table = ["| | steps | best wall | median wall | CPU (all threads) | speed-up (best) |"]
    table.append("|---|---|---|---|---|---|")
    for label, key, steps in rows:
        speedup = "1×" if key == "mup" else f"{r['speedup_best'][key]}×"
        table.append(
            f"| {label} | {steps} | {best[key]:.1f} s | {median[key]:.1f} s | "
            f"{min(cpu[key]):.1f} s | {speedup} |"
        )
    return "\n".join(
        [
            "## Coordinate check: mutransfer vs microsoft/mup",
            "",
            "Command: `.venv/bin/python bench/coord_check_speed.py"
            + "".join(" " + a for a in argv)
            + "`"
            + (" (smoke test: the numbers mean nothing)" if r.get("quick") else ""),
            "",
            f"Machine ({r['date']}): {m['cpu']}, {m['cores']} cores available, torch "
            f"{m['torch']}, mup {m['mup']}, device {r['device']}, {m['torch_threads']} torch "
            f"threads; load average {r['load_average_before_after'][0]} before, "
            f"{r['load_average_before_after'][1]} after.",
            "",
            f"Setup: mup's own coord-check example — {s['model']}; widths "
            f"{', '.join(map(str, s['widths']))}; {s['seeds']} seeds; {s['optimizer']}; "
            f"{s['batch']}.",
            "",
            *table,
            "",
            *reading(r),
            "",
            f"mutransfer's verdict on this (correct µP) setup: {r['mutransfer_verdict']}, from "
            f"{r['mutransfer_series']} series (every module's output and every layer's own "
            f"update ΔW·x); mup returned {r['mup_rows']} rows of mean |output| and no verdict.",
            "",
        ]
    )


def reading(r: dict[str, Any]) -> list[str]:
    """What the numbers say, computed from them (work saved vs time saved, load)."""
    cpu = {k: min(v) for k, v in r["cpu_seconds"].items()}
    work = cpu["mup"] / cpu["mutransfer"]
    work_same = cpu["mup"] / cpu["mutransfer_same_states"]
    wall = r["speedup_best"]["mutransfer"]
    wall_same = r["speedup_best"]["mutransfer_same_states"]
    cores = r["machine"]["cores"]
    load = r["load_average_before_after"][0]
    workers = r["setup"]["mutransfer_workers"]
    lines = [
        f"Reading: mutransfer does {work:.1f}× less CPU work than mup for the same updates "
        f"({work_same:.1f}× for the same recorded states). Each width's model is built once, "
        "on meta (no default init drawn only to be overwritten), and re-initialised per seed "
        "instead of rebuilt (the default init of every rebuilt model is about 30% of mup's "
        "time), and plain SGD's update is read from the gradient instead of a parameter copy. "
        "Both still pay for the same normal init of every seed's weights and the same "
        "backward passes (their fresh gradient buffers' page faults included), which bound "
        "the saving of work to about 2×.",
        "",
    ]
    if min(wall, wall_same) > max(work, work_same) * 1.1:
        lines.append(
            f"The wall time gains more ({wall}× / {wall_same}×): the {workers} worker threads "
            "run the random init and the memory-bound steps of two seeds at once, where mup's "
            "loop cannot use a second core for them."
        )
    else:
        lines.append(
            f"The wall time gains {wall}× / {wall_same}×: the {workers} worker threads did not "
            "add a clear gain on top of the saved work in this run. With free cores they can "
            f"at most multiply it by {min(workers, cores)}, so the aim of ≥ 3× is reachable "
            "only with that parallel gain and is not shown here."
        )
    verdict = "met" if min(wall, wall_same) >= 3 else "not met"
    lines += [
        "",
        f"The aim of ≥ 3× faster than mup is {verdict} in this run ({wall}× for the same "
        f"updates, {wall_same}× for the same recorded states).",
    ]
    if load > cores:
        lines += [
            "",
            f"Caution: the load average ({load}) exceeded the {cores} cores: other jobs shared "
            "the CPUs, so the wall times are inflated and vary from repeat to repeat. The CPU "
            "seconds are the steadier comparison.",
        ]
    return lines


if __name__ == "__main__":
    main()
