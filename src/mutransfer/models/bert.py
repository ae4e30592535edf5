"""A byte-level pre-LN BERT (encoder + masked-LM head) in plain PyTorch, for the demo and tests.

The encoder is the GPT's block without the causal mask: token and position embeddings, pre-LN
blocks of bidirectional self-attention and a GELU MLP, a final LayerNorm. The masked-LM head is
BERT's (Devlin et al. 2019): a transform (dense, GELU, LayerNorm) and a decoder to the
vocabulary with its own bias, its weight tied to the token embedding or not. The vocabulary is
the 256 byte values plus one ``[MASK]`` token (id 256); ``mask_tokens`` makes a masked-LM batch
from byte windows with BERT's recipe (15 % of the positions are predicted; of those 80 % become
``[MASK]``, 10 % a random byte, 10 % stay).

Nothing in it knows about µP (``mutransfer_init = "rules"``): under ``parametrize`` the
embeddings are *input* layers, the attention and MLP projections and the head's transform are
*hidden*, the LayerNorm gains and biases *vectors*, the decoder the *readout* (with a tied
decoder, the embedding is both, and the plan applies the readout multiplier in the forward
pass). Attention follows the Hugging Face convention: ``head_dim`` and a float ``scaling`` for
the q·k logits, set by the plan (1/d under µP, 1/√d under SP).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MASK_ID = 256
"""The ``[MASK]`` token: the byte values are 0…255."""
IGNORE = -100
"""Target of a position that is not predicted (``F.cross_entropy``'s ``ignore_index``)."""


@dataclass(frozen=True)
class BertConfig:
    """Shape of the model. ``width`` scales, ``n_heads`` stays fixed (head_dim grows with width)."""

    width: int = 128
    depth: int = 2
    n_heads: int = 4
    vocab_size: int = 257
    seq_len: int = 128
    mlp_ratio: int = 4
    tie_embeddings: bool = True
    """Tie the decoder's weight to the token embedding (BERT's default)."""

    def __post_init__(self) -> None:
        if min(self.width, self.depth, self.n_heads, self.seq_len, self.mlp_ratio) < 1:
            raise ValueError(f"every BertConfig size must be >= 1, got {self}")
        if self.width % self.n_heads:
            raise ValueError(f"width {self.width} is not divisible by n_heads {self.n_heads}")
        if self.vocab_size <= MASK_ID:
            raise ValueError(
                f"vocab_size must hold the 256 bytes and [MASK], got {self.vocab_size}"
            )

    def with_(self, **changes: Any) -> BertConfig:
        return BertConfig(**{**asdict(self), **changes})


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention (no mask: every position sees every other)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.width // cfg.n_heads
        self.scaling = 1.0 / math.sqrt(self.head_dim)  # set by the plan (1/d under µP)
        self.q = nn.Linear(cfg.width, cfg.width)
        self.k = nn.Linear(cfg.width, cfg.width)
        self.v = nn.Linear(cfg.width, cfg.width)
        self.o = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
            for proj in (self.q, self.k, self.v)
        )
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scaling)
        return self.o(y.transpose(1, 2).reshape(b, t, c))


class FeedForward(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.width, cfg.mlp_ratio * cfg.width)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width)
        self.mlp = FeedForward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # attn and mlp are the residual branches; the depth rules scale their outputs by hooks
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class MLMHead(nn.Module):
    """BERT's prediction head: dense → GELU → LayerNorm → decoder (vocabulary logits + bias)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.width, cfg.width)
        self.ln = nn.LayerNorm(cfg.width)
        self.decoder = nn.Linear(cfg.width, cfg.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.ln(F.gelu(self.dense(x))))


class Bert(nn.Module):
    """Pre-LN BERT encoder with a masked-LM head, over bytes (vocabulary 256 + ``[MASK]``)."""

    residual_branches = ("blocks.*.attn", "blocks.*.mlp")
    query_weights = "blocks.*.attn.q.weight"
    mutransfer_init = "rules"
    """No init of its own: the plan's σ/√fan_in (embeddings σ) is this model's parametrization."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.width)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.head = MLMHead(cfg)
        if cfg.tie_embeddings:
            self.head.decoder.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, time, vocab) for token ids of shape (batch, time)."""
        t = idx.shape[1]
        if t > self.cfg.seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's seq_len {self.cfg.seq_len}")
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Masked-LM loss: cross-entropy over the positions whose target is not ``IGNORE``."""
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def mask_tokens(
    tokens: torch.Tensor,
    generator: torch.Generator,
    rate: float = 0.15,
    vocab: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of a batch of byte ids: ``(inputs, targets)``.

    Each position is predicted with probability ``rate``; a predicted position's input becomes
    ``[MASK]`` (80 %), a random byte (10 %) or stays (10 %); its target is the original byte,
    every other target ``IGNORE``.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be between 0 and 1, got {rate}")
    chosen = torch.rand(tokens.shape, generator=generator) < rate
    targets = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    how = torch.rand(tokens.shape, generator=generator)
    randoms = torch.randint(0, vocab, tokens.shape, generator=generator, dtype=tokens.dtype)
    inputs = torch.where(chosen & (how < 0.8), torch.full_like(tokens, MASK_ID), tokens)
    inputs = torch.where(chosen & (how >= 0.8) & (how < 0.9), randoms, inputs)
    return inputs, targets
