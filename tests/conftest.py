"""Shared fixtures: small models at several widths, built cheaply."""

from __future__ import annotations

import torch
from torch import nn

from mutransfer.models import GPT, GPTConfig

torch.set_num_threads(1)

BASE_WIDTH = 16


def make_mlp(width: int, in_features: int = 12, classes: int = 5) -> nn.Sequential:
    """A 3-layer MLP: input, hidden, readout (the model of Tensor Programs V's tables)."""
    return nn.Sequential(
        nn.Linear(in_features, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, classes),
    )


def make_gpt(width: int, depth: int = 2, **kw) -> GPT:
    return GPT(GPTConfig(width=width, depth=depth, n_heads=2, seq_len=16, **kw))


def on_meta(factory, *args, **kw):
    with torch.device("meta"):
        return factory(*args, **kw)
