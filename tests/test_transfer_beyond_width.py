"""Transfer beyond width: the LR moved to another batch size and training length by a power law
fitted to the proxy sweep (or a named published rule), the warmup scaled, the depth set, and
every moved value saying which rule produced it."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mutransfer import cli
from mutransfer.sweep import Sweep, SweepError, TrialHandle
from mutransfer.sweep.results import SweepResults
from mutransfer.sweep.scaling import LrOptimum, fit_power_law, lr_optima, move_lr

# the planted law: log2 LR* = -6 + 0.5·log2(B/16) − 0.3·log2(T/100)
A_BATCH, B_STEPS = 0.5, -0.3


def planted_log2_lr(batch: float, steps: float) -> float:
    return -6 + A_BATCH * math.log2(batch / 16) + B_STEPS * math.log2(steps / 100)


def bowl(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
    """A loss whose optimum in log2 LR follows the planted law (quadratic: a parabola through
    three grid points finds its vertex exactly); longer runs reach lower losses."""
    best = planted_log2_lr(params["batch_size"], params["steps"])
    return 3.0 - 0.1 * math.log2(params["steps"]) + 0.2 * (math.log2(params["lr"]) - best) ** 2


def swept(tmp_path: Path, space: dict[str, Any]) -> SweepResults:
    sweep = Sweep("s", widths=[32], space=space, objective=bowl,
                  storage=str(tmp_path / "s.journal"))  # fmt: skip
    return sweep.run(log=None)


SPACE = {
    "lr": {"log2": [-10, -2], "step": 0.5},
    "batch_size": {"values": [8, 16, 32]},
    "steps": {"values": [50, 100, 200]},
}


def test_the_fit_recovers_a_planted_power_law_and_moves_the_lr(tmp_path: Path) -> None:
    results = swept(tmp_path, SPACE)
    points = [(t.params, t.value) for t in results.completed(32)]
    optima = lr_optima(points, ("batch_size", "steps"))
    assert len(optima) == 9
    law = fit_power_law(optima, ("batch_size", "steps"))
    assert law.exponents["batch_size"] == pytest.approx(A_BATCH, abs=1e-6)
    assert law.exponents["steps"] == pytest.approx(B_STEPS, abs=1e-6)
    assert law.residual_octaves < 1e-6

    out = results.transfer(256, to_batch=64, to_steps=800)
    best = results.best(32)
    assert best is not None and best.params["steps"] == 200  # the longest run wins
    expected = 2 ** planted_log2_lr(64, 800)
    # the best grid LR at (B, 200) moved by the fitted exponents: within the grid's half step
    assert math.log2(out.params["lr"]) == pytest.approx(math.log2(expected), abs=0.25)
    assert out.params["batch_size"] == 64 and out.params["steps"] == 800
    assert out.rules["lr"].startswith("× ") and "fit: LR ∝ batch_size^(+0.500" in out.rules["lr"]
    assert out.fit is not None and out.fit["exponents"]["steps"] == pytest.approx(B_STEPS)


def test_the_fit_refuses_what_the_data_cannot_support(tmp_path: Path) -> None:
    one = [LrOptimum({"batch_size": 16.0}, -6, -6.0, 1.0, 5)] * 4
    with pytest.raises(
        SweepError, match=r"tried 1 value\(s\) of it.*--batch-rule sqrt/linear/none"
    ):
        fit_power_law(one, ("batch_size",))
    edge = [LrOptimum({"batch_size": b}, -2, None, 1.0, 5) for b in (8.0, 16.0, 32.0)]
    with pytest.raises(SweepError, match="not bracketed at batch_size 8 .*Widen sweep.space.lr"):
        fit_power_law(edge, ("batch_size",))
    two = [LrOptimum({"batch_size": b}, -6, -6.0, 1.0, 5) for b in (8.0, 16.0)]
    with pytest.raises(SweepError, match="2 settings cannot give an uncertainty for 2 unknowns"):
        fit_power_law(two, ("batch_size",))
    with pytest.raises(SweepError, match="unknown batch_size rule 'cubic'"):
        move_lr(0.01, {"batch_size": 8}, {"batch_size": 16}, {"batch_size": "cubic"})


def test_published_rules_and_a_sweep_that_did_not_search_the_axis(tmp_path: Path) -> None:
    results = swept(tmp_path, {"lr": {"log2": [-10, -2]}, "batch_size": {"values": [16]},
                               "steps": {"values": [100]}})  # fmt: skip
    with pytest.raises(SweepError, match="tried 1 value"):
        results.transfer(256, to_batch=64)  # searched with one value: no fit
    sqrt = results.transfer(256, to_batch=64, batch_rule="sqrt")
    assert sqrt.params["lr"] == pytest.approx(2.0**-6 * 2)  # √(64/16) = 2
    assert "Malladi" in sqrt.rules["lr"]
    linear = results.transfer(256, to_batch=64, batch_rule="linear", to_steps=400,
                              steps_rule="none")  # fmt: skip
    assert linear.params["lr"] == pytest.approx(2.0**-6 * 4)
    assert "Goyal" in linear.rules["lr"] and "unchanged with training length" in linear.rules["lr"]

    plain = swept(tmp_path / "p", {"lr": {"log2": [-10, -2]}, "batch_size": {"values": [16]},
                                   "steps": {"values": [100]}})  # fmt: skip
    assert plain.transfer(256).rules == {}  # width only: nothing moved, nothing claimed


def test_builtin_transfer_to_depth_batch_steps_writes_the_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "b.journal"
    Sweep(
        "b", widths=[32], space={"lr": {"log2": [-8, -6]}}, storage=str(journal),
        train={"model": "gpt", "depth": 2, "base_width": 32, "n_heads": 2, "seq_len": 16,
               "batch_size": 4, "steps": 4, "warmup_steps": 2, "data": "pydoc",
               "eval_batches": 1},
    ).run(log=None)  # fmt: skip
    out = tmp_path / "t"
    argv = ["transfer", "b", "--storage", str(journal), "--to-width", "128", "--to-depth", "8",
            "--to-batch", "16", "--to-steps", "16", "--batch-rule", "sqrt", "--steps-rule",
            "none", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    written = tomllib.loads((out / "config.toml").read_text())
    train, rules = written["train"], written["transfer"]["rules"]
    assert (train["width"], train["depth"], train["base_depth"]) == (128, 8, 2)
    assert (train["batch_size"], train["steps"], train["warmup_steps"]) == (16, 16, 8)
    assert set(rules) == {"depth", "lr", "batch_size", "steps", "warmup_steps"}
    assert "proportional to steps" in rules["warmup_steps"]
    assert (out / "plan.json").is_file()
    # a sweep that did not search batch_size: no silent default rule
    assert cli.main(["transfer", "b", "--storage", str(journal), "--to-width", "128",
                     "--to-batch", "16"]) == 2  # fmt: skip
    assert "did not search batch_size" in capsys.readouterr().err
