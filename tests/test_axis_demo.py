"""``mutransfer demo --vary batch | seq-len | steps | schedule``: µP (SP beside it) at one width.

The settings tests check that each axis's setting reaches the runs' configs and nothing else
moves; the analysis tests that "transfers as is" and "moves" come out of the numbers (and the
sign of the move); the end-to-end test runs every axis on tiny settings, in-process, and reads
``summary.json``, the figure and ``report.md``; the schedule test checks warmup-stable-decay.
"""

from __future__ import annotations

import json

import pytest
import torch

from mutransfer import cli, demo
from mutransfer.demo import analysis, report
from mutransfer.demo.axes import AXES, SCHEDULE_SETTINGS, axis_info, setting_label
from mutransfer.training.options import WSD_DECAY_FRACTION, lr_lambda
from mutransfer.training.proxy import TrainConfig, train

torch.set_num_threads(1)

TINY = {
    "text": "pydoc",
    "log2_lrs": [-7.0, -5.0],
    "width": 32,
    "n_heads": 2,
    "eval_batches": 1,
    "eval_batch_size": 4,
}
TINY_AXES = {
    "batch": ([2, 4], {"steps": 4, "seq_len": 16}),
    "seq-len": ([8, 16], {"steps": 4, "batch_size": 2}),
    "steps": ([2, 5], {"batch_size": 2, "seq_len": 16}),
    "schedule": (["constant", "wsd"], {"steps": 5, "batch_size": 2, "seq_len": 16}),
}


# ----------------------------------------------------------------------------- settings
def test_each_axis_sets_its_own_field_and_keeps_the_model_fixed() -> None:
    batch = demo.settings_for(vary="batch", values=["4", "32"])
    assert batch.sizes == (4, 32)  # the command line's strings are read as integers
    configs = batch.grid()
    assert {c.batch_size for c in configs} == {4, 32}
    assert {(c.width, c.base_width, c.depth, c.steps, c.seq_len) for c in configs} == {
        (32, 16, 2, 200, 64)
    }
    assert {c.rules for c in configs} == {"sp", "mup"}
    steps = demo.settings_for(True, vary="steps")
    assert steps.sizes == (12, 25, 100) and steps.sizes[-1] / steps.sizes[0] >= 8
    assert {c.steps for c in steps.grid()} == {12, 25, 100}
    seq = demo.settings_for(vary="seq-len", values=[32, 128], width=128)
    assert {(c.seq_len, c.width) for c in seq.grid()} == {(32, 128), (128, 128)}
    schedules = demo.settings_for(vary="schedule")
    assert schedules.sizes == tuple(SCHEDULE_SETTINGS)
    got = {(c.schedule, c.warmup_steps) for c in schedules.grid()}
    assert got == {("constant", 0), ("cosine", 0), ("linear", 20), ("wsd", 20)}


def test_axis_options_that_do_not_fit_are_clear_errors() -> None:
    with pytest.raises(demo.DemoError, match="give the batch sizes to sweep"):
        demo.settings_for(vary="batch", batch_size=8)
    with pytest.raises(demo.DemoError, match="give the schedules to sweep"):
        demo.settings_for(vary="schedule", warmup_steps=8)
    with pytest.raises(demo.DemoError, match="increasing, distinct integers"):
        demo.settings_for(vary="steps", values=[100, 50])
    with pytest.raises(demo.DemoError, match="schedules must be distinct names among constant"):
        demo.settings_for(vary="schedule", values=["constant", "exponential"])
    with pytest.raises(demo.DemoError, match="widths are fixed when the demo varies the batch"):
        demo.settings_for(vary="batch", widths=[32, 64])
    with pytest.raises(demo.DemoError, match="the resnet demo varies width only, not 'steps'"):
        demo.settings_for(vary="steps", model="resnet")
    assert set(AXES) >= {"batch", "seq-len", "steps", "schedule"}


def test_warmup_stable_decay_holds_the_peak_then_decays_to_ten_percent() -> None:
    config = TrainConfig(steps=110, warmup_steps=10, schedule="wsd")
    factor = lr_lambda(config)
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    stable_end = 10 + round((1 - WSD_DECAY_FRACTION) * 100)  # step 90
    assert all(factor(s) == 1.0 for s in range(10, stable_end + 1))
    assert factor(stable_end + 10) == pytest.approx(1 - 0.9 * 0.5)  # halfway down
    assert factor(110) == pytest.approx(0.1)
    assert all(factor(s) > factor(s + 1) for s in range(stable_end, 110))
    with pytest.raises(ValueError, match="schedule must be one of constant, cosine, linear, wsd"):
        TrainConfig(schedule="step")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- analysis
def _sweep(table: dict[int, list[float]], axis: str = "batch") -> analysis.Sweep:
    lrs = [-8.0, -7.0, -6.0, -5.0, -4.0]

    def lookup(size: object, lr: float, seed: int) -> dict:
        return {"val_loss": table[int(size)][lrs.index(lr)], "flops": 1.0, "steps_done": 1}

    return analysis.build_sweep("mup", list(table), lrs, [0], lookup, axis)  # type: ignore[arg-type]


def test_findings_say_which_way_the_optimum_moves_and_what_it_costs() -> None:
    # the optimum rises 2 octaves from batch 4 to batch 32: the small batch's LR costs 10 %
    moving = _sweep({4: [2.3, 2.2, 2.4, 2.6, 2.8], 32: [2.42, 2.3, 2.15, 2.1, 2.2]})
    moved = analysis.transfer(moving, 2.31, reused=True)
    checks = analysis.transfers(moving, moved)
    assert not checks["mup_optimum_stable"]["holds"]
    assert not checks["mup_transfer_regret_small"]["holds"]
    assert moving.regret_of_first == pytest.approx([0.0, 100 * 0.2 / 2.1])
    text = analysis.finding(moving, moved)
    assert text.startswith("µP moves across the batch sizes: the optimum goes from 2^-7 at ")
    assert "batch 4 to 2^-5 at batch 32 (+2 octaves" in text and "costs 10.00 %" in text
    # same optimum at both ends, and the first's LR costs < 1 %: transfers as is
    stable = _sweep({4: [2.3, 2.2, 2.4, 2.6, 2.8], 32: [2.2, 2.1, 2.11, 2.3, 2.5]})
    kept = analysis.transfer(stable, 2.1, reused=True)
    assert all(c["holds"] for c in analysis.transfers(stable, kept).values())
    assert analysis.finding(stable, kept).startswith("µP transfers as is across the batch sizes")
    # an optimum on the grid's edge: the sentence says neither verdict is measured
    edge = _sweep({4: [2.3, 2.2, 2.4, 2.6, 2.8], 32: [2.5, 2.4, 2.3, 2.2, 2.1]})
    text = analysis.finding(edge, analysis.transfer(edge, 2.3, reused=True))
    assert (
        "cannot be judged (optimum on the LR grid's edge at batch 32); as measured it moves" in text
    )
    # claims() routes the other axes to the same two checks
    assert analysis.claims(stable, stable, kept, kept) == analysis.transfers(stable, kept)
    assert kept.to_dict()["proxy_batch_size"] == 4 and kept.to_dict()["target_batch_size"] == 32


def test_setting_labels() -> None:
    assert setting_label("batch", 16) == "batch 16"
    assert setting_label("seq-len", 64) == "seq-len 64"
    assert setting_label("schedule", "wsd") == "wsd"
    assert report.figure_name("steps") == "lr_transfer_steps.png"
    assert report.figure_name("depth") == report.DEPTH_FIGURE_NAME


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("axis", list(TINY_AXES))
def test_axis_demo_end_to_end(tmp_path, axis: str) -> None:
    values, fixed = TINY_AXES[axis]
    calls: list[TrainConfig] = []

    def trainer(config: TrainConfig, **kw: object) -> object:
        calls.append(config)
        return train(config, **kw)  # type: ignore[arg-type]

    summary = demo.run_demo(
        tmp_path,
        workers=0,
        progress=False,
        echo=None,
        train_fn=trainer,
        vary=axis,
        values=values,
        **TINY,
        **fixed,
    )
    assert len(calls) == 2 * 2 * 2  # rules × settings × LRs; the transfer reuses a grid run
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    info = axis_info(axis)
    assert on_disk["axis"] == axis and on_disk["sizes"] == on_disk[info.key] == values
    assert not set(info.fields) & set(on_disk["config"])  # the varied setting is not "fixed"
    assert (on_disk["config"]["width"], on_disk["config"]["base_width"]) == (32, 16)
    assert set(on_disk["claims"]) == {"mup_optimum_stable", "mup_transfer_regret_small"}
    assert set(on_disk["findings"]) == {"sp", "mup"}
    for rules in ("sp", "mup"):
        transfer = on_disk["transfer"][rules]
        assert (transfer[f"proxy_{info.field}"], transfer[f"target_{info.field}"]) == (
            values[0],
            values[-1],
        )
        assert len(on_disk["sweeps"][rules]["regret_of_first"]) == 2
        assert on_disk["findings"][rules].startswith(analysis.display_name(rules) + " ")
    # µP differs from SP at this width (32 vs base 16): the grids are not the same runs
    assert on_disk["sweeps"]["sp"]["loss"] != on_disk["sweeps"]["mup"]["loss"]
    figure = tmp_path / report.figure_name(axis)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "report.md").read_text()
    assert f"# µTransfer demo across {info.plural}: SP vs µP" in text
    assert "## Findings: does the LR transfer along this axis?" in text
    assert f"{setting_label(axis, values[-1])}" in text and "first's LR" in text
    assert "varied" in text  # the provenance line does not claim one value for the axis
    terminal = report.terminal_report(on_disk)
    assert "Does the LR transfer along this axis?" in terminal


def test_cli_vary_schedule_and_its_errors(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--vary", "steps", "--values", "2,3", "--lrs=-7,-6", "--width", "32"]
    args += ["--batch-size", "2", "--seq-len", "8", "--workers", "1", "--no-progress"]
    assert cli.main([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["axis"] == "steps" and summary["step_counts"] == [2, 3]
    assert (out / "lr_transfer_steps.png").exists()
    assert "Does the LR transfer along this axis?" in capsys.readouterr().out
    bad = ["demo", "--vary", "schedule", "--values", "constant,step", "--out", str(out)]
    assert cli.main(bad) == 2
    assert "schedules must be distinct names" in capsys.readouterr().err
    assert cli.main(["demo", "--vary", "batch", "--batch-size", "8", "--out", str(out)]) == 2
    assert "give the batch sizes to sweep (--values)" in capsys.readouterr().err


def test_every_axis_has_words_for_one_setting() -> None:
    words = {a: axis_info(a).singular for a in AXES}
    assert words == {
        "width": "width",
        "depth": "depth",
        "batch": "batch size",
        "seq-len": "sequence length",
        "steps": "training length",
        "schedule": "schedule",
    }


@pytest.mark.slow
def test_quick_steps_demo_end_to_end(tmp_path) -> None:
    """``mutransfer demo --vary steps --quick`` as a user runs it: the real preset (steps 12, 25,
    100 × 6 LRs × SP and µP at width 32, Shakespeare), 2 spawned workers."""
    import subprocess
    import sys

    quick = demo.settings_for(True, vary="steps")
    command = ["demo", "--vary", "steps", "--quick", "--no-progress", "--out", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "mutransfer.cli", *command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["axis"] == "steps" and summary["step_counts"] == list(quick.sizes)
    assert summary["run"]["trained"] == len(quick.grid()) == 2 * 3 * 6
    for rules in ("sp", "mup"):
        sweep = summary["sweeps"][rules]
        finite = [v for row in sweep["loss"] for v in row if v is not None]
        assert finite and all(0.5 < v < 6.6 for v in finite)  # bytes: ln 256 = 5.55 at init
        assert all(b is not None for b in sweep["best_log2_lr"])
        assert summary["findings"][rules].startswith(analysis.display_name(rules) + " ")
    assert (tmp_path / "lr_transfer_steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Does the LR transfer along this axis?" in proc.stdout
