"""A byte-level pre-LN GPT in plain PyTorch, for the demo, the tests and the benchmarks.

Nothing in it knows about µP: the plan supplies everything (init, per-tensor LRs, the readout
multiplier, the residual-branch multiplier of the depth rules). It has no init of its own
(``mutransfer_init = "rules"``): at the base width it is the rules' σ/√fan_in. The only
convention it follows is the Hugging Face one for attention: each attention module exposes
``head_dim`` and a float ``scaling`` for the q·k logits, which the plan sets to 1/d under µP
(1/√d under SP).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the model. ``width`` scales, ``n_heads`` stays fixed (head_dim grows with width)."""

    width: int = 128
    depth: int = 2
    n_heads: int = 4
    vocab_size: int = 256
    seq_len: int = 128
    mlp_ratio: int = 4
    tie_embeddings: bool = False
    bias: bool = False
    qk_norm: bool = False
    """RMS-normalise each head's queries and keys (with learned gains) before the logits:
    bounds the logits' growth in long or deep runs (OLMo 2, Gemma 3 do the same)."""

    def __post_init__(self) -> None:
        if self.width % self.n_heads:
            raise ValueError(f"width {self.width} is not divisible by n_heads {self.n_heads}")
        if min(self.width, self.depth, self.n_heads, self.vocab_size, self.seq_len) < 1:
            raise ValueError(f"every GPTConfig size must be >= 1, got {self}")

    def with_(self, **changes: Any) -> GPTConfig:
        return GPTConfig(**{**asdict(self), **changes})


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.width // cfg.n_heads
        self.scaling = 1.0 / math.sqrt(self.head_dim)  # set by the plan (1/d under µP)
        self.q = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.k = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.v = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.o = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        # per head over head_dim: the gains are vectors that grow with width like any norm gain
        self.q_norm = nn.RMSNorm(self.head_dim) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim) if cfg.qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            proj(x).view(b, t, self.n_heads, self.head_dim) for proj in (self.q, self.k, self.v)
        )
        q, k, v = (h.transpose(1, 2) for h in (self.q_norm(q), self.k_norm(k), v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling)
        return self.o(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.width, cfg.mlp_ratio * cfg.width, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # attn and mlp are the residual branches; the depth rules scale their outputs by hooks
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Pre-LN decoder-only transformer over bytes (vocabulary 256)."""

    residual_branches = ("blocks.*.attn", "blocks.*.mlp")
    query_weights = "blocks.*.attn.q.weight"
    mutransfer_init = "rules"
    """No init of its own: the plan's σ/√fan_in (embeddings σ) is this model's parametrization."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.width)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, time, vocab) for byte ids of shape (batch, time)."""
        t = idx.shape[1]
        if t > self.cfg.seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's seq_len {self.cfg.seq_len}")
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def gpt_parametrize_options(cfg: GPTConfig, *, zero_init_query: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``parametrize`` that the reference GPT needs.

    The residual branches (for the depth rules) and, optionally, zero-init of the query
    projection (recommended by Tensor Programs V so attention starts uniform).
    """
    options: dict[str, Any] = {"residual_branches": GPT.residual_branches}
    if zero_init_query:
        options["zero_init"] = (GPT.query_weights,)
    return options
