"""Resuming a run without silent surprises: which checkpoint, which config, which metrics.

A resumed run must be the run that was interrupted. Three things could make it another one
without anyone noticing, and each is checked here:

- **the checkpoint**: a damaged one (half a shard file, ``trainer_state.pt`` cut short, a
  deleted ``.metadata``) is found *before* loading — with ``resume = "auto"`` the newest intact
  checkpoint is used instead, with a warning; a damaged checkpoint asked for by path is refused
  with the command that resumes from the intact one;
- **the config**: the checkpoint's config is compared with the new one. Fields that may change
  between sessions (``steps``, logging, evaluation and checkpoint cadence, where and how it
  runs) are applied and reported; any other change is refused with the list of changed fields,
  unless allowed by name (``allow_changes``, ``--allow-change lr``) — and then applied for real
  (a new ``lr`` reaches the optimizer, not only ``config.json``); fields fixed when the model
  and plan were built (its shape, the rules, the data) can never change: start a new run;
- **the metrics**: records after the checkpoint's step, written by the interrupted session,
  are moved from ``metrics.jsonl`` to ``metrics.superseded.jsonl``, so every step appears once.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import checkpoint
from .config import ConfigError, RunConfig

MAY_CHANGE: frozenset[str] = frozenset(
    {
        "steps",
        "log_every",
        "eval_every",
        "eval_batches",
        "eval_batch_size",
        "checkpoint_every",
        "keep_checkpoints",
        "out_dir",
        "resume",
        "allow_changes",
        "parallel",
        "device",
        "compile",
        "compile_backend",
        "compile_fullgraph",
        "grad_accum",
        "monitor_every",
        "monitor_reference",
        "monitor_tolerance",
        "monitor_batch_size",
        "tensorboard",
        "wandb_project",
    }
)
"""Fields a resumed session may change freely: how long, how it logs and saves, where it runs
(the global batch and the maths of a step stay the same)."""

APPLIED_IF_ALLOWED: frozenset[str] = frozenset(
    {
        "lr",
        "adamw_lr",
        "weight_decay",
        "warmup_steps",
        "schedule",
        "grad_clip",
        "batch_size",
        "precision",
    }
)
"""Fields the training loop reads live, so a change takes effect when allowed by name."""

METRICS = "metrics.jsonl"
SUPERSEDED = "metrics.superseded.jsonl"


class CheckpointError(ConfigError):
    """A checkpoint cannot be resumed from (damaged, or written by another run)."""


@dataclass(frozen=True)
class ConfigChanges:
    """How a new config differs from the one a checkpoint was trained with."""

    applied: dict[str, tuple[Any, Any]]
    """Changed fields that take effect: name → (checkpoint's value, new value)."""

    def describe(self) -> str:
        return ", ".join(f"{k} {old!r} → {new!r}" for k, (old, new) in self.applied.items())


def compare_configs(saved: Mapping[str, Any], config: RunConfig, path: Path) -> ConfigChanges:
    """The changes a resumed session makes; raises ``ConfigError`` for refused ones."""
    current = config.to_dict()
    changed = {
        key: (saved.get(key), value)
        for key, value in current.items()
        if key in saved and _normal(saved[key]) != _normal(value)
    }
    allowed = set(config.allow_changes)
    refused = {k: v for k, v in changed.items() if k not in MAY_CHANGE and k not in allowed}
    fixed = {k: v for k, v in changed.items() if k in allowed and k not in APPLIED_IF_ALLOWED}
    if fixed:
        raise ConfigError(
            f"cannot resume {path} with {_listing(fixed)}: "
            f"{'this is' if len(fixed) == 1 else 'these are'} fixed when the model and its plan "
            "are built, so the checkpoint does not fit another value. Start a new run: "
            "--resume never with another --out folder."
        )
    if refused:
        names = ",".join(refused)
        raise ConfigError(
            f"the config differs from the one the checkpoint {path} was trained with: "
            f"{_listing(refused)}. Resuming would continue another run than the one saved. "
            f"Either start fresh (--resume never with another --out folder), or confirm the "
            f"change: --allow-change {names} (allow_changes = [...] in the config), which "
            "applies it from the next step."
        )
    return ConfigChanges({k: v for k, v in changed.items() if k not in ("resume", "out_dir")})


def _normal(value: Any) -> Any:
    """Compare lists and tuples (JSON round trips) alike."""
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def _listing(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} = {new!r} (was {old!r})" for k, (old, new) in changes.items())


def apply_live_changes(
    changes: ConfigChanges,
    restored: Sequence[torch.optim.Optimizer],
    fresh: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler],
) -> None:
    """Put allowed LR and weight-decay changes into the restored optimizers and schedulers.

    Loading a checkpoint restores each scheduler's base LRs and each group's weight decay; a
    changed ``lr`` must replace them, or the run would go on with the old values while its
    config says otherwise. ``fresh`` are the optimizers built from the new config and the same
    plan (same groups, in the same order): their groups carry the new values with every
    group's µP scale (and, under independent weight decay, the decay divided by the new LR).
    """
    if not set(changes.applied) & {"lr", "adamw_lr", "weight_decay"}:
        return
    for old, new, scheduler in zip(restored, fresh, schedulers, strict=True):
        for i, (group, source) in enumerate(zip(old.param_groups, new.param_groups, strict=True)):
            group["initial_lr"] = source["lr"]
            group["weight_decay"] = source["weight_decay"]
            scheduler.base_lrs[i] = source["lr"]
        factors = [f(scheduler.last_epoch) for f in getattr(scheduler, "lr_lambdas", [])]
        for group, base, factor in zip(old.param_groups, scheduler.base_lrs, factors, strict=True):
            group["lr"] = base * factor


# ----------------------------------------------------------------------- checkpoints
def damage(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder (None: intact), checked without loading weights."""
    state_file = folder / checkpoint.STATE_FILE
    if not state_file.is_file():
        return f"{checkpoint.STATE_FILE} is missing"
    try:
        state = torch.load(state_file, weights_only=True)
    except Exception as exc:  # truncated or garbled: torch raises several kinds
        return f"{checkpoint.STATE_FILE} cannot be read ({type(exc).__name__}: {exc})"
    if not isinstance(state, dict) or state.get("format") != checkpoint.FORMAT:
        return f"{checkpoint.STATE_FILE} is not a mutransfer checkpoint state"
    try:
        from torch.distributed.checkpoint import FileSystemReader

        metadata = FileSystemReader(str(folder)).read_metadata()
    except Exception as exc:
        return f"its .metadata cannot be read ({type(exc).__name__})"
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        name = str(info.relative_path)
        needed[name] = max(needed.get(name, 0), int(info.offset) + int(info.length))
    for name, size in sorted(needed.items()):
        file = folder / name
        if not file.is_file():
            return f"shard {name} is missing"
        if file.stat().st_size < size:
            return f"shard {name} is cut short ({file.stat().st_size} of {size} bytes)"
    return None


def choose_checkpoint(config: RunConfig, say: Any) -> Path | None:
    """The checkpoint to continue from; damaged ones are skipped (auto) or refused (a path)."""
    if config.resume not in ("auto", "never"):
        path = Path(config.resume)
        problem = damage(path)
        if problem is not None:
            intact = _newest_intact(path.parent)
            hint = (
                f" The newest intact checkpoint there is {intact}: --resume {intact}"
                if intact is not None
                else " No intact checkpoint is left there; start a new run."
            )
            raise CheckpointError(f"cannot resume from {path}: {problem}.{hint}")
        return path
    candidates = checkpoint.checkpoint_folders(config.out_dir)
    if config.resume == "never":
        if candidates:
            raise ConfigError(
                f"{config.out_dir} already holds checkpoints of a run (latest: "
                f"{candidates[-1].name}) and resume = 'never'; use another out_dir, delete "
                "them, or resume = 'auto'"
            )
        return None
    for folder in reversed(candidates):
        problem = damage(folder)
        if problem is None:
            return folder
        message = (
            f"warning: checkpoint {folder} is damaged ({problem}); it is skipped and the run "
            "resumes from the newest intact one before it"
        )
        say(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return None


def _newest_intact(root: Path) -> Path | None:
    for folder in reversed(sorted(root.glob("step_*"))):
        if damage(folder) is None:
            return folder
    return None


# ---------------------------------------------------------------------------- metrics
def supersede_metrics(
    out_dir: str | os.PathLike[str],
    step: int,
    name: str = METRICS,
    side: str = SUPERSEDED,
) -> int:
    """Move the records after ``step`` of ``name`` (``metrics.jsonl``, or the monitor's
    ``monitor.jsonl``) to ``side`` (``metrics.superseded.jsonl``).

    They were written by a session that stopped before its next checkpoint; the resumed run
    writes those steps again. Nothing is deleted. Returns how many records moved.
    """
    path = Path(out_dir) / name
    if not path.is_file():
        return 0
    keep: list[str] = []
    moved: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:
            moved.append(line if line.endswith("\n") else line + "\n")  # a torn last line
            continue
        (moved if int(record.get("step", 0)) > step else keep).append(line)
    if moved:
        with (Path(out_dir) / side).open("a", encoding="utf-8") as fh:
            fh.writelines(moved)
        tmp = path.with_name(name + ".tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        os.replace(tmp, path)
    return len(moved)
