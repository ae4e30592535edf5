"""The reference models (``mutransfer.models``) with their plans, as both runs build them."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ..build import parametrize
from ..models import GPT, MLP, GPTConfig, gpt_parametrize_options
from ..plan import Plan
from .options import RunOptions

ReferenceModel = Literal["gpt", "mlp"]


def build_reference(
    config: RunOptions, model_name: ReferenceModel = "gpt", *, tie_embeddings: bool = False
) -> tuple[nn.Module, Plan]:
    """The reference model at ``config.width`` with its plan (base at ``config.base_width``)."""
    options: dict[str, Any] = {}
    if model_name == "gpt":
        gpt_cfg = GPTConfig(
            width=config.width,
            depth=config.depth,
            n_heads=config.n_heads,
            seq_len=config.seq_len,
            tie_embeddings=tie_embeddings,
            qk_norm=config.qk_norm,
        )
        base_cfg = gpt_cfg.with_(width=config.base_width, depth=config.base_depth or config.depth)
        delta_cfg = base_cfg.with_(width=2 * config.base_width)
        model: nn.Module = GPT(gpt_cfg)
        with torch.device("meta"):
            base: nn.Module = GPT(base_cfg)
            delta: nn.Module = GPT(delta_cfg)
        options = gpt_parametrize_options(gpt_cfg, zero_init_query=config.zero_init_query)
    else:
        model = MLP(width=config.width, depth=config.depth)
        with torch.device("meta"):
            base = MLP(width=config.base_width, depth=config.base_depth or config.depth)
            delta = MLP(width=2 * config.base_width, depth=config.base_depth or config.depth)
    plan = parametrize(model, base, delta=delta, **config.plan_options(), **options)
    return model, plan
