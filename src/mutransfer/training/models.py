"""Build the target model of a run with its plan: the reference GPT or a HF GPT-2 / Llama.

``build(config, meta=True)`` builds the model on ``meta`` (no memory; FSDP2 shards it before it
is materialised) and returns the plan without initialising; ``materialize`` then allocates it on
the device and runs the plan's init with the run's seed. Because ``plan.init_`` draws every
tensor from one seeded generator (and a sharded tensor keeps its slice of the same global
draw), the initial weights are identical for 1 process, DDP and FSDP2.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
from torch import nn

from ..plan import Plan
from .config import ConfigError, RunConfig
from .reference import build_reference

VOCAB_SIZE = 256  # the shipped corpora are bytes


def build(config: RunConfig, *, meta: bool = False) -> tuple[nn.Module, Plan]:
    """The target model and its plan; initialised with ``config.seed`` unless ``meta``."""
    device = torch.device("meta") if meta else contextlib.nullcontext()
    with device:
        if config.model == "gpt":
            # initialised with config.seed unless meta
            return build_reference(config, "gpt", tie_embeddings=bool(config.tie_embeddings))
        return _build_hf(config, init=not meta)


def _build_hf(config: RunConfig, init: bool) -> tuple[nn.Module, Plan]:
    from ..integrations import hf

    transformers = hf.require_transformers()
    if config.model == "gpt2":
        if config.zero_init_query:
            raise ConfigError(
                "zero_init_query is not available for gpt2: its query, key and value share one "
                "fused c_attn weight"
            )
        options: dict[str, Any] = {
            "n_embd": config.width,
            "n_layer": config.depth,
            "n_head": config.n_heads,
            "n_positions": config.seq_len,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "bos_token_id": None,
            "eos_token_id": None,
            "tie_word_embeddings": True if config.tie_embeddings is None else config.tie_embeddings,
        }
        cfg_cls, model_cls = transformers.GPT2Config, transformers.GPT2LMHeadModel
        zero_init: tuple[str, ...] = ()
    else:
        options = {
            "hidden_size": config.width,
            "intermediate_size": 4 * config.width,
            "num_hidden_layers": config.depth,
            "num_attention_heads": config.n_heads,
            "num_key_value_heads": config.n_heads,
            "max_position_embeddings": config.seq_len,
            "tie_word_embeddings": bool(config.tie_embeddings),
        }
        cfg_cls, model_cls = transformers.LlamaConfig, transformers.LlamaForCausalLM
        zero_init = ("model.layers.*.self_attn.q_proj.weight",) if config.zero_init_query else ()
    options.update(vocab_size=VOCAB_SIZE, use_cache=False, attn_implementation="sdpa")
    options.update(config.hf)
    try:
        hf_config = cfg_cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [hf] options for {config.model}: {exc}") from None
    base_config = hf.config_at_width(hf_config, config.base_width)
    if config.base_depth is not None:
        base_config.num_hidden_layers = config.base_depth
    model = model_cls(hf_config)
    plan = hf.parametrize_hf(
        model, base_config, zero_init=zero_init, init=init, **config.plan_options()
    )
    return model, plan


@torch.no_grad()
def materialize(model: nn.Module, plan: Plan, device: torch.device, seed: int) -> nn.Module:
    """Allocate a (possibly sharded) meta model on ``device`` and initialise it by the plan."""
    model.to_empty(device=device)
    with warnings.catch_warnings():
        # modules' reset_parameters draw random DTensors first; the plan then overwrites them
        warnings.filterwarnings("ignore", message="DTensor random operators")
        plan.init_(model, seed=seed)
    from ..integrations.hf import init_buffers_

    if hasattr(model, "config") and hasattr(model, "_init_weights"):
        init_buffers_(model)
    return model
