"""The reference BERT (pre-LN encoder, masked-LM head) under µP: masking, shapes, roles (tied and
untied decoder), the proxy trainer on Shakespeare-style text, and the coordinate check (µP passes,
SP fails). Every test is small: widths 32 to 256 at sequence length 16, batch 4 (the coordinate
checks: 3 seeds for µP, whose attention Δlogits slope sits near the +0.25 line with 2; 10-25 s
each on a loaded 2-core machine, so marked slow)."""

from __future__ import annotations

import math

import pytest
import torch

import mutransfer as mt
from mutransfer.coord import coord_check
from mutransfer.data import pydoc_text
from mutransfer.models import Bert, BertConfig, mask_tokens
from mutransfer.models.bert import IGNORE, MASK_ID
from mutransfer.training.proxy import TrainConfig, train

CFG = BertConfig(width=64, depth=2, n_heads=4, seq_len=16)


def test_masking_follows_berts_recipe() -> None:
    tokens = torch.randint(0, 256, (64, 256), generator=torch.Generator().manual_seed(0))
    inputs, targets = mask_tokens(tokens, torch.Generator().manual_seed(1))
    chosen = targets != IGNORE
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.01)
    assert torch.equal(targets[chosen], tokens[chosen])  # the original byte is the target
    assert torch.equal(inputs[~chosen], tokens[~chosen])  # the rest is left alone
    masked = (inputs == MASK_ID)[chosen].float().mean().item()
    kept = (inputs == tokens)[chosen].float().mean().item()  # incl. a random byte = itself
    assert masked == pytest.approx(0.8, abs=0.03)
    assert kept == pytest.approx(0.1 + 0.1 / 256, abs=0.03)
    assert not (inputs[~chosen] == MASK_ID).any()
    # a pure function of the generator's seed
    again = mask_tokens(tokens, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], targets)


@pytest.mark.parametrize("tie", [True, False])
def test_forward_backward_tied_and_untied(tie: bool) -> None:
    model = Bert(CFG.with_(tie_embeddings=tie))
    assert (model.head.decoder.weight is model.wte.weight) is tie
    tokens = torch.randint(0, 256, (3, 16))
    inputs, targets = mask_tokens(tokens, torch.Generator().manual_seed(0))
    logits = model(inputs)
    assert logits.shape == (3, 16, 257)
    loss = model.loss(inputs, targets)
    assert math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError, match="exceeds the model's seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        BertConfig(width=30, n_heads=4)
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        BertConfig(vocab_size=256)
    with pytest.raises(ValueError, match="rate"):
        mask_tokens(torch.zeros(2, 4, dtype=torch.long), torch.Generator(), rate=0.0)


@pytest.mark.parametrize("tie", [True, False])
def test_roles_and_mup_values(tie: bool) -> None:
    cfg = CFG.with_(tie_embeddings=tie)
    model = Bert(cfg)
    with torch.device("meta"):
        base = Bert(cfg.with_(width=16))
    plan = mt.parametrize(
        model, base, rules="mup", optimizer="adamw", residual_branches=Bert.residual_branches
    )
    m = 4.0
    for name in ("blocks.0.attn.q.weight", "blocks.1.mlp.proj.weight", "head.dense.weight"):
        assert plan[name].role == "hidden" and plan[name].lr_scale == pytest.approx(1 / m), name
    assert plan["blocks.0.ln1.weight"].role == "vector" and plan["head.ln.bias"].role == "vector"
    assert plan["wpe.weight"].role == "input" and plan["wpe.weight"].lr_scale == 1.0
    assert plan["head.decoder.bias"].role == "scalar"
    if tie:  # one tensor, two roles: the readout multiplier 1/m in the forward pass
        assert plan["wte.weight"].tied_roles == ("input", "output")
        assert "head.decoder.weight" not in plan.tensors
        assert plan.module_scales["head.decoder"].multiplier == pytest.approx(1 / m)
    else:
        assert plan["wte.weight"].role == "input"
        decoder = plan["head.decoder.weight"]
        assert decoder.role == "output" and decoder.lr_scale == pytest.approx(1 / m)
    for attn in ("blocks.0.attn", "blocks.1.attn"):  # 1/d logits, = 1/√d at the base
        assert model.get_submodule(attn).scaling == pytest.approx(math.sqrt(4) / 16)  # √d_base / d


def _masked_batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 256, (4, 16), generator=generator)
    return mask_tokens(tokens, generator, rate=0.5)


def _factory(tie: bool):
    return lambda width: Bert(CFG.with_(width=width, tie_embeddings=tie))


@pytest.mark.slow
@pytest.mark.parametrize("tie", [True, False])
def test_coord_check_mup_passes_and_sp_fails(tie: bool) -> None:
    widths = (32, 64, 128, 256)
    options = {"parametrize_kwargs": {"residual_branches": Bert.residual_branches}}
    mup = coord_check(_factory(tie), widths, steps=3, seeds=3, data=_masked_batch, **options)
    assert mup.ok, str(mup)
    sp = coord_check(
        _factory(tie), widths, steps=3, seeds=2, data=_masked_batch, rules="sp", **options
    )
    assert not sp.ok
    culprits = {name for name, _ in (r.key for r in sp.culprits())}
    assert {"blocks.0.mlp.fc", "blocks.1.attn.o"} & culprits, culprits


def test_the_proxy_trains_bert_with_masked_lm() -> None:
    config = TrainConfig(
        model="bert", width=32, base_width=16, depth=1, seq_len=32, batch_size=8, steps=30,
        lr=2**-6, data="pydoc", eval_batches=2, eval_batch_size=8,
    )  # fmt: skip
    result = train(config, source=pydoc_text())
    assert not result.diverged and result.steps_done == 30
    # byte-level masked LM on English: from ~ln 257 = 5.55 to well below it in 30 steps
    assert result.losses[0] > 5.0 and result.val_loss < 4.0
    assert result.flops > 0
