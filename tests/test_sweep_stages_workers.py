"""The independent search with worker processes (the real command line): two workers never run
a point twice, and a worker killed in the middle of stage 2 loses nothing on restart."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from mutransfer.sweep.trials import ATTR_FAIL_KIND, ATTR_STAGE, point_of
from test_sweep_support import env_for, finish, start, studies, wait_for

OBJECTIVE = """
import json, math, os, time

def objective(params, width, trial):
    log = os.environ["SWEEP_TEST_LOG"]
    with open(log, "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "width": width, "params": params}) + "\\n")
    barrier = int(os.environ.get("SWEEP_TEST_BARRIER", "0"))
    deadline = time.time() + 30
    while barrier and time.time() < deadline:  # wait until every worker has started a trial
        with open(log) as fh:
            if len({json.loads(line)["pid"] for line in fh}) >= barrier:
                break
        time.sleep(0.05)
    time.sleep(float(os.environ.get("SWEEP_TEST_SLEEP", "0")))
    return (math.log2(params["lr"]) + 6) ** 2 + (math.log2(params["out"]) - 1) ** 2 + 1 / width
"""
# lr: 4 points; out: 3 points, 2 off its default; + the combination (lr 2^-6, out 2).
STAGE_POINTS = {
    "1:lr": [{"lr": 2.0**k, "out": 1.0} for k in range(-8, -4)],
    "2:out": [{"lr": 2.0**-6, "out": 0.5}, {"lr": 2.0**-6, "out": 2.0}],
}
# The combination equals the stage-2 point out = 2: it is not run again.


def setup(tmp_path: Path, widths: list[int]) -> None:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    (tmp_path / "sweep.toml").write_text(
        "\n".join(
            [
                "[sweep]",
                'name = "w"',
                f"widths = {widths}",
                'strategy = "independent"',
                'objective = "objective.py:objective"',
                "heartbeat_interval = 1",
                "grace_period = 5",
                "[sweep.space]",
                "lr = { log2 = [-8, -5] }",
                "out = { log2 = [-1, 1], default = 1.0 }",
            ]
        )
        + "\n"
    )


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "calls.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]]


def key(width: int, point: dict[str, Any]) -> tuple[Any, ...]:
    return (width, *sorted(point.items()))


def assert_every_stage_point_once(tmp_path: Path, widths: list[int], storage: Any = None) -> None:
    for width, study in studies(tmp_path, widths, storage).items():
        done: dict[str, list[dict[str, Any]]] = {}
        for t in study.get_trials(states=(TrialState.COMPLETE,)):
            done.setdefault(t.user_attrs[ATTR_STAGE], []).append(point_of(t))
        for stage, points in STAGE_POINTS.items():
            got = sorted(done.get(stage, []), key=lambda p: (p["lr"], p["out"]))
            assert got == points, f"width {width} {stage}: {got}"
        assert set(done) == set(STAGE_POINTS), f"width {width}: {sorted(done)}"
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_two_workers_run_every_stage_point_once(tmp_path: Path) -> None:
    widths = [8, 16]
    setup(tmp_path, widths)
    env = env_for(tmp_path, SWEEP_TEST_BARRIER="2", SWEEP_TEST_SLEEP="0.05")
    code, out = finish(start(tmp_path, 2, env, "--progress"))
    assert code == 0, out
    assert_every_stage_point_once(tmp_path, widths)
    started = Counter(key(c["width"], c["params"]) for c in calls(tmp_path))
    assert set(started.values()) == {1} and len(started) == 12  # no point even started twice
    assert len({c["pid"] for c in calls(tmp_path)}) == 2  # both workers took trials
    assert out.count("stage 2 at lr=2^-6: queued 2 out") == 2  # once per width
    assert "12/12" in out  # the progress bar (forced on) ends with every trial finished


def test_kill_9_in_stage_two_then_restart_resumes_the_stage(tmp_path: Path) -> None:
    widths = [8]
    setup(tmp_path, widths)
    proc = start(tmp_path, 1, env_for(tmp_path, SWEEP_TEST_SLEEP="0.4"))

    def running_stage_two() -> Any:
        try:
            trials = studies(tmp_path, widths)[8].get_trials()
        except (KeyError, FileNotFoundError, ValueError):
            return None
        started = {key(8, c["params"]) for c in calls(tmp_path)}
        return next(
            (
                t
                for t in trials
                if t.state == TrialState.RUNNING
                and t.user_attrs.get(ATTR_STAGE) == "2:out"
                and "worker" in t.user_attrs
                and key(8, point_of(t)) in started  # its objective has started
            ),
            None,
        )

    victim = wait_for(running_stage_two, what="a running stage-2 trial")
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    code, out = finish(proc)
    assert code == 2 and "run the same command to resume" in out, out

    code, out = finish(start(tmp_path, 1, env_for(tmp_path)))  # the same command again
    assert code == 0, out
    assert_every_stage_point_once(tmp_path, widths)
    study = studies(tmp_path, widths)[8]
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL and killed.user_attrs[ATTR_FAIL_KIND] == "lost"
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs[ATTR_STAGE] == "2:out"  # the retry stays in its stage
    started = Counter(key(c["width"], c["params"]) for c in calls(tmp_path))
    assert started.pop(key(8, point_of(killed))) == 2  # killed once, retried once
    assert set(started.values()) == {1}
