"""``MuReadout`` and ``MuSharedReadout``: readouts that apply µP's 1/width output multiplier.

They compute exactly what mup's do (``Linear(output_mult · x / width_mult)``), but the width
multiplier is a Python float set on the module by ``set_base_shapes`` rather than read from
``weight.infshape``. A float on the module survives ``deepcopy``/``AveragedModel``,
``to_empty``, ``fully_shard``, DataParallel replicas and pickling, and ``torch.compile`` treats
it as a constant.

``MuSharedReadout`` fixes two faults of mup's: its bias had the embedding *dimension* as size
(mup builds ``Linear(vocab, dim)`` and then swaps the weight in, so ``bias=True`` fails unless
vocab == dim), and ``set_base_shapes`` scaled the shared embedding's std by √m (mup issue #55).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .state import MupCompatError

RESCALED = "_has_rescaled_params"
"""The flag mup sets on a module whose parameters ``set_base_shapes`` has rescaled."""


class MuReadout(nn.Linear):
    """Drop-in for ``mup.MuReadout``: a Linear readout with µP's 1/width input multiplier.

    ``readout_zero_init`` initialises weight and bias to zero; ``output_mult`` is the tunable
    output multiplier α_out.
    """

    def __init__(
        self,
        *args: object,
        readout_zero_init: bool = False,
        output_mult: float = 1.0,
        **kwargs: object,
    ) -> None:
        self.output_mult = output_mult
        self.readout_zero_init = readout_zero_init
        self._width_mult: float | None = None
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def reset_parameters(self) -> None:
        if self.readout_zero_init:
            with torch.no_grad():
                self.weight.zero_()
                if self.bias is not None:
                    self.bias.zero_()
        else:
            super().reset_parameters()

    def width_mult(self) -> float:
        """fan-in / base fan-in, as set by ``set_base_shapes``."""
        if self._width_mult is None:
            raise MupCompatError(
                f"{type(self).__name__} has no width multiplier yet: call "
                "mutransfer.compat.mup.set_base_shapes(model, base) on the model that holds it"
            )
        return self._width_mult

    def _rescale_parameters(self) -> None:
        """mup's conversion of PyTorch's default init to µP: weight and bias × √width_mult."""
        if getattr(self, RESCALED, False):
            raise RuntimeError(
                "this readout's parameters were already rescaled by set_base_shapes; on a model "
                "loaded from a checkpoint (or when setting base shapes again) pass "
                "rescale_params=False"
            )
        factor = self.width_mult() ** 0.5
        with torch.no_grad():
            if self.bias is not None:
                self.bias.mul_(factor)
            if not self._shares_weight():
                self.weight.mul_(factor)
        setattr(self, RESCALED, True)

    def _shares_weight(self) -> bool:
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.output_mult * x / self.width_mult())


class MuSharedReadout(MuReadout):
    """Drop-in for ``mup.MuSharedReadout``: a readout using an embedding's weight ``(vocab, d)``.

    Unlike mup's, ``bias=True`` gives a bias of size vocab, and ``set_base_shapes`` leaves the
    shared weight at the embedding's (width-independent) init.
    """

    def __init__(self, weight: nn.Parameter, bias: bool = True, **kwargs: Any) -> None:
        vocab, dim = weight.shape
        super().__init__(dim, vocab, bias=bias, **kwargs)
        self.weight = weight

    def _shares_weight(self) -> bool:
        return True


def rescale_linear_bias(linear: nn.Linear | nn.modules.conv._ConvNd) -> None:
    """mup's bias rescale for Linear/Conv (× √(fan-in width multiplier)), once per module."""
    from .state import lookup

    if getattr(linear, RESCALED, False):
        raise RuntimeError(
            f"the bias of this {type(linear).__name__} was already rescaled by set_base_shapes; "
            "on a model loaded from a checkpoint pass rescale_params=False"
        )
    if linear.bias is None:
        return
    state, name = lookup(linear.weight, "rescale_linear_bias")
    # PyTorch's default bias bound is 1/sqrt(fan-in) with fan-in read from weight dim 1 (even
    # for ConvTranspose, whose dim 1 is the fan-out), so the correction uses that same dim
    m = state.infshapes[name][1].width_mult()
    with torch.no_grad():
        linear.bias.mul_(m**0.5)
    setattr(linear, RESCALED, True)
