"""Sweeps in one process: grids, resume, divergence, errors, random/TPE budgets, pruning,
transfer and the report. Objectives are cheap analytic functions, or the built-in trainer on
tiny widths with the standard library's text."""

from __future__ import annotations

import json
import math
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from optuna.trial import TrialState

from mutransfer.sweep import Diverged, Sweep, TrialHandle
from mutransfer.sweep.trials import ATTR_FAIL_KIND, ATTR_FAIL_REASON, point_of
from mutransfer.training.proxy import TrainConfig, build_model

torch.set_num_threads(1)


def bowl(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
    """Best at lr = 2^-6 at every width (a µP-like picture); lr ≥ 2^-2 diverges."""
    if params["lr"] >= 0.25:
        return math.nan
    return (math.log2(params["lr"]) + 6) ** 2 + 1.0 / width


def states(sweep: Sweep) -> dict[int, Counter[str]]:
    return {
        w: Counter(t.state.name for t in s.get_trials(deepcopy=False))
        for w, s in sweep.studies().items()
    }


def complete_points(sweep: Sweep, width: int) -> list[float]:
    trials = sweep.studies()[width].get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(point_of(t)["lr"] for t in trials)


def make(tmp_path: Path, objective: Any = bowl, **kw: Any) -> Sweep:
    kw.setdefault("space", {"lr": {"log2": [-8, -2]}})
    return Sweep(
        kw.pop("name", "t"),
        widths=kw.pop("widths", [8, 16]),
        objective=objective,
        storage=str(tmp_path / "runs" / "t.journal"),
        **kw,
    )


def test_grid_runs_every_point_once_and_records_divergence(tmp_path: Path) -> None:
    sweep = make(tmp_path)
    results = sweep.run(log=None)
    grid = [2.0**k for k in range(-8, -2)]
    for width in (8, 16):
        assert complete_points(sweep, width) == grid
        assert results.best(width).params == {"lr": 2.0**-6}  # type: ignore[union-attr]
        failed = sweep.studies()[width].get_trials(states=(TrialState.FAIL,))
        assert [point_of(t)["lr"] for t in failed] == [0.25]
        assert failed[0].user_attrs[ATTR_FAIL_KIND] == "diverged"
        assert "returned nan" in failed[0].user_attrs[ATTR_FAIL_REASON]
    # running again finds the grid done: no extra trial
    sweep.run(log=None)
    assert states(sweep) == {8: Counter(COMPLETE=6, FAIL=1), 16: Counter(COMPLETE=6, FAIL=1)}
    assert "2^-6" in results.table() and "| width |" in results.table(markdown=True)


def test_resume_keeps_finished_trials(tmp_path: Path) -> None:
    sweep = make(tmp_path)
    sweep.prepare()
    sweep.work(max_trials=5, log=None)
    first = {
        (w, t.number): t.datetime_complete
        for w, s in sweep.studies().items()
        for t in s.get_trials(states=(TrialState.COMPLETE,))
    }
    assert len(first) == 5
    sweep.run(log=None)  # prepare again (enqueues nothing new) and finish
    after = {
        (w, t.number): t.datetime_complete
        for w, s in sweep.studies().items()
        for t in s.get_trials(states=(TrialState.COMPLETE,))
    }
    assert all(after[k] == v for k, v in first.items())
    assert len(after) == 12 and sum(sum(c.values()) for c in states(sweep).values()) == 14


def test_error_stops_the_worker_and_a_rerun_retries_the_point(tmp_path: Path) -> None:
    broken = {"on": True}

    def flaky(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
        if broken["on"] and params["lr"] == 2.0**-5:
            raise OSError("disk full")
        return bowl(params, width, trial)

    sweep = make(tmp_path, flaky, widths=[8])
    with pytest.raises(OSError, match="disk full"):
        sweep.run(log=None)
    failed = sweep.studies()[8].get_trials(states=(TrialState.FAIL,))
    assert failed[0].user_attrs[ATTR_FAIL_KIND] == "error"
    assert failed[0].user_attrs[ATTR_FAIL_REASON] == "OSError: disk full"
    broken["on"] = False
    sweep.run(log=None)
    assert complete_points(sweep, 8) == [2.0**k for k in range(-8, -2)]  # each once


def test_builtin_trainer_divergence_is_failed_with_its_reason(tmp_path: Path) -> None:
    sweep = make(
        tmp_path,
        "builtin",
        widths=[16],
        space={"lr": {"values": [2.0**-6, 64.0]}},
        train={
            "steps": 15,
            "batch_size": 4,
            "seq_len": 16,
            "data": "pydoc",
            "base_width": 16,
            "depth": 1,
            "n_heads": 2,
            "eval_batches": 1,
            "eval_batch_size": 4,
            "rules": "sp",
        },
    )
    results = sweep.run(log=None)
    records = {t.params["lr"]: t for t in results.trials[16]}
    assert records[2.0**-6].state == "complete" and records[2.0**-6].value < 6
    assert records[64.0].state == "diverged"
    assert "exceeds" in records[64.0].reason or "loss became" in records[64.0].reason


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_random_and_tpe_stop_at_their_budget(tmp_path: Path, sampler: str) -> None:
    sweep = make(tmp_path, sampler=sampler, trials=6, space={"lr": {"log2": [-10, -3]}})
    results = sweep.run(log=None)
    for width in (8, 16):
        lrs = [t.params["lr"] for t in results.trials[width]]
        assert len(lrs) == 6 and all(2.0**-10 <= lr <= 2.0**-3 for lr in lrs)
        assert len(set(lrs)) == 6  # drawn, not repeated
    sweep.run(log=None)  # done: nothing more
    assert all(sum(c.values()) == 6 for c in states(sweep).values())


def test_median_pruner_stops_bad_trials(tmp_path: Path) -> None:
    def curve(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
        final = abs(math.log2(params["lr"]) + 8)  # best at the first grid point
        for step in range(1, 11):
            trial.report(step, final + 1.0 / step)
        return final

    sweep = make(
        tmp_path,
        curve,
        widths=[8],
        space={"lr": {"log2": [-8, -1]}},
        pruner={"kind": "median", "n_startup_trials": 2},
    )
    results = sweep.run(log=None)
    counts = results.counts(8)
    assert counts["pruned"] >= 4 and counts["complete"] >= 2
    assert results.best(8).params == {"lr": 2.0**-8}  # type: ignore[union-attr]


def test_seeds_are_averaged(tmp_path: Path) -> None:
    def seeded(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
        return float(trial.seed)

    sweep = make(tmp_path, seeded, widths=[8], seeds=[1, 2, 6], space={"lr": {"values": [0.1]}})
    trial = sweep.run(log=None).trials[8][0]
    assert trial.value == 3.0
    frozen = sweep.studies()[8].get_trials()[0]
    assert frozen.user_attrs["loss_per_seed"] == [1.0, 2.0, 6.0]


def test_raising_diverged_is_a_result(tmp_path: Path) -> None:
    def blows_up(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
        raise Diverged("gradient norm 1e9 at step 3")

    results = make(tmp_path, blows_up, widths=[8], space={"lr": {"values": [1.0]}}).run(log=None)
    assert results.trials[8][0].state == "diverged"
    assert results.trials[8][0].reason == "gradient norm 1e9 at step 3"


TINY_TRAIN = {
    "model": "gpt",
    "depth": 1,
    "n_heads": 2,
    "base_width": 16,
    "seq_len": 16,
    "batch_size": 4,
    "steps": 10,
    "data": "pydoc",
    "eval_batches": 1,
    "eval_batch_size": 4,
}


def test_transfer_reproduces_the_best_point_with_the_target_plan(tmp_path: Path) -> None:
    sweep = make(
        tmp_path,
        "builtin",
        widths=[16, 32],
        space={"lr": {"log2": [-8, -5]}, "output_multiplier": {"values": [0.5, 2.0]}},
        train=TINY_TRAIN,
    )
    results = sweep.run(log=None)
    best = results.best(32)
    assert best is not None
    target = results.transfer(to_width=256)
    assert target.from_width == 32 and target.params == best.params
    assert target.loss == best.value
    config = TrainConfig.from_dict(tomllib.loads(target.to_toml())["train"])
    assert config.width == 256
    assert (config.lr, config.output_multiplier) == (
        best.params["lr"],
        best.params["output_multiplier"],
    )
    assert config.steps == 10 and config.data == "pydoc"  # the proxy's fixed options
    assert json.loads(target.to_json())["transfer"]["params"] == best.params
    # the plan is the target width's µP plan, as build_model would make it
    _, expected = build_model(config)
    assert target.plan is not None
    assert json.loads(target.plan.to_json()) == json.loads(expected.to_json())
    hidden = target.plan["blocks.0.mlp.fc.weight"]
    assert hidden.shape[1] == 256 and hidden.lr_scale == pytest.approx(16 / 256)
    paths = target.write(tmp_path / "out")
    assert paths["plan"].is_file() and tomllib.loads(paths["config"].read_text())["train"]
    # from a chosen proxy width
    assert results.transfer(256, from_width=16).params == results.best(16).params  # type: ignore[union-attr]


def test_report_writes_figures_and_markdown(tmp_path: Path) -> None:
    sweep = make(tmp_path, space={"lr": {"log2": [-8, -2]}, "init_std": {"values": [0.5, 1.0]}})
    report = sweep.run(log=None).report(tmp_path / "report")
    for key in ("loss_vs_lr", "loss_vs_init_std", "best_vs_width", "report"):
        assert report.files[key].is_file() and report.files[key].stat().st_size > 0
    md = report.files["report"].read_text()
    assert (
        "| width |" in md
        and "lr 0.00 (widest − narrowest +0.00)" in md
        and "diverged — the objective returned nan" in md
    )
    assert "optuna-dashboard" in report.text


def test_builtin_runs_go_through_the_run_store_and_are_found_again(tmp_path: Path) -> None:
    """One way to execute a proxy run: the sweep's built-in objective keeps each finished run in
    ``training.runs.RunStore``, where another sweep (or the demo) with the same config finds it."""
    from mutransfer.training.proxy import load_source
    from mutransfer.training.runs import RunStore, source_fingerprint

    options = dict(widths=[16], space={"lr": {"log2": [-7, -6]}}, train=TINY_TRAIN)
    first = make(tmp_path, "builtin", name="first", runs_dir=str(tmp_path / "shared"), **options)
    values = {t.params["lr"]: t.value for t in first.run(log=None).trials[16]}
    config = TrainConfig.from_dict({**TINY_TRAIN, "lr": 2.0**-7, "width": 16, "seed": 0})
    store = RunStore(tmp_path / "shared", source_fingerprint(load_source(config)))
    assert store.load(config)["val_loss"] == values[2.0**-7]  # type: ignore[index]
    second = make(tmp_path, "builtin", name="second", runs_dir=str(tmp_path / "shared"), **options)
    second.run(log=None)
    trials = second.studies()[16].get_trials()
    assert all(t.user_attrs.get("reused_run") for t in trials)
    assert {t.params["lr"]: t.value for t in trials} == values
