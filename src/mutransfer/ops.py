"""The few forward-pass helpers µP needs, taking plain Python floats.

Multipliers are Python floats, never tensors or buffers: ``torch.compile`` treats them as
constants (no graph break; a changed value recompiles once) and eager mode pays one multiply
where µP needs one. A multiplier of exactly 1.0 costs nothing at all.

Two ways to use them:

- a model written for mutransfer calls ``scale``/``attention_scale``/``residual`` itself with
  floats from ``plan.forward`` (see ``mutransfer.models.gpt``);
- an unmodified model gets the hooks below registered by ``Plan.attach`` on the modules that own
  a multiplied weight. The hooks are small picklable objects holding a float, so they survive
  ``copy.deepcopy``, pickling, DDP and FSDP2 wrapping.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def scale(x: torch.Tensor, multiplier: float) -> torch.Tensor:
    """``x * multiplier``, skipped when the multiplier is exactly 1."""
    return x if multiplier == 1.0 else x * multiplier


def attention_scale(
    head_dim: int,
    *,
    base_head_dim: int | None = None,
    kind: str = "mup",
    multiplier: float = 1.0,
) -> float:
    """The factor on q·k logits: ``α/√d`` (SP), ``α·√d_base/d`` (µP: 1/d, SP at the base) or
    ``α/d`` (``"unit"``: u-µP, no base).

    Under µP, q and k become correlated during training, so q·k grows like d rather than √d;
    dividing by d keeps the logits O(1) as the head dimension grows (Tensor Programs V, §4).
    """
    if kind == "sp":
        return multiplier / math.sqrt(head_dim)
    if kind == "unit":
        return multiplier / head_dim
    if kind != "mup":
        raise ValueError(f"attention kind must be 'mup', 'sp' or 'unit', got {kind!r}")
    base = head_dim if base_head_dim is None else base_head_dim
    return multiplier * math.sqrt(base) / head_dim


def readout(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    multiplier: float = 1.0,
) -> torch.Tensor:
    """A readout ``(multiplier · h) Wᵀ + b``: the multiplier scales the weight, not the bias."""
    return F.linear(scale(h, multiplier), weight, bias)


def residual(x: torch.Tensor, branch: torch.Tensor, multiplier: float = 1.0) -> torch.Tensor:
    """``x + multiplier · branch``: the residual-branch multiplier of the depth rules."""
    return x + scale(branch, multiplier)


class InputScale:
    """Forward pre-hook multiplying a module's first input by a constant.

    For a module linear in its input with a bias (``Linear``, ``ConvNd``) this is exactly a
    multiplier on the weight alone: ``W (c x) + b = (c W) x + b``.
    """

    def __init__(self, multiplier: float) -> None:
        self.multiplier = float(multiplier)

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0] * self.multiplier, *args[1:])

    def __repr__(self) -> str:
        return f"InputScale({self.multiplier:g})"


class OutputScale:
    """Forward hook multiplying a module's output by a constant (embeddings, residual branches)."""

    def __init__(self, multiplier: float) -> None:
        self.multiplier = float(multiplier)

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        return output * self.multiplier

    def __repr__(self) -> str:
        return f"OutputScale({self.multiplier:g})"


class KeepSlowPath:
    """Forward pre-hook that changes nothing: its presence keeps ``nn.TransformerEncoderLayer``
    off its fused inference kernel, which reads the attention weights directly and would
    compute 1/√d logits behind a ``ScaledMultiheadAttention``'s back (torch skips that kernel
    when a submodule has hooks)."""

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        return None

    def __repr__(self) -> str:
        return "KeepSlowPath()"


MUTRANSFER_HOOKS = (InputScale, OutputScale, KeepSlowPath)


class ScaledMultiheadAttention(torch.nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with its q·k logit scale in a float ``scaling`` attribute.

    torch's module fixes the scale at 1/√head_dim inside its kernels; µP needs 1/d. The plan
    turns an existing ``nn.MultiheadAttention`` into this subclass in place (same parameters,
    same ``state_dict``, still an ``nn.MultiheadAttention``) and sets ``scaling``. The scale is
    applied by multiplying the query rows of the input projection (weight and bias) by
    ``scaling·√head_dim`` inside the forward, which is exactly a multiplier on the logits
    and leaves the stored parameters and their gradients' meaning unchanged. At the model's own
    scale the forward is torch's, fast paths included.
    """

    scaling: float

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        factor = float(getattr(self, "scaling", 0.0)) * math.sqrt(self.head_dim)
        if factor == 1.0 or not factor:
            return super().forward(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
            )
        transpose = self.batch_first and query.dim() == 3
        if transpose:  # the functional form wants (length, batch, embed); keep q is k is v
            query, key, value = _transposed(query, key, value)
        e = self.embed_dim
        bias: torch.Tensor | None = self.in_proj_bias
        if bias is not None:
            bias = torch.cat([bias[:e] * factor, bias[e:]])
        separate = not self._qkv_same_embed_dim
        weight = (
            None
            if separate
            else torch.cat([self.in_proj_weight[:e] * factor, self.in_proj_weight[e:]])
        )
        out, weights = F.multi_head_attention_forward(
            query,
            key,
            value,
            self.embed_dim,
            self.num_heads,
            weight,
            bias,
            self.bias_k,
            self.bias_v,
            self.add_zero_attn,
            self.dropout,
            self.out_proj.weight,
            self.out_proj.bias,
            training=self.training,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            use_separate_proj_weight=separate,
            q_proj_weight=self.q_proj_weight * factor if separate else None,
            k_proj_weight=self.k_proj_weight if separate else None,
            v_proj_weight=self.v_proj_weight if separate else None,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )
        return (out.transpose(0, 1) if transpose else out), weights


def _transposed(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1, 0)-transposes of q, k, v that stay the same object where the inputs were (self-
    attention: one packed projection)."""
    q = query.transpose(0, 1)
    k = q if key is query else key.transpose(0, 1)
    v = k if value is key else (q if value is query else value.transpose(0, 1))
    return q, k, v


def scale_multihead_attention_(module: torch.nn.MultiheadAttention, scaling: float) -> None:
    """Make ``module`` a ``ScaledMultiheadAttention`` with logits × ``scaling`` (in place)."""
    if not isinstance(module, ScaledMultiheadAttention):
        module.__class__ = ScaledMultiheadAttention
    module.__dict__["scaling"] = float(scaling)  # a plain float: a constant to torch.compile


def remove_hooks(module: torch.nn.Module) -> int:
    """Remove every mutransfer hook from ``module`` and its children; returns how many."""
    removed = 0
    for sub in module.modules():
        for hooks in (sub._forward_pre_hooks, sub._forward_hooks):
            for key in [k for k, h in hooks.items() if isinstance(h, MUTRANSFER_HOOKS)]:
                del hooks[key]
                removed += 1
    return removed
