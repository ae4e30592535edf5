"""A plain MLP classifier (e.g. Fashion-MNIST): input layer, hidden layers, readout."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    mutransfer_init = "rules"
    """No init of its own: the plan's σ/√fan_in is this model's parametrization."""

    def __init__(
        self,
        width: int = 256,
        depth: int = 3,
        in_features: int = 784,
        num_classes: int = 10,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"an MLP needs depth >= 2 (input and readout), got {depth}")
        layers: list[nn.Module] = [nn.Linear(in_features, width, bias=bias), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Linear(width, width, bias=bias), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.readout = nn.Linear(width, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.body(x.flatten(1)))
