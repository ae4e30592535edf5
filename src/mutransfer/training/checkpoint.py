"""Checkpoints that resume a run exactly, with one, DDP or FSDP2 processes.

A checkpoint is a folder ``<out_dir>/checkpoints/step_<N>/`` holding

- the model and optimizer states, written with ``torch.distributed.checkpoint`` from
  ``get_state_dict`` (each FSDP2 rank writes its own shards; a checkpoint saved by N processes
  loads into M, or into one). A run with several optimizers (Muon + AdamW) stores them as one
  optimizer state keyed by parameter name: their parameters are disjoint;
- ``trainer_state.pt``: the step, the LR schedulers (one per optimizer), the data generator's
  state, the run config and the plan (``plan.to_dict()``), written last — its presence marks a
  complete checkpoint;
- ``rng_rank<R>.pt``: each process's torch RNG states (dropout), used when resumed with the
  same number of processes;
- ``plan.json`` and ``config.json``: the same plan and config, for people and tools.

Resuming checks that the plan of the new run equals the saved one: resuming under other rules,
another width or other transferred constants would silently change the training dynamics.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..plan import Plan
from .config import ConfigError, RunConfig
from .distributed import DistEnv, barrier

STATE_FILE = "trainer_state.pt"
FORMAT = "mutransfer.checkpoint/1"


def checkpoint_dir(out_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:08d}"


def checkpoint_folders(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Every checkpoint folder in ``out_dir`` (complete or not), oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step_*") if p.is_dir()), key=lambda p: p.name)


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, quota, file-size limit); the previous
    one is intact and the message says so."""


def complete_checkpoints(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints in ``out_dir``, oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest(out_dir: str | os.PathLike[str]) -> Path | None:
    """The most recent complete checkpoint in ``out_dir``, or None."""
    found = complete_checkpoints(out_dir)
    return found[-1] if found else None


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    # torch.distributed.checkpoint warns that it assumes one process when no group exists:
    # exactly what a single-process run wants.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to.*single process")
        yield


def _rng_state(env: DistEnv) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if env.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(env.device)
    return state


def save(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler],
    step: int,
    plan: Plan,
    config: RunConfig,
    data_generator: torch.Generator,
    env: DistEnv,
) -> Path:
    """Save everything needed to continue at ``step`` (a collective call: every rank calls it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict

    folder = Path(path)
    earlier = [p for p in complete_checkpoints(folder.parent.parent) if p != folder]
    previous = earlier[-1] if earlier else None
    if env.is_main and folder.exists():
        shutil.rmtree(folder)  # a run resumed from an earlier step rewrites its later steps
    barrier(env)
    model_state, optim_state = get_state_dict(model, list(optimizers))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        barrier(env)
        with _quiet_single_process():
            dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=folder)
        torch.save(_rng_state(env), folder / f"rng_rank{env.rank}.pt")
    except (OSError, RuntimeError, CheckpointException) as exc:
        # torch.distributed.checkpoint reports a failed write as a CheckpointException, which
        # derives from BaseException and carries the rank's error in its text
        if not _is_write_failure(exc):
            raise
        _write_failed(folder, step, previous, exc, env)
    barrier(env)
    if env.is_main:
        try:
            _write_state_files(folder, step, plan, config, schedulers, data_generator, env)
        except (OSError, RuntimeError) as exc:
            if not _is_write_failure(exc):
                raise
            _write_failed(folder, step, previous, exc, env)
    barrier(env)
    return folder


def _is_write_failure(exc: BaseException) -> bool:
    """An OS error, or what torch's serialisation raises when a file cannot be written in
    full (``PytorchStreamWriter failed writing file``, ``[enforce fail at
    inline_container.cc…] unexpected pos``): a full disk or a file-size limit."""
    text = str(exc)
    return isinstance(exc, OSError) or any(
        sign in text for sign in ("failed writing", "inline_container", "PytorchStreamWriter")
    )


def _write_failed(
    folder: Path, step: int, previous: Path | None, exc: BaseException, env: DistEnv
) -> None:
    """Remove the half-written checkpoint and say what happened and what is intact."""
    if env.is_main:
        shutil.rmtree(folder, ignore_errors=True)
    reason = getattr(exc, "strerror", None) or _last_line(str(exc))
    kept = (
        f"the previous checkpoint {previous} is intact: free space and run the same command "
        "to resume from it"
        if previous is not None
        else "no earlier checkpoint exists: free space and run the same command to start over"
    )
    raise CheckpointWriteError(
        f"could not write the checkpoint of step {step} to {folder} ({reason}): out of disk "
        f"space, or a quota or file-size limit? The half-written folder was removed; {kept}."
    ) from exc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:200]


def _write_state_files(
    folder: Path,
    step: int,
    plan: Plan,
    config: RunConfig,
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler],
    data_generator: torch.Generator,
    env: DistEnv,
) -> None:
    """plan.json, config.json and, last, ``trainer_state.pt`` (its presence marks a complete
    checkpoint; written to a temporary name and renamed, so it is never half there)."""
    plan.to_json(str(folder / "plan.json"))
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    state = {
        "format": FORMAT,
        "step": step,
        "world_size": env.world_size,
        "schedulers": [s.state_dict() for s in schedulers],
        "data_generator": data_generator.get_state(),
        "plan": plan.to_dict(),
        "config": config.to_dict(),
    }
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, folder / STATE_FILE)


def prune(out_dir: str | os.PathLike[str], keep: int, env: DistEnv) -> None:
    """Delete all but the ``keep`` most recent complete checkpoints (rank 0 only)."""
    if env.is_main:
        for old in complete_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(env)


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``trainer_state.pt`` of a checkpoint (step, scheduler, plan, config...)."""
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise ConfigError(
            f"{path} is not a complete mutransfer checkpoint (no {STATE_FILE}); pass a folder "
            "like runs/x/checkpoints/step_00000100, or resume = 'auto'"
        )
    state: dict[str, Any] = torch.load(file, weights_only=True)
    if state.get("format") != FORMAT:
        raise ConfigError(f"{file}: unknown checkpoint format {state.get('format')!r}")
    return state


def check_plan(saved: dict[str, Any], plan: Plan, path: str | os.PathLike[str]) -> None:
    """Refuse to resume under a different plan, naming the first difference."""
    current = plan.to_dict()
    if saved == current:
        return
    reason = ""
    if saved.get("rules") != current.get("rules"):
        reason = "the rules differ"
    elif saved.get("family") != current.get("family"):
        reason = f"optimizer family {saved.get('family')!r} there, {current.get('family')!r} here"
    if not reason:
        for name, entry in current["tensors"].items():
            if saved["tensors"].get(name) != entry:
                reason = f"tensor {name!r} is planned differently"
                break
    raise ConfigError(
        f"the checkpoint {path} was trained under a different plan ({reason or 'other scales'}); "
        "resume with the same model, width, rules and transferred constants, or start a new run "
        "(resume = 'never', or another out_dir)"
    )


def load(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler],
    plan: Plan,
    data_generator: torch.Generator,
    env: DistEnv,
) -> int:
    """Restore a checkpoint into a freshly built run; returns the step to continue from."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    folder = Path(path)
    state = read_state(folder)
    check_plan(state["plan"], plan, folder)
    # a checkpoint from before Muon support holds one scheduler under "scheduler"
    saved_schedulers = state.get("schedulers") or [state["scheduler"]]
    if len(saved_schedulers) != len(schedulers):
        raise ConfigError(
            f"the checkpoint {folder} was trained with {len(saved_schedulers)} optimizer(s), "
            f"this run has {len(schedulers)} (optimizer {state['config'].get('optimizer')!r} "
            "there); resume with the same optimizer, or start a new run"
        )
    model_state, optim_state = get_state_dict(model, list(optimizers))
    loaded: dict[str, Any] = {"model": model_state, "optim": optim_state}
    with _quiet_single_process():
        dcp.load(loaded, checkpoint_id=folder)
    set_state_dict(
        model,
        list(optimizers),
        model_state_dict=loaded["model"],
        optim_state_dict=loaded["optim"],
    )
    for scheduler, saved in zip(schedulers, saved_schedulers, strict=True):
        scheduler.load_state_dict(saved)
    data_generator.set_state(state["data_generator"])
    rng_file = folder / f"rng_rank{env.rank}.pt"
    if state["world_size"] == env.world_size and rng_file.is_file():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and env.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], env.device)
    return int(state["step"])


def export_model(path: str | os.PathLike[str], out_file: str | os.PathLike[str]) -> Path:
    """Write a checkpoint's full model weights, plan and config as one ``torch.save`` file.

    For inference or fine-tuning elsewhere: ``torch.load(out_file)["model"]`` is an ordinary
    (unsharded) state dict and ``Plan.from_dict(torch.load(out_file)["plan"])`` its plan. Runs
    in one process, whatever the number of processes that wrote the checkpoint.
    """
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    state = read_state(path)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.pt"
        with _quiet_single_process():
            dcp_to_torch_save(path, full)
        weights = torch.load(full, weights_only=True)["model"]
    out = Path(out_file)
    torch.save(
        {"model": weights, "plan": state["plan"], "config": state["config"], "step": state["step"]},
        out,
    )
    return out
