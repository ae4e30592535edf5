"""Hugging Face models from config (GPT-2, Llama, OPT, T5, Gemma, Mixtral, BERT, GPT-Neo): roles,
attention scale, readout, pinned multipliers, MoE layouts, init, errors."""

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


# ------------------------------------------------------------------ families beyond GPT-2/Llama
def opt(width: int) -> torch.nn.Module:
    cfg = transformers.OPTConfig(
        hidden_size=width,
        ffn_dim=4 * width,
        word_embed_proj_dim=width,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=256,
        max_position_embeddings=16,
    )
    return transformers.OPTForCausalLM(cfg)


def t5(width: int, depth: int = 2, **kw) -> torch.nn.Module:
    cfg = transformers.T5Config(
        d_model=width,
        d_ff=4 * width,
        d_kv=width // 4,
        num_layers=depth,
        num_heads=4,
        vocab_size=256,
        dropout_rate=0.0,
        **kw,
    )
    return transformers.T5ForConditionalGeneration(cfg)


def gemma(width: int) -> torch.nn.Module:
    cfg = transformers.GemmaConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=width // 4,
        vocab_size=256,
        max_position_embeddings=16,
    )
    return transformers.GemmaForCausalLM(cfg)


def mixtral(width: int, depth: int = 2) -> torch.nn.Module:
    cfg = transformers.MixtralConfig(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=depth,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        vocab_size=256,
        max_position_embeddings=16,
    )
    return transformers.MixtralForCausalLM(cfg)


def test_config_at_width_scales_every_width_field_of_the_families() -> None:
    half = hf.config_at_width(opt(128).config, 64)
    assert (half.hidden_size, half.ffn_dim, half.word_embed_proj_dim) == (64, 256, 64)
    t5_half = hf.config_at_width(t5(128).config, 64)
    assert (t5_half.d_model, t5_half.d_ff, t5_half.d_kv, t5_half.num_heads) == (64, 256, 16, 4)
    t5_heads = hf.config_at_width(t5(128).config, 64, widen="heads")
    assert (t5_heads.d_kv, t5_heads.num_heads) == (32, 2)
    moe = transformers.Qwen2MoeConfig(
        hidden_size=128,
        intermediate_size=512,
        moe_intermediate_size=128,
        shared_expert_intermediate_size=256,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    small = hf.config_at_width(moe, 64)
    assert (small.moe_intermediate_size, small.shared_expert_intermediate_size) == (64, 128)
    assert small.intermediate_size == 256 and small.num_experts == moe.num_experts
    # Falcon computes head_dim from hidden_size (a read-only property): left alone
    falcon = hf.config_at_width(
        transformers.FalconConfig(hidden_size=128, num_attention_heads=4), 64
    )
    assert falcon.head_dim == 16


def test_opt_is_planned_with_its_tied_readout() -> None:
    plan = hf.parametrize_hf(opt(128), 64, seed=0)
    head = plan["lm_head.weight"]
    assert set(head.tied_roles) == {"input", "output"}
    assert plan["model.decoder.layers.0.fc1.weight"].role == "hidden"
    assert plan["model.decoder.embed_positions.weight"].role == "input"


def test_a_misspelt_keyword_names_the_closest_ones() -> None:
    with pytest.raises(TypeError, match=r"'output_multiplierr' \(did you mean output_multiplier"):
        hf.parametrize_hf(gpt2(64), 32, output_multiplierr=2.0)
    with pytest.raises(TypeError, match=r"did you mean residual_branches"):
        hf.parametrize_hf(gpt2(64), 32, residual_branch=())


def test_attention_wrappers_are_not_taken_for_attention() -> None:
    # BertAttention wraps BertSelfAttention (which holds the logits); T5LayerSelfAttention
    # wraps T5Attention: only the inner modules get a scale, and nothing is refused
    cfg = transformers.BertConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=256,
        max_position_embeddings=16,
    )
    plan = hf.parametrize_hf(transformers.BertForMaskedLM(cfg), 64, seed=0)
    assert sorted(plan.attention) == [f"bert.encoder.layer.{i}.attention.self" for i in (0, 1)]
    t5_plan = hf.parametrize_hf(t5(128), 64, seed=0)
    assert len(t5_plan.attention) == 6  # encoder self ×2, decoder self ×2 and cross ×2
    assert all(
        a.module.endswith(("SelfAttention", "EncDecAttention")) for a in t5_plan.attention.values()
    )


def test_attention_that_computes_its_own_scale_is_refused_with_the_workarounds() -> None:
    cfg = transformers.GPTNeoConfig(
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global", "local"], 1]],
        vocab_size=256,
        max_position_embeddings=16,
    )
    model = transformers.GPTNeoForCausalLM(cfg)
    with pytest.raises(mt.PlanError, match=r"GPTNeo\w*Attention has no float `scaling`") as err:
        hf.parametrize_hf(model, 64)
    assert "rules='sp'" in str(err.value) and "subclass" in str(err.value)
    plan = hf.parametrize_hf(model, 64, "sp", seed=0)  # its own scale: allowed
    assert not plan.attention


def test_moe_layouts_are_declared_checked_and_the_users_win() -> None:
    plan = hf.parametrize_hf(mixtral(128), 64, seed=0)
    experts = plan["model.layers.0.mlp.experts.gate_up_proj"]
    assert experts.role == "hidden" and (experts.m_in, experts.m_out) == (2.0, 2.0)
    assert experts.lr_scale == pytest.approx(0.5)
    assert plan["model.layers.0.mlp.experts.down_proj"].role == "hidden"
    assert plan["model.layers.0.mlp.gate.weight"].role == "output"  # the router: a readout
    mine = hf.parametrize_hf(mixtral(128), 64, layouts={"*.mlp.gate.weight": "in,out"}, init=False)
    assert mine["model.layers.0.mlp.gate.weight"].role == "input"  # the user's layout decides
    model = mixtral(128)
    experts_module = model.model.layers[0].mlp.experts
    experts_module.down_proj = torch.nn.Parameter(experts_module.down_proj.transpose(1, 2))
    with pytest.raises(mt.PlanError, match="stores it differently"):
        hf.parametrize_hf(model, 64, init=False)


@pytest.mark.parametrize("build", ["mixtral", "t5"])
def test_deeper_models_of_new_families_know_their_residual_branches(build: str) -> None:
    factory = {"t5": t5, "mixtral": mixtral}[build]
    base = hf.config_at_width(factory(128).config, 64)
    plan = hf.parametrize_hf(factory(128, depth=4), base, "completep", init=False)
    scales = {s.multiplier for s in plan.module_scales.values() if "residual" in s.reason}
    assert scales == {0.5}, plan.module_scales


def embedding_rms(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(model.get_input_embeddings()(ids()).float().pow(2).mean().sqrt())


def test_gemma_embedding_scale_is_pinned_at_the_base_width() -> None:
    # Gemma multiplies its embeddings by √hidden_size: under µP the input multiplier must not
    # grow with width, so the plan pins it at √base_width; SP keeps the model's own
    narrow, wide = gemma(64), gemma(256)
    hf.parametrize_hf(narrow, 64, seed=0)
    plan = hf.parametrize_hf(wide, 64, seed=0)
    assert plan.module_scales["model.embed_tokens"].multiplier == pytest.approx(0.5)
    assert embedding_rms(wide) == pytest.approx(embedding_rms(narrow), rel=0.05)
    assert embedding_rms(narrow) == pytest.approx(0.02 * 8, rel=0.05)  # HF's own at the base
    sp = gemma(256)
    sp_plan = hf.parametrize_hf(sp, 64, "sp", seed=0)
    assert "model.embed_tokens" not in sp_plan.module_scales
    assert embedding_rms(sp) == pytest.approx(2 * embedding_rms(narrow), rel=0.05)


def test_gemma_meta_build_restores_the_embed_scale_buffer() -> None:
    direct = gemma(128).eval()
    hf.parametrize_hf(direct, 64, seed=3)
    with torch.device("meta"):
        model = gemma(128)
    plan = hf.parametrize_hf(model, 64)
    model.to_empty(device="cpu")
    plan.init_(model, seed=3)
    hf.init_buffers_(model)
    model.eval()
    assert float(model.model.embed_tokens.embed_scale) == pytest.approx(128**0.5)
    torch.testing.assert_close(model(ids()).logits, direct(ids()).logits)
    again = mt.Plan.from_json(plan.to_json())  # the pin is plain data of the plan
    assert again.module_scales["model.embed_tokens"] == plan.module_scales["model.embed_tokens"]


def test_t5_tied_readout_multiplier_is_alpha_over_m_relative_to_the_base() -> None:
    # T5 multiplies the decoder output by d_model^-½ before its tied readout; under µP the
    # readout multiplier is α/m relative to the base, so the model's own m^-½ is cancelled
    model = t5(256).eval()
    hf.parametrize_hf(model, 64, seed=0, output_multiplier=2.0)
    x, dec = ids(0)[:, :8], ids(1)[:, :8]
    logits = model(input_ids=x, decoder_input_ids=dec).logits
    encoded = model.encoder(input_ids=x).last_hidden_state
    hidden = model.decoder(input_ids=dec, encoder_hidden_states=encoded).last_hidden_state
    expected = hidden * (64**-0.5 * 2.0 * 64 / 256) @ model.shared.weight.T
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
