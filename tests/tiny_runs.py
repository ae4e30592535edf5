"""The smallest real ``mutransfer train`` run, shared by the training tests.

A width-64 GPT on pydoc text for a few steps: seconds on one thread, yet every part of the
big-run path (plan, schedule, evaluation, checkpoints) takes part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mutransfer.training import RunConfig


def tiny_run(out_dir: Path, /, **changes: Any) -> RunConfig:
    """The tiny run writing to ``out_dir``; ``changes`` override any option (``out_dir`` too)."""
    options: dict[str, Any] = dict(
        width=64,
        base_width=32,
        depth=2,
        n_heads=2,
        seq_len=16,
        batch_size=8,
        steps=6,
        warmup_steps=2,
        data="pydoc",
        eval_batches=1,
        eval_batch_size=4,
        log_every=0,
        out_dir=str(out_dir),
    )
    options.update(changes)
    return RunConfig(**options)
