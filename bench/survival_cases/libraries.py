"""The same small GPT set up by each library, with its standard optimizer call.

Each adapter answers three questions the survival checks ask: how the library builds a
ready-to-train model (``build``, optionally on ``meta``), how a training script builds its
optimizer from a model (``optimizer`` — given whatever the operation returned: a copy, a
compiled module, a DDP or FSDP2 wrapper), and the training loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mutransfer.models import GPT, GPTConfig, gpt_parametrize_options

CFG = GPTConfig(width=64, depth=2, n_heads=4, seq_len=16)
BASE_WIDTH = 32
LR = 1e-2
Batch = tuple[torch.Tensor, torch.Tensor]


def batch() -> Batch:
    """A fixed batch of 4 byte sequences (split 2 + 2 across the ranks of the distributed cells)."""
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, CFG.vocab_size, (4, CFG.seq_len + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def mean_ce(model: nn.Module, b: Batch) -> torch.Tensor:
    logits = model(b[0])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), b[1].reshape(-1))


class Mutransfer:
    """``parametrize(model, base)`` then ``AdamW(plan.param_groups(lr, model=...))``."""

    name = "mutransfer"

    def __init__(self) -> None:
        self.plan: Any = None

    def build(self, meta: bool = False, seed: int = 0) -> nn.Module:
        import mutransfer

        torch.manual_seed(seed)
        with torch.device("meta" if meta else "cpu"):
            model = GPT(CFG)
        with torch.device("meta"):
            base = GPT(CFG.with_(width=BASE_WIDTH))
        self.plan = mutransfer.parametrize(
            model, base, "mup", "adamw", seed=seed, **gpt_parametrize_options(CFG)
        )
        return model

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.plan.param_groups(LR, model=model), lr=LR)

    loss = staticmethod(mean_ce)


class Mup:
    """microsoft/mup: ``MuReadout``, ``set_base_shapes``, ``mup.init``, ``MuAdamW``."""

    name = "mup"

    def build(self, meta: bool = False, seed: int = 0) -> nn.Module:
        import math

        import mup

        from peers import mup_gpt

        if not meta:
            return mup_gpt.build(CFG, BASE_WIDTH, seed)

        def make(width: int) -> nn.Module:
            model = GPT(CFG.with_(width=width))
            model.lm_head = mup.MuReadout(width, CFG.vocab_size, bias=False)
            for block in model.blocks:
                block.attn.scaling = math.sqrt(BASE_WIDTH // CFG.n_heads) / block.attn.head_dim
            return model

        with torch.device("meta"):
            model, base = make(CFG.width), make(BASE_WIDTH)
        mup.set_base_shapes(model, base)
        return model

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        import mup

        return mup.MuAdamW(model.parameters(), lr=LR)

    loss = staticmethod(mean_ce)


class UnitScaling:
    """unit-scaling: the model from its u-µP modules, ``unit_scaling.optim.AdamW``."""

    name = "unit-scaling"

    def build(self, meta: bool = False, seed: int = 0) -> nn.Module:
        from peers import unit_gpt

        with torch.device("meta" if meta else "cpu"):
            return unit_gpt.build(CFG, seed)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        import unit_scaling as uu

        return uu.optim.AdamW(model.parameters(), lr=LR)

    @staticmethod
    def loss(model: nn.Module, b: Batch) -> torch.Tensor:
        import unit_scaling.functional as U

        logits = model(b[0])
        return U.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), b[1].reshape(-1))


LIBRARIES: dict[str, Callable[[], Any]] = {
    "mutransfer": Mutransfer,
    "mup": Mup,
    "unit-scaling": UnitScaling,
}
