"""The independent search (strategy = "independent"), in one process: stage order, the combined
point of a separable objective, resume mid-stage, interacting hyperparameters, configs, the
report, and the built-in trainer with u-µP. Objectives are cheap analytic functions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from optuna.trial import TrialState

from mutransfer.sweep import ConfigError, Space, Sweep, TrialHandle, load_config
from mutransfer.sweep.progress import Progress
from mutransfer.sweep.stages import DONE, Outcome, plan, stage_budget
from mutransfer.sweep.trials import ATTR_STAGE, point_of

torch.set_num_threads(1)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Optimum: lr = 2^-6, out = 2^1, init = 2^-1 (and 1/width, so wider is better).
OPT = {"lr": -6, "out": 1, "init": -1}
SPACE = {
    "lr": {"log2": [-8, -3]},  # 6 points
    "out": {"log2": [-2, 2], "default": 1.0},  # 5 points, 4 off the default
    "init": {"log2": [-2, 1], "default": 1.0},  # 4 points, 3 off the default
}
BUDGET = 6 + 4 + 3 + 1


def separable(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
    """A sum of one bowl per hyperparameter (in octaves): its optimum is separable."""
    return sum((math.log2(params[k]) - v) ** 2 for k, v in OPT.items()) + 1.0 / width


def coupled(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
    """out and init interact: each is best at 2 alone, but together they overshoot."""
    out, init = math.log2(params["out"]), math.log2(params["init"])
    return (math.log2(params["lr"]) + 6) ** 2 + (out + init - 1) ** 2 + 0.1 * (out - init) ** 2


def make(tmp_path: Path, objective: Any = separable, **kw: Any) -> Sweep:
    return Sweep(
        kw.pop("name", "ind"),
        widths=kw.pop("widths", [8, 16]),
        space=kw.pop("space", SPACE),
        objective=objective,
        strategy="independent",
        storage=str(tmp_path / "runs" / "ind.journal"),
        **kw,
    )


def by_stage(sweep: Sweep, width: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for t in sweep.studies()[width].get_trials():
        out.setdefault(t.user_attrs[ATTR_STAGE], []).append(t)
    return out


def test_stages_run_in_order_and_combine_the_per_dimension_optima(tmp_path: Path) -> None:
    sweep = make(tmp_path)
    assert sweep.spec.points_per_width == BUDGET
    results = sweep.run(log=None)
    best_point = {k: 2.0**v for k, v in OPT.items()}
    for width in (8, 16):
        stages = by_stage(sweep, width)
        assert sorted(stages) == ["1:lr", "2:init", "2:out", "3:combined"]
        numbers = {s: [t.number for t in ts] for s, ts in stages.items()}
        # every stage-1 trial before every stage-2 trial, the combination last
        assert max(numbers["1:lr"]) < min(numbers["2:out"] + numbers["2:init"])
        assert max(numbers["2:out"] + numbers["2:init"]) < min(numbers["3:combined"])
        # stage 1: the lr grid, the others at their defaults
        assert [point_of(t) for t in stages["1:lr"]] == [
            {"lr": 2.0**k, "out": 1.0, "init": 1.0} for k in range(-8, -2)
        ]
        # stage 2: one dimension at a time, at the best lr; the default point is not rerun
        assert sorted(point_of(t)["out"] for t in stages["2:out"]) == [0.25, 0.5, 2.0, 4.0]
        assert {(point_of(t)["lr"], point_of(t)["init"]) for t in stages["2:out"]} == {
            (2.0**-6, 1.0)
        }
        assert sorted(point_of(t)["init"] for t in stages["2:init"]) == [0.25, 0.5, 2.0]
        # the combination is the separable optimum, and the best trial
        assert [point_of(t) for t in stages["3:combined"]] == [best_point]
        assert results.best(width).params == best_point  # type: ignore[union-attr]
        assert results.best(width).stage == "3:combined"  # type: ignore[union-attr]
        plan_ = results.stages(width)
        assert plan_.stage == DONE and plan_.combined == best_point
        assert {k: p.value for k, p in plan_.picks.items()} == best_point
        assert len(sweep.studies()[width].trials) == BUDGET
    assert sweep.unfinished() == 0 and sweep.progress() == (2 * BUDGET, 2 * BUDGET)
    sweep.run(log=None)  # done: running again adds nothing
    assert all(len(s.trials) == BUDGET for s in sweep.studies().values())


@pytest.mark.parametrize(
    ("optimum", "trials"),
    [
        ({"lr": -4, "out": 0, "init": 0}, BUDGET - 1),  # all defaults best: combined = stage 1's
        ({"lr": -8, "out": -2, "init": 0}, BUDGET - 1),  # one dim moves: combined = its stage-2
        ({"lr": -3, "out": 2, "init": -2}, BUDGET),  # edges of every range
    ],
)
def test_the_combination_is_the_optimum_and_runs_only_if_new(
    tmp_path: Path, optimum: dict[str, int], trials: int
) -> None:
    def bowl(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
        return sum(
            abs(math.log2(params[k]) - v) * (i + 1) for i, (k, v) in enumerate(optimum.items())
        )

    sweep = make(tmp_path, bowl, widths=[8])
    results = sweep.run(log=None)
    assert results.best(8).params == {k: 2.0**v for k, v in optimum.items()}  # type: ignore[union-attr]
    assert results.best(8).value == 0  # type: ignore[union-attr]
    assert len(results.trials[8]) == trials
    points = [tuple(sorted(t.params.items())) for t in results.trials[8]]
    assert len(set(points)) == len(points)  # no point twice


def test_stopped_mid_stage_two_resumes_without_rerunning(tmp_path: Path) -> None:
    sweep = make(tmp_path, widths=[8])
    sweep.prepare()
    assert len(sweep.studies()[8].trials) == 6  # only stage 1 is queued up front
    sweep.work(max_trials=8, log=None)  # stage 1, then 2 of stage 2's 7 points
    done = {
        t.number: t.datetime_complete
        for t in sweep.studies()[8].get_trials(states=(TrialState.COMPLETE,))
    }
    assert len(done) == 8
    assert sweep.unfinished() == BUDGET - 8
    partial = sweep.results().report(tmp_path / "partial")  # a report mid-search works
    assert "stage 2" in partial.text and partial.files["stages"].is_file()
    sweep.run(log=None)  # the same command again
    trials = sweep.studies()[8].trials
    assert len(trials) == BUDGET and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(trials[n].datetime_complete == c for n, c in done.items())  # kept, not rerun
    assert sweep.results().best(8).params == {k: 2.0**v for k, v in OPT.items()}  # type: ignore[union-attr]


def test_an_error_mid_stage_is_rerun_by_the_next_command(tmp_path: Path) -> None:
    broken = {"on": True}

    def flaky(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
        if broken["on"] and params["out"] == 4.0:
            raise OSError("disk full")
        return separable(params, width, trial)

    sweep = make(tmp_path, flaky, widths=[8])
    with pytest.raises(OSError, match="disk full"):
        sweep.run(log=None)
    broken["on"] = False
    results = sweep.run(log=None)
    assert results.stages(8).stage == DONE
    completed = [tuple(sorted(t.params.items())) for t in results.completed(8)]
    assert len(completed) == BUDGET and len(set(completed)) == BUDGET
    assert results.counts(8)["failed"] == 1


def test_interacting_hyperparameters_are_flagged_in_the_report(tmp_path: Path) -> None:
    space = {
        "lr": {"log2": [-7, -5]},
        "out": {"log2": [-1, 2], "default": 1.0},
        "init": {"log2": [-1, 2], "default": 1.0},
    }
    sweep = make(tmp_path, coupled, widths=[8, 16], space=space)
    results = sweep.run(log=None)
    stages = results.stages(8)
    assert stages.combined == {"lr": 2.0**-6, "out": 2.0, "init": 2.0}  # each alone: best at 2
    best = results.best(8)
    assert best is not None and best.params != stages.combined  # the combination overshoots
    report = results.report(tmp_path / "report")
    assert "stages" in report.files and not any(k.startswith("loss_vs") for k in report.files)
    assert report.files["stages"].stat().st_size > 0
    md = report.files["report"].read_text()
    assert "## Independent search" in md and "independent search: lr first" in md
    assert "do not simply combine" in md and f"trial #{best.number}" in md
    # the transfer takes the best measured point, not the combination
    assert results.transfer(64).params == best.params


def test_a_stage_one_without_any_completed_trial_stops_the_search(tmp_path: Path) -> None:
    def diverges(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
        return math.nan

    messages: list[str] = []
    sweep = make(tmp_path, diverges, widths=[8])
    results = sweep.run(log=messages.append)
    assert results.counts(8)["diverged"] == 6 and len(results.trials[8]) == 6
    assert results.stages(8).blocked and sweep.unfinished() == 0
    assert any("independent search stopped" in m and "widen" in m for m in messages)
    assert "stopped" in results.report(tmp_path / "r").text


def test_planner_reuses_any_trial_at_a_stage_point() -> None:
    space = Space.of({"lr": {"values": [1, 2]}, "x": {"values": ["a", "b"], "default": "a"}})
    assert stage_budget(space) == 2 + 1 + 1

    def done(n: int, lr: int, x: str, value: float) -> Outcome:
        return Outcome(n, {"lr": lr, "x": x}, "complete", value)

    # trials from a previous grid sweep of the same space settle every stage at once
    grid = [done(0, 1, "a", 3.0), done(1, 1, "b", 2.0), done(2, 2, "a", 1.0), done(3, 2, "b", 5.0)]
    stages = plan(space, grid)
    assert stages.stage == DONE and stages.combined == {"lr": 2, "x": "a"} and not stages.todo
    # a pending retry of a lost trial keeps the stage open without queueing the point again
    lost = Outcome(0, {"lr": 1, "x": "a"}, "failed")
    retry = Outcome(1, {"lr": 1, "x": "a"}, "pending")
    stages = plan(space, [lost, retry])
    assert stages.stage == 1
    assert stages.to_enqueue(rerun=False) == [("1:lr", {"lr": 2, "x": "a"})]
    # a lost trial whose retries ran out is queued again by the next command only
    stages = plan(space, [lost, done(1, 2, "a", 1.0)])
    assert stages.to_enqueue(rerun=False) == []
    assert stages.to_enqueue(rerun=True) == [("1:lr", {"lr": 1, "x": "a"})]


# ------------------------------------------------------------------------------ configs
GOOD = """
[sweep]
name = "t"
widths = [16, 32]
strategy = "independent"
[sweep.space]
lr = { log2 = [-8, -4] }
output_multiplier = { log2 = [-2, 2] }
[train]
steps = 5
data = "pydoc"
"""


def test_builtin_defaults_come_from_the_trainer_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    spec = load_config(path)
    assert spec.strategy == "independent" and spec.space["output_multiplier"].default == 1.0
    assert spec.points_per_width == 5 + 4 + 1
    assert type(spec).from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('strategy = "independent"', 'strategy = "greedy"'), "sweep.strategy: expected one of"),
        (
            ('strategy = "independent"', 'strategy = "independent"\nsampler = "tpe"\ntrials = 9'),
            "sweep.sampler: strategy = 'independent' runs one-dimensional grids",
        ),
        (
            (
                "lr = { log2 = [-8, -4] }\noutput_multiplier = { log2 = [-2, 2] }",
                "output_multiplier = { log2 = [-2, 2] }\nlr = { log2 = [-8, -4] }",
            ),
            "sweep.space: strategy = 'independent' searches the first hyperparameter first",
        ),
        (
            ("output_multiplier = { log2 = [-2, 2] }", "output_multiplier = { log2 = [1, 2] }"),
            "sweep.space.output_multiplier.default: missing, and the trainer's default",
        ),
        (
            (
                "output_multiplier = { log2 = [-2, 2] }",
                "output_multiplier = { log2 = [-2, 2], default = 8.0 }",
            ),
            "sweep.space.output_multiplier.default: 8.0 lies outside the searched range",
        ),
        (
            (
                "output_multiplier = { log2 = [-2, 2] }",
                "output_multiplier = { values = [0.5, 1.0], default = 2.0 }",
            ),
            "sweep.space.output_multiplier.default: 2.0 is not one of the values",
        ),
    ],
)
def test_bad_independent_configs_name_the_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_a_custom_objective_needs_explicit_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sweep.space.out.default: missing; strategy"):
        make(tmp_path, space={"lr": {"log2": [-8, -3]}, "out": {"log2": [-2, 2]}})


# ---------------------------------------------------------------------- example, trainer
def test_umup_example_config_runs_shrunk_with_the_builtin_trainer(tmp_path: Path) -> None:
    spec = load_config(EXAMPLES / "sweep_umup_independent.toml")
    assert spec.strategy == "independent" and spec.train["rules"] == "u-mup"
    assert spec.space.names[0] == "lr" and spec.points_per_width == 21
    tiny = {
        **spec.train,
        "steps": 8,
        "batch_size": 4,
        "seq_len": 16,
        "depth": 1,
        "n_heads": 2,
        "data": "pydoc",
        "eval_batches": 1,
        "eval_batch_size": 4,
    }
    small = spec.with_(
        widths=(16, 32),
        space=Space.of(
            {"lr": {"log2": [-3, -1]}, "output_multiplier": {"values": [0.5, 1.0], "default": 1.0}}
        ),
        train=tiny,
        storage=str(tmp_path / "umup.journal"),
    )
    results = Sweep.from_spec(small).run(log=None)
    for width in (16, 32):
        stages = results.stages(width)
        assert stages.stage == DONE, stages
        assert {t.stage for t in results.trials[width]} >= {"1:lr", "2:output_multiplier"}
        assert len(results.trials[width]) <= 3 + 1 + 1
        assert all(t.value is not None and t.value < 6 for t in results.completed(width))
    target = results.transfer(to_width=128)
    assert target.plan is not None and target.config["rules"] == "u-mup"


def test_progress_bar_counts_from_the_storage(tmp_path: Path, capsys: Any) -> None:
    sweep = make(tmp_path, widths=[8])
    sweep.run(log=None, progress=True)
    err = capsys.readouterr().err
    assert f"{BUDGET}/{BUDGET}" in err and "trial" in err  # tqdm's bar, on stderr
    quiet = Progress(lambda: (1, 2), enabled=False)
    quiet.write("a line")
    quiet.refresh(force=True)
    quiet.close()
    assert not quiet.active and capsys.readouterr().out == "a line\n"
