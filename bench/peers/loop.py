"""The proxy trainer's loop (``mutransfer.training.proxy.train``) for a model and optimizer
built elsewhere.

A peer library builds its own model and optimizer, so the built-in trainer cannot run it. To
compare like with like, this loop reproduces the trainer step for step: the same validation
batches (seed 1234) drawn before the model is built, the same training batches (seed
10,000 + seed), the same step order, the same LR schedule (``training.lr_lambda``), the same
divergence rule and the same validation loss (``training.proxy.evaluate``).
``tests/test_bench_peers.py`` checks that it returns exactly what ``training.proxy.train``
returns for mutransfer's own model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from mutransfer.data import TextCorpus
from mutransfer.training.options import lr_lambda
from mutransfer.training.proxy import TrainConfig, TrainResult, evaluate

Batch = tuple[torch.Tensor, torch.Tensor]
Build = Callable[[TrainConfig], tuple[nn.Module, torch.optim.Optimizer]]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def train_with(
    config: TrainConfig, source: TextCorpus, build: Build, loss_fn: LossFn
) -> TrainResult:
    """Train ``build(config)``'s model with its optimizer exactly as the built-in trainer would.

    ``loss_fn`` is the *training* loss (a peer may use its own, e.g. a unit-scaled cross
    entropy); the validation loss is always the mean cross entropy of ``training.proxy.evaluate``.
    """
    if config.model != "gpt":
        raise ValueError(f"the peer loop trains the GPT on text, not {config.model!r}")
    start = time.perf_counter()
    eval_batches = source.eval_batches(
        config.eval_batches, config.eval_batch_size, config.seq_len, seed=1234
    )
    generator = torch.Generator().manual_seed(10_000 + config.seed)
    model, optimizer = build(config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = config.batch_size * config.seq_len
    losses: list[float] = []
    first: float | None = None
    smoothed: float | None = None
    reason: str | None = None
    for step in range(config.steps):
        batch = source.batch("train", config.batch_size, config.seq_len, generator)
        loss = loss_fn(model, batch)
        value = loss.item()
        losses.append(value)
        if not math.isfinite(value):
            reason = f"loss became {value} at step {step}"
            break
        first = value if first is None else first
        smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
        if step >= 10 and smoothed > config.divergence_factor * first:
            reason = (
                f"loss {smoothed:.3g} at step {step} exceeds {config.divergence_factor}× "
                f"the initial loss {first:.3g}"
            )
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    val_loss = math.inf
    if reason is None:
        val_loss = evaluate(model, eval_batches)
        if not math.isfinite(val_loss):
            reason = f"validation loss is {val_loss}"
            val_loss = math.inf
    return TrainResult(
        config,
        val_loss,
        losses,
        diverged=reason is not None,
        reason=reason,
        seconds=time.perf_counter() - start,
        steps_done=len(losses),
        flops=6.0 * n_params * tokens_per_step * len(losses),
    )
