"""The options a proxy run and the big run share, and the optimizers and schedule built from them.

``RunOptions`` holds the hyperparameters of a run (size, parametrization, optimizer, schedule,
seed, data) with their checks. The proxy trainer's ``TrainConfig`` (``proxy.py``) and the big
run's ``RunConfig`` (``config.py``) both extend it, so a hyperparameter found on the proxy means
the same, is checked the same and reaches ``parametrize`` the same way in the big run. The
builders below are typed on ``RunOptions``: both runs build their optimizers and LR schedule
with the same code.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..optim import OPTIMIZERS as BUILTIN_OPTIMIZERS
from ..optim import optimizer_class
from ..plan import Plan
from ..rules import ROLES

Schedule = Literal["constant", "cosine", "linear", "wsd"]
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear", "wsd")

WSD_DECAY_FRACTION = 0.2
"""``schedule="wsd"`` (warmup-stable-decay): the share of the steps after warmup spent decaying.

The stable phase holds the peak LR; the last 20 % decay linearly to 10 % like ``linear`` does
(Hägele et al. 2024 find 10–20 % of the run enough for the cooldown to match cosine)."""

OPTIMIZERS = tuple(BUILTIN_OPTIMIZERS)
"""The optimizers a run can name (``mutransfer.optim.OPTIMIZERS``: the one table)."""


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
        if self.schedule not in SCHEDULES:
            raise self._invalid(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if self.mode not in ("absorbed", "explicit"):
            raise self._invalid(f"mode must be 'absorbed' or 'explicit', got {self.mode!r}")
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


def lr_lambda(config: RunOptions) -> Callable[[int], float]:
    """Multiplier of the base LR at each step: linear warmup, then the schedule (to 10 %).

    ``constant`` stays at 1; ``cosine`` and ``linear`` decay over every step after warmup;
    ``wsd`` stays at 1 and decays linearly over the last ``WSD_DECAY_FRACTION`` of them.
    """

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        decay_steps = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / decay_steps)
        if config.schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.schedule == "linear":
            return 1.0 - 0.9 * progress
        if config.schedule == "wsd":
            stable = 1.0 - WSD_DECAY_FRACTION
            return 1.0 - 0.9 * max(0.0, progress - stable) / WSD_DECAY_FRACTION
        return 1.0

    return factor


def make_optimizers(
    config: RunOptions, model: nn.Module, plan: Plan
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


def make_optimizer(config: RunOptions, model: nn.Module, plan: Plan) -> torch.optim.Optimizer:
    """The run's single optimizer (every optimizer but Muon; see ``make_optimizers``)."""
    groups = plan.param_groups(
        config.lr, model=model, weight_decay=config.weight_decay, eps=config.eps
    )
    name = config.optimizer.lower()
    if name == "muon":
        raise ValueError(
            "optimizer='muon' trains with two optimizers (Muon for hidden matrices, AdamW for "
            "the rest): call make_optimizers(config, model, plan)"
        )
    cls = optimizer_class(name)
    if name in ("adamw", "adam"):
        return cls(groups, betas=(0.9, config.beta2), foreach=True)
    if name == "sgd":
        return cls(groups, momentum=0.9)
    # Lion's sign update has no ε; betas as recommended by Chen et al. 2023 (0.9, 0.99)
    lion: torch.optim.Optimizer = cls(groups, lr=config.lr, betas=(0.9, 0.99))
    return lion
