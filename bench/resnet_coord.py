"""The ResNet's coordinate check at widths the unit test cannot afford (Tensor Programs V: 4096).

The model of ``tests/test_resnet.py`` (pre-activation ResNet, two stages of ``width`` and
``2 × width`` channels, one block each, BatchNorm), SGD with momentum 0.9 at the check's default
LR, 4 × 4 random one-channel images in batches of 4, 3 steps, 2 seeds, µP and SP. The widest
convolution of width ``w`` is ``2w × 2w × 3 × 3``; width 2048 reaches 4096 channels.

    .venv/bin/python bench/resnet_coord.py                      # widths 256..2048
    .venv/bin/python bench/resnet_coord.py --widths 64,128,256  # smoke

Writes ``bench/results/resnet_coord.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import common
from mutransfer.coord import coord_check
from mutransfer.models import ResNet, ResNetConfig

CFG = ResNetConfig(width=32, depth=1, stage_ratios=(1, 2), stem_stride=1)


def images(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(4, 1, 4, 4, generator=generator)
    return x, torch.randint(0, 10, (4,), generator=generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="256,512,1024,2048")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default=str(common.RESULTS_DIR))
    args = parser.parse_args()
    torch.set_num_threads(1)
    widths = [int(w) for w in args.widths.split(",")]
    results = {}
    for rules in ("mup", "sp"):
        start = time.perf_counter()
        report = coord_check(
            lambda w: ResNet(CFG.with_(width=w)),
            widths,
            steps=args.steps,
            seeds=args.seeds,
            data=images,
            rules=rules,
            optimizer="sgd",
            optimizer_kwargs={"momentum": 0.9},
        )
        seconds = time.perf_counter() - start
        culprits = sorted({f"{m} ({q})" for m, q in (r.key for r in report.culprits())})
        results[rules] = {"ok": report.ok, "seconds": seconds, "culprits": culprits}
        results[rules]["table"] = str(report)
        print(f"{rules}: {'PASS' if report.ok else 'FAIL'} in {seconds:.0f} s; {culprits}")
    info = common.machine_info()
    data = {"widths": widths, "seeds": args.seeds, "steps": args.steps, "machine": info, **results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "resnet_coord.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    lines = [
        f"## ResNet coordinate check to {2 * max(widths)} channels (`bench/resnet_coord.py`)",
        "",
        f"Widths {', '.join(map(str, widths))} (stage 2: twice as many channels), SGD momentum "
        f"0.9, {args.steps} steps, {args.seeds} seeds, 4 × 4 random images in batches of 4.",
        "",
        "| rules | verdict | seconds | at fault |",
        "|---|---|---:|---|",
    ]
    for rules in ("mup", "sp"):
        r = results[rules]
        verdict = "pass" if r["ok"] else "fail"
        lines.append(f"| {rules} | {verdict} | {r['seconds']:.0f} | {', '.join(r['culprits'])} |")
    lines += ["", f"Machine: {common.machine_line(info)}", ""]
    (out / "resnet_coord.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
