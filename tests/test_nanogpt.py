"""An unmodified nanoGPT-style model (tests/nanogpt.py) through the coordinate check.

The model computes its own loss (``forward(idx, targets=None) -> (logits, loss)``, logits of
the last position only without targets), ties ``wte`` and ``lm_head``, draws its own init and
calls ``F.scaled_dot_product_attention`` with its default 1/√d scale, which no plan can reach:
under µP its attention logits grow with width, and the check must say so, naming the attention
modules. The same model with its scale exposed (``head_dim``, ``scaling``) passes. Widths
64–512, 3 steps, 2 seeds (the defaults); a few seconds per check.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import mutransfer as mt
import nanogpt
from mutransfer.cli import main
from mutransfer.coord import (
    CoordCheckError,
    batch_loss,
    coord_check,
    data_generator,
    default_batch,
    model_loss,
    targets_argument,
)
from mutransfer.coord.verdict import EXPECTED, VANISHES, CoordReport

WIDTHS = (64, 128, 256, 512)
ATTENTION = {"transformer.h.0.attn", "transformer.h.1.attn"}
NANO = Path(__file__).with_name("nanogpt.py")
FAST = ["--widths", "64,128,256,512", "--steps", "3", "--seeds", "2", "--quiet", "--no-plot"]


def check(factory: object) -> CoordReport:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the plan may warn about the bare SDPA call
        return coord_check(factory, WIDTHS, steps=3, seeds=2)  # type: ignore[arg-type]


def test_the_check_trains_it_with_the_loss_it_computes() -> None:
    model = nanogpt.make(64)
    assert targets_argument(model) == "targets"
    inputs, targets = default_batch(model, data_generator(0))
    logits, loss = model(inputs)
    assert logits.shape == (2, 1, 256) and loss is None  # no targets: the last position only
    assert torch.equal(batch_loss(model, (inputs, targets)), model(inputs, targets)[1])
    # its own init gives logits near 0, so the loss at init is about ln(vocabulary)
    assert abs(batch_loss(model, (inputs, targets)).item() - math.log(256)) < 0.25


def test_its_bare_sdpa_attention_is_flagged_and_its_tied_readout_judged_as_a_readout() -> None:
    report = check(nanogpt.make)
    assert not report.ok
    attention = {r.module for r in report.culprits() if r.quantity in ("logits", "Δlogits")}
    assert attention == ATTENTION, report.summary()
    # wte and lm_head are one tensor: an input where it embeds, a readout where it reads out
    assert report.row("transformer.wte", "out").roles == ["input"]
    readout = report.row("lm_head", "out")
    assert readout.roles == ["output"]
    assert readout.statuses[0] == EXPECTED and readout.verdict != VANISHES
    # trained with its own loss: about ln(256) at init at every width (its own init, σ 0.02;
    # σ = 1 on the tied matrix would give ~35)
    assert all(abs(v - math.log(256)) < 0.25 for per in report.losses[0] for v in per if v)


def test_with_its_attention_scale_exposed_it_passes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = mt.parametrize(nanogpt.make_scaled(128), nanogpt.make_scaled, base_width=64)
    assert set(plan.attention) == ATTENTION
    report = check(nanogpt.make_scaled)
    assert report.ok, report.table()
    readout = report.row("lm_head", "out")
    assert readout.roles == ["output"] and readout.statuses[0] == EXPECTED
    # Adam's default LR follows its hidden init (σ 0.02, not 1/√64): 1e-2 × 0.02 / 0.125
    assert math.isclose(report.settings["lr"], 1e-2 * 0.02 * 8, rel_tol=0.01)


@pytest.mark.filterwarnings("ignore:attention the plan cannot rescale")
def test_the_cli_runs_the_file(tmp_path: Path) -> None:
    out = tmp_path / "bare"
    assert main(["coord-check", f"{NANO}:make", *FAST, "--out", str(out)]) == 1
    report = json.loads((out / "coord_check.json").read_text())
    named = {c.split(" ")[0] for c in report["culprits"]}
    assert named >= ATTENTION and report["ok"] is False
    scaled = tmp_path / "scaled"
    assert main(["coord-check", f"{NANO}:make_scaled", *FAST, "--out", str(scaled)]) == 0


# ---------------------------------------------------------------------- own losses, errors
class LastPositionOnly(nn.Module):
    """Returns logits for the last position only and takes no targets: nothing to train on."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, width)
        self.head = nn.Linear(width, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(idx))[:, -1:]


def test_output_that_does_not_fit_the_targets_is_a_clear_error() -> None:
    with pytest.raises(CoordCheckError, match=r"2 rows of logits for 16 targets.*targets= or"):
        coord_check(LastPositionOnly, (32, 64), steps=1, seeds=1)


def test_the_loss_a_model_returns_is_found_in_every_usual_form() -> None:
    logits, loss = torch.randn(2, 3), torch.tensor(1.5)
    assert model_loss((logits, loss)) is loss  # nanoGPT
    assert model_loss([logits, loss]) is loss
    assert model_loss({"logits": logits, "loss": loss}) is loss
    assert model_loss(SimpleNamespace(logits=logits, loss=loss)) is loss  # HF ModelOutput
    assert model_loss(SimpleNamespace(logits=logits, loss=None)) is None
    assert model_loss((logits, torch.tensor(3))) is None  # an integer is no loss
    assert model_loss(logits) is None


def test_targets_are_given_under_the_name_the_forward_takes() -> None:
    class Labels(nn.Module):
        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> None: ...

    class Y(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> None: ...

    class Plain(nn.Module):
        def forward(self, targets: torch.Tensor) -> None: ...  # its input, whatever its name

    assert targets_argument(Labels()) == "labels"
    assert targets_argument(Y()) == "y"
    assert targets_argument(Plain()) is None
    assert targets_argument(nn.Linear(2, 2)) is None


USER_FILE = """
import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, width), nn.Tanh(), nn.Linear(width, width),
                                 nn.Tanh(), nn.Linear(width, 3))

    def forward(self, x):
        return self.net(x)


def make(width):
    return Model(width)


def data(generator):
    return {"x": torch.randn(4, 8, generator=generator)}  # no targets in the batch


def loss(output, batch):
    return (output - 1.0).pow(2).mean()


NOT_CALLABLE = 3
"""


def test_cli_data_and_loss_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user = tmp_path / "user_data.py"
    user.write_text(USER_FILE)
    fast = ["--widths", "32,64,128", "--steps", "2", "--seeds", "2", "--quiet", "--no-plot"]
    args = ["coord-check", f"{user}:make", *fast, "--data", f"{user}:data"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2  # no targets and no loss
    assert "cannot compute a loss" in capsys.readouterr().err
    assert main([*args, "--loss", f"{user}:loss", "--out", str(tmp_path / "b")]) == 0
    assert main([*args, "--loss", f"{user}:NOT_CALLABLE", "--out", str(tmp_path / "c")]) == 2
    assert "--loss" in capsys.readouterr().err
    missing = ["coord-check", f"{user}:make", "--data", f"{tmp_path}/nope.py:data"]
    assert main([*missing, "--out", str(tmp_path / "d")]) == 2
    assert "--data: no such file" in capsys.readouterr().err
