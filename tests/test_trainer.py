"""The built-in proxy trainer: deterministic, learns, and reports divergence with its reason."""

from __future__ import annotations

import math

import pytest

from mutransfer import data
from mutransfer.training.proxy import TrainConfig, train

TINY = TrainConfig(width=32, base_width=16, steps=30, batch_size=8, seq_len=32, eval_batches=2)


def test_gpt_run_is_deterministic_and_learns() -> None:
    corpus = data.pydoc_text()
    first = train(TINY, source=corpus)
    again = train(TINY, source=corpus)
    assert first.val_loss == again.val_loss
    assert (
        first.losses[-1] < first.losses[0] - 1.0
    )  # from ~ln(256) = 5.5 towards the text's entropy
    assert not first.diverged and first.steps_done == 30 and first.flops > 0


def test_divergence_is_reported_with_a_reason() -> None:
    result = train(TINY.with_(lr=64.0, rules="sp"), source=data.pydoc_text())
    assert result.diverged and result.val_loss == math.inf
    assert result.reason and ("exceeds" in result.reason or "loss became" in result.reason)
    assert result.to_dict()["val_loss"] is None


def test_mlp_on_fashion_mnist() -> None:
    cfg = TrainConfig(model="mlp", width=64, base_width=32, steps=40, lr=2**-7, eval_batches=2)
    result = train(cfg)
    assert result.val_loss < 1.2  # chance is ln(10) = 2.3


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="TrainConfig.lr must be a positive number"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="unknown training option.*widht"):
        TrainConfig.from_dict({"widht": 64})
    # checks shared with the big run's RunConfig (mutransfer.training.RunOptions)
    with pytest.raises(ValueError, match="TrainConfig.weight_decay must be >= 0"):
        TrainConfig(weight_decay=-0.1)
    with pytest.raises(ValueError, match="TrainConfig.n_heads must be a positive integer"):
        TrainConfig(n_heads=0)
    with pytest.raises(ValueError, match="TrainConfig.mode must be 'absorbed' or 'explicit'"):
        TrainConfig(mode="folded")  # type: ignore[arg-type]
