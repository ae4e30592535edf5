"""Shared helpers of the sweep process tests (this file holds no tests).

The objective is a cheap analytic function written to a file; every call appends a line to a
log, so the tests can count how often each grid point was *started*, not only how often it
finished. Sweeps run through the real command line, in their own process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from mutransfer.sweep.trials import point_of
from terminal_job import start_job

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The installed `mutransfer` entry point, run with this interpreter.
CLI = [sys.executable, "-c", "from mutransfer.cli import main; raise SystemExit(main())"]
GRID = [2.0**k for k in range(-8, -1)]  # 7 points

OBJECTIVE = """
import json, math, os, time

def objective(params, width, trial):
    log = os.environ["SWEEP_TEST_LOG"]
    with open(log, "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "width": width, "lr": params["lr"]}) + "\\n")
    barrier = int(os.environ.get("SWEEP_TEST_BARRIER", "0"))
    deadline = time.time() + 30
    while barrier and time.time() < deadline:  # wait until every worker has started a trial
        with open(log) as fh:
            if len({json.loads(line)["pid"] for line in fh}) >= barrier:
                break
        time.sleep(0.05)
    time.sleep(float(os.environ.get("SWEEP_TEST_SLEEP", "0")))
    return (math.log2(params["lr"]) + 6) ** 2 + 1.0 / width
"""


def setup_sweep(tmp_path: Path, widths: list[int], storage: str | None = None) -> Path:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    lines = [
        "[sweep]",
        'name = "w"',
        f"widths = {widths}",
        'objective = "objective.py:objective"',
        "heartbeat_interval = 1",
        "grace_period = 5",
    ]
    if storage:
        lines.append(f'storage = "{storage}"')
    lines += ["[sweep.space]", "lr = { log2 = [-8, -2] }"]
    config = tmp_path / "sweep.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SWEEP_TEST_LOG"] = str(tmp_path / "calls.log")
    env.update(extra)
    return env


def start(tmp_path: Path, workers: int, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    """``mutransfer sweep sweep.toml --workers N [extra]`` in ``tmp_path``."""
    return start_job(
        [*CLI, "sweep", "sweep.toml", "--workers", str(workers), *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"sweep did not finish in {timeout} s:\n{out}")
    return proc.returncode, out


def studies(tmp_path: Path, widths: list[int], storage: Any = None) -> dict[int, optuna.Study]:
    """The sweep's studies (default: the journal file in ``tmp_path/runs``)."""
    if storage is None:
        storage = JournalStorage(JournalFileBackend(str(tmp_path / "runs" / "w.journal")))
    return {w: optuna.load_study(study_name=f"w-w{w}", storage=storage) for w in widths}


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "calls.log"
    if not path.exists():
        return []
    complete = path.read_text().split("\n")[:-1]  # a line still being written is left out
    return [json.loads(line) for line in complete]


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def running_trial(tmp_path: Path, widths: list[int], min_complete: int, storage: Any = None) -> Any:
    """A RUNNING trial (with its worker recorded) once ``min_complete`` trials finished."""
    try:
        found = studies(tmp_path, widths, storage).values()
        all_trials = [t for s in found for t in s.get_trials()]
    except (KeyError, FileNotFoundError, ValueError):
        return None
    done = sum(t.state == TrialState.COMPLETE for t in all_trials)
    # ... and whose objective has started (it logged its call), so that the kill lands in it
    started = {(c["pid"], c["width"], c["lr"]) for c in calls(tmp_path)}
    running = [
        t
        for t in all_trials
        if t.state == TrialState.RUNNING
        and "worker" in t.user_attrs
        and (t.user_attrs["worker"]["pid"], t.user_attrs.get("width"), point_of(t).get("lr"))
        in started
    ]
    return running[0] if done >= min_complete and running else None


def assert_full_grid_once(tmp_path: Path, widths: list[int], storage: Any = None) -> None:
    """Every grid point finished exactly once at every width; nothing left running/waiting."""
    for width, study in studies(tmp_path, widths, storage).items():
        done = [point_of(t)["lr"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
        assert sorted(done) == GRID, f"width {width}: {Counter(done)}"
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
