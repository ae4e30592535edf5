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
   not depend on the number of processes; checkpoints resume it exactly;
6. optionally, every ``monitor_every`` steps each layer's activation and update RMS are sampled
   and checked against the proxy's (``monitor``), and everything logged goes to TensorBoard
   and/or W&B too (``tracking``).
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
from . import checkpoint, distributed, models, monitor, resume, tracking
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
    """Progress lines on stdout, ``metrics.jsonl`` in the run folder and the optional
    TensorBoard/W&B sinks (main process only)."""

    def __init__(self, config: RunConfig, env: DistEnv, quiet: bool, fresh: bool) -> None:
        self.enabled = env.is_main
        self.quiet = quiet
        self.file = Path(config.out_dir) / "metrics.jsonl"
        self.sinks: list[tracking.Sink] = []
        if self.enabled:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            if fresh:  # left by a run that stopped before its 1st checkpoint
                self.file.write_text("")
                (self.file.parent / monitor.MONITOR).unlink(missing_ok=True)

    def open_sinks(self, config: RunConfig, start_step: int) -> None:
        if self.enabled:
            self.sinks = tracking.open_sinks(config, start_step)

    def __call__(self, record: dict[str, Any], line: str | None = None) -> None:
        if not self.enabled:
            return
        with self.file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        self.scalars(int(record["step"]), tracking.metrics_scalars(record))
        if line and not self.quiet:
            print(line, flush=True)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log(step, values)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []

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
    """Set up (or resume) the run, loop over its steps, write its summary."""
    _check_divisible(config, env)
    monitor.check_supported(env.parallel, config.monitor_every)
    tracking.check_available(config)
    _make_run_folder(config)
    say = print if env.is_main and not quiet else (lambda line: None)
    resume_from = resume.choose_checkpoint(config, say)
    changes = None
    if resume_from is not None:
        saved = checkpoint.read_state(resume_from)["config"]
        changes = resume.compare_configs(saved, config, resume_from)
    log = _Log(config, env, quiet, fresh=resume_from is None)
    run = _Run.build(config, env, log)
    start = run.resume(resume_from, changes) if resume_from is not None else 0
    if resume_from is None:
        log.say(_describe(config, env, run.plan))
    if env.parallel == "fsdp2" and config.optimizer.lower() == "muon":
        log.say(
            "mutransfer train: Muon under FSDP2 orthogonalises sharded matrices through DTensor, "
            "which gathers each one several times per step (see docs/training.md); DDP does not"
        )
    run.last_checkpoint = str(resume_from) if resume_from else None
    log.open_sinks(config, start)
    try:
        began = time.perf_counter()
        run.tick, run.tick_step = began, start
        run.model.train()
        for step in range(start, config.steps):
            value, lrs = run.step(step)
            run.losses.append(value)
            done = step + 1
            run.sample_layers(step, lrs[0])
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"the training loss became {value} at step {done}; lower lr (or raise "
                    f"warmup_steps). Last checkpoint: {run.last_checkpoint or 'none'}"
                )
            if on_step is not None:
                on_step(step, value)
            run.record(done, value, lrs)
            run.maybe_checkpoint(done)
        return run.summary(start, time.perf_counter() - began)
    finally:
        log.close()


@dataclass
class _Run:
    """The state of one run between steps: model, optimizers, schedulers, data, log."""

    config: RunConfig
    env: DistEnv
    log: _Log
    model: nn.Module
    forward: nn.Module
    plan: Plan
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.LambdaLR]
    corpus: TextCorpus
    generator: torch.Generator
    eval_batches: list[Batch]
    layer_monitor: monitor.LayerMonitor | None = None
    losses: list[float] = field(default_factory=list)
    val_losses: dict[int, float] = field(default_factory=dict)
    last_checkpoint: str | None = None
    tick: float = 0.0
    tick_step: int = 0

    @classmethod
    def build(cls, config: RunConfig, env: DistEnv, log: _Log) -> _Run:
        """The model on meta, sharded (FSDP2), allocated and initialised by the plan with the
        run's seed (the same weights for any number of processes); its optimizers, schedule,
        optional compile; the data."""
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
        eval_batches = corpus.eval_batches(
            config.eval_batches, config.eval_batch_size, config.seq_len
        )
        torch.manual_seed(config.seed + 1 + env.rank)  # dropout differs per process, not per run
        return cls(
            config, env, log, model, forward, plan, optimizers, schedulers, corpus, generator,
            eval_batches, _layer_monitor(config, env, model, corpus, plan),
        )  # fmt: skip

    def resume(self, folder: Path, changes: resume.ConfigChanges | None) -> int:
        """Restore a checkpoint; apply allowed config changes; supersede later metrics."""
        config, log = self.config, self.log
        start = checkpoint.load(
            folder,
            model=self.model,
            optimizers=self.optimizers,
            schedulers=self.schedulers,
            plan=self.plan,
            data_generator=self.generator,
            env=self.env,
        )
        log.say(f"mutransfer train: resumed from {folder} at step {start}")
        if changes is not None and changes.applied:
            fresh = make_optimizers(config, self.model, self.plan)
            resume.apply_live_changes(changes, self.optimizers, fresh, self.schedulers)
            log.say(f"mutransfer train: changed since the checkpoint: {changes.describe()}")
        if self.env.is_main:
            moved = resume.supersede_metrics(config.out_dir, start)
            if moved:
                log.say(
                    f"mutransfer train: {moved} record(s) of metrics.jsonl after step {start} "
                    f"(from the interrupted session) moved to {resume.SUPERSEDED}"
                )
            resume.supersede_metrics(
                config.out_dir, start, name=monitor.MONITOR, side=monitor.SUPERSEDED
            )
        if self.layer_monitor is not None:
            self.layer_monitor.continue_from(config.out_dir)
        return start

    def step(self, index: int) -> tuple[float, list[float]]:
        """Optimizer step ``index`` (0-based) on a global batch (this process's slice, in
        micro-batches); returns the mean loss over the processes and the base LRs it used."""
        config, env = self.config, self.env
        micro = config.batch_size // (env.world_size * config.grad_accum)
        x, y = self.corpus.batch("train", config.batch_size, config.seq_len, self.generator)
        x, y = distributed.local_slice(x, env), distributed.local_slice(y, env)
        total = torch.zeros((), device=env.device)
        for i, (xm, ym) in enumerate(zip(x.split(micro), y.split(micro), strict=True)):
            last = i == config.grad_accum - 1
            with distributed.gradient_sync(self.model, enabled=last):
                with _autocast(config, env):
                    loss = lm_loss(self.forward, xm.to(env.device), ym.to(env.device))
                loss = loss / config.grad_accum
                loss.backward()
            total += loss.detach()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        lrs = [_base_lr(o) for o in self.optimizers]
        if self.layer_monitor is not None:
            self.layer_monitor.before_step(index)
        for optimizer in self.optimizers:
            optimizer.step()
        for scheduler in self.schedulers:
            scheduler.step()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        return distributed.mean_across(total, env), lrs

    def sample_layers(self, index: int, lr: float) -> None:
        """The layer monitor's sample of step ``index`` (base LR ``lr``), when it is due."""
        if self.layer_monitor is None:
            return
        with _autocast(self.config, self.env):
            sampled = self.layer_monitor.after_step(index, lr)
        if sampled is not None:
            self.log.scalars(index + 1, monitor.scalars(sampled[0].layers))

    def record(self, done: int, value: float, lrs: list[float]) -> None:
        """The step's metrics record (and, at the logging and evaluation cadence, a line)."""
        config = self.config
        lr = lrs[0]
        record: dict[str, Any] = {"step": done, "loss": value, "lr": lr}
        if len(lrs) > 1:
            record["adamw_lr"] = lrs[1]  # Muon's AdamW side
        line = None
        if config.log_every and (done % config.log_every == 0 or done == config.steps):
            now = time.perf_counter()
            tokens_per_step = config.batch_size * config.seq_len
            speed = tokens_per_step * (done - self.tick_step) / max(now - self.tick, 1e-9)
            self.tick, self.tick_step = now, done
            record["tokens_per_second"] = speed
            line = f"step {done}/{config.steps}  loss {value:.4f}  lr {lr:.3g}  {speed:,.0f} tok/s"
        if (config.eval_every and done % config.eval_every == 0) or done == config.steps:
            val = evaluate(self.forward, self.eval_batches, config, self.env)
            self.val_losses[done] = val
            record["val_loss"] = val
            line = (line or f"step {done}/{config.steps}  loss {value:.4f}") + f"  val {val:.4f}"
        self.log(record, line)

    def maybe_checkpoint(self, done: int) -> None:
        config = self.config
        if not (config.checkpoint_every and done % config.checkpoint_every == 0) and (
            done != config.steps
        ):
            return
        folder = checkpoint.save(
            checkpoint.checkpoint_dir(config.out_dir, done),
            model=self.model,
            optimizers=self.optimizers,
            schedulers=self.schedulers,
            step=done,
            plan=self.plan,
            config=config,
            data_generator=self.generator,
            env=self.env,
        )
        checkpoint.prune(config.out_dir, config.keep_checkpoints, self.env)
        self.last_checkpoint = str(folder)

    def summary(self, start: int, seconds: float) -> RunResult:
        """The run's result, written to ``summary.json`` by the main process."""
        config = self.config
        end = max(start, config.steps)
        tokens_per_step = config.batch_size * config.seq_len
        result = RunResult(
            losses=self.losses,
            start_step=start,
            end_step=end,
            val_losses=self.val_losses,
            seconds=seconds,
            tokens_per_second=tokens_per_step * len(self.losses) / seconds if self.losses else 0.0,
            checkpoint=self.last_checkpoint,
            plan=self.plan,
        )
        if self.env.is_main:
            summary = Path(config.out_dir) / "summary.json"
            summary.write_text(json.dumps(result.to_dict(), indent=1))
            self.log.say(
                f"mutransfer train: steps {start}→{end} in {seconds:.1f} s; "
                f"checkpoint {self.last_checkpoint}"
            )
        return result


def _layer_monitor(
    config: RunConfig, env: DistEnv, model: nn.Module, corpus: TextCorpus, plan: Plan
) -> monitor.LayerMonitor | None:
    """The main process's layer monitor (on the unwrapped model), when ``monitor_every``."""
    if not config.monitor_every or not env.is_main:
        return None
    reference = (
        monitor.Reference.read(config.monitor_reference) if config.monitor_reference else None
    )
    probe = corpus.eval_batches(1, config.monitor_batch_size, config.seq_len, seed=4321)[0][0]
    return monitor.LayerMonitor(
        model=model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model,
        probe=probe.to(env.device),
        every=config.monitor_every,
        out_dir=config.out_dir,
        tolerance=config.monitor_tolerance,
        reference=reference,
        attention=tuple(plan.attention),
    )


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
