"""Each finished trial's curve as TensorBoard event files, beside the sweep's storage.

The storage holds everything durable; this is a view of it for people who live in TensorBoard:
``<folder>/w<width>/trial-<number>`` holds the trial's intermediate losses (what the pruner
saw, ``loss`` by step), its final value and its hyperparameters (TensorBoard's HParams tab
compares trials side by side). A worker writes a trial's curve when it tells the storage the
trial finished; the first worker of a (re)started sweep writes the curves that are still
missing (a worker killed between the two), so the view always catches up with the storage.

    tensorboard --logdir runs/<name>.tensorboard
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def check_available() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            'sweep.tensorboard needs the tensorboard package: pip install "mutransfer[monitor]" '
            "(or set tensorboard = false)"
        )


def trial_folder(folder: str | Path, width: int, number: int) -> Path:
    return Path(folder) / f"w{width}" / f"trial-{number:04d}"


def write_trial(folder: str | Path, width: int, trial: FrozenTrial) -> Path:
    """Write one finished trial's event files (replacing any earlier, partial ones)."""
    from torch.utils.tensorboard import SummaryWriter

    out = trial_folder(folder, width, trial.number)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("events.out.tfevents.*"):
        old.unlink()  # a rewrite (after a kill mid-write) must not double the curve
    writer = SummaryWriter(log_dir=str(out))
    try:
        for step, loss in sorted(trial.intermediate_values.items()):
            if math.isfinite(loss):
                writer.add_scalar("loss", loss, step)
        value = trial.value if trial.value is not None else math.nan
        last = max(trial.intermediate_values, default=0)
        if math.isfinite(value):
            writer.add_scalar("value", value, last)
        params = {
            k: v if isinstance(v, int | float | str | bool) else str(v)
            for k, v in trial.params.items()
        }
        writer.add_hparams(
            {**params, "width": width},
            {"hparam/value": value},
            run_name=".",
        )
    finally:
        writer.close()
    return out


def write_missing(folder: str | Path, width: int, trials: list[FrozenTrial]) -> int:
    """Write the curves of finished trials that have none yet; returns how many."""
    written = 0
    for trial in trials:
        if trial.state.is_finished() and not any(
            trial_folder(folder, width, trial.number).glob("events.out.tfevents.*")
        ):
            write_trial(folder, width, trial)
            written += 1
    return written
