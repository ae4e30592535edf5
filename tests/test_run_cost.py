"""``training.runs.estimated_cost``: the relative cost of a proxy run, by which the worker pool
orders its runs (largest first) and the progress bar weights them, for every reference model."""

from __future__ import annotations

import pytest

from mutransfer.data import fashion_mnist_images, pydoc_text
from mutransfer.training.proxy import TrainConfig, train
from mutransfer.training.runs import STEP_OVERHEAD_FLOPS, estimated_cost

TEXT = TrainConfig(seq_len=32, batch_size=4, steps=2, eval_batches=1, eval_batch_size=4)
BASES = {
    "gpt": TEXT.with_(model="gpt"),
    "bert": TEXT.with_(model="bert"),
    "resnet": TrainConfig(model="resnet", depth=1, batch_size=4, steps=2, optimizer="sgd"),
    "mlp": TrainConfig(model="mlp", depth=3, batch_size=4, steps=2),
}


@pytest.mark.parametrize(
    "model, width, batch", [("gpt", 1024, 4), ("bert", 1024, 4), ("resnet", 128, 32),
                            ("mlp", 4096, 512)],
)  # fmt: skip
def test_cost_grows_about_4x_from_width_w_to_2w_for_hidden_dominated_models(
    model: str, width: int, batch: int
) -> None:
    """Hidden weights (width²) dominate these sizes, and the batch makes the fixed per-step
    overhead small beside their FLOPs."""
    base = BASES[model].with_(base_width=32, batch_size=batch)
    ratio = estimated_cost(base.with_(width=2 * width)) / estimated_cost(base.with_(width=width))
    assert 3.5 < ratio < 4.05


@pytest.mark.parametrize(
    "model, width, source",
    [("resnet", 16, fashion_mnist_images), ("bert", 32, pydoc_text), ("gpt", 32, pydoc_text)],
)
def test_cost_is_the_flops_the_trainer_reports(model: str, width: int, source) -> None:
    """The estimate counts what a finished run reports (``TrainResult.flops``): for the ResNet
    its convolutions' FLOPs per pixel, not a transformer's 6 · params · tokens."""
    config = BASES[model].with_(width=width, base_width=width, data="pydoc")
    result = train(config, source=source())
    assert result.steps_done == config.steps and result.flops > 0
    expected = result.flops + STEP_OVERHEAD_FLOPS * config.steps
    assert estimated_cost(config) == pytest.approx(expected, rel=1e-9)


def test_image_runs_ignore_the_sequence_length_and_text_runs_scale_with_it() -> None:
    resnet = BASES["resnet"].with_(width=64)
    assert estimated_cost(resnet.with_(seq_len=128)) == estimated_cost(resnet.with_(seq_len=32))
    bert = BASES["bert"].with_(width=512, steps=1, batch_size=16)
    longer = estimated_cost(bert.with_(seq_len=128)) - STEP_OVERHEAD_FLOPS
    shorter = estimated_cost(bert.with_(seq_len=64)) - STEP_OVERHEAD_FLOPS
    assert longer / shorter == pytest.approx(2.0, rel=0.02)  # tokens ×2 (positions: a few %)
