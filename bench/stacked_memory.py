"""Is ``run_memory_bytes`` an upper bound? Peak RSS growth of ``train_stacked`` against it.

For a few reference models and pack sizes: the process's resident-set peak (``VmHWM``, reset
just before) minus its size before the call, against ``pack × run_memory_bytes(config)``. One
warm-up call per model first, so that the allocator's and torch's one-time memory is not
counted against the pack. Linux only (``/proc/self``). Prints a table; records nothing.

    .venv/bin/python bench/stacked_memory.py
"""

from __future__ import annotations

import gc

import torch

import common
from mutransfer.training.proxy import TrainConfig, load_source
from mutransfer.training.stacked import run_memory_bytes, train_stacked

CASES = (("gpt", 64, 4), ("gpt", 256, 4), ("gpt", 512, 2), ("mlp", 1024, 4))


def main() -> int:
    torch.set_num_threads(1)
    rows = []
    for model, width, pack in CASES:
        config = TrainConfig(
            model=model, width=width, base_width=32, steps=3, depth=2 if model == "gpt" else 3
        )
        source = load_source(config)
        train_stacked([config.with_(seed=1)], source=source)
        gc.collect()
        before = common.rss_bytes()
        if before is None or not common.reset_peak_rss():
            raise SystemExit("needs Linux's /proc/self/status and /proc/self/clear_refs")
        train_stacked([config.with_(lr=2.0**-i) for i in range(pack)], source=source)
        peak = common.peak_rss_bytes()
        assert peak is not None
        estimate = pack * run_memory_bytes(config)
        rows.append(
            [
                model,
                width,
                pack,
                f"{(peak - before) / 2**20:.0f}",
                f"{estimate / 2**20:.0f}",
                f"{estimate / (peak - before):.2f}",
            ]
        )
    print(
        common.markdown_table(
            ["model", "width", "pack", "peak RSS growth MiB", "estimate MiB", "estimate / peak"],
            rows,
        )
    )
    print(f"\n{common.machine_line(common.machine_info())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
