"""Where a run's numbers go besides ``metrics.jsonl``: TensorBoard event files and W&B.

Both are optional and off by default: ``tensorboard = true`` (event files in
``<out_dir>/tensorboard``) or a folder; ``wandb_project = "name"`` (Weights & Biases; set
``WANDB_MODE=offline`` to log without an account, ``wandb sync`` later). Each needs its package
(``pip install "mutransfer[monitor]"`` / ``"mutransfer[wandb]"``); a missing one is said at the
start of the run, with the command that installs it. Only the main process writes.

On resume TensorBoard is told to drop the events after the checkpoint's step (``purge_step``),
as ``metrics.jsonl`` moves those records aside: a curve never shows the interrupted session's
steps twice. W&B resumes the same run (its id is kept in ``<out_dir>/wandb-run-id``).
"""

from __future__ import annotations

import importlib.util
import math
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from .config import ConfigError, RunConfig

WANDB_ID = "wandb-run-id"


class Sink(Protocol):
    def log(self, step: int, values: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


def tensorboard_dir(config: RunConfig) -> Path | None:
    """The event-file folder of a run, or None when TensorBoard logging is off."""
    if config.tensorboard is False or config.tensorboard == "":
        return None
    if config.tensorboard is True:
        return Path(config.out_dir) / "tensorboard"
    return Path(str(config.tensorboard))


def check_available(config: RunConfig) -> None:
    """Say at the start, not at the first log line, that a requested logger is not installed."""
    if tensorboard_dir(config) is not None and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "tensorboard = true needs the tensorboard package: "
            'pip install "mutransfer[monitor]" (or set tensorboard = false)'
        )
    if config.wandb_project and importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            f"wandb_project = {config.wandb_project!r} needs the wandb package: "
            'pip install "mutransfer[wandb]" (or leave wandb_project empty)'
        )


class TensorBoardSink:
    """Scalars to TensorBoard event files (torch's own ``SummaryWriter``)."""

    def __init__(self, folder: Path, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events at or after it that an interrupted session wrote
        purge = start_step + 1 if start_step > 0 else None
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            if isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Scalars to a Weights & Biases run; a resumed session continues the same run."""

    def __init__(self, config: RunConfig) -> None:
        import wandb

        id_file = Path(config.out_dir) / WANDB_ID
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self.run = wandb.init(
            project=config.wandb_project,
            id=run_id,
            resume="allow",
            dir=config.out_dir,
            config=config.to_dict(),
        )

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def close(self) -> None:
        self.run.finish()


def open_sinks(config: RunConfig, start_step: int) -> list[Sink]:
    """The sinks a run's config asks for (main process only)."""
    sinks: list[Sink] = []
    folder = tensorboard_dir(config)
    if folder is not None:
        sinks.append(TensorBoardSink(folder, start_step))
    if config.wandb_project:
        sinks.append(WandbSink(config))
    return sinks


def metrics_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """A ``metrics.jsonl`` record as scalar names: ``train/loss``, ``train/lr``, ``val/loss``."""
    names = {
        "loss": "train/loss",
        "lr": "train/lr",
        "adamw_lr": "train/adamw_lr",
        "tokens_per_second": "train/tokens_per_second",
        "val_loss": "val/loss",
    }
    return {names[k]: float(v) for k, v in record.items() if k in names}
