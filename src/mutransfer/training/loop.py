"""The training loop for the target model: transferred hyperparameters, one or many processes.

``train(RunConfig(...))`` is the Python entry point (``mutransfer train CONFIG.toml`` calls it):

1. start or join the process group (``torchrun``) and pick the device;
2. build the model on ``meta`` with its plan, shard it (FSDP2), allocate it on the device and
   initialise it from the plan with the run's seed (identical for any number of processes);
3. the optimizers of the proxy trainer on ``plan.param_groups`` (AdamW/Adam/SGD/Lion: one;
   Muon: Muon for the hidden matrices and AdamW for the rest) and a warmup + decay ``LambdaLR``
   for each — a multiplicative schedule, so every group keeps its µP learning-rate scale;
4. optional ``torch.compile`` and bf16 autocast; gradient accumulation over micro-batches;
5. every process draws the same global batch and trains on its slice, so the loss curve does
   not depend on the number of processes; checkpoints resume it exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import TextCorpus, load_text
from ..errors import Diverged
from ..plan import Plan
from . import checkpoint, distributed, models, resume
from .config import ConfigError, RunConfig
from .distributed import DistEnv
from .options import lr_lambda, make_optimizers

Batch = tuple[torch.Tensor, torch.Tensor]


TrainingDiverged = Diverged
"""The loss became NaN or infinite; the run stops (its last checkpoint stays on disk). The
library's one ``Diverged`` error, under the name this package has exported."""


@dataclass
class RunResult:
    """What a run did. ``losses[i]`` is the mean training loss of step ``start_step + i``."""

    losses: list[float]
    start_step: int
    end_step: int
    val_losses: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    checkpoint: str | None = None
    plan: Plan | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("plan")
        data["val_losses"] = {str(k): v for k, v in self.val_losses.items()}
        return data


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (in float32) of a model returning logits or a HF output."""
    out = model(x)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def _autocast(config: RunConfig, env: DistEnv) -> contextlib.AbstractContextManager[Any]:
    if config.precision == "bf16":
        return torch.autocast(env.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[Batch], config: RunConfig, env: DistEnv) -> float:
    """Mean validation loss over fixed batches, each split over the processes."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=env.device)
    for x, y in batches:
        x = distributed.local_slice(x, env).to(env.device)
        y = distributed.local_slice(y, env).to(env.device)
        with _autocast(config, env):
            total += lm_loss(model, x, y)
    model.train(was_training)
    return distributed.mean_across(total / len(batches), env)


def _check_divisible(config: RunConfig, env: DistEnv) -> None:
    parts = env.world_size * config.grad_accum
    if config.batch_size % parts:
        raise ConfigError(
            f"batch_size {config.batch_size} must be a multiple of processes × grad_accum "
            f"= {env.world_size} × {config.grad_accum}"
        )
    if config.eval_batch_size % env.world_size:
        raise ConfigError(
            f"eval_batch_size {config.eval_batch_size} must be a multiple of the number of "
            f"processes ({env.world_size})"
        )


def _make_run_folder(config: RunConfig) -> None:
    """Create the run folder up front, or say in one line why it cannot be."""
    folder = Path(config.out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the run folder {folder}: {exc.strerror}; pass another --out"
        ) from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"the run folder {folder} is not writable; pass another --out")


class _Log:
    """Progress lines on stdout and ``metrics.jsonl`` in the run folder (main process only)."""

    def __init__(self, config: RunConfig, env: DistEnv, quiet: bool, fresh: bool) -> None:
        self.enabled = env.is_main
        self.quiet = quiet
        self.file = Path(config.out_dir) / "metrics.jsonl"
        if self.enabled:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                self.file.write_text("")  # left by a run that stopped before its 1st checkpoint

    def __call__(self, record: dict[str, Any], line: str | None = None) -> None:
        if not self.enabled:
            return
        with self.file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if line and not self.quiet:
            print(line, flush=True)

    def say(self, line: str) -> None:
        if self.enabled and not self.quiet:
            print(line, flush=True)


def train(
    config: RunConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
    quiet: bool = False,
) -> RunResult:
    """Train the target model of ``config``; see the module docstring for the steps.

    ``on_step(step, loss)`` is called on every process after each optimizer step. Under
    ``torchrun`` every process calls ``train``; the process group is started and ended here
    (or joined, if the caller started it).
    """
    env = distributed.setup(config.parallel, config.device)
    try:
        result = _train(config, env, on_step, quiet)
    except BaseException:
        if env.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # no barrier: other ranks may be gone
        raise
    distributed.teardown(env)
    return result


def _train(
    config: RunConfig,
    env: DistEnv,
    on_step: Callable[[int, float], None] | None,
    quiet: bool,
) -> RunResult:
    _check_divisible(config, env)
    _make_run_folder(config)
    say = print if env.is_main and not quiet else (lambda line: None)
    resume_from = resume.choose_checkpoint(config, say)
    changes = None
    if resume_from is not None:
        saved = checkpoint.read_state(resume_from)["config"]
        changes = resume.compare_configs(saved, config, resume_from)
    log = _Log(config, env, quiet, fresh=resume_from is None)
    torch.manual_seed(config.seed)
    model, plan = models.build(config, meta=True)
    if env.parallel == "fsdp2":
        model = distributed.wrap(model, env)
    models.materialize(model, plan, env.device, config.seed)
    if env.parallel == "ddp":
        model = distributed.wrap(model, env)
    plan.bind(model)
    optimizers = make_optimizers(config, model, plan)
    schedule = lr_lambda(config)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in optimizers]
    forward: nn.Module = model
    if config.compile:
        compiled: Any = torch.compile(
            model, backend=config.compile_backend, fullgraph=config.compile_fullgraph
        )
        forward = compiled

    corpus: TextCorpus = load_text(config.data)
    generator = torch.Generator().manual_seed(10_000 + config.seed)
    eval_batches = corpus.eval_batches(config.eval_batches, config.eval_batch_size, config.seq_len)

    torch.manual_seed(config.seed + 1 + env.rank)  # dropout differs per process, not per run
    start = 0
    if resume_from is not None:
        start = checkpoint.load(
            resume_from,
            model=model,
            optimizers=optimizers,
            schedulers=schedulers,
            plan=plan,
            data_generator=generator,
            env=env,
        )
        log.say(f"mutransfer train: resumed from {resume_from} at step {start}")
        if changes is not None and changes.applied:
            fresh = make_optimizers(config, model, plan)
            resume.apply_live_changes(changes, optimizers, fresh, schedulers)
            log.say(f"mutransfer train: changed since the checkpoint: {changes.describe()}")
        if env.is_main:
            moved = resume.supersede_metrics(config.out_dir, start)
            if moved:
                log.say(
                    f"mutransfer train: {moved} record(s) of metrics.jsonl after step {start} "
                    f"(from the interrupted session) moved to {resume.SUPERSEDED}"
                )
    else:
        log.say(_describe(config, env, plan))
    if env.parallel == "fsdp2" and config.optimizer.lower() == "muon":
        log.say(
            "mutransfer train: Muon under FSDP2 orthogonalises sharded matrices through DTensor, "
            "which gathers each one several times per step (see docs/training.md); DDP does not"
        )

    losses: list[float] = []
    val_losses: dict[int, float] = {}
    last_checkpoint: str | None = str(resume_from) if resume_from else None
    micro = config.batch_size // (env.world_size * config.grad_accum)
    tokens_per_step = config.batch_size * config.seq_len
    began = time.perf_counter()
    tick, tick_step = began, start
    model.train()
    for step in range(start, config.steps):
        x, y = corpus.batch("train", config.batch_size, config.seq_len, generator)
        x, y = distributed.local_slice(x, env), distributed.local_slice(y, env)
        total = torch.zeros((), device=env.device)
        for i, (xm, ym) in enumerate(zip(x.split(micro), y.split(micro), strict=True)):
            last = i == config.grad_accum - 1
            with distributed.gradient_sync(model, enabled=last):
                with _autocast(config, env):
                    loss = lm_loss(forward, xm.to(env.device), ym.to(env.device))
                loss = loss / config.grad_accum
                loss.backward()
            total += loss.detach()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        lrs = [_base_lr(o) for o in optimizers]
        for optimizer in optimizers:
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        value = distributed.mean_across(total, env)
        losses.append(value)
        done = step + 1
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"the training loss became {value} at step {done}; lower lr (or raise "
                f"warmup_steps). Last checkpoint: {last_checkpoint or 'none'}"
            )
        if on_step is not None:
            on_step(step, value)
        lr = lrs[0]
        record: dict[str, Any] = {"step": done, "loss": value, "lr": lr}
        if len(lrs) > 1:
            record["adamw_lr"] = lrs[1]  # Muon's AdamW side
        line = None
        if config.log_every and (done % config.log_every == 0 or done == config.steps):
            now = time.perf_counter()
            speed = tokens_per_step * (done - tick_step) / max(now - tick, 1e-9)
            tick, tick_step = now, done
            record["tokens_per_second"] = speed
            line = f"step {done}/{config.steps}  loss {value:.4f}  lr {lr:.3g}  {speed:,.0f} tok/s"
        if (config.eval_every and done % config.eval_every == 0) or done == config.steps:
            val = evaluate(forward, eval_batches, config, env)
            val_losses[done] = val
            record["val_loss"] = val
            line = (line or f"step {done}/{config.steps}  loss {value:.4f}") + f"  val {val:.4f}"
        log(record, line)
        if (config.checkpoint_every and done % config.checkpoint_every == 0) or (
            done == config.steps
        ):
            folder = checkpoint.save(
                checkpoint.checkpoint_dir(config.out_dir, done),
                model=model,
                optimizers=optimizers,
                schedulers=schedulers,
                step=done,
                plan=plan,
                config=config,
                data_generator=generator,
                env=env,
            )
            checkpoint.prune(config.out_dir, config.keep_checkpoints, env)
            last_checkpoint = str(folder)
    seconds = time.perf_counter() - began
    end = max(start, config.steps)
    result = RunResult(
        losses=losses,
        start_step=start,
        end_step=end,
        val_losses=val_losses,
        seconds=seconds,
        tokens_per_second=tokens_per_step * len(losses) / seconds if losses else 0.0,
        checkpoint=last_checkpoint,
        plan=plan,
    )
    if env.is_main:
        summary = Path(config.out_dir) / "summary.json"
        summary.write_text(json.dumps(result.to_dict(), indent=1))
        log.say(
            f"mutransfer train: steps {start}→{end} in {seconds:.1f} s; "
            f"checkpoint {last_checkpoint}"
        )
    return result


def _adamw_lr(config: RunConfig) -> str:
    if config.optimizer.lower() != "muon":
        return ""
    return f" (AdamW side {config.adamw_lr if config.adamw_lr is not None else config.lr:g})"


def _base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The base LR the schedule gives this step: a group's LR without its µP scale."""
    group = optimizer.param_groups[0]
    return float(group["lr"]) / group.get("lr_scale", 1.0)


def _describe(config: RunConfig, env: DistEnv, plan: Plan) -> str:
    n_params = sum(math.prod(t.shape) for t in plan.tensors.values())
    return (
        f"mutransfer train: {config.model} width {config.width} (base {config.base_width}) "
        f"depth {config.depth}, {n_params / 1e6:.2f} M parameters, rules {plan.rules.name}, "
        f"{config.optimizer} lr {config.lr:g}{_adamw_lr(config)}; "
        f"{env.world_size} process(es), {env.parallel}, {env.device}, "
        f"{config.precision}{', compiled' if config.compile else ''}"
    )
