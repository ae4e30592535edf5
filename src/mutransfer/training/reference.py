"""The reference models (``mutransfer.models``) with their plans, as both runs build them."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ..build import parametrize
from ..models import (
    GPT,
    MLP,
    Bert,
    BertConfig,
    GPTConfig,
    ResNet,
    ResNetConfig,
    gpt_parametrize_options,
)
from ..models.bert import MASK_ID
from ..plan import Plan
from .options import RunOptions

ReferenceModel = Literal["gpt", "mlp", "resnet", "bert", "hf-bert"]

RESNET = ResNetConfig(stage_ratios=(1, 2, 4), stem_stride=2, in_channels=1, num_classes=10)
"""The proxy's ResNet on Fashion-MNIST (28 × 28, one channel): the stem halves the image to
14 × 14, then three stages of ``width``, 2 × and 4 × ``width`` channels at 14, 7 and 4 pixels;
BatchNorm, as in Tensor Programs V's ResNets. ``depth`` is the number of blocks per stage."""


def reference_model(
    config: RunOptions, model_name: ReferenceModel = "gpt", *, tie_embeddings: bool = False
) -> nn.Module:
    """The bare reference model at ``config.width`` and ``config.depth`` (not parametrized; on
    the current default device, so ``with torch.device("meta")`` builds it for free)."""
    if model_name == "gpt":
        return GPT(_gpt_config(config, tie_embeddings))
    if model_name == "bert":
        return Bert(_bert_config(config, tie_embeddings))
    if model_name == "resnet":
        return ResNet(RESNET.with_(width=config.width, depth=config.depth))
    if model_name == "hf-bert":
        return _hf_bert(config, tie_embeddings)[0]
    return MLP(width=config.width, depth=config.depth)


def _gpt_config(config: RunOptions, tie_embeddings: bool) -> GPTConfig:
    return GPTConfig(
        width=config.width,
        depth=config.depth,
        n_heads=config.n_heads,
        seq_len=config.seq_len,
        tie_embeddings=tie_embeddings,
        qk_norm=config.qk_norm,
    )


def _bert_config(config: RunOptions, tie_embeddings: bool) -> BertConfig:
    return BertConfig(
        width=config.width,
        depth=config.depth,
        n_heads=config.n_heads,
        seq_len=config.seq_len,
        tie_embeddings=tie_embeddings,
    )


def _hf_bert(config: RunOptions, tie_embeddings: bool) -> tuple[nn.Module, Any]:
    """Hugging Face's ``BertForMaskedLM`` over the bytes and ``[MASK]`` (``models.bert``'s
    vocabulary, so ``mask_tokens`` makes its batches), without dropout, and its base config.

    No padding token (every byte is a token: HF's default ``pad_token_id=0`` would freeze the
    embedding of byte 0) and one token type. Its init is Hugging Face's own (normal with
    ``initializer_range`` 0.02, LayerNorm gains 1): at the base width the plan keeps it.
    """
    from ..integrations import hf

    transformers = hf.require_transformers()
    hf_config = transformers.BertConfig(
        vocab_size=MASK_ID + 1,
        hidden_size=config.width,
        num_hidden_layers=config.depth,
        num_attention_heads=config.n_heads,
        intermediate_size=4 * config.width,
        max_position_embeddings=config.seq_len,
        type_vocab_size=1,
        pad_token_id=None,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        tie_word_embeddings=tie_embeddings,
        attn_implementation="sdpa",
    )
    base_config = hf.config_at_width(hf_config, config.base_width)
    if config.base_depth is not None:
        base_config.num_hidden_layers = config.base_depth
    return transformers.BertForMaskedLM(hf_config), base_config


def build_reference(
    config: RunOptions, model_name: ReferenceModel = "gpt", *, tie_embeddings: bool = False
) -> tuple[nn.Module, Plan]:
    """The reference model at ``config.width`` with its plan (base at ``config.base_width``)."""
    options: dict[str, Any] = {}
    if model_name == "hf-bert":
        from ..integrations import hf

        hf_model, base_config = _hf_bert(config, tie_embeddings)
        zero_init = ("bert.encoder.layer.*.attention.self.query.weight",)
        return hf_model, hf.parametrize_hf(
            hf_model,
            base_config,
            zero_init=zero_init if config.zero_init_query else (),
            **config.plan_options(),
        )
    if model_name == "gpt":
        gpt_cfg = _gpt_config(config, tie_embeddings)
        base_cfg = gpt_cfg.with_(width=config.base_width, depth=config.base_depth or config.depth)
        delta_cfg = base_cfg.with_(width=2 * config.base_width)
        model: nn.Module = GPT(gpt_cfg)
        with torch.device("meta"):
            base: nn.Module = GPT(base_cfg)
            delta: nn.Module = GPT(delta_cfg)
        options = gpt_parametrize_options(gpt_cfg, zero_init_query=config.zero_init_query)
    elif model_name == "bert":
        bert_cfg = _bert_config(config, tie_embeddings)
        bert_base = bert_cfg.with_(width=config.base_width, depth=config.base_depth or config.depth)
        model = Bert(bert_cfg)
        with torch.device("meta"):
            base = Bert(bert_base)
            delta = Bert(bert_base.with_(width=2 * config.base_width))
        options = {"residual_branches": Bert.residual_branches}
        if config.zero_init_query:
            options["zero_init"] = (Bert.query_weights,)
    elif model_name == "resnet":
        resnet_cfg = RESNET.with_(width=config.width, depth=config.depth)
        resnet_base = resnet_cfg.with_(
            width=config.base_width, depth=config.base_depth or config.depth
        )
        model = ResNet(resnet_cfg)
        with torch.device("meta"):
            base = ResNet(resnet_base)
            delta = ResNet(resnet_base.with_(width=2 * config.base_width))
        options = {"residual_branches": ResNet.residual_branches}
    else:
        model = MLP(width=config.width, depth=config.depth)
        with torch.device("meta"):
            base = MLP(width=config.base_width, depth=config.base_depth or config.depth)
            delta = MLP(width=2 * config.base_width, depth=config.base_depth or config.depth)
    plan = parametrize(model, base, delta=delta, **config.plan_options(), **options)
    return model, plan
