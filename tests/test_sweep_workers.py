"""Worker processes on the journal file storage: parallel grids without duplicates, Ctrl-C,
and the liveness checks (zombies, reused pids, heartbeats) behind lost-trial recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from mutransfer.sweep.liveness import Owner, lost_reason
from mutransfer.sweep.trials import ATTR_FAIL_KIND
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


def test_two_workers_run_the_full_grid_without_duplicates(tmp_path: Path) -> None:
    setup_sweep(tmp_path, [8, 16])
    env = env_for(tmp_path, SWEEP_TEST_BARRIER="2", SWEEP_TEST_SLEEP="0.05")
    code, out = finish(start(tmp_path, 2, env))
    assert code == 0, out
    assert_full_grid_once(tmp_path, [8, 16])
    started = Counter((c["width"], c["lr"]) for c in calls(tmp_path))
    assert set(started.values()) == {1} and len(started) == 14  # no point even started twice
    assert len({c["pid"] for c in calls(tmp_path)}) == 2  # both workers took trials
    assert "2^-6" in out and "mutransfer report sweep.toml" in out


def test_ctrl_c_requeues_the_running_trial_and_the_rerun_finishes(tmp_path: Path) -> None:
    widths = [8]
    setup_sweep(tmp_path, widths)
    proc = start(tmp_path, 1, env_for(tmp_path, SWEEP_TEST_SLEEP="0.4"))
    victim = wait_for(lambda: running_trial(tmp_path, widths, 1), what="a running trial")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    code, out = finish(proc)
    assert code == 130 and "run the same command again to resume" in out, out
    study = studies(tmp_path, widths)[8]
    interrupted = study.trials[victim.number]
    assert interrupted.state == TrialState.FAIL, out
    assert interrupted.user_attrs[ATTR_FAIL_KIND] == "interrupted"
    assert [t.state for t in study.trials if t.system_attrs.get("failed_trial")] == [
        TrialState.WAITING
    ]
    code, out = finish(start(tmp_path, 1, env_for(tmp_path)))
    assert code == 0, out
    assert_full_grid_once(tmp_path, widths)


# ----------------------------------------------------------------------- liveness units
def test_zombie_and_reused_pids_count_as_dead() -> None:
    here = Owner.current()
    assert here.alive()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = Owner.current().__class__(here.host, here.boot, child.pid, "")
    wait_for(lambda: not owner.alive(), timeout=10, what="the child to exit")  # a zombie now
    child.wait()
    reused = Owner(here.host, here.boot, os.getpid(), "not-my-start-time")
    assert not reused.alive()


def test_heartbeat_decides_for_trials_on_other_machines() -> None:
    now = time.time()
    here = Owner.current()
    remote = {"host": "elsewhere", "boot": "b", "pid": 1, "started": "1"}
    trial = optuna.trial.create_trial(
        state=TrialState.RUNNING, user_attrs={"worker": remote, "heartbeat": now - 3}
    )
    assert lost_reason(trial, here, now, grace_period=5, check_heartbeat=True) is None
    reason = lost_reason(trial, here, now + 10, grace_period=5, check_heartbeat=True)
    assert reason is not None and "no heartbeat" in reason
    # a remote trial is never judged by a local pid check
    assert lost_reason(trial, here, now + 10, grace_period=5, check_heartbeat=False) is None
    # a live local worker keeps its trial even if its heartbeat is late (a starved thread)
    local = optuna.trial.create_trial(
        state=TrialState.RUNNING, user_attrs={"worker": here.to_attr(), "heartbeat": now - 60}
    )
    assert lost_reason(local, here, now, grace_period=5, check_heartbeat=True) is None


def test_a_journal_lock_held_by_a_killed_worker_does_not_block_the_others(
    tmp_path: Path,
) -> None:
    from mutransfer.sweep.journal import journal_lock

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from mutransfer.sweep.journal import journal_lock; "
            f"journal_lock(Path({str(tmp_path / 'j')!r})).acquire(); "
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    holder.kill()  # SIGKILL while holding the lock
    holder.wait()
    lock = journal_lock(tmp_path / "j")
    t0 = time.time()
    assert lock.acquire() and time.time() - t0 < 2
    lock.release()
