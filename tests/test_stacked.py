"""The stacked trainer: K proxy runs as one model give the losses of K separate runs.

Tiny sizes (a width-16 GPT on pydoc text, a width-16 MLP on random arrays), 50 steps, float32:
every per-step loss and the validation loss of each stacked run must equal ``proxy.train``'s
for the same config to 1e-5 relative, for AdamW and SGD; a diverging run leaves the stack
without changing the others; the pack size follows the memory budget.
"""

from __future__ import annotations

import math

import pytest
import torch

from mutransfer.data import arrays, load_text
from mutransfer.training.proxy import TrainConfig, TrainResult, train
from mutransfer.training.stacked import (
    DEFAULT_MEMORY_BUDGET,
    pack_size,
    plan_packs,
    run_memory_bytes,
    train_stacked,
)

RTOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text():
    return load_text("pydoc")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 28, 28, generator=g)
    y = (x[:, :14].mean(dim=(1, 2)) > 0).long() + 2 * (x[:, :, :14].mean(dim=(1, 2)) > 0).long()
    return arrays(x, y)


def gpt(**changes) -> TrainConfig:
    base = TrainConfig(
        model="gpt",
        width=16,
        base_width=8,
        depth=2,
        n_heads=2,
        seq_len=16,
        batch_size=4,
        steps=50,
        data="pydoc",
        eval_batches=2,
        eval_batch_size=4,
    )
    return base.with_(**changes)


def mlp(**changes) -> TrainConfig:
    base = TrainConfig(
        model="mlp",
        width=16,
        base_width=8,
        depth=3,
        batch_size=8,
        steps=50,
        eval_batches=2,
        eval_batch_size=16,
    )
    return base.with_(**changes)


def assert_same(separate: TrainResult, stacked: TrainResult) -> None:
    assert stacked.config == separate.config
    assert stacked.diverged == separate.diverged
    assert stacked.reason == separate.reason
    assert stacked.steps_done == separate.steps_done
    assert len(stacked.losses) == len(separate.losses)
    for step, (a, b) in enumerate(zip(separate.losses, stacked.losses, strict=True)):
        assert b == pytest.approx(a, rel=RTOL, nan_ok=True), f"step {step}"
    if math.isfinite(separate.val_loss):
        assert stacked.val_loss == pytest.approx(separate.val_loss, rel=RTOL)
    else:
        assert stacked.val_loss == separate.val_loss
    assert stacked.flops == separate.flops


def check(configs: list[TrainConfig], source) -> list[TrainResult]:
    stacked = train_stacked(configs, source=source)
    assert len(stacked) == len(configs)
    for config, result in zip(configs, stacked, strict=True):
        assert_same(train(config, source=source), result)
    return stacked


def per_run_variants(base: TrainConfig, lr: float) -> list[TrainConfig]:
    """Runs that may share a pack: other LRs, seeds, init scales, multipliers, decay, ε, rules."""
    return [
        base.with_(lr=lr, seed=0),
        base.with_(lr=2 * lr, seed=1),
        base.with_(lr=lr / 2, seed=1, init_std=0.5, output_multiplier=2.0, weight_decay=0.1),
        base.with_(lr=lr, seed=2, rules="sp", input_multiplier=0.5, eps=1e-6),
    ]


def test_gpt_adamw_matches_separate_runs(text) -> None:
    configs = per_run_variants(gpt(optimizer="adamw"), 2**-7)
    # another attention scale and tied embeddings (an explicit readout multiplier) each make a
    # pack of their own, stacked as well
    configs += [
        gpt(lr=2**-7, attention_multiplier=2.0),
        gpt(lr=2**-6, tie_embeddings=True, seed=3),
        gpt(lr=2**-7, tie_embeddings=True, seed=4),
    ]
    check(configs, text)


def test_bert_adamw_matches_separate_runs(text) -> None:
    """Masked LM: only the masked positions count in each run's mean."""
    configs = per_run_variants(gpt(model="bert"), 2**-7)[:3]
    configs.append(gpt(model="bert", lr=2**-7, tie_embeddings=True))
    check(configs, text)


def test_gpt_sgd_matches_separate_runs(text) -> None:
    check(per_run_variants(gpt(optimizer="sgd"), 2**-4), text)


def test_mlp_adamw_matches_separate_runs(images) -> None:
    check(per_run_variants(mlp(optimizer="adamw"), 2**-7), images)


def test_mlp_sgd_matches_separate_runs(images) -> None:
    check(per_run_variants(mlp(optimizer="sgd"), 2**-5), images)


def test_batches_of_one_row(text, images) -> None:
    check([gpt(batch_size=1, steps=8), gpt(batch_size=1, steps=8, lr=2**-5, seed=1)], text)
    check([mlp(batch_size=1, steps=8), mlp(batch_size=1, steps=8, lr=2**-5, seed=1)], images)


def test_adam_with_l2_decay_and_a_schedule_match(text) -> None:
    base = gpt(optimizer="adam", weight_decay=0.05, warmup_steps=5, schedule="cosine", steps=30)
    check([base.with_(lr=2**-7), base.with_(lr=2**-6, seed=1)], text)


def test_a_diverging_run_leaves_the_stack_and_the_others_are_untouched(text) -> None:
    configs = [
        gpt(optimizer="sgd", lr=2**-4),
        gpt(optimizer="sgd", lr=2**5, seed=1),  # blows up within a few steps
        gpt(optimizer="sgd", lr=2**-3, seed=2),
    ]
    results = train_stacked(configs, source=text)
    assert_same(train(configs[0], source=text), results[0])
    assert_same(train(configs[2], source=text), results[2])
    # the diverging run: its blow-up is chaotic, but it stops where the separate run stops
    alone = train(configs[1], source=text)
    assert alone.diverged and results[1].diverged
    assert results[1].steps_done == alone.steps_done < 50
    assert results[1].reason == alone.reason == f"loss became nan at step {alone.steps_done - 1}"
    assert math.isinf(results[1].val_loss)


def test_on_result_reports_each_run_as_it_leaves_the_pack(text) -> None:
    configs = [
        gpt(optimizer="sgd", lr=2**-4, steps=20),
        gpt(optimizer="sgd", lr=2**5, seed=1, steps=20),  # diverges within a few steps
        gpt(optimizer="sgd", lr=2**-3, seed=2, steps=20),
    ]
    seen: list[tuple[int, int]] = []  # (index, steps done by run 0 when it was reported)

    def on_result(index: int, result: TrainResult) -> None:
        assert result.config == configs[index]
        seen.append((index, result.steps_done))

    results = train_stacked(configs, source=text, on_result=on_result)
    assert [i for i, _ in seen] == [1, 0, 2]  # the diverged run first, before the pack ends
    assert seen[0][1] < 20 and results[1].diverged
    assert results[1].seconds < results[0].seconds == results[2].seconds


def test_on_step_stops_one_run(text) -> None:
    configs = [gpt(lr=2**-7, steps=20), gpt(lr=2**-6, steps=20, seed=1)]
    seen: list[tuple[int, int]] = []

    def on_step(index: int, step: int, loss: float) -> bool:
        seen.append((index, step))
        return index == 1 and step == 4

    results = train_stacked(configs, source=text, on_step=on_step)
    assert results[1].reason == "stopped at step 4" and not results[1].diverged
    assert results[1].steps_done == 5 and math.isinf(results[1].val_loss)
    assert_same(train(configs[0], source=text), results[0])
    assert [s for i, s in seen if i == 0] == list(range(20))


def test_unstackable_optimizers_and_models_are_trained_alone(text) -> None:
    configs = [gpt(lr=2**-8, steps=5, optimizer="lion"), gpt(lr=2**-7, steps=5)]
    packs, singles = plan_packs(configs)
    assert singles == [0] and packs == [[1]]
    assert plan_packs([mlp(model="resnet")]) == ([], [0])
    results = train_stacked(configs, source=text)
    assert_same(train(configs[0], source=text), results[0])
    assert_same(train(configs[1], source=text), results[1])


def test_pack_size_follows_the_memory_budget() -> None:
    sizes = [pack_size(gpt(width=w, base_width=8), 256 * 2**20) for w in (16, 64, 256, 1024)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    for width in (16, 64, 256):
        config = gpt(width=width, base_width=8, batch_size=16, seq_len=64)
        per_run = run_memory_bytes(config)
        for budget in (per_run, 3 * per_run + 1, 50 * per_run):
            size = pack_size(config, budget, max_pack=1000)
            assert size * per_run <= budget < (size + 1) * per_run
    huge = gpt(width=4096, base_width=8, batch_size=64, seq_len=128)
    assert pack_size(huge, 2**20) == 1  # one run even over budget: it is trained anyway
    assert pack_size(mlp(), DEFAULT_MEMORY_BUDGET, max_pack=7) == 7
    assert run_memory_bytes(mlp(width=64)) > run_memory_bytes(mlp(width=16))
    with pytest.raises(ValueError, match="memory_budget"):
        pack_size(mlp(), 0)


def test_plan_packs_groups_shared_shapes_and_splits_by_size() -> None:
    configs = [gpt(width=16, lr=2.0**-i, seed=i % 2) for i in range(5)]
    configs += [gpt(width=32, lr=2.0**-i) for i in range(3)]
    configs += [gpt(width=16, steps=10)]  # another number of steps: another pack
    budget = 2 * run_memory_bytes(configs[0])
    packs, singles = plan_packs(configs, budget)
    assert singles == []
    assert packs[:3] == [[0, 1], [2, 3], [4]]
    assert sorted(i for p in packs for i in p) == list(range(len(configs)))
    assert [8] in packs
    assert all(len(p) <= 2 for p in packs)
    # one pack per worker at least, balanced, when the budget alone would make one
    packs, _ = plan_packs(configs[:5], workers=2)
    assert packs == [[0, 1, 2], [3, 4]]
    packs, _ = plan_packs(configs[:5], budget, workers=4)
    assert packs == [[0, 1], [2], [3], [4]]
    assert plan_packs(configs[:1], workers=2)[0] == [[0]]


def test_a_layer_without_a_stacked_twin_is_refused() -> None:
    from torch import nn

    from mutransfer.training.stacked import StackedModel, StackError

    models = [nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()) for _ in range(2)]
    with pytest.raises(StackError, match="Conv2d"):
        StackedModel(models, torch.randn(2, 1, 5, 5))


def test_exported_from_training() -> None:
    import mutransfer.training as training
    from mutransfer.training import stacked

    assert training.train_stacked is stacked.train_stacked
    assert training.plan_packs is stacked.plan_packs
