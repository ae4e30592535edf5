"""Drop-ins for ``mup.init``: torch.nn.init functions that scale with width like µP.

Each behaves like its ``torch.nn.init`` namesake at base width and corrects the scale for the
width multipliers otherwise, following mup's definitions exactly (same random draws, same
numbers) — with the width information looked up from the model's compat state instead of
``tensor.infshape``. ``init.normal_(p.data)`` works too (mup needs ``p`` itself).

Like torch.nn.init, fan-in is dimension 1 and fan-out dimension 0 (times the kernel size).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import init as torch_init
from torch.nn.init import calculate_gain  # mup.init re-exports torch's (user code imports it)

from .infshape import InfShape
from .state import MupCompatError, infshape_of

__all__ = [
    "calculate_gain",
    "constant_std_init_",
    "eye_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "trunc_normal_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
]

Sampler = Callable[..., object]


def _need_zero_mean(shape: InfShape, what: str) -> None:
    if shape.ninf() >= 2:
        raise MupCompatError(
            f"{what}: a hidden weight (two width dims) must be sampled with mean 0 (symmetric "
            "bounds) so that its scale can follow the width"
        )


def constant_std_init_(tensor: torch.Tensor, sampler_: Sampler) -> torch.Tensor:
    """Call ``sampler_(tensor)``, or ``sampler_(tensor, scale=width_mult**-0.5)`` for a hidden
    weight, so that its entries keep the std they have at base width × 1/√m."""
    shape = infshape_of(tensor)
    if shape.ninf() <= 1:
        sampler_(tensor)
    elif shape.ninf() == 2:
        sampler_(tensor, scale=shape.width_mult() ** -0.5)
    else:
        raise MupCompatError(f"no µP init for a tensor with {shape.ninf()} width dims")
    return tensor


def uniform_(tensor: torch.Tensor, a: float = 0.0, b: float = 1.0) -> torch.Tensor:
    """``torch.nn.init.uniform_`` with width-independent bounds ``a``, ``b``."""
    if a != -b:
        _need_zero_mean(infshape_of(tensor), "uniform_")

    def sample(t: torch.Tensor, scale: float = 1.0) -> None:
        torch_init.uniform_(t, a * scale, b * scale)

    return constant_std_init_(tensor, sample)


def normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """``torch.nn.init.normal_`` with a width-independent ``std``."""
    if mean != 0:
        _need_zero_mean(infshape_of(tensor), "normal_")

    def sample(t: torch.Tensor, scale: float = 1.0) -> None:
        torch_init.normal_(t, mean * scale, std * scale)

    return constant_std_init_(tensor, sample)


def trunc_normal_(
    tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0
) -> torch.Tensor:
    """``torch.nn.init.trunc_normal_`` with width-independent ``std`` and cut-offs."""
    if mean != 0 or a != -b:
        _need_zero_mean(infshape_of(tensor), "trunc_normal_")

    def sample(t: torch.Tensor, scale: float = 1.0) -> None:
        torch_init.trunc_normal_(t, mean * scale, std * scale, a * scale, b * scale)

    return constant_std_init_(tensor, sample)


def ones_(tensor: torch.Tensor) -> torch.Tensor:
    """``torch.nn.init.ones_`` (for vectors such as norm gains; not for hidden weights)."""
    _need_zero_mean(infshape_of(tensor), "ones_")
    return torch_init.ones_(tensor)


def eye_(tensor: torch.Tensor) -> torch.Tensor:
    """``torch.nn.init.eye_`` (not for hidden weights, whose scale must shrink with width)."""
    _need_zero_mean(infshape_of(tensor), "eye_")
    return torch_init.eye_(tensor)


def _fans(tensor: torch.Tensor) -> tuple[int, int]:
    if tensor.dim() < 2:
        raise ValueError("fan-in and fan-out need a tensor with at least 2 dims")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _xavier_scale(std: float, shape: InfShape) -> float:
    fan_out, fan_in = shape[0], shape[1]
    out_dim, in_dim = int(fan_out.dim or 0), int(fan_in.dim or 0)
    out_base = fan_out.base_dim or out_dim
    in_base = fan_in.base_dim or in_dim
    std *= math.sqrt((out_dim + in_dim) / (out_base + in_base))
    if shape.ninf() == 2:
        if not (fan_out.isinf() and fan_in.isinf()):
            raise MupCompatError("xavier init: the two width dims must be dims 0 and 1")
        std /= math.sqrt(fan_in.width_mult())
    elif shape.ninf() > 2:
        raise MupCompatError("xavier init handles at most 2 width dims")
    return std


def xavier_uniform_(tensor: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """``torch.nn.init.xavier_uniform_``, std made width-independent (hidden: ∝ 1/√m_in)."""
    fan_in, fan_out = _fans(tensor)
    std = _xavier_scale(gain * math.sqrt(2.0 / float(fan_in + fan_out)), infshape_of(tensor))
    bound = math.sqrt(3.0) * std
    return torch_init.uniform_(tensor, -bound, bound)


def xavier_normal_(tensor: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """``torch.nn.init.xavier_normal_``, std made width-independent (hidden: ∝ 1/√m_in)."""
    fan_in, fan_out = _fans(tensor)
    std = _xavier_scale(gain * math.sqrt(2.0 / float(fan_in + fan_out)), infshape_of(tensor))
    return torch_init.normal_(tensor, 0.0, std)


def _kaiming_std(tensor: torch.Tensor, a: float, mode: str, nonlinearity: Any) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(tensor)
    std = torch_init.calculate_gain(nonlinearity, a) / math.sqrt(
        fan_in if mode == "fan_in" else fan_out
    )
    shape = infshape_of(tensor)
    out_dim, in_dim = shape[0], shape[1]
    if shape.ninf() == 1:
        # one width dim: the std must not depend on it
        if mode == "fan_in" and in_dim.isinf():
            std *= in_dim.width_mult() ** 0.5
        elif mode == "fan_out" and out_dim.isinf():
            std *= out_dim.width_mult() ** 0.5
    elif shape.ninf() == 2:
        # hidden: std ∝ 1/√fan_in whatever the mode
        if not (out_dim.isinf() and in_dim.isinf()):
            raise MupCompatError("kaiming init: the two width dims must be dims 0 and 1")
        if mode == "fan_out":
            std *= math.sqrt(out_dim.width_mult() / in_dim.width_mult())
    elif shape.ninf() > 2:
        raise MupCompatError("kaiming init handles at most 2 width dims")
    return std


def kaiming_normal_(
    tensor: torch.Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> torch.Tensor:
    """``torch.nn.init.kaiming_normal_``, std made width-independent (hidden: ∝ 1/√m_in)."""
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    with torch.no_grad():
        return tensor.normal_(0, std)


def kaiming_uniform_(
    tensor: torch.Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> torch.Tensor:
    """``torch.nn.init.kaiming_uniform_``, std made width-independent (hidden: ∝ 1/√m_in)."""
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)
