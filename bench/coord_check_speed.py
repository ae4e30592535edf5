"""Wall time of ``mutransfer.coord_check`` against microsoft/mup's ``get_coord_data``.

The setup is mup's own coordinate-check example (``mup.coord_check.example_plot_coord_check``
with ``arch='mlp'``, which builds its models with ``mup/test/models.py``): an MLP
3072 → width → width → 10 with ReLU and biases, base width 256, Kaiming fan-in normal init,
zero-initialised readout, SGD at lr 0.1 (``MuSGD``), batch size 1, 3 steps, 10 seeds,
widths 2^7 … 2^13. CIFAR-10 is not available offline, so both get the same single batch of
one Gaussian 3×32×32 image (``get_coord_data`` uses only the first batch by default anyway).

Both run in this process, alternately, with the same torch thread budget: mup with torch's
intra-op threads, mutransfer with ``workers`` threads of one intra-op thread each. Each repeat
runs both; the table reports the best and the median over repeats. mutransfer records more
(outputs, each layer's own update ΔW·x, attention logits where there are any, one more
step) and returns a verdict; mup records the mean |output| per module.

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
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
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


def run_mup(widths: list[int], seeds: int, steps: int, batch: Any) -> tuple[float, int]:
    from mup.coord_check import get_coord_data

    started = time.perf_counter()
    frame = get_coord_data(
        mup_models(widths, 256),
        [batch],
        optimizer="sgd",
        lr=0.1,
        mup=True,
        flatten_input=True,
        nseeds=seeds,
        nsteps=steps,
        cuda=False,
        show_progress=False,
    )
    return time.perf_counter() - started, len(frame)


def run_ours(
    widths: list[int], seeds: int, steps: int, batch: Any, workers: int
) -> tuple[float, Any]:
    from mutransfer.coord import coord_check

    x, y = batch
    started = time.perf_counter()
    report = coord_check(
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
    )
    return time.perf_counter() - started, report


def machine() -> dict[str, Any]:
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
        "cores": os.cpu_count(),
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
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    generator = torch.Generator().manual_seed(20240601)
    batch = (torch.randn(1, 3, 32, 32, generator=generator), torch.tensor([3]))
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"mup": [], "mutransfer": []}
    report = None
    rows = 0
    for repeat in range(args.repeats):
        order = ["mup", "mutransfer"] if repeat % 2 == 0 else ["mutransfer", "mup"]
        for name in order:
            if name == "mup":
                seconds, rows = run_mup(widths, args.seeds, args.steps, batch)
            else:
                seconds, report = run_ours(widths, args.seeds, args.steps, batch, args.workers)
            times[name].append(seconds)
            print(f"repeat {repeat + 1}: {name:10s} {seconds:7.2f} s", flush=True)
    assert report is not None
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "coord_check_speed",
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "setup": {
            "model": "MLP 3072-w-w-10, ReLU, biases, zero-init readout, base width 256",
            "widths": widths,
            "seeds": args.seeds,
            "steps": args.steps,
            "optimizer": "SGD lr 0.1 (mup: MuSGD)",
            "batch": "one Gaussian 3x32x32 image (batch size 1)",
            "mutransfer_workers": args.workers,
        },
        "seconds": times,
        "best_seconds": best,
        "median_seconds": median,
        "speedup_best": round(best["mup"] / best["mutransfer"], 2),
        "speedup_median": round(median["mup"] / median["mutransfer"], 2),
        "mup_rows": rows,
        "mutransfer_series": len(report.rows),
        "mutransfer_verdict": "PASS" if report.ok else "FAIL",
        "mutransfer_warnings": [r.describe() for r in report.vanishing()],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coord_check_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "coord_check_speed.md").write_text(markdown(result, args))
    print(json.dumps({k: result[k] for k in ("best_seconds", "speedup_best", "speedup_median")}))


def markdown(r: dict[str, Any], args: argparse.Namespace) -> str:
    m, s = r["machine"], r["setup"]
    command = "python bench/coord_check_speed.py" + (
        ""
        if args.widths == EXAMPLE_WIDTHS and args.seeds == 10 and args.repeats == 2
        else f" --widths {args.widths} --seeds {args.seeds} --repeats {args.repeats}"
    )
    return "\n".join(
        [
            "## Coordinate check: mutransfer vs microsoft/mup",
            "",
            f"Command: `{command}` ({r['date']}; {m['cpu']}, {m['cores']} cores, "
            f"torch {m['torch']}, mup {m['mup']}, {m['torch_threads']} torch threads for both; "
            f"load average {r['load_average_before_after'][0]} before, "
            f"{r['load_average_before_after'][1]} after).",
            "",
            f"Setup: mup's own coord-check example — {s['model']}, widths "
            f"{', '.join(map(str, s['widths']))}, {s['seeds']} seeds, {s['steps']} steps, "
            f"{s['optimizer']}, {s['batch']}.",
            "",
            "| | best of repeats | median |",
            "|---|---|---|",
            f"| mup `get_coord_data` | {r['best_seconds']['mup']:.1f} s | "
            f"{r['median_seconds']['mup']:.1f} s |",
            f"| mutransfer `coord_check` ({s['mutransfer_workers']} workers) | "
            f"{r['best_seconds']['mutransfer']:.1f} s | "
            f"{r['median_seconds']['mutransfer']:.1f} s |",
            f"| speed-up | {r['speedup_best']}× | {r['speedup_median']}× |",
            "",
            f"mutransfer's verdict on this (correct µP) setup: {r['mutransfer_verdict']} "
            f"({r['mutransfer_series']} series: outputs and each layer's own update, 4 recorded "
            f"states); mup returned {r['mup_rows']} rows of mean |output| and no verdict.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
