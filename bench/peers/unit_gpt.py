"""The reference GPT under graphcore's unit-scaling 0.3.5 (u-µP), from its own building blocks.

unit-scaling has no way to take an existing model: a u-µP model is written with its
unit-scaled modules and ops, whose parameters carry their role (``mup_type``) and depth as
attributes and whose scales live in the forward/backward ops. This is the closest equivalent of
``mutransfer.models.GPT`` written that way:

- ``uu.Embedding`` for tokens and positions, summed with the unit-scaled ``U.add``;
- per block, pre-norm ``uu.LayerNorm`` with a gain (the reference GPT has gains, no biases),
  attention from ``uu.Linear`` q/k/v/o projections and ``U.scaled_dot_product_attention``
  (logits × mult/d_head), a GELU MLP from ``uu.Linear`` and ``U.gelu``, and residual branches
  weighted by the library's default τ rule (``transformer_residual_scaling_rule``) through
  ``U.residual_split``/``U.residual_add``;
- the blocks in a ``uu.DepthModuleList`` (it tags each parameter with the depth for the LR
  rule), final ``uu.LayerNorm`` and ``uu.LinearReadout``;
- training loss ``U.cross_entropy`` (unit-scaled gradients; the same value as the mean cross
  entropy in the forward pass), optimizer ``unit_scaling.optim.AdamW`` (one group per
  parameter, LR × fan_in^-½ for weights, × depth^-½ inside blocks).

Unit init (std 1) and every constant are the library's defaults: the u-µP paper's point is that
they need no tuning besides the LR.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mutransfer.models import GPTConfig


def build(cfg: GPTConfig, seed: int) -> nn.Module:
    """The unit-scaled GPT at ``cfg.width`` (a u-µP model needs no base model)."""
    torch.manual_seed(seed)
    return UnitGPT(cfg)


def optimizer(model: nn.Module, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """``unit_scaling.optim.AdamW`` over all parameters (its per-parameter LR rule)."""
    import unit_scaling as uu

    return uu.optim.AdamW(model.parameters(), lr=lr, **kwargs)


def _modules() -> Any:
    import unit_scaling as uu
    import unit_scaling.functional as U

    return uu, U


class UnitAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, mult: float = 1.0) -> None:
        super().__init__()
        uu, _ = _modules()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.width // cfg.n_heads
        self.mult = mult
        self.q = uu.Linear(cfg.width, cfg.width)
        self.k = uu.Linear(cfg.width, cfg.width)
        self.v = uu.Linear(cfg.width, cfg.width)
        self.o = uu.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, U = _modules()
        b, t, c = x.shape
        q, k, v = (
            proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
            for proj in (self.q, self.k, self.v)
        )
        y = U.scaled_dot_product_attention(q, k, v, is_causal=True, mult=self.mult)
        return self.o(y.transpose(1, 2).reshape(b, t, c))


class UnitMLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        uu, _ = _modules()
        self.fc = uu.Linear(cfg.width, cfg.mlp_ratio * cfg.width)
        self.proj = uu.Linear(cfg.mlp_ratio * cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, U = _modules()
        return self.proj(U.gelu(self.fc(x)))


class UnitBlock(nn.Module):
    def __init__(self, cfg: GPTConfig, attn_tau: float, mlp_tau: float) -> None:
        super().__init__()
        uu, _ = _modules()
        self.attn_tau, self.mlp_tau = attn_tau, mlp_tau
        self.ln1 = uu.LayerNorm(cfg.width, elementwise_affine=True, bias=False)
        self.attn = UnitAttention(cfg)
        self.ln2 = uu.LayerNorm(cfg.width, elementwise_affine=True, bias=False)
        self.mlp = UnitMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, U = _modules()
        residual, skip = U.residual_split(x, tau=self.attn_tau)
        x = U.residual_add(self.attn(self.ln1(residual)), skip, tau=self.attn_tau)
        residual, skip = U.residual_split(x, tau=self.mlp_tau)
        return U.residual_add(self.mlp(self.ln2(residual)), skip, tau=self.mlp_tau)


class UnitGPT(nn.Module):
    """Pre-LN decoder over bytes, unit-scaled; same shapes and names as the reference GPT."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        uu, _ = _modules()
        if cfg.tie_embeddings or cfg.bias:
            raise ValueError("the unit-scaling peer GPT is written for untied, bias-free models")
        self.cfg = cfg
        tau = uu.transformer_residual_scaling_rule()
        self.wte = uu.Embedding(cfg.vocab_size, cfg.width)
        self.wpe = uu.Embedding(cfg.seq_len, cfg.width)
        self.blocks = uu.DepthModuleList(
            UnitBlock(cfg, tau(2 * i, 2 * cfg.depth), tau(2 * i + 1, 2 * cfg.depth))
            for i in range(cfg.depth)
        )
        self.ln_f = uu.LayerNorm(cfg.width, elementwise_affine=True, bias=False)
        self.lm_head = uu.LinearReadout(cfg.width, cfg.vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        _, U = _modules()
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = U.add(self.wte(idx), self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss: u-µP's unit-scaled cross entropy (forward = mean cross entropy)."""
        _, U = _modules()
        logits = self(idx)
        return U.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))

    def eval_loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
