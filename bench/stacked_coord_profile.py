"""Where the coordinate check's time goes on microsoft/mup's example: would stacking seeds help?

Runs ``bench/coord_check_speed.py``'s mutransfer side (mup's coord-check example: MLP
3072 → w → w → 10, widths 128 … 8192, 10 seeds, 3 SGD steps, batch size 1) on one worker
under ``cProfile`` and sorts its time into what stacking the seeds of a width into one model
could and could not remove. The backward pass (weight gradients), the normal init of every
seed's weights, the forward matmuls and the SGD updates are work per seed and per parameter —
a stacked model does the same amount, only in fewer calls; what stacking would save is the
per-call overhead in the rest. Prints a table; records nothing.

    .venv/bin/python bench/stacked_coord_profile.py
"""

from __future__ import annotations

import cProfile
import pstats
import time

import torch

import common
import coord_check_speed

WIDTHS = [128, 256, 512, 1024, 2048, 4096, 8192]
KINDS = {
    "backward (autograd engine)": ("run_backward",),
    "normal init of the weights": ("normal_",),
    "forward matmuls": ("torch._C._nn.linear",),
    "SGD updates (add_)": ("'add_'",),
}


def main() -> int:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(1, 3, 32, 32, generator=gen), torch.tensor([3]))
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    coord_check_speed.run_ours(WIDTHS, 10, 3, batch, 1, "cpu")
    profile.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    seconds = dict.fromkeys(KINDS, 0.0)
    for (_, _, name), (_, _, tottime, _, _) in stats.items():
        for kind, needles in KINDS.items():
            if any(needle in repr(name) for needle in needles):
                seconds[kind] += tottime
    rest = wall - sum(seconds.values())
    rows = [[kind, f"{s:.1f}", f"{100 * s / wall:.0f} %"] for kind, s in seconds.items()]
    rows.append(["everything else (Python, recording, small ops)", f"{rest:.1f}", ""])
    rows[-1][2] = f"{100 * rest / wall:.0f} %"
    print(common.markdown_table(["where", "seconds", "share"], rows))
    print(f"\nwall {wall:.1f} s (profiled, 1 worker); {common.machine_line(common.machine_info())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
