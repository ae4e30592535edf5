"""Coordinate check of Hugging Face GPT-2 and Llama (from config, widths 64–512).

µP through ``parametrize_hf`` passes; SP fails at the hidden layers' updates and the attention
logits; µP with the 1/√d attention scale fails at the attention logits — which shows that the
scale set through the modules' ``scaling`` attribute is the one the HF kernels use.
Tiny depth, sequence and vocabulary; one thread; about 2 s per check.
"""

from __future__ import annotations

import pytest
import torch

import mutransfer as mt
from mutransfer.coord import coord_check

transformers = pytest.importorskip("transformers")
from mutransfer.integrations.hf import parametrize_hf  # noqa: E402

torch.set_num_threads(1)
WIDTHS = (64, 128, 256, 512)


def gpt2(width: int) -> torch.nn.Module:
    cfg = transformers.GPT2Config(
        n_embd=width,
        n_layer=2,
        n_head=2,
        vocab_size=256,
        n_positions=8,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    return transformers.GPT2LMHeadModel(cfg)


def llama(width: int) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=8,
        use_cache=False,
    )
    return transformers.LlamaForCausalLM(cfg)


ARCHS = {"gpt2": gpt2, "llama": llama}


def check(arch: str, rules: str | mt.Rules):
    def factory(width: int):
        model = ARCHS[arch](width)
        return model, parametrize_hf(model, WIDTHS[0], rules)

    return coord_check(factory, WIDTHS, steps=3, seeds=2)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_mup_passes(arch: str) -> None:
    report = check(arch, "mup")
    assert report.ok, report.table()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_sp_fails_at_hidden_updates_and_attention(arch: str) -> None:
    report = check(arch, "sp")
    assert not report.ok
    culprits = {(row.module, row.quantity) for row in report.culprits()}
    assert any(q == "logits" for _, q in culprits), report.summary()
    updates = {m for m, q in culprits if q == "update"}
    mlp_in = "transformer.h.0.mlp.c_fc" if arch == "gpt2" else "model.layers.0.mlp.up_proj"
    assert mlp_in in updates, report.summary()


def test_sqrt_d_attention_scale_fails_at_the_logits() -> None:
    report = check("llama", mt.MUP.with_(name="mup-attention-sqrt", attention="sp"))
    assert not report.ok
    culprits = {(row.module, row.quantity) for row in report.culprits()}
    assert ("model.layers.0.self_attn", "logits") in culprits, report.summary()
    assert all(q in ("logits", "Δlogits") for _, q in culprits), report.summary()
