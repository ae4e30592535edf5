"""The built-in proxy trainer: one short training run of a reference model, as a pure function.

``train(TrainConfig(...))`` builds the reference GPT (on the shipped text) or MLP (on
Fashion-MNIST), parametrizes it against its base width, trains it and returns the validation
loss. The demo and the sweeps call it for every trial; a user's own objective replaces it.

A run is a pure function of its config (seeded data order and init), so a trial can be re-run
anywhere and give the same number. Divergence (a non-finite loss, or a loss far above the loss at
initialisation) stops the run early and is reported with its reason rather than as a number.

Optimizers: AdamW/Adam and SGD from torch, Lion from the PyPI package ``lion-pytorch`` (torch has
none), and Muon, which needs *two* optimizers: ``torch.optim.Muon`` for the hidden matrices
(it only takes 2-D weights) and AdamW for everything else (embeddings, readout, norm gains),
each with its own base LR (``lr`` and ``adamw_lr``), both built from one plan.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ArrayDataset, TextCorpus, fashion_mnist, fashion_mnist_images, load_text
from ..devices import resolve_device
from ..errors import Diverged
from ..models import ResNet, mask_tokens
from ..plan import Plan
from .options import RunOptions, lr_lambda, make_optimizers
from .reference import build_reference, reference_model

ModelName = Literal["gpt", "mlp", "resnet", "bert", "hf-bert"]
MODELS: tuple[ModelName, ...] = ("gpt", "mlp", "resnet", "bert", "hf-bert")
TEXT_MODELS = ("gpt", "bert", "hf-bert")
MASKED_LM_MODELS = ("bert", "hf-bert")
BATCH_NORM_MODELS = ("resnet",)
BN_STATS_BATCHES = 16
"""Batches of ``eval_batch_size`` that ``recompute_bn_stats`` averages over (1024 images at the
ResNet demo's 64): about a tenth of a 100-step run's cost."""
"""Trained on BERT's masked bytes (``models.bert.mask_tokens``): our BERT and Hugging Face's
``BertForMaskedLM``."""


@dataclass(frozen=True)
class TrainConfig(RunOptions):
    """Everything that defines one proxy run; every field can be swept.

    The shared options are those of ``RunOptions``; these are the proxy's own.
    """

    model: ModelName = "gpt"
    tie_embeddings: bool = False
    divergence_factor: float = 1.5
    """The run counts as diverged if a (smoothed) training loss exceeds this × the first loss."""
    recompute_bn_stats: bool = True
    """Before the validation, recompute every BatchNorm's running statistics from
    ``BN_STATS_BATCHES`` training batches with the final weights ("precise BN", Wu & Johnson
    2021, *Rethinking "Batch" in BatchNorm*). The running average of the last steps lags
    weights that still move fast: under µP with SGD it put a width-64 ResNet's validation loss
    0.4 nats above its training loss (docs/demo.md). No effect on models without BatchNorm."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model not in MODELS:
            raise self._invalid(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")

    def with_(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field, except later additions left at their default (see ``_OMIT_AT_DEFAULT``)
        and ``recompute_bn_stats`` for models without BatchNorm (it cannot change their runs;
        the ResNet's runs stored before it existed, scored with lagging statistics, are not
        found again)."""
        data = dataclasses.asdict(self)
        for name, default in _OMIT_AT_DEFAULT.items():
            if data[name] == default:
                del data[name]
        if self.model not in BATCH_NORM_MODELS:
            del data["recompute_bn_stats"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown training option(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**data)


_OMIT_AT_DEFAULT: dict[str, Any] = {"adamw_lr": None, "qk_norm": False}
"""Fields added after runs were first stored: left out of ``to_dict`` at their default, so a
config that does not use them keeps the dict (and so the run-store key) it had before they
existed, and finished runs stay found."""


@dataclass
class TrainResult:
    config: TrainConfig
    val_loss: float
    """Mean validation loss after training; ``inf`` when the run diverged."""
    losses: list[float] = field(default_factory=list)
    diverged: bool = False
    reason: str | None = None
    seconds: float = 0.0
    steps_done: int = 0
    flops: float = 0.0
    """Approximate training FLOPs (``step_flops`` × steps done), for compute comparisons."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["config"] = self.config.to_dict()
        data["val_loss"] = None if not math.isfinite(self.val_loss) else self.val_loss
        data["losses"] = [x if math.isfinite(x) else None for x in self.losses]
        return data


def build_model(config: TrainConfig) -> tuple[nn.Module, Plan]:
    """The proxy's reference model (``config.model``) at ``config.width`` with its plan."""
    return build_reference(config, config.model, tie_embeddings=config.tie_embeddings)


Batch = tuple[torch.Tensor, torch.Tensor]


def _loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    out = model(x)
    logits = getattr(out, "logits", out)  # a Hugging Face model returns an output object
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def draw_batch(
    source: TextCorpus | ArrayDataset,
    config: TrainConfig,
    split: str,
    batch_size: int,
    generator: torch.Generator,
) -> Batch:
    """One batch of ``config``'s data, on the CPU (the same numbers whatever the device);
    masked for the masked-LM models. The proxy trainer and the stacked one both draw here, so
    a stacked run sees exactly its separate run's batches."""
    if isinstance(source, TextCorpus):
        batch = source.batch(split, batch_size, config.seq_len, generator)
        if config.model in MASKED_LM_MODELS:  # 15 % of the bytes are predicted
            return mask_tokens(batch[0], generator)
        return batch
    return source.batch(split, batch_size, generator)


def eval_batches(source: TextCorpus | ArrayDataset, config: TrainConfig) -> list[Batch]:
    """The fixed validation batches every proxy run is scored on (generator seed 1234)."""
    generator = torch.Generator().manual_seed(1234)
    return [
        draw_batch(source, config, "val", config.eval_batch_size, generator)
        for _ in range(config.eval_batches)
    ]


class _Data:
    """Training batches and the fixed validation batches for one config, on its device."""

    def __init__(
        self,
        config: TrainConfig,
        source: TextCorpus | ArrayDataset,
        device: torch.device | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.device = device or torch.device("cpu")
        self.generator = torch.Generator().manual_seed(10_000 + config.seed)
        self.eval = [
            (x.to(self.device), y.to(self.device)) for x, y in eval_batches(source, config)
        ]

    def _batch(self, split: str, batch_size: int, generator: torch.Generator) -> Batch:
        x, y = draw_batch(self.source, self.config, split, batch_size, generator)
        return x.to(self.device), y.to(self.device)

    def next(self) -> Batch:
        return self._batch("train", self.config.batch_size, self.generator)

    def recompute_batch_norm(self, model: nn.Module) -> None:
        """Reset ``model``'s BatchNorm running statistics to their exact mean over
        ``BN_STATS_BATCHES`` training batches (torch's ``update_bn``, which returns at once
        when the model has no BatchNorm; the batches are drawn only if it has)."""
        size = self.config.eval_batch_size
        batches = (self._batch("train", size, self.generator) for _ in range(BN_STATS_BATCHES))
        torch.optim.swa_utils.update_bn(batches, model)


def load_source(config: TrainConfig) -> TextCorpus | ArrayDataset:
    """The data a config trains on: text for the GPT and BERT, Fashion-MNIST for the MLP (flat)
    and the ResNet (as 1 × 28 × 28 images)."""
    if config.model == "resnet":
        return fashion_mnist_images()
    return load_text(config.data) if config.model in TEXT_MODELS else fashion_mnist()


def step_flops(config: TrainConfig, model: nn.Module) -> float:
    """Approximate FLOPs of one training step (forward + backward = 3 × forward).

    Transformers and MLPs: 6 · params · tokens (an image is one token of the MLP). A
    convolution's weights are used once per output pixel, so the ResNet counts its own
    forward FLOPs on a 28 × 28 image."""
    if isinstance(model, ResNet):
        return 3.0 * model.forward_flops(28, 28) * config.batch_size
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = config.batch_size * (config.seq_len if config.model in TEXT_MODELS else 1)
    return 6.0 * n_params * tokens_per_step


@functools.lru_cache(maxsize=1024)
def estimated_step_flops(config: TrainConfig) -> float:
    """``step_flops`` of ``config``'s model before it exists: built on the meta device (no
    memory, no init), so the run store can order runs by cost and decide which to stack."""
    with torch.device("meta"):
        model = reference_model(config, config.model, tie_embeddings=config.tie_embeddings)
    return step_flops(config, model)


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[Batch]) -> float:
    was_training = model.training
    model.eval()
    total = sum(_loss(model, b).item() for b in batches) / len(batches)
    model.train(was_training)
    return total


def train(
    config: TrainConfig,
    *,
    source: TextCorpus | ArrayDataset | None = None,
    on_step: Callable[[int, float], None] | None = None,
    device: str | torch.device | None = "cpu",
) -> TrainResult:
    """Train one proxy run; ``on_step(step, loss)`` may raise to stop it (e.g. pruning).

    ``device``: where it trains ("cpu", "auto", "cuda"...: ``mutransfer.devices``). The model is
    initialised and the batches drawn on the CPU whatever the device, so that a run is the same
    function of its config everywhere, up to the device's float rounding."""
    start = time.perf_counter()
    where = resolve_device(device)
    data = _Data(config, source if source is not None else load_source(config), where)
    model, plan = build_model(config)
    model.to(where)
    optimizers = make_optimizers(config, model, plan)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(config)) for o in optimizers]
    flops_per_step = step_flops(config, model)
    losses: list[float] = []
    first: float | None = None
    smoothed: float | None = None
    try:
        for step in range(config.steps):
            loss = _loss(model, data.next())
            value = loss.item()
            losses.append(value)
            if not math.isfinite(value):
                raise Diverged(f"loss became {value} at step {step}")
            first = value if first is None else first
            smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
            if step >= 10 and smoothed > config.divergence_factor * first:
                raise Diverged(
                    f"loss {smoothed:.3g} at step {step} exceeds {config.divergence_factor}× "
                    f"the initial loss {first:.3g}"
                )
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            for scheduler in schedulers:
                scheduler.step()
            if on_step is not None:
                on_step(step, value)
        if config.recompute_bn_stats:
            data.recompute_batch_norm(model)
        val_loss = evaluate(model, data.eval)
        if not math.isfinite(val_loss):
            raise Diverged(f"validation loss is {val_loss}")
    except Diverged as exc:
        return TrainResult(
            config,
            math.inf,
            losses,
            diverged=True,
            reason=str(exc),
            seconds=time.perf_counter() - start,
            steps_done=len(losses),
            flops=flops_per_step * len(losses),
        )
    return TrainResult(
        config,
        val_loss,
        losses,
        seconds=time.perf_counter() - start,
        steps_done=len(losses),
        flops=flops_per_step * len(losses),
    )
