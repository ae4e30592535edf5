"""The built-in trainer beyond Adam: Muon (two optimizers from one plan) and Lion.

Muon only takes 2-D matrices, so the trainer gives it the plan's hidden weights and trains
every other tensor with AdamW at its own base LR (``adamw_lr``). These tests check the split
(disjoint, complete), the per-tensor LRs each side gets, that both sides step and follow the
schedule, and that Lion (from the lion-pytorch package) receives the plan's groups.
"""

from __future__ import annotations

import pytest
import torch

from mutransfer import data
from mutransfer.training.options import lr_lambda, make_optimizer, make_optimizers
from mutransfer.training.proxy import TrainConfig, build_model, train
from mutransfer.training.runs import run_key

torch.set_num_threads(1)

TINY = TrainConfig(
    width=32, base_width=16, steps=25, batch_size=8, seq_len=32, eval_batches=2, n_heads=2
)
MUON = TINY.with_(optimizer="muon", lr=2**-5, adamw_lr=2**-6)


def _names(optimizer: torch.optim.Optimizer) -> set[str]:
    return {n for g in optimizer.param_groups for n in g["param_names"]}


def test_muon_trains_hidden_matrices_and_adamw_the_rest() -> None:
    model, plan = build_model(MUON)
    muon, adamw = make_optimizers(MUON, model, plan)
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    every = {n for n, _ in model.named_parameters()}
    hidden = {n for n in every if plan[n].role == "hidden"}
    assert _names(muon) == hidden and _names(adamw) == every - hidden  # disjoint and complete
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    # µP for Muon: hidden LR × sqrt(m_out/m_in) = 1 here; the AdamW side is µP-Adam at adamw_lr
    assert [g["lr"] for g in muon.param_groups] == pytest.approx([2**-5] * len(muon.param_groups))
    readout = next(g for g in adamw.param_groups if "lm_head.weight" in g["param_names"])
    embedding = next(g for g in adamw.param_groups if "wte.weight" in g["param_names"])
    assert embedding["lr"] == pytest.approx(2**-6)
    assert readout["lr"] == pytest.approx(2**-6 * plan["lm_head.weight"].lr_scale)
    assert all(g["weight_decay"] == 0.0 for g in muon.param_groups)  # not Muon's default 0.1
    plan.check_optimizer(muon)
    plan.check_optimizer(adamw)


def test_muon_run_steps_both_optimizers_under_the_schedule() -> None:
    corpus = data.pydoc_text()
    result = train(MUON.with_(warmup_steps=5), source=corpus)
    assert not result.diverged and result.losses[-1] < result.losses[0] - 1.0
    assert train(MUON.with_(warmup_steps=5), source=corpus).val_loss == result.val_loss

    # one step moves every tensor (hidden ones by Muon, the rest by AdamW), and the warmup
    # schedule drives both optimizers alike
    config = MUON.with_(warmup_steps=4)
    model, plan = build_model(config)
    optimizers = make_optimizers(config, model, plan)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(config)) for o in optimizers]
    muon, adamw = optimizers
    embedding = next(g for g in adamw.param_groups if "wte.weight" in g["param_names"])
    assert muon.param_groups[0]["lr"] == pytest.approx(2**-5 / 4)
    assert embedding["lr"] == pytest.approx(2**-6 / 4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = corpus.batch("train", 4, 32, torch.Generator().manual_seed(0))
    torch.nn.functional.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1)).backward()
    for optimizer in optimizers:
        optimizer.step()
    for scheduler in schedulers:
        scheduler.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(before)
    assert muon.param_groups[0]["lr"] == pytest.approx(2**-5 * 2 / 4)
    assert embedding["lr"] == pytest.approx(2**-6 * 2 / 4)


def test_muon_options_are_checked() -> None:
    with pytest.raises(ValueError, match="adamw_lr is the LR of Muon's AdamW side"):
        TINY.with_(adamw_lr=0.01)
    with pytest.raises(ValueError, match="adamw_lr must be a positive number"):
        MUON.with_(adamw_lr=0.0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TINY.with_(optimizer="adagrad")
    model, plan = build_model(MUON)
    with pytest.raises(ValueError, match="call make_optimizers"):
        make_optimizer(MUON, model, plan)
    # without adamw_lr, the AdamW side uses lr
    adamw = make_optimizers(MUON.with_(adamw_lr=None), model, plan)[1]
    embedding = next(g for g in adamw.param_groups if "wte.weight" in g["param_names"])
    assert embedding["lr"] == pytest.approx(2**-5)


def test_unset_adamw_lr_keeps_old_run_keys() -> None:
    """Configs that do not use the field keep the dict they had before it existed."""
    assert "adamw_lr" not in TINY.to_dict()
    assert MUON.to_dict()["adamw_lr"] == 2**-6
    assert TrainConfig.from_dict(MUON.to_dict()) == MUON
    assert TrainConfig.from_dict(TINY.to_dict()) == TINY
    assert run_key(MUON, "x") != run_key(MUON.with_(adamw_lr=2**-7), "x")


def test_lion_gets_the_plans_groups_and_learns() -> None:
    lion_pytorch = pytest.importorskip("lion_pytorch")
    config = TINY.with_(optimizer="lion", lr=2**-9)
    model, plan = build_model(config)
    optimizer = make_optimizer(config, model, plan)
    assert isinstance(optimizer, lion_pytorch.Lion)
    assert plan.family == "lion"
    lrs = {n: g["lr"] for g in optimizer.param_groups for n in g["param_names"]}
    # µP with Lion follows Adam's table: hidden LR / m_in (m_in = 2 here), no ε anywhere
    assert lrs["blocks.0.attn.q.weight"] == pytest.approx(2**-9 / 2)
    assert lrs["wte.weight"] == pytest.approx(2**-9)
    assert all("eps" not in g for g in optimizer.param_groups)
    plan.check_optimizer(optimizer)
    result = train(config, source=data.pydoc_text())
    assert not result.diverged and result.losses[-1] < result.losses[0] - 1.0
