"""torch's own attention modules get µP's 1/d logits; attention the plan cannot reach is loud.

``nn.MultiheadAttention`` (and so ``nn.TransformerEncoderLayer``/``DecoderLayer``) fixes its
scale at 1/√d inside torch's kernels. The plan turns it into ``ScaledMultiheadAttention`` in
place; judged here on the attention weights the module returns (the softmax of its logits), on
the outputs of torch's encoder in inference mode (where torch would use its fused kernel) and
by the coordinate check. A module that calls ``scaled_dot_product_attention`` itself gets a
warning naming it (an error with ``strict=True``).
"""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
from torch import nn

import mutransfer as mt
from conftest import on_meta
from mutransfer.build import UnscaledAttentionWarning
from mutransfer.coord import coord_check
from mutransfer.ops import ScaledMultiheadAttention
from nanogpt import make, make_scaled

torch.set_num_threads(1)
HEADS = 4


class EncoderLM(nn.Module):
    """A small LM built from torch's own transformer modules."""

    def __init__(self, width: int, depth: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(256, width)
        layer = nn.TransformerEncoderLayer(
            width, HEADS, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(idx.shape[1])
        return self.head(self.encoder(self.emb(idx), mask=mask, is_causal=True))


def logits_from_weights(mha: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """The logits the module used, recovered from the attention weights it returns (per head):
    log-probabilities differ from the logits by a per-row constant, removed by centering."""
    _, probs = mha(x, x, x, need_weights=True, average_attn_weights=False)
    logp = probs.log()
    return logp - logp.mean(dim=-1, keepdim=True)


def reference_logits(mha: nn.MultiheadAttention, x: torch.Tensor, scale: float) -> torch.Tensor:
    e, d = mha.embed_dim, mha.head_dim
    q, k, _ = nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias).split(e, dim=-1)
    q, k = (h.view(*h.shape[:2], HEADS, d).transpose(1, 2) for h in (q, k))
    logits = q @ k.transpose(-1, -2) * scale
    return logits - logits.mean(dim=-1, keepdim=True)


@pytest.mark.parametrize("width", [32, 128, 512])
def test_multihead_attention_logits_are_scaled_by_one_over_d(width: int) -> None:
    torch.manual_seed(0)
    model = EncoderLM(width)
    plan = mt.parametrize(model, on_meta(EncoderLM, 32), delta=on_meta(EncoderLM, 64), seed=0)
    mha = model.encoder.layers[0].self_attn
    assert isinstance(mha, ScaledMultiheadAttention)
    head_dim, base_head_dim = width // HEADS, 32 // HEADS
    expected = math.sqrt(base_head_dim) / head_dim  # 1/d, equal to 1/√d at the base width
    assert plan.attention["encoder.layers.0.self_attn"].scale == pytest.approx(expected)
    x = torch.randn(2, 6, width)
    with torch.no_grad():
        measured = logits_from_weights(mha, x)
        torch.testing.assert_close(measured, reference_logits(mha, x, expected), atol=2e-4, rtol=0)
        # and not torch's own 1/√d (the two differ away from the base width)
        if width != 32:
            wrong = reference_logits(mha, x, 1 / math.sqrt(head_dim))
            assert (measured - wrong).abs().max() > 1e-2


def test_torch_encoder_in_inference_mode_uses_the_scaled_attention() -> None:
    """torch's fused inference kernels read the weights directly; the plan keeps them off."""
    torch.manual_seed(0)
    width = 128
    layer = nn.TransformerEncoderLayer(width, HEADS, 2 * width, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)
    with torch.device("meta"):
        base_layer = nn.TransformerEncoderLayer(32, HEADS, 64, dropout=0.0, batch_first=True)
        base = nn.TransformerEncoder(base_layer, 2, enable_nested_tensor=True)
    mt.parametrize(encoder, base, seed=0)
    x = torch.randn(2, 7, width)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    encoder.train()  # the ordinary path
    with torch.no_grad():
        slow = encoder(x, src_key_padding_mask=pad)
        encoder.eval()  # where torch would switch to its fused kernels
        fast = encoder(x, src_key_padding_mask=pad)
    torch.testing.assert_close(fast[0], slow[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast[1, :5], slow[1, :5], atol=1e-5, rtol=1e-5)


def test_decoder_layer_and_separate_key_value_dims_are_scaled() -> None:
    def decoder(width: int) -> nn.TransformerDecoderLayer:
        return nn.TransformerDecoderLayer(width, HEADS, 2 * width, dropout=0.0, batch_first=True)

    plan = mt.parametrize(decoder(128), on_meta(decoder, 32))
    assert set(plan.attention) == {"self_attn", "multihead_attn"}

    def cross(width: int) -> nn.Module:
        return nn.MultiheadAttention(width, HEADS, kdim=24, vdim=24, batch_first=True)

    torch.manual_seed(0)
    mha = cross(128)
    plan = mt.parametrize(mha, on_meta(cross, 32), seed=0)
    scale = plan.attention[""].scale
    assert scale == pytest.approx(math.sqrt(8) / 32)
    q, kv = torch.randn(1, 3, 128), torch.randn(1, 5, 24)
    with torch.no_grad():
        _, probs = mha(q, kv, kv, need_weights=True, average_attn_weights=False)
        qh = nn.functional.linear(q, mha.q_proj_weight, mha.in_proj_bias[:128])
        kh = nn.functional.linear(kv, mha.k_proj_weight, mha.in_proj_bias[128:256])
        qh, kh = (h.view(1, -1, HEADS, 32).transpose(1, 2) for h in (qh, kh))
        expected = torch.softmax(qh @ kh.transpose(-1, -2) * scale, dim=-1)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)


def test_scaled_attention_survives_copies_and_keeps_its_state_dict() -> None:
    model = EncoderLM(64)
    keys = list(model.state_dict())
    mt.parametrize(model, on_meta(EncoderLM, 32), seed=0)
    assert list(model.state_dict()) == keys
    x = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        out = model(x)
        for clone in (copy.deepcopy(model), _saved_and_loaded(model)):
            attn = clone.encoder.layers[1].self_attn
            assert isinstance(attn, ScaledMultiheadAttention)
            torch.testing.assert_close(clone(x), out)


def _saved_and_loaded(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded: nn.Module = torch.load(buffer, weights_only=False)
    return loaded


def test_coordinate_check_of_a_torch_encoder_model() -> None:
    """µP passes; with torch's 1/√d kept (attention='sp') the attention logits blow up."""
    widths = (64, 128, 256)
    mup = coord_check(EncoderLM, widths, steps=3, seeds=2)
    assert mup.ok, mup.table()
    sqrt_d = mt.MUP.with_(name="mup-sqrt-attention", attention="sp")
    broken = coord_check(EncoderLM, widths, steps=3, seeds=2, rules=sqrt_d)
    assert not broken.ok
    culprits = {(r.module, r.quantity) for r in broken.culprits()}
    assert any(q in ("logits", "Δlogits") for _, q in culprits), broken.summary()


def test_bare_sdpa_in_a_users_model_is_reported_by_name() -> None:
    with torch.device("meta"):
        base = make(64)
    with pytest.warns(UnscaledAttentionWarning, match=r"CausalSelfAttention .*transformer\.h\.0"):
        plan = mt.parametrize(make(256), base, init=False)
    assert plan.attention == {}
    with pytest.raises(mt.PlanError, match="cannot rescale"):
        mt.parametrize(make(256), base, init=False, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mt.parametrize(make(256), base, "sp", init=False)  # SP keeps 1/√d: nothing to report
        with torch.device("meta"):
            scaled_base = make_scaled(64)
        scaled = mt.parametrize(make_scaled(256), scaled_base, init=False)
    assert scaled.attention["transformer.h.0.attn"].scale == pytest.approx(math.sqrt(32) / 128)
