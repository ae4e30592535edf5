"""The reference GPT under microsoft/mup 1.0.0, written the way mup's README asks.

What a mup user changes in the model code, and nothing else:

- the readout becomes ``mup.MuReadout`` (mup refuses a plain ``nn.Linear`` readout);
- attention logits are scaled by ``attn_mult / d_head`` instead of ``1/sqrt(d_head)``, written
  by hand (mup has no helper for it). ``attn_mult = sqrt(base d_head)`` makes the base model
  equal to SP at base width, the same constant mutransfer's µP preset uses, so that both µP
  columns of a benchmark start from one model;
- ``set_base_shapes(model, base)`` against a base model, then the init redone with
  ``mup.init.normal_`` at the same base std as mutransfer's µP (σ = 1, std 1/sqrt(base fan-in)
  for weights with a width fan-in, 1 for embeddings), so init constants do not differ;
- ``mup.MuAdamW`` as the optimizer.

What stays mup's own: the readout multiplier applied in the forward pass (``output_mult /
width_mult``), the per-parameter metadata on ``p.infshape``, and Adam ε left unscaled.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mutransfer.models import GPT, GPTConfig


def build(cfg: GPTConfig, base_width: int, seed: int) -> nn.Module:
    """The GPT at ``cfg.width`` with mup's readout, 1/d attention, base shapes and init."""
    import mup

    def make(width: int) -> GPT:
        model = GPT(cfg.with_(width=width))
        model.lm_head = mup.MuReadout(width, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            raise ValueError("the mup peer GPT is written for untied embeddings")
        base_head_dim = base_width // cfg.n_heads
        for block in model.blocks:
            block.attn.scaling = math.sqrt(base_head_dim) / block.attn.head_dim
        return model

    torch.manual_seed(seed)
    model = make(cfg.width)
    with torch.device("meta"):
        base = make(base_width)
        delta = make(2 * base_width)
    mup.set_base_shapes(model, base, delta=delta)
    reinit(model, base_width, seed)
    return model


@torch.no_grad()
def reinit(model: nn.Module, base_width: int, seed: int) -> None:
    """µP init with mup's initialisers, at the base std mutransfer's µP preset uses.

    ``mup.init.normal_`` divides the std of matrix-like (two width dims) tensors by
    sqrt(width_mult), so std 1/sqrt(base fan-in) there gives 1/sqrt(fan-in); vector-like
    tensors (embeddings, readout) keep the std they are given.
    """
    import mup.init

    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue  # LayerNorm gains stay 1
        if name.startswith(("wte.", "wpe.")):
            mup.init.normal_(p, std=1.0)
        else:
            fan_in_base = p.shape[1] / p.infshape[1].width_mult()
            mup.init.normal_(p, std=1.0 / math.sqrt(fan_in_base))


def optimizer(model: nn.Module, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """``mup.MuAdamW`` over all parameters (it makes the per-width groups itself)."""
    import mup

    return mup.MuAdamW(model.parameters(), lr=lr, **kwargs)
