"""``mutransfer demo --model resnet``: the ResNet on Fashion-MNIST through the same demo as the
GPT (grid, µTransfer game, claims, figure, report), in-process on a tiny grid, and ``--quick``
end to end as a user runs it (marked slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from mutransfer import demo
from mutransfer.demo import report
from mutransfer.demo.cli import default_out
from mutransfer.demo.settings import RESNET_QUICK, DemoError, settings_for

pytest.importorskip("matplotlib")

DEMO = (sys.executable, "-m", "mutransfer.cli", "demo")


def test_settings_for_the_resnet() -> None:
    settings = settings_for(True, model="resnet")
    assert settings == RESNET_QUICK and settings.base.model == "resnet"
    assert settings.base.optimizer == "sgd"  # Tensor Programs V's ResNet setting
    adamw = settings_for(True, model="resnet", optimizer="adamw", widths=[8, 16])
    assert adamw.base.optimizer == "adamw" and adamw.sizes == (8, 16)
    # channels need not divide into heads: a ResNet has none (RunOptions still asks for
    # multiples of n_heads = 4)
    with pytest.raises(DemoError, match="width only"):
        settings_for(model="resnet", vary="depth")
    with pytest.raises(DemoError, match="Fashion-MNIST"):
        settings_for(model="resnet", text="some.txt")
    with pytest.raises(DemoError, match="model must be one of"):
        settings_for(model="vit")
    assert default_out("resnet", "width") == "runs/demo-resnet"
    assert default_out("gpt", "width") == "runs/demo"
    assert default_out("gpt", "depth") == "runs/demo-depth"


def test_a_tiny_resnet_demo_in_process(tmp_path) -> None:
    summary = demo.run_demo(
        tmp_path,
        workers=0,
        progress=False,
        echo=None,
        model="resnet",
        widths=[4, 8],
        log2_lrs=[-4, -3],
        steps=8,
        batch_size=8,
        eval_batches=1,
        eval_batch_size=16,
    )
    assert summary["config"]["model"] == "resnet" and summary["config"]["optimizer"] == "sgd"
    assert summary["data"]["name"] == "fashion-mnist"
    assert summary["data"]["train_images"] == 60_000 and summary["data"]["val_images"] == 10_000
    for rules in ("sp", "mup"):
        losses = [v for row in summary["sweeps"][rules]["loss"] for v in row]
        assert all(v is not None and 0.5 < v < 10 for v in losses)
    # both sweeps share the base width's runs: µP is SP at the base
    assert summary["sweeps"]["sp"]["loss"][0] == summary["sweeps"]["mup"]["loss"][0]
    text = (tmp_path / report.REPORT_NAME).read_text()
    assert "ResNet, 1 block(s) per stage" in text and "held-out images" in text
    assert "fashion-mnist (60,000 training images" in text and "sgd (momentum 0.9)" in text
    assert (tmp_path / report.FIGURE_NAME).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_quick_resnet_demo_end_to_end(tmp_path) -> None:
    pytest.importorskip("tqdm")
    start = time.perf_counter()
    proc = subprocess.run(
        # --quick's settings (data, optimizer, batch, schedule) on 2 of its widths, 2 LRs and
        # fewer steps: the whole command as a user runs it, in a fraction of --quick's minutes
        # (the full --quick grid is timed in docs/demo.md, not in the suite)
        [
            *DEMO,
            "--model",
            "resnet",
            "--quick",
            "--widths",
            "8,16",
            "--lrs=-4:-3",
            "--steps",
            "30",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["format"] == demo.SUMMARY_FORMAT and summary["config"]["model"] == "resnet"
    assert summary["widths"] == [8, 16] and summary["config"]["steps"] == 30
    assert summary["config"]["optimizer"] == RESNET_QUICK.base.optimizer
    for rules in ("sp", "mup"):
        sweep = summary["sweeps"][rules]
        finite = [v for row in sweep["loss"] for v in row if v is not None]
        assert finite and all(0.2 < v < math.log(10) + 3 for v in finite)
        assert all(b is not None for b in sweep["best_log2_lr"])
    assert summary["run"]["trained"] == 8  # 2 widths × 2 LRs × SP and µP
    figure = tmp_path / report.FIGURE_NAME
    assert figure.stat().st_size > 10_000
    assert "optimum moves" in proc.stdout and "regret" in proc.stdout
    print(f"mutransfer demo --model resnet --quick took {elapsed:.0f} s")
