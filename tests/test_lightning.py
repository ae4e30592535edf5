"""µP in PyTorch Lightning (examples/lightning_mup.py): the plan's groups survive Lightning's
optimizer set-up and DDP, and every group's LR is base × scale × schedule at every step."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pl = pytest.importorskip("pytorch_lightning")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import lightning_mup  # noqa: E402

torch.set_num_threads(1)


class CheckLRs(pl.Callback):
    """Asserts on every rank and step that the groups keep the plan's ratios."""

    def __init__(self) -> None:
        self.seen: list[list[tuple[float, float]]] = []

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
        optimizer = trainer.optimizers[0]
        module.plan.check_optimizer(optimizer)  # raises if a group lost its µP ratio
        step = trainer.global_step
        for group in optimizer.param_groups:
            expected = module.lr * group["lr_scale"] * min(1.0, (step + 1) / 5)
            assert abs(group["lr"] - expected) <= 1e-12 * expected, (step, group["lr_scale"])
        self.seen.append([(g["lr"], g["lr_scale"]) for g in optimizer.param_groups])


def fit(devices: int, steps: int = 8) -> tuple[Any, CheckLRs]:
    check = CheckLRs()
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[check],
    )
    module = lightning_mup.MupGPT(width=64, base_width=32)
    trainer.fit(module, lightning_mup.data(64))
    return trainer, check


def test_one_process_groups_follow_the_plan() -> None:
    trainer, check = fit(1)
    assert len(check.seen) == 8
    assert {s for step in check.seen for _, s in step} == {1.0, 0.5}  # µP: hidden LR / m_in
    assert torch.isfinite(trainer.callback_metrics["loss"])


@pytest.mark.distributed
def test_two_process_ddp_keeps_the_plan() -> None:
    trainer, _ = fit(2)  # the callback asserts inside each spawned rank; a failure fails fit
    assert torch.isfinite(trainer.callback_metrics["loss"])


def test_the_example_runs_as_documented(capsys: pytest.CaptureFixture[str]) -> None:
    assert lightning_mup.main(["--steps", "5"]) == 0
    assert "final loss" in capsys.readouterr().out
