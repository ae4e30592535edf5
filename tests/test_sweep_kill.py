"""kill -9 of a sweep worker: finished work is kept, the killed trial is retried, no grid
point runs twice — after a restart of the same command, or by a surviving worker."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

from optuna.trial import TrialState

from mutransfer.sweep.trials import ATTR_FAIL_KIND, ATTR_FAIL_REASON, point_of
from test_sweep_support import (
    assert_full_grid_once,
    calls,
    env_for,
    finish,
    running_trial,
    setup_sweep,
    start,
    studies,
    wait_for,
)


def test_kill_9_then_restart_keeps_finished_work_and_retries_the_killed_trial(
    tmp_path: Path,
) -> None:
    widths = [8]
    setup_sweep(tmp_path, widths)
    proc = start(tmp_path, 1, env_for(tmp_path, SWEEP_TEST_SLEEP="0.4"))
    victim = wait_for(lambda: running_trial(tmp_path, widths, 2), what="a running trial")
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    code, out = finish(proc)
    assert code == 2 and "run the same command to resume" in out, out
    before = {
        t.number: t.datetime_complete
        for t in studies(tmp_path, widths)[8].get_trials(states=(TrialState.COMPLETE,))
    }
    assert len(before) >= 2
    assert studies(tmp_path, widths)[8].trials[victim.number].state == TrialState.RUNNING

    code, out = finish(start(tmp_path, 1, env_for(tmp_path)))  # the same command again
    assert code == 0, out
    study = studies(tmp_path, widths)[8]
    assert_full_grid_once(tmp_path, widths)
    for number, completed in before.items():  # finished trials kept, untouched
        assert study.trials[number].datetime_complete == completed
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL and killed.user_attrs[ATTR_FAIL_KIND] == "lost"
    assert "is gone" in killed.user_attrs[ATTR_FAIL_REASON]
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert point_of(retries[0]) == point_of(killed)
    assert "lost" not in str(retries[0].user_attrs)  # the dead run's reason is not carried over
    started = Counter(c["lr"] for c in calls(tmp_path))
    assert started.pop(point_of(killed)["lr"]) == 2  # killed once, retried once
    assert set(started.values()) == {1}


def test_a_surviving_worker_retries_a_killed_workers_trial(tmp_path: Path) -> None:
    widths = [8, 16]
    setup_sweep(tmp_path, widths)
    proc = start(tmp_path, 2, env_for(tmp_path, SWEEP_TEST_BARRIER="2", SWEEP_TEST_SLEEP="0.3"))
    victim = wait_for(lambda: running_trial(tmp_path, widths, 2), what="a running trial")
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    code, out = finish(proc)
    assert code == 0, out  # the survivor finished everything, including the retry
    assert "queued again" in out and "stopped early" in out
    assert_full_grid_once(tmp_path, widths)
    width = victim.user_attrs["width"]
    killed = studies(tmp_path, widths)[width].trials[victim.number]
    assert killed.state == TrialState.FAIL and killed.user_attrs[ATTR_FAIL_KIND] == "lost"
