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


MUTRANSFER_HOOKS = (InputScale, OutputScale)


def remove_hooks(module: torch.nn.Module) -> int:
    """Remove every mutransfer hook from ``module`` and its children; returns how many."""
    removed = 0
    for sub in module.modules():
        for hooks in (sub._forward_pre_hooks, sub._forward_hooks):
            for key in [k for k, h in hooks.items() if isinstance(h, MUTRANSFER_HOOKS)]:
                del hooks[key]
                removed += 1
    return removed
