"""Train the target model with transferred hyperparameters: 1 process, DDP or FSDP2.

Python recipe::

    from mutransfer.training import RunConfig, train
    result = train(RunConfig(model="llama", width=1024, base_width=64, lr=2**-6, steps=5000,
                             precision="bf16", compile=True, out_dir="runs/llama"))

Command line: ``mutransfer train run.toml`` (one process) or
``torchrun --nproc-per-node 8 -m mutransfer.cli train run.toml`` (FSDP2). See docs/training.md.
"""

from .config import ConfigError, RunConfig, load
from .loop import RunResult, TrainingDiverged, lm_loss, train

__all__ = ["ConfigError", "RunConfig", "RunResult", "TrainingDiverged", "lm_loss", "load", "train"]
