"""Training runs: the proxy's short runs and the target's big run, from one set of options.

- ``options``: ``RunOptions`` (the hyperparameters both runs share, with their checks), the
  optimizers and the LR schedule built from them;
- ``reference``: the reference GPT/MLP with their plans;
- ``proxy``: ``TrainConfig`` and ``train_proxy`` — one short run of a reference model, a pure
  function of its config (the demo and the sweeps call it per trial);
- ``stacked``: ``train_stacked`` — many proxy runs of one shape trained as one stacked model,
  each with the result ``train_proxy`` gives it (``plan_packs`` groups them);
- ``config``, ``loop``, ``models``, ``checkpoint``, ``resume``, ``distributed``, ``cli``: the big
  run (``RunConfig``, ``train``): Hugging Face models, DDP/FSDP2, bf16, compile, checkpoints.

Python recipe::

    from mutransfer.training import RunConfig, train
    result = train(RunConfig(model="llama", width=1024, base_width=64, lr=2**-6, steps=5000,
                             precision="bf16", compile=True, out_dir="runs/llama"))

Command line: ``mutransfer train run.toml`` (one process) or
``torchrun --nproc-per-node 8 -m mutransfer.cli train run.toml`` (FSDP2). See docs/training.md.
Names are imported on first use: the sweeps' worker processes need only the proxy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "config",
    "RunConfig": "config",
    "load": "config",
    "RunResult": "loop",
    "TrainingDiverged": "loop",
    "lm_loss": "loop",
    "train": "loop",
    "RunOptions": "options",
    "lr_lambda": "options",
    "make_optimizers": "options",
    "TrainConfig": "proxy",
    "TrainResult": "proxy",
    "plan_packs": "stacked",
    "train_stacked": "stacked",
}
_RENAMED = {"train_proxy": ("proxy", "train")}

__all__ = [*_EXPORTS, *_RENAMED]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    if name in _RENAMED:
        module, attr = _RENAMED[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
