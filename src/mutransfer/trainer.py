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
import math
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .build import parametrize
from .data import ArrayDataset, TextCorpus, fashion_mnist, load_text
from .models import GPT, MLP, GPTConfig, gpt_parametrize_options
from .plan import Plan
from .rules import ROLES, get_rules

ModelName = Literal["gpt", "mlp"]
Schedule = Literal["constant", "cosine", "linear"]


@dataclass(frozen=True)
class RunOptions:
    """The options a proxy run and the big run share: size, parametrization, optimizer, schedule.

    ``TrainConfig`` (this trainer) and ``mutransfer.training.RunConfig`` (the big run) both
    extend it, so a hyperparameter found on the proxy means the same, is checked the same and
    reaches ``parametrize`` the same way in the big run — and a transfer output, written with
    these names, is itself a run config. Subclasses may change defaults, not meanings.
    """

    width: int = 128
    depth: int = 2
    base_width: int = 32
    base_depth: int | None = None
    n_heads: int = 4
    seq_len: int = 64
    batch_size: int = 16
    steps: int = 200
    lr: float = 2**-6
    rules: str = "mup"
    optimizer: str = "adamw"
    """``adamw``, ``adam``, ``sgd``, ``lion`` (lion-pytorch, betas 0.9/0.99 as in the Lion paper)
    or ``muon`` (torch's Muon for hidden matrices at ``lr``, AdamW for the rest at ``adamw_lr``)."""
    mode: Literal["absorbed", "explicit"] = "absorbed"
    init_std: float = 1.0
    input_multiplier: float = 1.0
    output_multiplier: float = 1.0
    attention_multiplier: float = 1.0
    weight_decay: float = 0.0
    eps: float = 1e-8
    beta2: float = 0.95
    warmup_steps: int = 0
    schedule: Schedule = "constant"
    zero_init_readout: bool = False
    zero_init_query: bool = False
    qk_norm: bool = False
    """The reference GPT only: RMS-normalise queries and keys per head (``GPTConfig.qk_norm``)."""
    seed: int = 0
    data: str = "shakespeare"
    eval_batches: int = 8
    eval_batch_size: int = 32
    adamw_lr: float | None = None
    """``optimizer="muon"`` only: base LR of the AdamW that trains the non-hidden tensors (None:
    ``lr``). Sweeping Muon's ``lr`` with this one fixed is how a Muon LR transfer is measured."""

    def __post_init__(self) -> None:
        self._check_types()
        for name in _POSITIVE:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise self._invalid(f"{name} must be a positive integer, got {value!r}")
        if self.base_depth is not None and (not _is_int(self.base_depth) or self.base_depth < 1):
            raise self._invalid(f"base_depth must be >= 1 (or unset), got {self.base_depth!r}")
        if not _is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise self._invalid(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise self._invalid(f"lr must be a positive number, got {self.lr}")
        if not self.weight_decay >= 0:
            raise self._invalid(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.optimizer.lower() not in OPTIMIZERS:
            raise self._invalid(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.adamw_lr is not None:
            if self.optimizer.lower() != "muon":
                raise self._invalid(
                    "adamw_lr is the LR of Muon's AdamW side; it only applies with "
                    f"optimizer='muon', not {self.optimizer!r} (set lr instead)"
                )
            if not (self.adamw_lr > 0 and math.isfinite(self.adamw_lr)):
                raise self._invalid(f"adamw_lr must be a positive number, got {self.adamw_lr}")
        if self.schedule not in ("constant", "cosine", "linear"):
            raise self._invalid(
                f"schedule must be constant, cosine or linear, got {self.schedule!r}"
            )
        if self.mode not in ("absorbed", "explicit"):
            raise self._invalid(f"mode must be 'absorbed' or 'explicit', got {self.mode!r}")
        try:
            get_rules(self.rules)
        except ValueError as exc:
            raise self._invalid(f"rules: {exc}") from None
        if getattr(self, "model", "gpt") != "mlp":  # transformers: heads split the width
            for name in ("width", "base_width"):
                if getattr(self, name) % self.n_heads:
                    raise self._invalid(
                        f"{name} {getattr(self, name)} is not divisible by n_heads "
                        f"{self.n_heads}: each head gets width / n_heads dimensions"
                    )
        if self.data not in ("shakespeare", "pydoc") and not os.path.isfile(self.data):
            raise self._invalid(
                f"data: the text file {self.data!r} does not exist (data is 'shakespeare', "
                "'pydoc' or the path of a text file)"
            )

    def _check_types(self) -> None:
        """A value of the wrong type (``lr = "0.01"`` in a TOML file) is named here, not met
        later as a ``'<' not supported between str and int`` deep inside a run."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = str(f.type)
            if value is None and "None" in kind:
                continue
            if kind.startswith("float") and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise self._invalid(f"{f.name} must be a number, got {value!r}")
            if kind.startswith("int") and (isinstance(value, bool) or not isinstance(value, int)):
                raise self._invalid(f"{f.name} must be an integer, got {value!r}")
            if kind == "bool" and not isinstance(value, bool):
                raise self._invalid(f"{f.name} must be true or false, got {value!r}")
            if kind == "str" and not isinstance(value, str):
                raise self._invalid(f"{f.name} must be a string, got {value!r}")

    @classmethod
    def _invalid(cls, message: str) -> ValueError:
        """The error for a bad option; the message starts with the option's name."""
        return ValueError(f"{cls.__name__}.{message}")

    def plan_options(self) -> dict[str, Any]:
        """The keywords of ``parametrize`` (and ``parametrize_hf``) that these options set.

        One place, so the proxy and the big run build the same plan from the same values.
        """
        return {
            "rules": self.rules,
            "optimizer": self.optimizer,
            "mode": self.mode,
            "seed": self.seed,
            "init_std": self.init_std,
            "input_multiplier": self.input_multiplier,
            "output_multiplier": self.output_multiplier,
            "attention_multiplier": self.attention_multiplier,
            "zero_init_readout": self.zero_init_readout,
        }


_POSITIVE = (
    "width",
    "depth",
    "base_width",
    "n_heads",
    "seq_len",
    "batch_size",
    "steps",
    "eval_batches",
    "eval_batch_size",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig(RunOptions):
    """Everything that defines one proxy run; every field can be swept.

    The shared options are those of ``RunOptions``; these are the proxy's own.
    """

    model: ModelName = "gpt"
    tie_embeddings: bool = False
    divergence_factor: float = 1.5
    """The run counts as diverged if a (smoothed) training loss exceeds this × the first loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model not in ("gpt", "mlp"):
            raise self._invalid(f"model must be 'gpt' or 'mlp', got {self.model!r}")

    def with_(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field, except later additions left at their default (see ``_OMIT_AT_DEFAULT``)."""
        data = dataclasses.asdict(self)
        for name, default in _OMIT_AT_DEFAULT.items():
            if data[name] == default:
                del data[name]
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


OPTIMIZERS = ("adamw", "adam", "sgd", "lion", "muon")

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
    """Approximate training FLOPs (6 · params · tokens), for compute comparisons."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["config"] = self.config.to_dict()
        data["val_loss"] = None if not math.isfinite(self.val_loss) else self.val_loss
        data["losses"] = [x if math.isfinite(x) else None for x in self.losses]
        return data


class Diverged(RuntimeError):
    """Raised inside a run when the loss blows up; caught by ``train``."""


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the base LR at each step: linear warmup, then the schedule (to 10 %)."""

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        decay_steps = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / decay_steps)
        if config.schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.schedule == "linear":
            return 1.0 - 0.9 * progress
        return 1.0

    return factor


def build_model(config: TrainConfig) -> tuple[nn.Module, Plan]:
    """The reference model at ``config.width`` with its plan (base at ``config.base_width``)."""
    options: dict[str, Any] = {}
    if config.model == "gpt":
        gpt_cfg = GPTConfig(
            width=config.width,
            depth=config.depth,
            n_heads=config.n_heads,
            seq_len=config.seq_len,
            tie_embeddings=config.tie_embeddings,
            qk_norm=config.qk_norm,
        )
        base_cfg = gpt_cfg.with_(width=config.base_width, depth=config.base_depth or config.depth)
        delta_cfg = base_cfg.with_(width=2 * config.base_width)
        model: nn.Module = GPT(gpt_cfg)
        with torch.device("meta"):
            base: nn.Module = GPT(base_cfg)
            delta: nn.Module = GPT(delta_cfg)
        options = gpt_parametrize_options(gpt_cfg, zero_init_query=config.zero_init_query)
    else:
        model = MLP(width=config.width, depth=config.depth)
        with torch.device("meta"):
            base = MLP(width=config.base_width, depth=config.base_depth or config.depth)
            delta = MLP(width=2 * config.base_width, depth=config.base_depth or config.depth)
    plan = parametrize(model, base, delta=delta, **config.plan_options(), **options)
    return model, plan


def make_optimizers(
    config: TrainConfig, model: nn.Module, plan: Plan
) -> list[torch.optim.Optimizer]:
    """The optimizer(s) of a run, with the plan's per-tensor LRs: one, or two for Muon.

    Muon orthogonalises a matrix's update, so it only takes 2-D weights; the µP plan's hidden
    role is exactly those (attention and MLP projections). Everything else trains with AdamW at
    its own base LR (``adamw_lr``), with the same plan's scales.
    """
    if config.optimizer.lower() != "muon":
        return [make_optimizer(config, model, plan)]
    hidden = plan.param_groups(
        config.lr, model=model, weight_decay=config.weight_decay, roles=("hidden",)
    )
    rest = plan.param_groups(
        config.adamw_lr if config.adamw_lr is not None else config.lr,
        model=model,
        weight_decay=config.weight_decay,
        eps=config.eps,
        roles=tuple(r for r in ROLES if r != "hidden"),
    )
    return [
        torch.optim.Muon(hidden, lr=config.lr, weight_decay=config.weight_decay),
        torch.optim.AdamW(rest, betas=(0.9, config.beta2), eps=config.eps, foreach=True),
    ]


def make_optimizer(config: TrainConfig, model: nn.Module, plan: Plan) -> torch.optim.Optimizer:
    """The run's single optimizer (every optimizer but Muon; see ``make_optimizers``)."""
    groups = plan.param_groups(
        config.lr, model=model, weight_decay=config.weight_decay, eps=config.eps
    )
    name = config.optimizer.lower()
    if name in ("adamw", "adam"):
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(groups, betas=(0.9, config.beta2), foreach=True)
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=0.9)
    if name == "lion":
        return _lion(groups, config)
    if name == "muon":
        raise ValueError(
            "optimizer='muon' trains with two optimizers (Muon for hidden matrices, AdamW for "
            "the rest): call make_optimizers(config, model, plan)"
        )
    raise ValueError(f"the built-in trainer supports {', '.join(OPTIMIZERS)}, not {name!r}")


def _lion(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    try:
        from lion_pytorch import Lion
    except ImportError:
        raise ImportError(
            "optimizer='lion' needs the package lion-pytorch: pip install lion-pytorch"
        ) from None
    # Lion's sign update has no ε; betas as recommended by Chen et al. 2023 (0.9, 0.99)
    lion: torch.optim.Optimizer = Lion(groups, lr=config.lr, betas=(0.9, 0.99))
    return lion


Batch = tuple[torch.Tensor, torch.Tensor]


def _loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


class _Data:
    """Training batches and the fixed validation batches for one config."""

    def __init__(self, config: TrainConfig, source: TextCorpus | ArrayDataset) -> None:
        self.config = config
        self.source = source
        self.generator = torch.Generator().manual_seed(10_000 + config.seed)
        eval_gen = torch.Generator().manual_seed(1234)
        self.eval = [
            self._batch("val", config.eval_batch_size, eval_gen) for _ in range(config.eval_batches)
        ]

    def _batch(self, split: str, batch_size: int, generator: torch.Generator) -> Batch:
        if isinstance(self.source, TextCorpus):
            return self.source.batch(split, batch_size, self.config.seq_len, generator)
        return self.source.batch(split, batch_size, generator)

    def next(self) -> Batch:
        return self._batch("train", self.config.batch_size, self.generator)


def load_source(config: TrainConfig) -> TextCorpus | ArrayDataset:
    """The data a config trains on: text for the GPT, Fashion-MNIST for the MLP."""
    return load_text(config.data) if config.model == "gpt" else fashion_mnist()


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
) -> TrainResult:
    """Train one proxy run; ``on_step(step, loss)`` may raise to stop it (e.g. pruning)."""
    start = time.perf_counter()
    data = _Data(config, source if source is not None else load_source(config))
    model, plan = build_model(config)
    optimizers = make_optimizers(config, model, plan)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(config)) for o in optimizers]
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = config.batch_size * (config.seq_len if config.model == "gpt" else 1)
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
            flops=6.0 * n_params * tokens_per_step * len(losses),
        )
    return TrainResult(
        config,
        val_loss,
        losses,
        seconds=time.perf_counter() - start,
        steps_done=len(losses),
        flops=6.0 * n_params * tokens_per_step * len(losses),
    )
