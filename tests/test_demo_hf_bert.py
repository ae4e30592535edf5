"""``mutransfer demo --model hf-bert``: Hugging Face's ``BertForMaskedLM`` through
``parametrize_hf`` (tied decoder) on the project's own masked bytes, through the same demo."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from mutransfer import demo
from mutransfer.data import pydoc_text
from mutransfer.demo import report
from mutransfer.demo.settings import HF_BERT_QUICK, settings_for
from mutransfer.training.proxy import TrainConfig, _Data, _loss, build_model

transformers = pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

TINY = TrainConfig(
    model="hf-bert", tie_embeddings=True, width=32, base_width=32, depth=2, seq_len=32,
    batch_size=4, eval_batches=2, eval_batch_size=8, data="pydoc",
)  # fmt: skip


def test_settings_for_hf_bert() -> None:
    settings = settings_for(True, model="hf-bert")
    assert settings == HF_BERT_QUICK
    assert settings.base.model == "hf-bert" and settings.base.tie_embeddings


@pytest.mark.parametrize("width", [32, 128])
def test_hf_bert_is_tied_parametrized_and_starts_at_ln_257(width: int) -> None:
    """HF's own init (N(0, 0.02²)) at the base width 32, and µP's scaling of it at 128: logits
    near zero, so the masked-LM loss at init is that of a uniform guess over 257 tokens."""
    source = pydoc_text()
    losses = []
    for seed in range(3):
        config = TINY.with_(width=width, seed=seed)
        model, plan = build_model(config)
        assert isinstance(model, transformers.BertForMaskedLM)
        decoder, embedding = model.cls.predictions.decoder, model.bert.embeddings.word_embeddings
        assert decoder.weight is embedding.weight  # tied
        assert plan["bert.embeddings.word_embeddings.weight"].tied_roles == ("input", "output")
        with torch.no_grad():
            losses.append(_loss(model, _Data(config, source).eval[0]).item())
    assert sum(losses) / 3 == pytest.approx(math.log(257), abs=0.05)


def test_a_tiny_hf_bert_demo_in_process(tmp_path) -> None:
    summary = demo.run_demo(
        tmp_path,
        workers=0,
        progress=False,
        echo=None,
        model="hf-bert",
        text="pydoc",
        widths=[32, 64],
        log2_lrs=[-7, -5],
        steps=6,
        batch_size=4,
        seq_len=32,
        eval_batches=1,
        eval_batch_size=8,
    )
    assert summary["config"]["model"] == "hf-bert" and summary["config"]["tie_embeddings"]
    for rules in ("sp", "mup"):
        losses = [v for row in summary["sweeps"][rules]["loss"] for v in row]
        # from ln 257 = 5.55 at init, learning after 6 steps
        assert all(v is not None and 2.0 < v < math.log(257) for v in losses), losses
    text = (tmp_path / report.REPORT_NAME).read_text()
    assert "HF BertForMaskedLM depth 2" in text and "tied decoder" in text
    assert (tmp_path / report.FIGURE_NAME).read_bytes()[:4] == b"\x89PNG"
    # bench/demo_models.py's BENCHMARKS.md section, from this summary's own numbers
    section = _bench_demo_models().section([("tiny", summary)])
    held = sum(c["holds"] for c in summary["claims"].values())
    sweeps = summary["sweeps"]
    row = (
        f"| tiny | HF BertForMaskedLM | adamw | 32/64 | 1 | {sweeps['sp']['drift_octaves']:g} / "
        f"{sweeps['mup']['drift_octaves']:g} |"
    )
    assert row in section and f"| {held} of 5 |" in section
    assert "lr_transfer_tiny.png" in section and "command: `" in section


def _bench_demo_models():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "demo_models.py"
    spec = importlib.util.spec_from_file_location("bench_demo_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_hf_bert_demo_end_to_end(tmp_path) -> None:
    """``mutransfer demo --model hf-bert --quick`` as a user runs it (2 spawned workers), on its
    2 widths with 2 LRs and 10 steps (the full --quick grid is timed in docs/demo.md)."""
    pytest.importorskip("tqdm")
    command = [sys.executable, "-m", "mutransfer.cli", "demo", "--model", "hf-bert", "--quick"]
    grid = ["--widths", "32,64", "--lrs=-7:-6", "--steps", "10", "--out", str(tmp_path)]
    proc = subprocess.run([*command, *grid], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["model"] == "hf-bert" and summary["data"]["name"] == "shakespeare"
    assert summary["widths"] == [32, 64] and summary["run"]["trained"] == 8
    for rules in ("sp", "mup"):
        losses = [v for row in summary["sweeps"][rules]["loss"] for v in row]
        assert all(v is not None and 2.0 < v < math.log(257) for v in losses), losses
    assert "optimum moves" in proc.stdout and "regret" in proc.stdout
