"""Attention written by hand (softmax over q·kᵀ), which no SDPA call shows to the check.

The plan cannot rescale such a module and says so (``UnscaledAttentionWarning``); the
coordinate check reads its logits at the softmax instead, so its verdict measures the fault
rather than passing blind: 1/√d fails at the module, a scale of 1/d passes.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mutransfer.build import UnscaledAttentionWarning
from mutransfer.coord import coord_check
from mutransfer.coord.record import attention_probe

VOCAB, HEADS, BASE_HEAD_DIM = 64, 4, 16
WIDTHS = (64, 128, 256, 512)


class HandAttention(nn.Module):
    """One causal attention block the way older code writes it: scores, mask, softmax."""

    def __init__(self, width: int, mup_scale: bool) -> None:
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.softmax = nn.Softmax(dim=-1)
        self.mup_scale = mup_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm(x)).split(width, dim=-1)
        q, k, v = (t.view(batch, length, HEADS, -1).transpose(1, 2) for t in (q, k, v))
        d = k.size(-1)
        # µP: 1/d, equal to the usual 1/√d at the base head size
        scale = math.sqrt(BASE_HEAD_DIM) / d if self.mup_scale else 1.0 / math.sqrt(d)
        scores = (q @ k.transpose(-2, -1)) * scale
        future = torch.ones(length, length, dtype=torch.bool).triu(1)
        probs = self.softmax(scores.masked_fill(future, -1e9))
        return x + self.proj((probs @ v).transpose(1, 2).reshape(batch, length, width))


class HandAttentionLM(nn.Module):
    def __init__(self, width: int, mup_scale: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.blocks = nn.Sequential(*(HandAttention(width, mup_scale) for _ in range(2)))
        self.head = nn.Linear(width, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(tokens)))


def test_hand_written_attention_at_one_over_sqrt_d_fails_at_the_module() -> None:
    with pytest.warns(UnscaledAttentionWarning, match="HandAttention"):
        report = coord_check(HandAttentionLM, WIDTHS, steps=3, seeds=2)
    assert not report.ok, report.table()
    culprits = {(r.module, r.quantity) for r in report.culprits()}
    assert culprits & {("blocks.0", "Δlogits"), ("blocks.1", "Δlogits")}, report.summary()
    slopes = [r.slopes[1] for r in report.rows if r.quantity == "Δlogits"]
    assert len(slopes) == 2 and min(slopes) > 0.3  # the learned part of q·k grows like √d


def test_hand_written_attention_at_one_over_d_passes_with_its_logits_read() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnscaledAttentionWarning)  # the source still says sqrt
        report = coord_check(lambda w: HandAttentionLM(w, mup_scale=True), WIDTHS, steps=3)
    assert report.ok, report.table()
    read = {(r.module, r.quantity) for r in report.rows}
    assert {("blocks.0", "logits"), ("blocks.0", "Δlogits")} <= read
    assert not any(q in ("logits", "Δlogits") for m, q in read if m.startswith("head"))


def test_the_probe_puts_every_softmax_back() -> None:
    originals = (F.softmax, torch.softmax, F.scaled_dot_product_attention)
    with attention_probe():
        assert F.softmax is not originals[0] and "softmax" in vars(torch.Tensor)
        x = torch.randn(3, 5)
        assert torch.equal(x.softmax(-1), torch.softmax(x, dim=-1))
        assert torch.equal(F.softmax(x, dim=-1), nn.Softmax(dim=-1)(x))
    assert (F.softmax, torch.softmax, F.scaled_dot_product_attention) == originals
    assert "softmax" not in vars(torch.Tensor)  # the method is its C base's again


class QuietAttention(nn.Module):
    """Attention whose source shows no square root: found only because the plan names it."""

    def __init__(self, width: int, scaling: float) -> None:
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm(x)).split(width, dim=-1)
        q, k, v = (t.view(batch, length, HEADS, -1).transpose(1, 2) for t in (q, k, v))
        probs = (q @ k.transpose(-2, -1) * self.scaling).softmax(dim=-1)
        return x + self.proj((probs @ v).transpose(1, 2).reshape(batch, length, width))


def test_the_layer_monitor_reads_the_plans_attention_at_its_softmax(tmp_path) -> None:
    from mutransfer.training.monitor import LayerMonitor

    model = nn.Sequential(nn.Embedding(VOCAB, 64), QuietAttention(64, scaling=0.25))
    probe = torch.randint(0, VOCAB, (2, 8))
    unnamed = LayerMonitor(model=model, probe=probe, every=1, out_dir=str(tmp_path))
    assert "logits" not in unnamed.probe_sizes(None).get("1", {})
    named = LayerMonitor(model=model, probe=probe, every=1, out_dir=str(tmp_path), attention=("1",))
    logits = named.probe_sizes(None)["1"]["logits"]
    with torch.no_grad():
        x = model[1].norm(model[0](probe))
        q, k, _ = model[1].qkv(x).split(64, dim=-1)
        q, k = (t.view(2, 8, HEADS, -1).transpose(1, 2) for t in (q, k))
        expected = (q @ k.transpose(-2, -1) * 0.25).square().mean().sqrt().item()
    assert logits == pytest.approx(expected, rel=1e-5)
