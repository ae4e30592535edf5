"""``mutransfer coord-check`` end to end: figure, JSON, table, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mutransfer.cli import main

FAST = ["--widths", "32,64,128", "--steps", "2", "--seeds", "2", "--quiet"]
# the reference MLP takes 784 inputs: below width 64 its readout update drifts (finite width)
MLP_FAST = ["--widths", "64,128,256", "--steps", "2", "--seeds", "2", "--quiet"]

USER_FILE = """
import mutransfer as mt
from torch import nn


def make(width):
    return nn.Sequential(nn.Linear(10, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                         nn.Linear(width, 4))


def with_hidden_lr(exponent, name):
    adam = {**mt.MUP.families["adam"], "hidden": mt.RoleRule.make(init=-0.5, lr=exponent, eps=-1)}
    return mt.MUP.with_(name=name, families={**mt.MUP.families, "adam": adam})


# broken variants: the hidden LR shrinks like 1/width² (its update like 1/width: a layer that
# learns too slowly) or like 1/width^1.5 (its update like 1/√width: a shrinking series)
SLOW = with_hidden_lr(-2, "hidden-lr-too-small")
SLOWISH = with_hidden_lr(-1.5, "hidden-lr-a-bit-small")
"""


def run(tmp_path: Path, *args: str) -> int:
    return main(["coord-check", *args, "--out", str(tmp_path)])


def test_sp_gpt_fails_with_figure_json_and_named_modules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "gpt", "--rules", "sp", *FAST) == 1
    report = json.loads((tmp_path / "coord_check.json").read_text())
    assert report["ok"] is False
    assert any(c.startswith("blocks.0.mlp.fc (update") for c in report["culprits"])
    png = tmp_path / "coord_check.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "coord check [FAIL]" in out and "At fault: " in out and "blows up" in out


def test_mup_mlp_passes_without_a_figure(tmp_path: Path) -> None:
    assert run(tmp_path, "mlp", *MLP_FAST, "--no-plot", "--workers", "2") == 0
    assert json.loads((tmp_path / "coord_check.json").read_text())["ok"] is True
    assert not (tmp_path / "coord_check.png").exists()


def verdict_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(("PASS: ", "FAIL: ")))


def test_builtin_resnet_on_fashion_mnist_mup_passes_sp_fails(tmp_path: Path) -> None:
    """The demo's ResNet (3 stages, stem stride 2) on 4 Fashion-MNIST images."""
    args = ["--widths", "8,16,32", "--steps", "2", "--seeds", "2", "--quiet", "--no-plot"]
    assert run(tmp_path / "mup", "resnet", *args) == 0
    assert run(tmp_path / "sp", "resnet", *args, "--rules", "sp") == 1
    report = json.loads((tmp_path / "sp" / "coord_check.json").read_text())
    culprits = " ".join(report["culprits"])
    # the hidden convolutions' and the head's updates grow with width under SP
    assert "stages.1.blocks.0.conv1 (update" in culprits and "head (update" in culprits
    assert report["settings"]["factory"] == "resnet"


def test_builtin_bert_masked_lm_mup_passes_sp_fails(tmp_path: Path) -> None:
    """The reference BERT on masked bytes of Shakespeare; from width 64 (at width 32 the
    2-head attention's output update sits just past the +0.25 line under µP: finite width)."""
    args = ["--widths", "64,128,256", "--steps", "2", "--seeds", "2", "--quiet", "--no-plot"]
    assert run(tmp_path / "mup", "bert", *args) == 0
    assert run(tmp_path / "sp", "bert", *args, "--rules", "sp") == 1
    culprits = " ".join(json.loads((tmp_path / "sp" / "coord_check.json").read_text())["culprits"])
    assert "attn (logits" in culprits or "mlp.fc (update" in culprits, culprits


def test_user_factory_and_rules_from_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = tmp_path / "user_model.py"
    user.write_text(USER_FILE)
    assert run(tmp_path / "ok", f"{user}:make", *FAST, "--no-plot") == 0
    assert verdict_line(capsys.readouterr().out).startswith("PASS: ")
    # a layer whose own update shrinks like 1/width fails by default, named
    slow = [f"{user}:make", "--rules", f"{user}:SLOW", *FAST, "--no-plot"]
    assert run(tmp_path / "slow", *slow) == 1
    line = verdict_line(capsys.readouterr().out)
    assert line.startswith("FAIL: 1 layer learns too slowly") and "At fault: 2 (update" in line
    report = json.loads((tmp_path / "slow" / "coord_check.json").read_text())
    assert report["ok"] is False and report["settings"]["rules"] == "hidden-lr-too-small"
    assert report["culprits"] == [c for c in report["culprits"] if c.startswith("2 (update")]
    # one that shrinks like 1/√width is a warning, and a failure with --strict
    slowish = [f"{user}:make", "--rules", f"{user}:SLOWISH", *FAST, "--no-plot"]
    assert run(tmp_path / "slowish", *slowish) == 0
    out = capsys.readouterr().out
    assert verdict_line(out).startswith("PASS: ") and "warning: " in out and "2 (update" in out
    assert run(tmp_path / "strict", *slowish, "--strict") == 1
    out = capsys.readouterr().out
    assert "coord check [FAIL]" in out and "(strict)" in verdict_line(out)
    strict = json.loads((tmp_path / "strict" / "coord_check.json").read_text())
    assert strict["ok"] is False and strict["strict"] is True


def test_package_factory_and_depth_mode(tmp_path: Path) -> None:
    assert run(tmp_path / "pkg", "mutransfer.models:MLP", *MLP_FAST, "--no-plot") == 0
    depth = ["gpt", "--depths", "2,4,8", "--width", "32", "--steps", "2", "--quiet"]
    complete = [*depth, "--set", "residual_depth_exponent=-1", "--no-plot"]
    assert run(tmp_path / "completep", *complete) == 0
    assert run(tmp_path / "mup", *depth, "--no-plot") == 1  # residual stream grows with depth


@pytest.mark.parametrize(
    "args, message",
    [
        (["gpt", "--widths", "64"], "at least two different positive sizes"),
        (["gpt", "--widths", "64,x"], "comma-separated integers"),
        (["gpt", "--widths", "30,60", "--heads", "4"], "not divisible by --heads 4"),
        (["nope.missing:make"], "cannot import 'nope.missing'"),
        (["mutransfer.models:Nope"], "has no attribute 'Nope'"),
        (["gpt", "--rules", "mup2"], "unknown rules preset 'mup2'"),
        (["gpt", "--set", "output_multiplier"], "--set takes NAME=VALUE"),
        (["gpt", "--set", "color=2", *FAST], "unknown parametrize\\(\\) argument"),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert run(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mutransfer coord-check: error: ")
    assert __import__("re").search(message, err), err
