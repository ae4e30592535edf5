"""``mutransfer demo --model bert``: the byte-level BERT (masked LM) through the same demo as the
GPT, in-process on a tiny grid over the zero-install pydoc text."""

from __future__ import annotations

import math

import pytest

from mutransfer import demo
from mutransfer.demo import report
from mutransfer.demo.settings import BERT_QUICK, settings_for

pytest.importorskip("matplotlib")


def test_settings_for_bert() -> None:
    settings = settings_for(True, model="bert")
    assert settings == BERT_QUICK
    assert settings.base.model == "bert" and not settings.base.tie_embeddings
    tied = settings_for(model="bert", tie_embeddings=True, text="pydoc")
    assert tied.base.tie_embeddings and tied.base.data == "pydoc"


def test_a_tiny_bert_demo_in_process(tmp_path) -> None:
    summary = demo.run_demo(
        tmp_path,
        workers=0,
        progress=False,
        echo=None,
        model="bert",
        text="pydoc",
        widths=[16, 32],
        log2_lrs=[-7, -5],
        steps=6,
        batch_size=4,
        seq_len=32,
        eval_batches=1,
        eval_batch_size=8,
    )
    assert summary["config"]["model"] == "bert" and summary["data"]["name"] == "pydoc"
    for rules in ("sp", "mup"):
        losses = [v for row in summary["sweeps"][rules]["loss"] for v in row]
        # masked bytes out of 257 classes: near ln 257 = 5.55 after 6 steps
        assert all(v is not None and 2.0 < v < math.log(257) + 2 for v in losses)
    text = (tmp_path / report.REPORT_NAME).read_text()
    assert "BERT depth 2" in text and "masked LM (15 % of the bytes), untied decoder" in text
    assert (tmp_path / report.FIGURE_NAME).read_bytes()[:4] == b"\x89PNG"
