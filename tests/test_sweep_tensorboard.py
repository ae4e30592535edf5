"""Each finished trial's curve in TensorBoard, beside the storage, catching up after a kill."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from mutransfer.sweep import Sweep, TrialHandle
from mutransfer.sweep.config import ConfigError, parse_sweep


def curve(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
    final = abs(math.log2(params["lr"]) + 6) + 1.0 / width
    for step in range(1, 6):
        trial.report(step * 10, final + 1.0 / step)
    if params["lr"] >= 0.25:
        return math.nan  # a diverged trial still gets its curve
    return final


def read(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def test_every_finished_trial_has_its_curve_and_a_rerun_writes_missing_ones(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "runs" / "t.journal"
    sweep = Sweep(
        "t",
        widths=[8, 16],
        space={"lr": {"log2": [-8, -2]}},
        objective=curve,
        storage=str(storage),
        tensorboard=True,
    )
    sweep.run(log=None)
    folder = tmp_path / "runs" / "t.tensorboard"  # beside the journal
    for width in (8, 16):
        trials = sweep.studies()[width].get_trials(deepcopy=False)
        assert len(trials) == 7
        for trial in trials:
            scalars = read(folder / f"w{width}" / f"trial-{trial.number:04d}")
            assert [s for s, _ in scalars["loss"]] == [10, 20, 30, 40, 50]
            assert [v for _, v in scalars["loss"]] == pytest.approx(
                [trial.intermediate_values[s] for s in (10, 20, 30, 40, 50)]
            )
            if trial.value is not None:
                assert scalars["value"] == [(50, pytest.approx(trial.value))]
            else:
                assert "value" not in scalars  # the diverged point: curve only
    # a worker killed after telling the storage, before writing: the next start catches up
    shutil.rmtree(folder / "w16" / "trial-0003")
    sweep.run(log=None)
    assert [s for s, _ in read(folder / "w16" / "trial-0003")["loss"]] == [10, 20, 30, 40, 50]


def test_tensorboard_setting_is_checked(tmp_path: Path) -> None:
    base = {"name": "t", "widths": [8], "space": {"lr": {"log2": [-8, -2]}}}
    assert parse_sweep({**base, "tensorboard": "tb"}).tensorboard == "tb"
    assert parse_sweep(base).tensorboard is False
    with pytest.raises(ConfigError, match="tensorboard"):
        parse_sweep({**base, "tensorboard": 3})
