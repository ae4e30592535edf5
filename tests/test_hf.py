"""Hugging Face GPT-2 and Llama from config: roles, attention scale, readout, init, errors."""

from __future__ import annotations

import math
import sys

import pytest
import torch

import mutransfer as mt

transformers = pytest.importorskip("transformers")
from mutransfer.integrations import hf  # noqa: E402

torch.set_num_threads(1)


def gpt2(width: int, depth: int = 2, **kw) -> torch.nn.Module:
    cfg = transformers.GPT2Config(
        n_embd=width,
        n_layer=depth,
        n_head=2,
        vocab_size=256,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
        **kw,
    )
    return transformers.GPT2LMHeadModel(cfg)


def llama(width: int, depth: int = 2, **kw) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=depth,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=16,
        **kw,
    )
    return transformers.LlamaForCausalLM(cfg)


def ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(seed))


def test_gpt2_roles_conv1d_layout_and_tied_readout() -> None:
    model = gpt2(128)
    plan = hf.parametrize_hf(model, 32, seed=0)
    # Conv1D weights are (in, out): c_fc is 128 → 512, a hidden weight with fan-in 128
    fc = plan["transformer.h.0.mlp.c_fc.weight"]
    assert fc.role == "hidden" and fc.shape == (128, 512)
    # HF's own std at the base width (initializer_range 0.02), then µP's m_in^-½
    assert fc.init_std == pytest.approx(0.02 / 2)
    proj = plan["transformer.h.0.mlp.c_proj.weight"]
    # GPT-2's own residual projections: 0.02/√(2·n_layer) at the base width
    assert proj.init_std == pytest.approx(0.02 / math.sqrt(2 * 2) / 2)
    assert fc.lr_scale == pytest.approx(0.25)
    # wte and lm_head are one tensor: input init/LR, readout multiplier 1/m as a hook
    wte = plan["lm_head.weight"]
    assert wte.name == "transformer.wte.weight" and set(wte.tied_roles) == {"input", "output"}
    assert wte.lr_scale == 1.0 and wte.multiplier == 1.0
    assert plan.module_scales["lm_head"].multiplier == pytest.approx(0.25)
    assert model.lm_head.weight is model.transformer.wte.weight
    # norm gains are planned as ones (HF norms have no reset_parameters)
    assert plan["transformer.h.0.ln_1.weight"].init == "ones"


def test_gpt2_readout_multiplier_reaches_the_logits() -> None:
    model = gpt2(64).eval()
    hf.parametrize_hf(model, 32, seed=0, output_multiplier=3.0)
    x = ids()
    hidden = model.transformer(x).last_hidden_state
    expected = hidden @ model.transformer.wte.weight.T * (3.0 * 32 / 64)
    torch.testing.assert_close(model(x).logits, expected, rtol=1e-5, atol=1e-5)


def test_llama_untied_readout_absorbed_and_attention_scale() -> None:
    model = llama(128)
    plan = hf.parametrize_hf(model, 32, seed=0)
    head = plan["lm_head.weight"]
    assert head.role == "output" and head.absorbed == pytest.approx(0.25)
    assert head.lr_scale == pytest.approx(0.25)  # absorbed 1/m: init × 1/m, LR × 1/m
    assert not plan.module_scales  # nothing left for hooks
    attn = model.model.layers[1].self_attn
    assert attn.head_dim == 32
    assert attn.scaling == pytest.approx(math.sqrt(8) / 32)  # µP: √d_base / d
    assert plan["model.layers.0.self_attn.k_proj.weight"].shape == (64, 128)  # GQA: 2 kv heads


def test_widen_heads_keeps_head_dim_and_sp_scale() -> None:
    model = llama(128)
    plan = hf.parametrize_hf(model, 64, widen="heads", seed=0)
    att = plan.attention["model.layers.0.self_attn"]
    assert att.head_dim == att.base_head_dim == 32
    assert att.scale == pytest.approx(1 / math.sqrt(32))


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attention_scale_is_honoured_by_the_kernel(impl: str) -> None:
    torch.manual_seed(0)
    model = llama(64, attn_implementation=impl).eval()
    hf.parametrize_hf(model, 16, seed=0)
    x = ids()
    mup_logits = model(x).logits
    for layer in model.model.layers:
        layer.self_attn.scaling = 1 / math.sqrt(layer.self_attn.head_dim)
    sp_logits = model(x).logits
    assert not torch.allclose(mup_logits, sp_logits, atol=1e-4)
    reference = llama(64, attn_implementation="eager").eval()
    hf.parametrize_hf(reference, 16, seed=0)
    torch.testing.assert_close(reference(x).logits, mup_logits, rtol=1e-4, atol=1e-5)


def test_meta_build_then_init_matches_direct_init() -> None:
    direct = llama(64).eval()
    hf.parametrize_hf(direct, 32, seed=3)
    with torch.device("meta"):
        model = llama(64)
    plan = hf.parametrize_hf(model, 32)
    model.to_empty(device="cpu")
    plan.init_(model, seed=3)
    hf.init_buffers_(model)
    model.eval()
    x = ids()
    torch.testing.assert_close(model(x).logits, direct(x).logits)


def test_plan_trains_and_round_trips() -> None:
    model = gpt2(64)
    model.config.use_cache = False
    plan = hf.parametrize_hf(model, 32, seed=0)
    opt = torch.optim.AdamW(plan.param_groups(1e-2, weight_decay=0.1))
    x = ids()
    losses = []
    for _ in range(5):
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    again = mt.Plan.from_json(plan.to_json())
    assert again["transformer.h.0.ln_1.weight"].init == "ones"


def test_config_at_width_scales_mlp_and_heads() -> None:
    cfg = llama(128).config
    half = hf.config_at_width(cfg, 64)
    assert (half.hidden_size, half.intermediate_size, half.head_dim) == (64, 256, 16)
    assert half.num_attention_heads == 4 and cfg.hidden_size == 128  # a copy
    heads = hf.config_at_width(cfg, 64, widen="heads")
    assert (heads.num_attention_heads, heads.num_key_value_heads, heads.head_dim) == (2, 1, 32)
    with pytest.raises(mt.PlanError, match="whole number"):
        hf.config_at_width(cfg, 48, widen="heads")


def test_errors_are_clear() -> None:
    with pytest.raises(mt.PlanError, match="scale_attn_by_inverse_layer_idx"):
        hf.parametrize_hf(gpt2(64, scale_attn_by_inverse_layer_idx=True), 32)
    with pytest.raises(TypeError, match="PreTrainedModel"):
        hf.parametrize_hf(torch.nn.Linear(4, 4), 2)
    with pytest.raises(TypeError, match="base must be"):
        hf.parametrize_hf(gpt2(64), "32")


def test_missing_transformers_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"mutransfer\[hf\]"):
        hf.require_transformers()
