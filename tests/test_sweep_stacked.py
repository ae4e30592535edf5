"""Stacked sweeps (``sweep.stack``): a worker trains several trials of one width as one stacked
model, and each trial is recorded as it would be alone — same states, values (to float32
rounding), attributes, failure reasons and run files; pruning, two workers, kill -9 and resume,
and the configs that cannot stack."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from mutransfer.sweep import ConfigError, Sweep, SweepSpec, TrialHandle
from mutransfer.sweep.liveness import Heartbeat
from mutransfer.sweep.trials import ATTR_FAIL_KIND, ATTR_FAIL_REASON, ATTR_HEARTBEAT, point_of
from mutransfer.training.proxy import TrainConfig, train
from mutransfer.training.stacked import run_memory_bytes
from test_sweep_support import CLI, env_for, finish, start, studies, wait_for

torch.set_num_threads(1)

TRAIN: dict[str, Any] = {
    "model": "gpt",
    "depth": 1,
    "n_heads": 2,
    "base_width": 16,
    "seq_len": 16,
    "batch_size": 4,
    "steps": 20,
    "data": "pydoc",
    "eval_batches": 1,
    "eval_batch_size": 4,
}
DIVERGING_LR = 4.0
"""Diverges at step 10 (the first step the rule looks at the smoothed loss) at every seed and
output multiplier here, alone and stacked alike."""


def without_smoothed_loss(reason: str) -> str:
    """A divergence reason without its smoothed loss: a run blowing up amplifies float32
    rounding, so that number differs between a stacked run and a separate one (its step, the
    rule and the initial loss do not)."""
    return re.sub(r"^loss \S+ at step", "loss … at step", reason)


def memory_mb_for(trials: int, train: dict[str, Any] = TRAIN, width: int = 16) -> float:
    """A ``stack_memory_mb`` that holds ``trials`` one-seed runs like ``train`` (not one more)."""
    config = TrainConfig.from_dict({**train, "width": width})
    return (trials + 0.5) * run_memory_bytes(config) / 2**20


def make(tmp_path: Path, name: str, **kw: Any) -> Sweep:
    kw.setdefault("widths", [16])
    kw.setdefault("train", TRAIN)
    return Sweep(name, objective="builtin", storage=str(tmp_path / f"{name}.journal"), **kw)


def by_point(sweep: Sweep, width: int) -> dict[tuple[Any, ...], FrozenTrial]:
    trials = sweep.studies()[width].get_trials()
    points = [tuple(sorted(point_of(t).items())) for t in trials]
    assert len(set(points)) == len(points), "a grid point ran twice"
    return dict(zip(points, trials, strict=True))


def close(a: float, b: float, rel: float = 1e-5) -> bool:
    return math.isclose(a, b, rel_tol=rel)


# ------------------------------------------------------------------- same as alone
def test_a_stacked_sweep_records_what_one_trial_at_a_time_records(tmp_path: Path) -> None:
    space = {
        "lr": {"values": [2.0**-9, 2.0**-7, 2.0**-5, DIVERGING_LR]},
        "output_multiplier": {"values": [0.5, 2.0]},
    }
    options: dict[str, Any] = dict(space=space, seeds=[0, 1], report_every=5)
    alone = make(tmp_path, "alone", **options)
    lines: list[str] = []
    stacked = make(tmp_path, "stacked", stack=True, **options)
    alone.run(log=None)
    stacked.run(log=lines.append)
    assert any("8 trials × 2 seed(s) stacked" in line for line in lines), lines

    expected, got = by_point(alone, 16), by_point(stacked, 16)
    assert expected.keys() == got.keys() and len(got) == 8
    for point, one in expected.items():
        other = got[point]
        assert other.state == one.state, point
        if one.state == TrialState.COMPLETE:
            assert one.value is not None and other.value is not None
            assert close(other.value, one.value), (point, one.value, other.value)
            for a, b in zip(
                one.user_attrs["loss_per_seed"], other.user_attrs["loss_per_seed"], strict=True
            ):
                assert close(a, b)
            for step, value in one.intermediate_values.items():
                assert close(other.intermediate_values[step], value), (point, step)
        else:  # the diverging LR: diverged at its first seed, with the same reason
            assert dict(point)["lr"] == DIVERGING_LR
            assert other.user_attrs[ATTR_FAIL_KIND] == one.user_attrs[ATTR_FAIL_KIND] == "diverged"
            reason = without_smoothed_loss(one.user_attrs[ATTR_FAIL_REASON])
            assert reason.startswith("loss … at step 10 exceeds 1.5× the initial loss")
            assert without_smoothed_loss(other.user_attrs[ATTR_FAIL_REASON]) == reason
        assert set(other.user_attrs) == set(one.user_attrs), point  # same records, seed by seed
        assert one.intermediate_values.keys() == other.intermediate_values.keys()
    # the run store holds the same runs, one file each (the diverged seed 0, never its seed 1)
    files = sorted(p.name for p in (tmp_path / "alone.runs").iterdir())
    assert sorted(p.name for p in (tmp_path / "stacked.runs").iterdir()) == files
    assert len(files) == 6 * 2 + 2
    # a rerun of either finds the grid done
    stacked.run(log=None)
    assert len(stacked.studies()[16].get_trials()) == 8


def test_a_diverging_trial_leaves_the_pack_without_disturbing_the_others(tmp_path: Path) -> None:
    lrs = [2.0**-8, DIVERGING_LR, 2.0**-6]
    alone = make(tmp_path, "alone", space={"lr": {"values": lrs}})
    stacked = make(tmp_path, "stacked", space={"lr": {"values": lrs}}, stack=True)
    alone.run(log=None)
    stacked.run(log=None)
    one, other = by_point(alone, 16), by_point(stacked, 16)
    diverged = other[(("lr", DIVERGING_LR),)]
    assert diverged.state == TrialState.FAIL and diverged.user_attrs[ATTR_FAIL_KIND] == "diverged"
    reason = diverged.user_attrs[ATTR_FAIL_REASON]
    assert "exceeds" in reason or "loss became" in reason
    assert diverged.datetime_complete < min(  # told when it left the pack, before the others
        t.datetime_complete for t in other.values() if t.state == TrialState.COMPLETE
    )
    for lr in (2.0**-8, 2.0**-6):
        assert close(other[(("lr", lr),)].value, one[(("lr", lr),)].value)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(
            dict(sampler="random", trials=4, space={"lr": {"log2": [-9, -5]}}), id="random"
        ),
        pytest.param(
            dict(
                strategy="independent",
                space={
                    "lr": {"log2": [-9, -5], "step": 2},
                    "output_multiplier": {"values": [0.5, 1.0, 2.0]},
                },
            ),
            id="independent",
        ),
    ],
)
def test_random_and_independent_sweeps_stack_to_the_same_trials(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """Random draws asked several at a time are the points drawn one at a time (one worker,
    one seeded sampler); an independent search packs each stage's points."""
    alone = make(tmp_path, "alone", **options)
    stacked = make(tmp_path, "stacked", stack=True, **options)
    alone.run(log=None)
    lines: list[str] = []
    stacked.run(log=lines.append)
    assert any("stacked" in line for line in lines), lines
    one, other = by_point(alone, 16), by_point(stacked, 16)
    assert one.keys() == other.keys()
    for point, trial in one.items():
        assert other[point].state == trial.state == TrialState.COMPLETE
        assert close(other[point].value, trial.value), point
        assert other[point].user_attrs.get("stage") == trial.user_attrs.get("stage")


def test_an_error_in_a_pack_fails_the_trials_not_yet_told_and_a_rerun_runs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mutransfer.sweep.objective import TrainerObjective

    keep = TrainerObjective.keep
    saved: list[float] = []

    def disk_fills_up(self: TrainerObjective, config: Any, result: dict[str, Any]) -> None:
        if saved:
            raise OSError("disk full")
        saved.append(config.lr)
        keep(self, config, result)

    monkeypatch.setattr(TrainerObjective, "keep", disk_fills_up)
    sweep = make(tmp_path, "error", space={"lr": {"values": LRS[:3]}}, stack=True)
    with pytest.raises(OSError, match="disk full"):
        sweep.run(log=None)
    trials = sweep.studies()[16].get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert [point_of(t)["lr"] for t in done] == saved  # told before the error, kept
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 2
    for trial in failed:
        assert trial.user_attrs[ATTR_FAIL_KIND] == "error"
        assert trial.user_attrs[ATTR_FAIL_REASON] == "OSError: disk full"
    monkeypatch.setattr(TrainerObjective, "keep", keep)
    sweep.run(log=None)  # after the fix: the two failed points run again, the first is kept
    trials = sweep.studies()[16].get_trials()
    assert sorted(point_of(t)["lr"] for t in trials if t.state == TrialState.COMPLETE) == LRS[:3]
    assert len(trials) == 5


def test_a_sweep_started_one_at_a_time_resumes_stacked(tmp_path: Path) -> None:
    space = {"lr": {"values": LRS[:4]}}
    sweep = make(tmp_path, "mixed", space=space)
    sweep.prepare()
    sweep.work(max_trials=1, log=None)  # one trial alone, then stopped
    first = sweep.studies()[16].get_trials(states=(TrialState.COMPLETE,))
    assert len(first) == 1
    stacked = Sweep.from_spec(sweep.spec.with_(stack=True))
    assert SweepSpec.from_dict(stacked.spec.to_dict()) == stacked.spec  # stored as it is
    lines: list[str] = []
    stacked.run(log=lines.append)
    assert any("3 trials × 1 seed(s) stacked" in line for line in lines), lines
    trials = stacked.studies()[16].get_trials()
    assert sorted(point_of(t)["lr"] for t in trials) == LRS[:4]  # no point twice
    assert trials[first[0].number].datetime_complete == first[0].datetime_complete


# ----------------------------------------------------------------------------- pruning
def test_the_pruner_stops_trials_inside_a_pack(tmp_path: Path) -> None:
    # The first pack holds good LRs and completes (there is nothing to compare with yet); in
    # the second, the two low LRs learn slowly and the median pruner stops them, while the
    # good LR beside them trains on, undisturbed.
    survivor = 2.0**-5.5
    lrs = [2.0**-5, 2.0**-6, 2.0**-7, survivor, 2.0**-12, 2.0**-13]
    sweep = make(
        tmp_path,
        "pruned",
        space={"lr": {"values": lrs}},
        stack=True,
        stack_memory_mb=memory_mb_for(3),
        report_every=5,
        pruner={"kind": "median", "n_startup_trials": 3},
        tensorboard=True,
    )
    lines: list[str] = []
    sweep.run(log=lines.append)
    assert sum("3 trials × 1 seed(s) stacked" in line for line in lines) == 2, lines
    trials = by_point(sweep, 16)
    pruned = [t for t in trials.values() if t.state == TrialState.PRUNED]
    assert sorted(point_of(t)["lr"] for t in pruned) == [2.0**-13, 2.0**-12], lines
    for trial in pruned:
        assert trial.user_attrs[ATTR_FAIL_REASON].startswith("pruned at step 5 (loss ")
        assert list(trial.intermediate_values) == [5]  # stopped where the pruner said
    kept = trials[(("lr", survivor),)]
    assert kept.state == TrialState.COMPLETE and kept.value is not None
    alone = train(TrainConfig.from_dict({**TRAIN, "lr": survivor, "width": 16}))
    assert close(kept.value, alone.val_loss)
    # a pruned run is not a whole run: not kept in the run store (as alone)
    assert len(list((tmp_path / "pruned.runs").iterdir())) == 4
    # every trial's curve, written when it was told (pruned ones too), as alone
    curves = sorted(p.name for p in (tmp_path / "pruned.tensorboard" / "w16").iterdir())
    assert curves == [f"trial-{n:04d}" for n in range(6)]


# -------------------------------------------------------------------- bad configs
def bowl(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
    return (math.log2(params["lr"]) + 6) ** 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(objective=bowl), "sweep.stack: packs trials of the built-in trainer only"),
        (dict(train={**TRAIN, "model": "resnet"}), "model 'resnet' has layers with no stacked"),
        (dict(train={**TRAIN, "optimizer": "lion"}), "optimizer 'lion' is not implemented"),
        (dict(train={**TRAIN, "depth": 12}, widths=[512]), "GFLOP, above the 1 GFLOP"),
        (dict(stack_memory_mb=0), "sweep.stack_memory_mb: expected a number > 0"),
    ],
)
def test_a_sweep_that_cannot_stack_says_why(options: dict[str, Any], message: str) -> None:
    options = {"widths": [16], "objective": "builtin", **options}
    if options["objective"] == "builtin":
        options.setdefault("train", TRAIN)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Sweep("bad", space={"lr": {"log2": [-8, -6]}}, stack=True, **options)


def test_the_stack_switch_in_a_file_and_on_the_command_line(tmp_path: Path) -> None:
    from mutransfer.sweep.config import load_config

    base = '[sweep]\nname = "s"\nwidths = [16]\n{extra}\n[sweep.space]\nlr = {{ values = [0.1] }}\n'
    (tmp_path / "yes.toml").write_text(base.format(extra="stack = 'yes'"))
    with pytest.raises(ConfigError, match=r"yes.toml: sweep.stack: expected true or false"):
        load_config(tmp_path / "yes.toml")
    (tmp_path / "objective.py").write_text("def f(params, width, trial):\n    return 1.0\n")
    (tmp_path / "own.toml").write_text(base.format(extra='objective = "objective.py:f"'))
    proc = subprocess.run(
        [*CLI, "sweep", "own.toml", "--stack"], cwd=tmp_path, capture_output=True, text=True
    )
    code, out = proc.returncode, proc.stdout + proc.stderr
    assert code != 0 and "--stack: sweep.stack: packs trials of the built-in trainer" in out, out
    assert not (tmp_path / "runs").exists()  # refused before anything was created


# ----------------------------------------------------------------------- heartbeats
def test_one_heartbeat_keeps_every_trial_of_a_pack_alive_until_it_is_told() -> None:
    study = optuna.create_study()
    first, second = study.ask(), study.ask()
    with Heartbeat([first, second], interval=0.05) as heartbeat:
        beats = [study.trials[n].user_attrs[ATTR_HEARTBEAT] for n in (0, 1)]
        heartbeat.release(first)
        study.tell(first, 1.0)
        time.sleep(0.3)
        later = study.trials[1].user_attrs[ATTR_HEARTBEAT]
        assert later > beats[1]  # the trial still held beats on
        assert study.trials[0].user_attrs[ATTR_HEARTBEAT] == beats[0]  # the told one stopped
    study.tell(second, 2.0)


# ------------------------------------------------------- worker processes, kill -9
LRS = [2.0**k for k in range(-10, -4)]  # 6 points, none diverges


def stacked_sweep_file(tmp_path: Path, *, steps: int, trials_per_pack: int | None = None) -> None:
    """``sweep.toml``: the built-in trainer on the 6 LRs, stacked, quick to notice a dead
    worker; ``trials_per_pack`` bounds a pack through the memory budget."""
    train = {**TRAIN, "steps": steps}
    lines = [
        "[sweep]",
        'name = "w"',
        "widths = [16]",
        "stack = true",
        "report_every = 10",
        "heartbeat_interval = 1",
        "grace_period = 5",
    ]
    if trials_per_pack is not None:
        lines.append(f"stack_memory_mb = {memory_mb_for(trials_per_pack, train)}")
    lines += ["[sweep.space]", f"lr = {{ values = {LRS} }}", "[train]"]
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in train.items()]
    (tmp_path / "sweep.toml").write_text("\n".join(lines) + "\n")


def pack_sizes(out: str) -> list[int]:
    return [int(n) for n in re.findall(r"(\d+) trials × 1 seed\(s\) stacked", out)]


def training_pack(tmp_path: Path, min_complete: int) -> list[FrozenTrial] | None:
    """The RUNNING trials of a pack that has started training (reported a loss), once
    ``min_complete`` trials finished."""
    try:
        trials = studies(tmp_path, [16])[16].get_trials()
    except (KeyError, FileNotFoundError, ValueError):
        return None
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
    training = [t for t in running if t.intermediate_values]
    if done < min_complete or not training:
        return None
    pid = training[0].user_attrs["worker"]["pid"]
    return [t for t in running if t.user_attrs["worker"]["pid"] == pid]


def complete_lrs(tmp_path: Path) -> list[float]:
    done = studies(tmp_path, [16])[16].get_trials(states=(TrialState.COMPLETE,))
    return sorted(point_of(t)["lr"] for t in done)


def test_two_stacking_workers_split_a_small_grid(tmp_path: Path) -> None:
    stacked_sweep_file(tmp_path, steps=300)
    code, out = finish(start(tmp_path, 2, env_for(tmp_path)))
    assert code == 0, out
    assert complete_lrs(tmp_path) == LRS  # each point once
    trials = studies(tmp_path, [16])[16].get_trials()
    assert len(trials) == 6
    pids = Counter(t.user_attrs["worker"]["pid"] for t in trials)
    assert len(pids) == 2, out  # both workers trained trials...
    assert pack_sizes(out) and max(pack_sizes(out)) <= 3, out  # ...none more than its share


def test_kill_9_mid_pack_leaves_every_claimed_trial_running_and_a_restart_retries_them(
    tmp_path: Path,
) -> None:
    stacked_sweep_file(tmp_path, steps=400, trials_per_pack=3)
    proc = start(tmp_path, 1, env_for(tmp_path))
    victims = wait_for(lambda: training_pack(tmp_path, 3), what="a second pack training")
    os.kill(victims[0].user_attrs["worker"]["pid"], signal.SIGKILL)
    code, out = finish(proc)
    assert code == 2 and "run the same command to resume" in out, out
    assert len(victims) == 3, out
    study = studies(tmp_path, [16])[16]
    assert [study.trials[t.number].state for t in victims] == [TrialState.RUNNING] * 3
    before = {t.number: t.datetime_complete for t in study.get_trials()}
    before = {n: when for n, when in before.items() if when is not None}
    assert len(before) == 3
    assert len(list((tmp_path / "runs" / "w.runs").iterdir())) == 3  # only finished runs

    code, out = finish(start(tmp_path, 1, env_for(tmp_path)))  # the same command again
    assert code == 0, out
    assert pack_sizes(out) == [3], out  # the three retries, packed again
    study = studies(tmp_path, [16])[16]
    assert complete_lrs(tmp_path) == LRS
    for number, completed in before.items():  # finished trials kept, untouched
        assert study.trials[number].datetime_complete == completed
    for victim in victims:
        killed = study.trials[victim.number]
        assert killed.state == TrialState.FAIL and killed.user_attrs[ATTR_FAIL_KIND] == "lost"
        assert "is gone" in killed.user_attrs[ATTR_FAIL_REASON]
        retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
        assert point_of(retries[0]) == point_of(killed)
    assert len(list((tmp_path / "runs" / "w.runs").iterdir())) == 6


def test_a_surviving_worker_retries_every_trial_of_a_killed_workers_pack(tmp_path: Path) -> None:
    stacked_sweep_file(tmp_path, steps=400)
    proc = start(tmp_path, 2, env_for(tmp_path))
    victims = wait_for(lambda: training_pack(tmp_path, 0), what="a pack training")
    os.kill(victims[0].user_attrs["worker"]["pid"], signal.SIGKILL)
    code, out = finish(proc)
    assert code == 0, out  # the survivor finished everything, the retries included
    assert "queued again" in out and "stopped early" in out
    assert complete_lrs(tmp_path) == LRS
    study = studies(tmp_path, [16])[16]
    lost = [t for t in study.trials if t.user_attrs.get(ATTR_FAIL_KIND) == "lost"]
    assert sorted(t.number for t in lost) == sorted(t.number for t in victims), out


def test_ctrl_c_mid_pack_requeues_every_trial_of_the_pack(tmp_path: Path) -> None:
    stacked_sweep_file(tmp_path, steps=400, trials_per_pack=3)
    proc = start(tmp_path, 1, env_for(tmp_path))
    pack = wait_for(lambda: training_pack(tmp_path, 0), what="a pack training")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    code, out = finish(proc)
    assert code == 130 and "run the same command again to resume" in out, out
    study = studies(tmp_path, [16])[16]
    for trial in pack:
        interrupted = study.trials[trial.number]
        assert interrupted.state == TrialState.FAIL, out
        assert interrupted.user_attrs[ATTR_FAIL_KIND] == "interrupted"
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") is not None]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == [t.number for t in pack]
    assert {t.state for t in retries} == {TrialState.WAITING}
    code, out = finish(start(tmp_path, 1, env_for(tmp_path)))
    assert code == 0, out
    assert complete_lrs(tmp_path) == LRS
