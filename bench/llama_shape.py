"""A Llama-shaped decoder (RMSNorm, q/k/v/o attention, SwiGLU MLP, untied ``lm_head``).

Written for the benchmarks, which build it on ``device="meta"`` at 7B size to time plan
construction without allocating 27 GB: the parameter names and shapes follow Hugging Face's
``LlamaForCausalLM`` (so numbers carry over to real checkpoints), and the attention modules
follow the ``head_dim``/float ``scaling`` convention the plan uses to set µP's 1/d logit scale.
The forward pass is complete (rotary positions included) but kept minimal: no KV cache, no
grouped-query attention, no dropout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaShape:
    """Sizes of the model. ``scaled(width)`` keeps heads and the MLP ratio (11008/4096) fixed."""

    width: int = 4096
    depth: int = 32
    n_heads: int = 32
    intermediate: int = 11008
    vocab_size: int = 32000
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.width % self.n_heads or (self.width // self.n_heads) % 2:
            raise ValueError(
                f"width {self.width} must split into {self.n_heads} heads of even size"
            )

    def scaled(self, width: int) -> LlamaShape:
        """The same architecture at another width (intermediate size scaled proportionally)."""
        inter = round(self.intermediate * width / self.width)
        return LlamaShape(**{**asdict(self), "width": width, "intermediate": inter})


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def _rotate(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding on (batch, heads, time, head_dim), half-split convention."""
    t, d = x.shape[-2], x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = torch.outer(torch.arange(t, device=x.device, dtype=torch.float32), freqs)
    cos, sin = angles.cos().repeat(1, 2).to(x.dtype), angles.sin().repeat(1, 2).to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, cfg: LlamaShape) -> None:
        super().__init__()
        self.n_heads, self.theta = cfg.n_heads, cfg.rope_theta
        self.head_dim = cfg.width // cfg.n_heads
        self.scaling = self.head_dim**-0.5  # the plan sets 1/d under µP
        self.q_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.o_proj = nn.Linear(cfg.width, cfg.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            p(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        q, k = _rotate(q, self.theta), _rotate(k, self.theta)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, c))


class SwiGLU(nn.Module):
    def __init__(self, cfg: LlamaShape) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.width, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.width, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaShape) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.width)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.width)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """Decoder-only Llama. ``readout`` builds ``lm_head`` (e.g. mup's ``MuReadout``)."""

    def __init__(
        self, cfg: LlamaShape, readout: Callable[[int, int], nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.width)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.width)
        make_readout = readout or (lambda i, o: nn.Linear(i, o, bias=False))
        self.lm_head = make_readout(cfg.width, cfg.vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))
