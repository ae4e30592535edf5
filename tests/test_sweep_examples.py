"""The shipped sweep examples run, and the transfer/report commands work on their results."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path

import pytest
import torch

from mutransfer.cli import main
from mutransfer.sweep import CallbackHandle, Space, Sweep, load_config
from mutransfer.training.proxy import TrainConfig

torch.set_num_threads(1)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_custom_objective_example_runs_from_its_config(tmp_path: Path) -> None:
    spec = load_config(EXAMPLES / "sweep_custom_objective.toml")
    small = spec.with_(widths=(32, 64), space=Space.of({"lr": {"log2": [-9, -3], "step": 2}}))
    sweep = Sweep.from_spec(small, storage=str(tmp_path / "custom.journal"))
    results = sweep.run(log=None)
    for width in (32, 64):
        assert results.counts(width)["complete"] >= 2  # the median pruner may stop the rest
        best = results.best(width)
        assert best is not None and 0 < best.value < 1  # type: ignore[operator]
    study = sweep.studies()[32]
    assert any(t.intermediate_values for t in study.trials)  # it reports for pruning


def test_custom_objective_example_is_a_plain_function() -> None:
    spec = importlib.util.spec_from_file_location("example", EXAMPLES / "sweep_custom_objective.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    handle = CallbackHandle(width=64, seed=0)  # no Optuna: how Ray Tune or a loop calls it
    good = module.objective({"lr": 2.0**-7}, 64, handle)
    bad = module.objective({"lr": 2.0**-14}, 64, handle)
    assert good < bad  # a sensible LR learns the teacher better than a tiny one
    assert [s for s, _ in handle.reports[:6]] == [10, 20, 30, 40, 50, 60]


def test_gpt_example_config_runs_shrunk_and_transfers(tmp_path: Path, capsys) -> None:
    config = EXAMPLES / "sweep_gpt.toml"
    spec = load_config(config)
    assert spec.points_per_width == 21 and spec.widths == (32, 64, 128)
    for width in spec.widths:  # every point of the real sweep is a valid trainer config
        for point in spec.space.grid():
            TrainConfig.from_dict({**spec.train, **point, "width": width})
    tiny = {
        **spec.train,
        "steps": 8,
        "batch_size": 4,
        "seq_len": 16,
        "depth": 1,
        "n_heads": 2,
        "base_width": 16,
        "data": "pydoc",
        "eval_batches": 1,
        "eval_batch_size": 4,
    }
    small = spec.with_(
        widths=(16, 32),
        space=Space.of({"lr": {"log2": [-7, -5]}, "output_multiplier": {"values": [1.0]}}),
        train=tiny,
        storage=str(tmp_path / "gpt.journal"),
    )
    Sweep.from_spec(small).run(log=None)
    # the command line on the stored sweep: refer to it by name + storage
    storage = str(tmp_path / "gpt.journal")
    out = tmp_path / "target"
    assert (
        main(["transfer", "gpt-lr", "--storage", storage, "--to-width", "64", "--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    assert "used unchanged at width 64" in text and "wrote plan" in text
    target = tomllib.loads((out / "config.toml").read_text())
    assert target["train"]["width"] == 64 and target["transfer"]["from_width"] == 32
    plan = json.loads((out / "plan.json").read_text())
    assert plan  # the target width's µP plan
    assert main(["report", "gpt-lr", "--storage", storage, "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "best_vs_width.png").is_file()
    assert "| width |" in (tmp_path / "rep" / "report.md").read_text()


def test_commands_report_user_errors_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["report", "nothing-here", "--storage", str(tmp_path / "none.journal")]) == 2
    err = capsys.readouterr().err
    assert "mutransfer report: error: no sweep storage at" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[sweep]\nname = "x"\nwidths = [8]\n[sweep.space]\nlr = { low = "abc" }\n')
    assert main(["sweep", str(bad)]) == 2
    assert "sweep.space.lr.low: expected a number, got 'abc'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["transfer", str(bad)])  # --to-width is required
